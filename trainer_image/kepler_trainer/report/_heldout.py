"""What a report keeps of a model's held-out predictions: a bounded, time-ordered sample, and the
error of every held-out block (workload split) computed on all of its rows.

The sample is taken in the training worker, where the predictions exist, so publishing never
re-predicts; it is small by construction (`MAX_ROWS` rows, values rounded to milliwatts), because
the report draws it point by point and the pipeline folder keeps it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from kepler_contract import layout

MAX_ROWS = 400
"""Held-out rows kept per model for the plots: evenly spaced in time; errors use every row."""
FOLDER = layout.HELD_OUT_DIR
"""Inside a pipeline folder: one `<source>_<OutputType>_<group>.json` per model group."""
MAX_FILE_BYTES = 4 * 1024 * 1024


def sample(data: pd.DataFrame, power: list[str], predicted: list[pd.DataFrame], labels: list[str]) -> dict:
    """The held-out sample of one model: `predicted` holds one frame per held-out fold (indexed like
    `data`), `labels` names each fold (a workload, a block, or `held-out` for a single split).

    Rows are picked evenly along the folds in their own order (the table's time order), then only the
    picked rows are read and sorted by node and time: the cost does not grow with the held-out rows."""
    components = [p.removesuffix("_power") for p in power]
    sizes = [len(p) for p in predicted]
    picked = evenly_spaced(sum(sizes))
    starts = np.cumsum([0, *sizes])
    fold_of = np.searchsorted(starts, picked, side="right") - 1
    guesses = pd.concat([predicted[f].iloc[picked[fold_of == f] - starts[f]][power] for f in range(len(predicted))])
    rows = data.loc[guesses.index, ["timestamp", "instance", *power]].assign(fold=[str(labels[f]) for f in fold_of])
    order = np.lexsort((rows["timestamp"].to_numpy(float), rows["instance"].astype(str).to_numpy()))
    rows, guesses = rows.iloc[order], guesses.iloc[order]
    blocks = [_block_errors(label, data.loc[p.index, power], p[power], components)
              for label, p in zip(labels, predicted, strict=False)] if len(labels) > 1 else []
    return {
        "rows": int(sum(sizes)), "components": components,
        "timestamp": rounded(rows["timestamp"].to_numpy(float)),
        "instance": rows["instance"].astype(str).tolist(),
        "fold": rows["fold"].tolist(),
        "measured": {c: rounded(rows[f"{c}_power"].to_numpy(float)) for c in components},
        "predicted": {c: rounded(guesses[f"{c}_power"].to_numpy(float)) for c in components},
        "blocks": blocks,
    }


def _block_errors(label: str, measured: pd.DataFrame, predicted: pd.DataFrame, components: list[str]) -> dict:
    mae = {c: round(float(np.mean(np.abs(measured[f"{c}_power"].to_numpy(float)
                                         - predicted[f"{c}_power"].to_numpy(float)))), 4) for c in components}
    return {"label": str(label), "rows": int(len(measured)), "mae": mae}


def evenly_spaced(n: int, limit: int = MAX_ROWS) -> np.ndarray:
    """At most `limit` evenly spaced positions of `n` rows, the first and the last included."""
    return np.unique(np.linspace(0, n - 1, min(n, limit)).round().astype(int)) if n else np.zeros(0, dtype=int)


def rounded(values: np.ndarray) -> list[float | None]:
    return [None if not math.isfinite(v) else round(float(v), 3) for v in values]


def file_name(source: str, output_type: str, group: str) -> str:
    return f"{source}_{output_type}_{group}.json"


def write(folder: Path, best: dict[tuple[str, str, str], tuple[dict, dict]]) -> None:
    """`report/<source>_<ot>_<group>.json` for each model group: the best model's metadata keys that
    the plots name, and its held-out sample."""
    out = folder / FOLDER
    out.mkdir(exist_ok=True)
    for (source, ot, group), (metadata, held_out) in best.items():
        document = {"model_name": metadata["model_name"], "trainer": metadata.get("trainer"),
                    "mae": metadata.get("mae"), **held_out}
        (out / file_name(source, ot, group)).write_text(json.dumps(document, separators=(",", ":")))


def read(folder: Path, source: str, output_type: str, group: str) -> dict | None:
    """The held-out sample of a group, or None when the pipeline has none (published before reports,
    or carried over from such a version). Only a regular file of bounded size is read."""
    path = folder / FOLDER / file_name(source, output_type, group)
    try:
        if not path.is_file() or path.is_symlink() or path.stat().st_size > MAX_FILE_BYTES:
            return None
        document = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return document if isinstance(document, dict) else None
