"""The report of an estimation folder (`estimation_result.csv`, `estimation.json`): estimated power and
energy per component over the input window, and the error against measured power where the input had it.
Totals are computed on every row of the result; the charts draw at most `MAX_ROWS` of them."""

from __future__ import annotations

from html import escape
from pathlib import Path

import numpy as np
import pandas as pd

from ..estimate import INFO_FILE, RESULT_FILE, intervals
from . import _charts, _html
from ._heldout import evenly_spaced, rounded
from ._pipeline import read_json

HEADERS = ["component", "energy (J)", "mean power (W)", "MAE against measured (W)", "measured rows"]


def build(folder: Path) -> str:
    result = pd.read_csv(folder / RESULT_FILE)
    info = read_json(folder / INFO_FILE)
    result = result.sort_values(["instance", "timestamp"], kind="stable").reset_index(drop=True)
    result["instance"] = result["instance"].astype(str)
    components = [c.removeprefix("predicted_").removesuffix("_power") for c in result.columns
                  if c.startswith("predicted_") and c.endswith("_power")]
    energy = _energy(result, components)
    model = info.get("model") or {}
    window = (f"{pd.to_datetime(result['timestamp'].min(), unit='s')} to "
              f"{pd.to_datetime(result['timestamp'].max(), unit='s')} UTC" if len(result) else "empty")
    about = _html.key_values([
        ("model", f"{model.get('pipeline', '?')}/{model.get('path', '?')}"),
        ("model's held-out MAE", f"{model.get('mae')} W"), ("input", info.get("input")),
        ("window", window), ("samples", len(result)), ("nodes", result["instance"].nunique())])
    rows = ["<tr>" + "".join(_component_cells(result, c, energy)) + "</tr>" for c in components]
    body = [f"<header><h1>Energy estimation with {escape(str(model.get('model_name', '?')))}</h1></header>",
            f'<section id="about"><h2>Input and model</h2>{about}</section>',
            f'<section id="summary"><h2>Per component</h2>{_html.table(HEADERS, rows, "components")}</section>',
            f'<section id="charts"><h2>Over the window</h2><div class="charts">{_charts_of(result, components, energy)}'
            "</div></section>"]
    return _html.page(f"Estimation with {model.get('model_name', '?')}", body)


def _energy(result: pd.DataFrame, components: list[str]) -> dict[str, np.ndarray]:
    """Joules of each row: its predicted power times the interval it stands for (as `estimate` sums)."""
    dt = intervals(result)
    return {c: result[f"predicted_{c}_power"].to_numpy(float) * dt for c in components}


def _measured(result: pd.DataFrame, component: str) -> pd.Series | None:
    column = f"measured_{component}_power"
    return result[column] if column in result and result[column].notna().any() else None


def _component_cells(result: pd.DataFrame, component: str, energy: dict[str, np.ndarray]) -> list[str]:
    predicted = result[f"predicted_{component}_power"].to_numpy(float)
    measured = _measured(result, component)
    mae, rows = None, 0
    if measured is not None:
        both = measured.notna().to_numpy()
        mae, rows = round(float(np.mean(np.abs(measured.to_numpy(float)[both] - predicted[both]))), 4), int(both.sum())
    return [_html.cell(component), _html.cell(round(float(energy[component].sum()), 3), "energy_joules", number=True),
            _html.cell(round(float(predicted.mean()), 4) if len(predicted) else 0.0, "mean_power_watts", number=True),
            _html.cell(mae, "mae", number=True), _html.cell(rows, "measured_rows", number=True)]


def _charts_of(result: pd.DataFrame, components: list[str], energy: dict[str, np.ndarray]) -> str:
    if result.empty:
        return "<p>The result has no rows.</p>"
    keep = evenly_spaced(len(result))
    drawn = result.iloc[keep]
    timestamps = rounded(drawn["timestamp"].to_numpy(float))
    predicted = {c: rounded(drawn[f"predicted_{c}_power"].to_numpy(float)) for c in components}
    measured = {c: rounded(m.to_numpy(float)[keep]) for c in components if (m := _measured(result, c)) is not None}
    charts = [_charts.power_over_time("estimated power", timestamps, _charts.breaks(drawn["instance"].tolist()),
                                      components, predicted, measured or None)]
    # energy accumulated in time order over every node and every row, drawn at evenly spaced rows
    order = np.argsort(result["timestamp"].to_numpy(float), kind="stable")
    at = evenly_spaced(len(order))
    cumulative = {c: rounded(np.cumsum(energy[c][order])[at]) for c in components}
    charts.append(_charts.power_over_time("cumulative estimated energy",
                                          rounded(result["timestamp"].to_numpy(float)[order][at]),
                                          [False] * len(at), components, cumulative, y_label="energy (J)"))
    if measured:
        charts.append(_charts.predicted_vs_measured(list(measured), {c: predicted[c] for c in measured}, measured))
    return "".join(charts)
