"""Size and build time of the report pages, for the demo pipeline and for the whole nx12 pipeline.

    python bench/bench_report.py [--repeats 5] [--split random|time|workload] [--data DIR]

Trains (once, into a temporary folder) the `make demo` pipeline from the bundled 2023 Kepler dump
with every default trainer, and the nx12 pipeline from all 28 tables of kepler-model-db's nx12 training
set (`--data`; as bench_nx12.py's whole-pipeline run); then builds each
pipeline's report page `--repeats` times with `kepler-model report`'s code and prints the median
build time, the page size (raw and gzipped), the chart count, and the size of the held-out samples
the pipeline keeps for it (`report/`). Also the estimation page of the demo. With Debian's chromium and
playwright installed (hack/install.sh --test), also the median time headless Chromium takes from
navigation start to the load event of each page (`performance` navigation timing, file:// URL).
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_nx12 import GROUPS, SHARED, tables  # noqa: E402

from kepler_trainer import pipeline, report  # noqa: E402
from kepler_trainer.trainers import trainer_names  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "tests/data/kepler-metrics/prom_response_2023.json"


def measure(build, page: Path, held_out: Path | None, repeats: int) -> dict:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        build()
        times.append(time.perf_counter() - start)
    text = page.read_bytes()
    return {"build_s_median": round(statistics.median(times), 3), "page_kib": round(len(text) / 1024, 1),
            "page_gzip_kib": round(len(gzip.compress(text)) / 1024, 1), "charts": text.count(b'<svg class="chart"'),
            "held_out_kib": round(sum(p.stat().st_size for p in held_out.iterdir()) / 1024, 1) if held_out else None}


def load_ms(pages: dict[str, Path], repeats: int) -> dict[str, float | None]:
    """Median navigation-to-load time of each page in headless Chromium; None without a browser."""
    try:
        from tests.support.browser import browser, visit
        with browser() as context:
            times = {}
            for name, page in pages.items():
                runs = []
                for _ in range(repeats):
                    seen = visit(context, page.as_uri())
                    runs.append(seen.page.evaluate("performance.getEntriesByType('navigation')[0].loadEventEnd"))
                    seen.page.close()
                times[name] = round(statistics.median(runs), 1)
            return times
    except BaseException as exc:  # pytest.skip raises an exception that is not an Exception
        print(f"no browser timing: {exc}", file=sys.stderr)
        return {name: None for name in pages}


def demo(work: Path, split: str) -> tuple[Path, Path]:
    for command in (["train", "-q", "-i", str(SAMPLE), "-p", "demo", "-e", "rapl-sysfs,acpi", "--split", split],
                    ["estimate", "-q", "-i", str(SAMPLE), "-p", "demo", "-e", "rapl-sysfs"]):
        subprocess.run([sys.executable, "-m", "kepler_trainer", *command, "--data-path", str(work)], check=True,
                       capture_output=True)
    return work / "models" / "demo", work / "output"


def nx12(work: Path, data: Path, split: str) -> Path:
    names = trainer_names("default")
    settings = pipeline.TrainSettings("nx12", [], list(GROUPS), names, names, node_type=1, n_jobs=2, split=split)
    return Path(pipeline.train_and_publish(tables(data), settings, work / "models", []).summary["path"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--split", default="random", choices=["random", "time", "workload"])
    parser.add_argument("--data", type=Path, default=SHARED / "data/model-db/nx12/preprocessed")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-report-"))
    try:
        demo_pipeline, estimation = demo(work / "demo", args.split)
        results = {
            "demo": measure(lambda: report.write_pipeline_report(demo_pipeline), demo_pipeline / "report.html",
                            demo_pipeline / "report", args.repeats),
            "demo estimation": measure(lambda: report.write_estimation_report(estimation),
                                       estimation / "report.html", None, args.repeats),
        }
        nx12_pipeline = nx12(work / "nx12", args.data, args.split)
        results["nx12"] = measure(lambda: report.write_pipeline_report(nx12_pipeline), nx12_pipeline / "report.html",
                                  nx12_pipeline / "report", args.repeats)
        pages = {"demo": demo_pipeline / "report.html", "demo estimation": estimation / "report.html",
                 "nx12": nx12_pipeline / "report.html"}
        for name, ms in load_ms(pages, args.repeats).items():
            results[name]["chromium_load_ms_median"] = ms
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"split: {args.split}, median of {args.repeats} builds")
    print(f"{'page':<16} {'build (s)':>9} {'page (KiB)':>10} {'gzip (KiB)':>10} {'charts':>6} "
          f"{'held-out kept (KiB)':>19} {'Chromium load (ms)':>18}")
    for name, r in results.items():
        print(f"{name:<16} {r['build_s_median']:>9} {r['page_kib']:>10} {r['page_gzip_kib']:>10} {r['charts']:>6} "
              f"{r['held_out_kib'] if r['held_out_kib'] is not None else '-':>19} "
              f"{r.get('chromium_load_ms_median') or '-':>18}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
