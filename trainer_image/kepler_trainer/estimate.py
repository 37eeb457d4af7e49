"""Estimate power with a published model: pick the model, predict each component, compare, summarise."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from kepler_contract import layout

from .errors import InputError, ModelNotFoundError
from .extract import KEYS, Extracted
from .features import PIPELINE_NAME, OutputType
from .persist import LoadedModel


def _safe_name(kind: str, value: str) -> str:
    if not PIPELINE_NAME.fullmatch(value):
        raise InputError(f"invalid {kind} {value!r}: use letters, digits, '.', '_' and '-' (not first)")
    return value


@dataclass
class ModelChoice:
    pipeline: Path
    folder: Path
    source: str
    output_type: str
    group: str
    name: str
    mae: float | None

    def describe(self) -> dict:
        return {"pipeline": self.pipeline.name, "energy_source": self.source, "output_type": self.output_type,
                "feature_group": self.group, "model_name": self.name, "mae": self.mae,
                "path": str(self.folder.relative_to(self.pipeline))}


def _pipelines(model_path: Path, pipeline: str | None) -> list[Path]:
    if pipeline:
        folder = model_path / _safe_name("pipeline name", pipeline)
        if not (folder / layout.METADATA).is_file():
            raise ModelNotFoundError(f"no pipeline {pipeline!r} under {model_path}")
        return [folder]
    found = sorted(p for p in model_path.iterdir() if not p.name.startswith(".") and (p / layout.METADATA).is_file()) \
        if model_path.is_dir() else []
    if not found:
        raise ModelNotFoundError(f"no published pipeline under {model_path}")
    return found


def choose_model(model_path: Path, pipeline: str | None, source: str, output_type: OutputType,
                 group: str | None, model_name: str | None, available: set[str]) -> ModelChoice:
    """The named model, or the lowest-MAE model whose features the input has."""
    candidates: list[ModelChoice] = []
    for folder in _pipelines(model_path, pipeline):
        csv = folder / layout.metadata_table(source, output_type.value)
        if not csv.is_file():
            continue
        rows = pd.read_csv(csv, index_col=0)
        for row in rows.itertuples():
            if group and row.feature_group != group:
                continue
            if model_name and row.model_name != model_name:
                continue
            if getattr(row, "passed_gate", True) is False:
                continue
            features = set(json.loads(row.features.replace("'", '"')))
            if not features <= available:
                continue
            model_folder = folder / source / output_type.value / row.feature_group / row.model_name
            candidates.append(ModelChoice(folder, model_folder,
                                          source, output_type.value, row.feature_group, row.model_name,
                                          float(row.mae)))
    if not candidates:
        wanted = " ".join(f"{k}={v}" for k, v in (("pipeline", pipeline), ("energy source", source),
                                                 ("output type", output_type.value), ("feature group", group),
                                                 ("model", model_name)) if v)
        raise ModelNotFoundError(f"no published model matches {wanted} with the input's features")
    return min(candidates, key=lambda c: c.mae if c.mae is not None else float("inf"))


def intervals(frame: pd.DataFrame) -> np.ndarray:
    """Seconds each row stands for: the gap to the previous row of the same node (median for the first)."""
    dt = frame.groupby("instance")["timestamp"].diff()
    return dt.fillna(dt.median() if dt.notna().any() else 0.0).to_numpy(float)


def estimate(extracted: Extracted, choice: ModelChoice) -> tuple[pd.DataFrame, dict]:
    model = LoadedModel(choice.folder)
    rows = extracted.features_only(model.features)
    predicted = model.predict(rows[model.features].to_numpy(float))
    result = rows[KEYS].copy()
    for component, values in predicted.items():
        result[f"predicted_{component}_power"] = values
    power = extracted.power.get(choice.source)
    if power is not None:
        measured = power.copy()
        idle = _idle(choice)
        for column in [c for c in measured.columns if c.endswith("_power")]:
            measured[column] = np.clip(measured[column] - idle.get(column, 0.0), 0.0, None)
        measured = measured.rename(columns={c: f"measured_{c}" for c in measured.columns if c.endswith("_power")})
        result = result.merge(measured, on=KEYS, how="left")
    dt = intervals(result)
    components = {}
    for component in predicted:
        pred = result[f"predicted_{component}_power"].to_numpy(float)
        entry = {"energy_joules": round(float(np.sum(pred * dt)), 3),
                 "mean_power_watts": round(float(pred.mean()), 4) if pred.size else 0.0, "mae": None}
        column = f"measured_{component}_power"
        if column in result and result[column].notna().any():
            both = result[column].notna()
            entry["mae"] = round(float(np.mean(np.abs(result.loc[both, column] - pred[both.to_numpy()]))), 4)
        components[component] = entry
    return result, {"samples": int(len(result)), "components": components}


def _idle(choice: ModelChoice) -> dict[str, float]:
    if choice.output_type != OutputType.DYN.value:
        return {}
    metadata = json.loads((choice.pipeline / layout.METADATA).read_text())
    return metadata.get("idle_power", {}).get(f"{choice.source}/{choice.group}", {})


RESULT_FILE, INFO_FILE = layout.ESTIMATION_RESULT, layout.ESTIMATION_INFO


def write_outputs(output: Path, result: pd.DataFrame, choice: ModelChoice, info: dict | None = None) -> Path:
    """`estimation_result.csv`, `model.zip` and `estimation.json` (the model used, the summary: `info`)
    in `output`, each written to a temporary name first."""
    output.mkdir(parents=True, exist_ok=True)
    if info is not None:
        tmp = output / f".{INFO_FILE}.{os.getpid()}"
        tmp.write_text(json.dumps(info, indent=1))
        os.replace(tmp, output / INFO_FILE)
    csv = output / RESULT_FILE
    tmp = output / f".{RESULT_FILE}.{os.getpid()}"
    result.to_csv(tmp, index=False)
    os.replace(tmp, csv)
    zip_tmp = output / f".{layout.ESTIMATION_MODEL}.{os.getpid()}"
    shutil.copyfile(choice.folder.parent / layout.model_archive(choice.folder.name), zip_tmp)
    os.replace(zip_tmp, output / layout.ESTIMATION_MODEL)
    return csv
