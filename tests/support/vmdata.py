"""node-exporter-shaped and Kepler-0.10-shaped series derived from a real Kepler 0.7 dump, for backfilling.

From the bundled real dump (tests/data/kepler-metrics/prom_response_2023.json, one kind node, 188 samples
at 3 s) we take, per sample, what the machine really did and really drew: its CPU time (the sum of its
containers' `bpf_cpu_time_us`), its interrupts (the `bpf_*_irq` counters) and its RAPL power (package,
core, uncore, dram). Those become the counters the two presets read:

* guest side (node-exporter): `node_cpu_seconds_total{cpu, mode}` (busy time scaled so the busiest sample
  uses 90 % of `CPUS` CPUs, split 70 % user, 25 % system, 5 % softirq; the other modes present and flat; idle
  the rest), `node_intr_total` (the IRQ counts), `node_context_switches_total`
  (cycles / 1e4: a stand-in with real load shape), `node_memory_Active_bytes` (1.5 GiB plus the CPU load);
* host side (Kepler 0.10): `kepler_node_cpu_joules_total{zone}` and `kepler_vm_cpu_joules_total{vm_id, zone}`
  with the measured power integrated into joules.

The split shares and the two stand-ins are our choice; the load and power shapes are the real machine's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kepler_trainer import promjson
from kepler_trainer.extract import extract
from kepler_trainer.features import energy_source

from .checkout import REAL as DUMP
from .openmetrics import RawSeries, render_series

CPUS = 4
SHARES = {"user": 0.70, "nice": 0.0, "system": 0.25, "iowait": 0.0, "irq": 0.0, "softirq": 0.05}
ZONES = ("package", "core", "uncore", "dram")
GUEST = "guest-1:9100"
VM_ID = "vm-0001"
HOST = "kind-control-plane"


@dataclass
class Derived:
    timestamps: np.ndarray      # unix seconds, int
    busy: np.ndarray            # cores busy over the step ending at each sample
    power: dict[str, np.ndarray]
    series: list[RawSeries]

    def openmetrics(self) -> str:
        families: dict[str, list[RawSeries]] = {}
        for s in self.series:
            families.setdefault(s.name, []).append(s)
        out = []
        for name, members in families.items():
            counter = name.endswith("_total")
            family = name.removesuffix("_total") if counter else name
            out.append(f"# HELP {family} derived from a real Kepler dump.\n# TYPE {family} "
                       f"{'counter' if counter else 'gauge'}\n")
            out += [render_series(s) for s in members]
        return "".join(out) + "# EOF\n"


def _integrate(rate: np.ndarray, dt: np.ndarray, start: float = 1000.0) -> np.ndarray:
    return start + np.concatenate([[0.0], np.cumsum(rate[1:] * dt[1:])])


def derive() -> Derived:
    dump = promjson.load(DUMP)
    extracted = extract(dump, [energy_source("rapl-sysfs")])
    features = ["bpf_cpu_time_us", "bpf_block_irq", "bpf_net_rx_irq", "bpf_net_tx_irq", "cpu_cycles"]
    table = extracted.table(features, "rapl-sysfs")
    table = table[table["instance"] == HOST].reset_index(drop=True)
    ts = table["timestamp"].to_numpy(float).round().astype(np.int64)
    dt = np.concatenate([[0.0], np.diff(ts)]).astype(float)
    cpu = table["bpf_cpu_time_us"].to_numpy(float)
    busy = cpu / cpu.max() * 0.9 * CPUS  # the real load's shape, the busiest sample at 90 % of the CPUs
    series: list[RawSeries] = []
    guest = {"instance": GUEST, "job": "node"}
    for cpu in range(CPUS):
        for mode, share in SHARES.items():
            series.append(RawSeries("node_cpu_seconds_total", {**guest, "cpu": str(cpu), "mode": mode}, ts,
                                    _integrate(busy * share / CPUS, dt)))
        series.append(RawSeries("node_cpu_seconds_total", {**guest, "cpu": str(cpu), "mode": "idle"}, ts,
                                _integrate(1.0 - busy / CPUS, dt)))
    irqs = table[["bpf_block_irq", "bpf_net_rx_irq", "bpf_net_tx_irq"]].sum(axis=1).to_numpy(float)
    series.append(RawSeries("node_intr_total", guest, ts, _integrate(irqs, dt)))
    series.append(RawSeries("node_context_switches_total", guest, ts,
                            _integrate(table["cpu_cycles"].to_numpy(float) / 1e4, dt)))
    series.append(RawSeries("node_memory_Active_bytes", guest, ts, 1.5 * 2**30 + busy * 2**26))
    power = {z: table[f"{z}_power"].to_numpy(float) for z in ZONES}
    for zone, watts in power.items():
        joules = _integrate(watts, dt)
        series.append(RawSeries("kepler_node_cpu_joules_total",
                                {"instance": f"{HOST}:28282", "job": "kepler", "zone": zone,
                                 "path": f"/sys/class/powercap/intel-rapl:0/{zone}"}, ts, joules))
        series.append(RawSeries("kepler_vm_cpu_joules_total",
                                {"instance": f"{HOST}:28282", "job": "kepler", "zone": zone, "vm_id": VM_ID,
                                 "vm_name": "guest-1", "hypervisor": "kvm", "state": "running"}, ts, joules))
    return Derived(ts, busy, power, series)


def node_exporter_instance() -> str:
    """The node-exporter instance on the measuring node (same host, node-exporter's port)."""
    return f"{HOST}:9100"


def measuring_node(derived: Derived) -> list[RawSeries]:
    """The guest-side series relabelled as the measuring node's own node-exporter (node-exporter preset)."""
    return [RawSeries(s.name, {**s.labels, "instance": node_exporter_instance()}, s.timestamps, s.values)
            for s in derived.series if s.labels.get("instance") == GUEST]
