"""A procfs tree written from node-exporter-shaped counters, swapped atomically from one sample to the next.

`ProcfsTree.write(sample)` writes `stat`, `meminfo`, `loadavg` and `uptime` in a new folder, then re-points the
`root` symlink at it with one rename: a reader that opens `root` once sees one whole sample. The files are in
the kernel's formats (proc(5)): CPU time in USER_HZ ticks, memory in kB.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

MODES = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal", "guest", "guest_nice")


@dataclass
class Sample:
    uptime: float
    ticks: dict[int, dict[str, int]]             # cpu -> mode -> USER_HZ ticks
    ctxt: int
    intr: int
    meminfo_kb: dict[str, int] = field(default_factory=dict)

    def stat(self) -> str:
        total = {m: sum(t.get(m, 0) for t in self.ticks.values()) for m in MODES}
        lines = ["cpu  " + " ".join(str(total[m]) for m in MODES)]
        lines += [f"cpu{c} " + " ".join(str(t.get(m, 0)) for m in MODES) for c, t in sorted(self.ticks.items())]
        lines += [f"intr {self.intr} 0 9 0 0 12", f"ctxt {self.ctxt}", "btime 1700000000", "processes 4242",
                  "procs_running 3", "procs_blocked 0", "softirq 100 1 2 3 4 5 6 7 8 9 10"]
        return "\n".join(lines) + "\n"

    def meminfo(self) -> str:
        rows = {"MemTotal": 16 * 2**20, "MemFree": 8 * 2**20, **self.meminfo_kb, "Active(anon)": 2**19}
        return "".join(f"{k + ':':<16}{v:>8} kB\n" for k, v in rows.items()) + "HugePages_Total:       0\n"


class ProcfsTree:
    def __init__(self, base: Path):
        self.base, self.count = base, 0
        base.mkdir(parents=True, exist_ok=True)
        self.root = base / "root"

    def write(self, sample: Sample) -> None:
        self.count += 1
        folder = self.base / f"sample-{self.count}"
        folder.mkdir()
        (folder / "stat").write_text(sample.stat())
        (folder / "meminfo").write_text(sample.meminfo())
        (folder / "loadavg").write_text("0.52 0.58 0.59 2/1181 4242\n")
        (folder / "uptime").write_text(f"{sample.uptime:.2f} {sample.uptime * 3:.2f}\n")
        link = self.base / f".root-{self.count}"
        os.symlink(folder.name, link)
        os.replace(link, self.root)


def samples_from(derived) -> list[Sample]:
    """The guest's counters of `tests.support.vmdata.derive()`, one sample per timestamp, in kernel units."""
    guest = [s for s in derived.series if s.labels.get("instance") == "guest-1:9100"]
    out = []
    start = float(derived.timestamps[0])
    for k, ts in enumerate(derived.timestamps):
        ticks: dict[int, dict[str, int]] = {}
        scalars = {}
        for s in guest:
            if s.name == "node_cpu_seconds_total":
                ticks.setdefault(int(s.labels["cpu"]), {})[s.labels["mode"]] = int(np.round(s.values[k] * 100))
            else:
                scalars[s.name] = s.values[k]
        out.append(Sample(uptime=1000.0 + float(ts) - start, ticks=ticks,
                          ctxt=int(scalars["node_context_switches_total"]), intr=int(scalars["node_intr_total"]),
                          meminfo_kb={"Active": int(scalars["node_memory_Active_bytes"] // 1024)}))
    return out
