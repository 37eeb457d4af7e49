"""node-exporter's series, read from a procfs tree with node-exporter's definitions.

Definitions (node-exporter's collector/{cpu,stat,meminfo,loadavg}_linux.go over the procfs library, read
for their meaning, not copied):

* `/proc/stat` per-CPU lines `cpuN user nice system idle iowait irq softirq steal guest guest_nice` are
  clock ticks; node-exporter divides by USER_HZ (100 on every Linux architecture it supports) and exports
  `node_cpu_seconds_total{cpu="N", mode=...}` for the first eight, `node_cpu_guest_seconds_total{cpu, mode=
  "user"|"nice"}` for the last two. The aggregate `cpu` line is not exported.
* `/proc/stat` `ctxt` -> `node_context_switches_total`, `intr` (its first number, the total) ->
  `node_intr_total`, `processes` -> `node_forks_total`, `procs_running`/`procs_blocked` ->
  `node_procs_running`/`node_procs_blocked`, `btime` -> `node_boot_time_seconds`.
* `/proc/meminfo` `Key: N kB` -> `node_memory_Key_bytes` = N * 1024 (parentheses: `Active(anon)` ->
  `Active_anon`); a line without a unit -> `node_memory_Key` = N.
* `/proc/loadavg` -> `node_load1`, `node_load5`, `node_load15`.

One `Snapshot` is read through one open directory handle of the root, so a root that is replaced (a
symlink re-pointed) is never read half from the old tree and half from the new. `/proc/uptime` gives the
snapshot's clock: rates are per second of the same kernel clock the counters advance with.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

USER_HZ = 100
MAX_FILE_BYTES = 4 * 1024 * 1024  # /proc/stat's intr line on a large machine is long, not this long
CPU_MODES = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
GUEST_MODES = ("user", "nice")
_STAT_SCALARS = {"ctxt": "node_context_switches_total", "processes": "node_forks_total",
                 "procs_running": "node_procs_running", "procs_blocked": "node_procs_blocked",
                 "btime": "node_boot_time_seconds"}
_PARENS = re.compile(r"\((.*)\)")

Labels = tuple[tuple[str, str], ...]


def _stat_names() -> set[str]:
    return {"node_cpu_seconds_total", "node_cpu_guest_seconds_total", "node_intr_total", *_STAT_SCALARS.values()}


FILES = {"stat": _stat_names, "loadavg": lambda: {"node_load1", "node_load5", "node_load15"}}
"""File -> the metric names it provides (meminfo's names depend on the kernel: see `provides`)."""


@dataclass
class Snapshot:
    uptime: float | None                                   # seconds, from /proc/uptime
    series: dict[str, dict[Labels, float]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)     # files that could not be read

    def add(self, name: str, labels: dict[str, str], value: float) -> None:
        self.series.setdefault(name, {})[tuple(sorted(labels.items()))] = value


def file_of(metric: str) -> str | None:
    """The procfs file that provides `metric` (node-exporter's name), or None."""
    if metric.startswith("node_memory_"):
        return "meminfo"
    return next((f for f, names in FILES.items() if metric in names()), None)


def _read(dir_fd: int, name: str) -> str:
    fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK, dir_fd=dir_fd)
    with os.fdopen(fd, "rb") as handle:
        return handle.read(MAX_FILE_BYTES).decode("ascii", errors="replace")


def parse_stat(text: str, snap: Snapshot) -> None:
    for line in text.splitlines():
        parts = line.split()
        if not parts:
            continue
        key = parts[0]
        try:
            if key.startswith("cpu") and key != "cpu":
                cpu = key[3:]
                ticks = [int(v) for v in parts[1:11]]
                for mode, value in zip(CPU_MODES, ticks[:8], strict=False):  # older kernels: fewer fields
                    snap.add("node_cpu_seconds_total", {"cpu": cpu, "mode": mode}, value / USER_HZ)
                for mode, value in zip(GUEST_MODES, ticks[8:], strict=False):
                    snap.add("node_cpu_guest_seconds_total", {"cpu": cpu, "mode": mode}, value / USER_HZ)
            elif key == "intr" and len(parts) > 1:
                snap.add("node_intr_total", {}, float(int(parts[1])))
            elif key in _STAT_SCALARS and len(parts) > 1:
                snap.add(_STAT_SCALARS[key], {}, float(int(parts[1])))
        except ValueError:  # a malformed line is a missing field, not a crash
            continue


def parse_meminfo(text: str, snap: Snapshot) -> None:
    for line in text.splitlines():
        parts = line.split()
        if len(parts) not in (2, 3) or not parts[0].endswith(":"):
            continue
        key = _PARENS.sub(r"_\1", parts[0][:-1])
        try:
            value = float(int(parts[1]))
        except ValueError:
            continue
        if len(parts) == 3:  # the unit, kB in every kernel
            snap.add(f"node_memory_{key}_bytes", {}, value * 1024)
        else:
            snap.add(f"node_memory_{key}", {}, value)


def parse_loadavg(text: str, snap: Snapshot) -> None:
    parts = text.split()
    for name, value in zip(("node_load1", "node_load5", "node_load15"), parts[:3], strict=False):
        try:
            snap.add(name, {}, float(value))
        except ValueError:
            continue


PARSERS = {"stat": parse_stat, "meminfo": parse_meminfo, "loadavg": parse_loadavg}


def read(root: str, files: set[str] | frozenset[str] = frozenset(PARSERS)) -> Snapshot:
    """The series of `files` (names under the procfs root) and the uptime, as one snapshot."""
    try:
        dir_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as exc:
        return Snapshot(None, problems=[f"{root}: {exc.strerror}"])
    try:
        snap = Snapshot(None)
        try:
            snap.uptime = float(_read(dir_fd, "uptime").split()[0])
        except (OSError, ValueError, IndexError):
            snap.problems.append("uptime: unreadable")
        for name in sorted(files):
            try:
                PARSERS[name](_read(dir_fd, name), snap)
            except OSError as exc:
                snap.problems.append(f"{name}: {exc.strerror}")
        return snap
    finally:
        os.close(dir_fd)
