"""Realistic Kepler query output of any size, with a known ground-truth power model.

Containers run workloads whose intensity wanders over time; each container's counters grow at rates
proportional to its intensity. Node power is an exact linear function of the summed rates plus idle
power (and optional noise), reported as Kepler does: joule counters per socket, split into `idle` and
`dynamic` modes, labelled with the energy source. So a trainer's error can be measured against the
truth, not just against held-out noise.

    python -m tests.support.synthetic OUT.json --containers 20 --hours 1 --step 3
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

import numpy as np

from kepler_trainer.data import QueryResult, Series

# Rate of each feature, per unit of workload intensity, per second.
FEATURE_SCALE = {
    "bpf_cpu_time_ms": 900.0,
    "cpu_cycles": 2.8e9,
    "cpu_instructions": 3.1e9,
    "cache_miss": 4.0e6,
    "bpf_page_cache_hit": 2.0e4,
    "bpf_block_irq": 50.0,
    "bpf_net_rx_irq": 300.0,
    "bpf_net_tx_irq": 200.0,
}


@dataclass
class GroundTruth:
    """Watts = idle + sum(coef * summed feature rate), per component."""

    idle: dict[str, float] = field(default_factory=lambda: {"package": 40.0, "dram": 8.0, "platform": 95.0})
    coef: dict[str, dict[str, float]] = field(default_factory=lambda: {
        "package": {"cpu_instructions": 3.0e-8, "bpf_cpu_time_ms": 0.02},
        "dram": {"cache_miss": 1.5e-6},
        "platform": {"cpu_instructions": 4.0e-8, "bpf_cpu_time_ms": 0.03, "cache_miss": 1.5e-6},
    })

    def power(self, component: str, rates: dict[str, np.ndarray]) -> np.ndarray:
        n = len(next(iter(rates.values())))
        watts = np.full(n, self.idle.get(component, 0.0))
        for feature, c in self.coef.get(component, {}).items():
            watts = watts + c * rates[feature]
        return watts


def _intensity(rng: np.random.Generator, n: int) -> np.ndarray:
    """A workload that wanders between idle and busy, with bursts."""
    walk = np.cumsum(rng.normal(0, 0.08, n))
    level = 0.5 + 0.45 * np.sin(walk + rng.uniform(0, 6.3))
    bursts = (rng.random(n) < 0.02).astype(float) * rng.uniform(0.2, 0.5, n)
    return np.clip(level + bursts, 0.0, 1.0)


def generate(containers: int = 10, samples: int = 600, step: float = 3.0, start: float = 1_700_000_000.0,
             seed: int = 0, noise_watts: float = 0.0, instance: str = "node-1", truth: GroundTruth | None = None,
             reset_at: int | None = None) -> tuple[QueryResult, GroundTruth, dict[str, np.ndarray]]:
    """A query result, its ground truth, and the true node rates (per feature, per interval)."""
    rng = np.random.default_rng(seed)
    truth = truth or GroundTruth()
    ts = start + step * np.arange(samples)
    result = QueryResult()
    node_rates = {f: np.zeros(samples - 1) for f in FEATURE_SCALE}
    for c in range(containers):
        intensity = _intensity(rng, samples - 1)
        labels = {"container_id": f"{c:064x}", "container_name": f"worker-{c}", "container_namespace": "bench",
                  "pod_name": f"worker-{c}-pod", "instance": instance, "job": "kepler-exporter"}
        for feature, scale in FEATURE_SCALE.items():
            rate = scale * intensity * rng.uniform(0.6, 1.4)
            node_rates[feature] += rate
            counter = np.concatenate([[rng.uniform(0, 1e6)], rate * step]).cumsum()
            if reset_at is not None and c == 0:
                counter[reset_at:] -= counter[reset_at - 1]  # exporter restart: counter from zero
            name = f"kepler_container_{feature}_total"
            result.metrics.setdefault(name, []).append(
                Series({"__name__": name, **labels}, ts.copy(), counter))
    for source, components in (("rapl-sysfs", ("package", "core", "uncore", "dram")), ("acpi", ("platform",))):
        for component in components:
            watts = truth.power(component, node_rates) if component in truth.idle else np.zeros(samples - 1)
            watts = watts + (rng.normal(0, noise_watts, samples - 1) if component in truth.idle else 0.0)
            idle_watts = min(truth.idle.get(component, 0.0), float(watts.min()) if watts.size else 0.0)
            name = f"kepler_node_{component}_joules_total"
            for mode, part in (("idle", np.full(samples - 1, idle_watts)), ("dynamic", watts - idle_watts)):
                joules = np.concatenate([[1000.0], part * step]).cumsum()
                labels = {"__name__": name, "instance": instance, "job": "kepler-exporter", "mode": mode,
                          "source": source, **({"package": "0"} if source != "acpi" else {})}
                result.metrics.setdefault(name, []).append(Series(labels, ts.copy(), joules))
    return result, truth, node_rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--containers", type=int, default=20)
    parser.add_argument("--hours", type=float, default=1.0)
    parser.add_argument("--step", type=float, default=3.0)
    parser.add_argument("--noise", type=float, default=1.0, help="watts of Gaussian noise on node power")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    from kepler_trainer import promjson

    samples = int(args.hours * 3600 / args.step) + 1
    result, _, _ = generate(args.containers, samples, args.step, seed=args.seed, noise_watts=args.noise)
    promjson.dump(result, args.out)
    print(f"wrote {args.out}: {result.sample_count:,} samples")


if __name__ == "__main__":
    main()
