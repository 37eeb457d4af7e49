"""The report of a published pipeline, read from its folder alone (docs/contracts.md layout): the
models table, the best model's held-out predictions per model group, and where the data came from."""

from __future__ import annotations

import json
from dataclasses import dataclass
from html import escape
from pathlib import Path

from . import _charts, _heldout, _html, _svg

MAX_JSON_BYTES = 16 * 1024 * 1024
SHOWN_ARGUMENTS_SKIP = {"func", "verbose", "quiet", "command", "termination_log", "output"}
PROMETHEUS_ARGUMENTS = {"server", "interval", "start_time", "end_time", "step", "metric_prefix", "label_filter",
                        "thirdparty_metrics", "benchmark", "bearer_token_file", "ca_file",
                        "insecure_skip_tls_verify", "timeout", "retries", "concurrency"}
"""Flags of `-s` (cli.add_prometheus_arguments): not shown when the data came from `-i` files."""


@dataclass
class Group:
    """One model group (`<source>/<OutputType>/<feature group>`) and its models' metadata."""

    source: str
    output_type: str
    feature_group: str
    models: list[dict]

    @property
    def key(self) -> str:
        return f"{self.source}/{self.output_type}/{self.feature_group}"


def read_json(path: Path) -> dict:
    """A JSON object of the pipeline, or {} for a missing, oversized, non-regular or invalid file."""
    try:
        if path.is_symlink() or not path.is_file() or path.stat().st_size > MAX_JSON_BYTES:
            return {}
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def groups(folder: Path) -> list[Group]:
    """Every model group with at least one model, in folder order (source, output type, group)."""
    found: dict[tuple[str, str, str], list[dict]] = {}
    for meta_file in sorted(folder.glob("*/*/*/*/metadata.json")):
        source, ot, group, _model = meta_file.relative_to(folder).parts[:4]
        if ot not in ("AbsPower", "DynPower"):
            continue
        metadata = read_json(meta_file)
        if metadata.get("model_name"):
            found.setdefault((source, ot, group), []).append(metadata)
    return [Group(s, ot, g, sorted(models, key=_mae_order)) for (s, ot, g), models in sorted(found.items())]


def _mae_order(metadata: dict) -> float:
    mae = metadata.get("mae")
    return float(mae) if isinstance(mae, (int, float)) else float("inf")


def build(folder: Path) -> str:
    """The report page of the pipeline published in `folder`."""
    pipeline = read_json(folder / "metadata.json")
    name = pipeline.get("name") or folder.name
    found = groups(folder)
    body = [f"<header><h1>Power models of pipeline {escape(name)}</h1>",
            f'<p class="muted">{sum(len(g.models) for g in found)} models in {len(found)} groups; '
            f'last trained {escape(str(pipeline.get("last_update_time", "?")))} UTC. Errors are measured on '
            "rows the model did not train on (the held-out rows of its split).</p></header>",
            _provenance(folder, pipeline), _overview(found), _skipped(pipeline)]
    body += [_group_section(folder, g) for g in found]
    return _html.page(f"Pipeline {name}: model report", body)


# -- where the models came from ---------------------------------------------------------------------

def _provenance(folder: Path, pipeline: dict) -> str:
    arguments = read_json(folder / "train_arguments.json")
    index = read_json(folder / "node_type_index.json")
    machines = "".join(
        f"<h3>node type {escape(node_type)}</h3>"
        + _html.key_values([*sorted((entry.get("attrs") or {}).items()),
                            ("members", entry.get("members") or [])])
        for node_type, entry in sorted(index.items()) if isinstance(entry, dict))
    gate = pipeline.get("max_mae")
    when = [("first trained", pipeline.get("init_time")), ("last trained", pipeline.get("last_update_time")),
            ("extractor", pipeline.get("extractor")), ("isolator", pipeline.get("isolator")),
            ("held-out split", _split_text(pipeline.get("evaluation") or {})),
            ("accuracy gate", f"MAE ≤ {gate} W" if gate is not None else "none (every model is served)")]
    skip = SHOWN_ARGUMENTS_SKIP | (PROMETHEUS_ARGUMENTS if arguments.get("input") else set())
    flags = [(k, v) for k, v in sorted(arguments.items()) if k not in skip and v not in (None, "", False, [])]
    return ('<section id="provenance"><h2>Provenance</h2><div class="charts"><div><h3>Training</h3>'
            f'{_html.key_values(when)}</div><div><h3>Machine</h3>{machines or "<p>unknown</p>"}</div>'
            f'<div><h3>Command-line flags</h3>{_html.key_values(flags)}</div></div></section>')


def _split_text(evaluation: dict) -> str:
    split = evaluation.get("split", "?")
    if split == "workload":
        return "leave each workload (or time block) out in turn"
    share = evaluation.get("test_size")
    part = f"{share:.0%}" if isinstance(share, (int, float)) else "part"
    held_out = f"last {part} of time" if split == "time" else f"random {part} of rows"
    return f"{held_out} (seed {evaluation.get('seed')})"


# -- the models table ---------------------------------------------------------------------------------

HEADERS = ["energy source", "output type", "feature group", "model", "MAE (W)", "MAPE (%)", "R² (lowest)",
           "gate", "Kepler-loadable", "training rows", "held-out rows", "split"]


def _overview(found: list[Group]) -> str:
    """The best model of every group, each row linking to the group's section."""
    rows = [_model_row(g, best, False, link=True) for g in found if (best := _best(g)) is not None]
    return (f'<section id="summary"><h2>Best model per group</h2><p class="muted">Lowest MAE that passed the '
            f'accuracy gate; every trainer\'s figures are in the group\'s section below. MAE and MAPE are the '
            f'largest over the components; per-component figures are in each cell\'s tooltip.</p>'
            f'{_html.table(HEADERS, rows, "models overview")}</section>')


def _group_table(group: Group) -> str:
    """Every model of the group, without the group's own name on each row (the section heading has it)."""
    best = _best(group)
    return _html.table(HEADERS[3:], [_model_row(group, m, m is best, whole=False) for m in group.models], "models")


def _best(group: Group) -> dict | None:
    passed = [m for m in group.models if m.get("passed_gate") is not False]
    return passed[0] if passed else None


def _components(metadata: dict) -> list[str]:
    return [k.removesuffix("_mae") for k in metadata if k.endswith("_mae") and k != "mae"]


def _model_row(group: Group, metadata: dict, best: bool, link: bool = False, whole: bool = True) -> str:
    components = _components(metadata)

    def per(suffix: str) -> str:  # the tooltip: each component's figure
        return "; ".join(f"{c} {metadata.get(f'{c}_{suffix}')}" for c in components)

    r2 = [metadata[f"{c}_r2"] for c in components if isinstance(metadata.get(f"{c}_r2"), (int, float))]
    evaluation = metadata.get("evaluation") or {}
    gate = metadata.get("passed_gate")
    split = evaluation.get("split")
    if evaluation.get("folds", 1) > 1:
        split = f"{split} ({evaluation['folds']} blocks)"
    where = [_html.cell(group.source), _html.cell(group.output_type),
             _html.cell(group.feature_group, link=f"#{_anchor(group)}" if link else "")] if whole else []
    cells = [
        *where,
        _html.cell(metadata.get("model_name"), "model_name"),
        _html.cell(metadata.get("mae"), "mae", number=True, title=per("mae")),
        _html.cell(metadata.get("mape"), "mape", number=True, title=per("mape")),
        _html.cell(min(r2) if r2 else None, "r2_min", number=True, title=per("r2")),
        _html.cell("pass" if gate is not False else "fail", "passed_gate", css="" if gate is not False else "fail"),
        _html.cell(loadable(metadata), "kepler_weights"),
        _html.cell(evaluation.get("train_rows"), "train_rows", number=True),
        _html.cell(evaluation.get("test_rows"), "test_rows", number=True),
        _html.cell(split, "split"),
    ]
    path = f"{group.key}/{metadata.get('model_name')}"
    css = ' class="best"' if best else ""
    return f'<tr data-model="{escape(path)}"{css}>{"".join(cells)}</tr>'


def loadable(metadata: dict) -> str:
    """Whether Kepler can load the model's weights, as its metadata records it (`kepler_weights`);
    "unknown" for metadata written before that was checked."""
    return _yes_no(metadata.get("kepler_weights"))


def _yes_no(value: object) -> str:
    """A flag as yes/no; a mapping (e.g. per Kepler version) as `key: yes, ...`."""
    if value is None:
        return "unknown"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_yes_no(v)}" for k, v in sorted(value.items())) or "no"
    return str(value)


def _skipped(pipeline: dict) -> str:
    skipped = [s for s in pipeline.get("skipped") or [] if isinstance(s, dict)]
    if not skipped:
        return ""
    rows = ["<tr>" + "".join(_html.cell(s.get(k)) for k in ("energy_source", "output_type", "feature_group",
                                                                "trainer", "reason")) + "</tr>" for s in skipped]
    return ('<section id="skipped"><h2>Skipped</h2>'
            + _html.table(["energy source", "output type", "feature group", "trainer", "reason"], rows, "skipped")
            + "</section>")


# -- per model group: the best model on its held-out rows ---------------------------------------------

def _group_section(folder: Path, group: Group) -> str:
    held = _heldout.read(folder, group.source, group.output_type, group.feature_group)
    head = f'<section class="group" id="{escape(_anchor(group))}" data-group="{escape(group.key)}"><h2>' \
           f'{escape(group.key.replace("/", " · "))}</h2>{_group_table(group)}'
    if not held or not held.get("components"):
        return head + '<p class="muted">No held-out predictions were kept for this group (published before ' \
                      'reports existed): retrain it to see them.</p></section>'
    shown = len(held.get("timestamp") or [])
    note = (f'<p>Best model <b>{escape(str(held.get("model_name")))}</b> (MAE {_html.text(held.get("mae"))} W) '
            f'on {held.get("rows")} held-out rows'
            f'{"" if shown == held.get("rows") else f", {shown} of them drawn"}.</p>')
    charts = [_time_chart(held, group), _scatter(held)]
    if held.get("blocks"):
        charts.append(_block_chart(held))
    return head + note + '<div class="charts">' + "".join(charts) + "</div></section>"


def _anchor(group: Group) -> str:
    return f"{group.source}-{group.output_type}-{group.feature_group}"


def _time_chart(held: dict, group: Group) -> str:
    cuts = _charts.breaks(held.get("instance") or [], held.get("fold"))
    return _charts.power_over_time(f"{group.output_type} over time, held-out rows", held["timestamp"], cuts,
                                   held["components"], held["predicted"], held["measured"])


def _scatter(held: dict) -> str:
    return _charts.predicted_vs_measured(held["components"], held["predicted"], held["measured"])


def _block_chart(held: dict) -> str:
    blocks = held["blocks"]
    series = [_svg.Series(c, list(range(len(blocks))), [b["mae"].get(c) for b in blocks], _svg.colour(c, i))
              for i, c in enumerate(held["components"])]
    return _svg.bar_chart("MAE by held-out block", [f'{b["label"]} ({b["rows"]})' for b in blocks], series,
                          "MAE (W)")
