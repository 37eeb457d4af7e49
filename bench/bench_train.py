"""Wall time and peak memory of the default `kepler-model train` on idle.json replicated in time.

    python bench/bench_train.py [--factors 1,100,1000] [--repeat 3] [--workdir /tmp/bench]

Inputs: idle.json (a real Kepler dump) replicated N times along the time axis by the workspace's generator
(`$SHARED/tools/bench/make_synthetic.py`), as for the upstream reference figures below.
x1 has 5 usable rows, which `train` refuses (exit 6, too few samples): the row shows that. Each run is a
fresh process (all feature groups, every default trainer, rapl-sysfs); peak memory is that
process's maximum RSS (wait4). Prints the median of `--repeat` runs and the cost per million samples, so
linear growth shows as a flat last column.

Reference (upstream kepler-model-server, same machine kind): x1 16 s / 209 MB, x100 34 s / 525 MB,
x1000 195 s / 3.47 GB. Target: x1000 <= 15 s and <= 1 GB.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SHARED", ROOT.parent / "shared"))
REFERENCE = {1: (16, 209), 100: (34, 525), 1000: (195, 3470)}


def ensure_input(workdir: Path, factor: int) -> Path:
    path = workdir / f"idle_x{factor}.json"
    if not path.exists():
        subprocess.run([sys.executable, str(SHARED / "tools/bench/make_synthetic.py"),
                        str(SHARED / "data/kepler-metrics/idle.json"), str(path), str(factor)], check=True)
    return path


def run_once(path: Path, extra: list[str]) -> tuple[float, float, int]:
    out = Path(tempfile.mkdtemp(prefix="bench-train-"))
    try:
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "kepler_trainer", "train", "-q", "-i", str(path),
                                 "-p", "bench", "-e", "rapl-sysfs", "--data-path", str(out), *extra],
                                stdout=subprocess.DEVNULL, env={**os.environ, "CI": "1"})
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        return wall, usage.ru_maxrss / 1024.0, os.waitstatus_to_exitcode(status)  # KiB -> MiB
    finally:
        shutil.rmtree(out, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--factors", default="1,100,1000")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workdir", default="/tmp/bench")
    parser.add_argument("extra", nargs="*", help="extra train flags, after --")
    args = parser.parse_args()
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"{'input':<12} {'samples':>10} {'wall s (median)':>16} {'peak MB':>9} {'s per M samples':>16}"
          f" {'reference s / MB':>18}")
    for factor in (int(f) for f in args.factors.split(",")):
        path = ensure_input(workdir, factor)
        samples = 9196 * factor
        runs = [run_once(path, args.extra) for _ in range(args.repeat)]
        if any(r[2] for r in runs):  # e.g. x1: 5 usable rows, refused as too few samples (exit 6)
            print(f"idle x{factor:<7} {samples:>10,} refused: exit {runs[0][2]} after {runs[0][0]:.2f} s", flush=True)
            continue
        wall = statistics.median(r[0] for r in runs)
        rss = statistics.median(r[1] for r in runs)
        ref = REFERENCE.get(factor)
        print(f"idle x{factor:<7} {samples:>10,} {wall:>16.2f} {rss:>9.0f} {wall / samples * 1e6:>16.2f}"
              f" {f'{ref[0]} / {ref[1]}' if ref else '':>18}", flush=True)


if __name__ == "__main__":
    main()
