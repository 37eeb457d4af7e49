"""Report pages: one self-contained HTML file (inline SVG, inline style, no script, a policy that
forbids fetching anything) showing how accurate a pipeline's models are, or what an estimation found.

* `held_out_sample` runs in the training worker and keeps a bounded sample of a model's held-out
  predictions; `keep_held_out` writes the best model's sample per model group into the pipeline folder
  being published (`report/`), so the page can be rebuilt later from the folder alone.
* `write_pipeline_report` writes `<pipeline>/report.html` (at publish time, and by `kepler-model report`).
* `write_estimation_report` writes the page of an estimation beside its `estimation_result.csv`.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from pathlib import Path

from kepler_contract import layout

from ._heldout import FOLDER, file_name as _held_out_file, sample as held_out_sample, write as _write_held_out

REPORT_FILE, ESTIMATION_RESULT = layout.REPORT, layout.ESTIMATION_RESULT

__all__ = ["FOLDER", "REPORT_FILE", "held_out_sample", "keep_held_out", "carry_over_held_out", "write_pipeline_report",
           "write_estimation_report"]


def keep_held_out(folder: Path, models: Iterable[tuple[tuple[str, str, str], dict, dict | None]]) -> None:
    """Write, for each model group, the held-out sample of its best model: `models` yields
    ((source, output type, group), model metadata, held-out sample or None) for every model trained."""
    best: dict[tuple[str, str, str], tuple[dict, dict]] = {}
    for key, metadata, held_out in models:
        if held_out is None or metadata.get("passed_gate") is False:
            continue
        if key not in best or metadata["mae"] < best[key][0]["mae"]:
            best[key] = (metadata, held_out)
    _write_held_out(folder, best)


def carry_over_held_out(previous: Path, folder: Path, key: tuple[str, ...]) -> None:
    """Copy the previous version's held-out sample of a model group that this run does not retrain."""
    source = previous / FOLDER / _held_out_file(*key)
    if source.is_file() and not source.is_symlink() and not source.parent.is_symlink():  # never followed out
        (folder / FOLDER).mkdir(exist_ok=True)
        shutil.copyfile(source, folder / FOLDER / source.name)


def write_atomically(path: Path, text: str) -> Path:
    """Write `text` to a hidden temporary file beside `path`, then rename it over `path`."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        tmp.write_text(text, encoding="utf-8")
        tmp.chmod(0o644)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_pipeline_report(folder: Path, out: Path | None = None) -> Path:
    """Build the report of the pipeline in `folder`; write it to `out` (default `<folder>/report.html`)."""
    from ._pipeline import build

    return write_atomically(out or folder / REPORT_FILE, build(folder))


def write_estimation_report(folder: Path, out: Path | None = None) -> Path:
    """Build the report of the estimation written to `folder`; write it to `out` (default beside it)."""
    from ._estimation import build

    return write_atomically(out or folder / REPORT_FILE, build(folder))
