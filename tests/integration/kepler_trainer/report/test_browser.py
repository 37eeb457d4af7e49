"""The report pages in a real headless Chromium: they load offline with no console error and no request
but the page itself, every chart renders with the expected series, and the numbers shown equal the
model metadata (and the estimation summary) read from disk here."""

from __future__ import annotations

import json
import math
import shutil

import httpx
import pytest

from tests.support.browser import browser, visit
from tests.support.reports import check, kepler_model, models_on_disk, train_all
from tests.support.server import ServerProcess

CHARTS = """() => [...document.querySelectorAll('svg.chart')].map(svg => {
  const box = svg.getBoundingClientRect();
  return {kind: svg.dataset.kind, declared: +svg.dataset.series, width: box.width, height: box.height,
          group: svg.closest('section').dataset.group || svg.closest('section').id,
          series: [...svg.querySelectorAll('g.series')].map(g => {
            const b = g.getBBox();
            return {name: g.dataset.name, points: +g.dataset.points, width: b.width, height: b.height,
                    marks: g.querySelector('path')
                        ? (g.querySelector('path').getAttribute('d').match(/M/g) || []).length
                                                   : g.querySelectorAll('rect').length};
          })};
})"""
ROWS = """(selector) => [...document.querySelectorAll(selector)].map(tr => ({model: tr.dataset.model,
  best: tr.classList.contains('best'),
  cells: Object.fromEntries([...tr.querySelectorAll('td[data-key]')].map(td =>
    [td.dataset.key, {value: td.dataset.value === undefined ? null : Number(td.dataset.value),
                      text: td.textContent}]))}))"""


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return train_all(tmp_path_factory.mktemp("report-browser"))


@pytest.fixture(scope="module")
def chromium():
    with browser() as context:
        yield context


def held_out(pipeline, group_key):
    return json.loads((pipeline / "report" / (group_key.replace("/", "_") + ".json")).read_text())


def assert_offline(seen, url):
    assert seen.problems == []
    assert seen.requests == [url], "the page asked for something beyond itself"


def assert_charts(charts, pipeline):
    """Each group: a line chart (measured and predicted per component), a scatter (one per component),
    and bars by held-out block when the split had blocks; every one drawn with a non-zero size."""
    by_group = {}
    for chart in charts:
        assert chart["width"] > 100 and chart["height"] > 100, chart
        assert len(chart["series"]) == chart["declared"]
        by_group.setdefault(chart["group"], []).append(chart)
    groups = {"/".join(k.split("/")[:3]) for k in models_on_disk(pipeline)}
    assert set(by_group) == groups
    for group, found in by_group.items():
        sample = held_out(pipeline, group)
        components, drawn = sample["components"], len(sample["timestamp"])
        kinds = [c["kind"] for c in found]
        assert kinds == ["line", "scatter"] + (["bar"] if sample["blocks"] else [])
        line, scatter = found[0], found[1]
        assert [s["name"] for s in line["series"]] == [f"{c} {w}" for c in components for w in ("measured",
                                                                                                "predicted")]
        assert [s["name"] for s in scatter["series"]] == components
        for series in line["series"] + scatter["series"]:
            assert series["points"] == drawn and series["marks"] >= 1
        for series in line["series"]:
            assert series["width"] > 0, f"{group}: {series['name']} drew nothing"
        assert any(s["width"] > 0 and s["height"] > 0 for s in scatter["series"])
        if sample["blocks"]:
            bars = found[2]["series"]
            assert [s["name"] for s in bars] == components
            for series in bars:
                assert series["marks"] == len(sample["blocks"])
                if any(b["mae"][series["name"]] > 0 for b in sample["blocks"]):
                    assert series["width"] > 0 and series["height"] > 0, f"{group}: no bar for {series['name']}"


def _number(text):
    return float(text.replace(",", ""))


def assert_row_matches(cells, metadata):
    components = [k.removesuffix("_r2") for k in metadata if k.endswith("_r2")]
    r2 = [metadata[f"{c}_r2"] for c in components if metadata[f"{c}_r2"] is not None]
    exact = {"mae": metadata["mae"], "mape": metadata["mape"], "r2_min": min(r2) if r2 else None}
    for key, value in exact.items():  # the exact figure in data-value, the text rounded to 4 digits
        assert cells[key]["value"] == value, key
        assert math.isclose(_number(cells[key]["text"]), value, rel_tol=5e-4), key
    assert cells["model_name"]["text"] == metadata["model_name"]
    assert _number(cells["train_rows"]["text"]) == metadata["evaluation"]["train_rows"]
    assert _number(cells["test_rows"]["text"]) == metadata["evaluation"]["test_rows"]
    assert cells["passed_gate"]["text"] == ("pass" if metadata["passed_gate"] else "fail")
    assert cells["split"]["text"].startswith(metadata["evaluation"]["split"])
    if "kepler_weights" not in metadata:
        assert cells["kepler_weights"]["text"] == "unknown"


@pytest.mark.parametrize("name", ["real", "blocks"])
def test_pipeline_report_renders_offline_with_the_metadata_numbers(trained, chromium, name):
    pipeline = trained["models"] / name
    url = (pipeline / "report.html").as_uri()
    seen = visit(chromium, url)
    assert_offline(seen, url)
    assert_charts(seen.page.evaluate(CHARTS), pipeline)
    on_disk = models_on_disk(pipeline)
    rows = seen.page.evaluate(ROWS, "section.group table.models tbody tr")
    assert sorted(r["model"] for r in rows) == sorted(on_disk)
    for row in rows:
        assert_row_matches(row["cells"], on_disk[row["model"]])
    # the overview: per group, the lowest-MAE model, found here from the metadata files
    lowest = {}
    for path, metadata in on_disk.items():
        group = "/".join(path.split("/")[:3])
        if group not in lowest or metadata["mae"] < on_disk[lowest[group]]["mae"]:
            lowest[group] = path
    overview = seen.page.evaluate(ROWS, "section#summary tbody tr")
    assert sorted(r["model"] for r in overview) == sorted(lowest.values())
    seen.page.close()


def test_served_report_is_the_published_page_and_stays_offline(trained, chromium):
    with ServerProcess(trained["models"]) as server:
        url = f"{server.url}/pipelines/real/report"
        answer = httpx.get(url)
        assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/html")
        assert "default-src 'none'" in answer.headers["content-security-policy"]
        assert answer.content == (trained["models"] / "real" / "report.html").read_bytes()
        seen = visit(chromium, url)
        assert_offline(seen, url)
        assert len(seen.page.evaluate(CHARTS)) == 2 * len({k.rsplit("/", 1)[0]
                                                           for k in models_on_disk(trained["models"] / "real")})
        seen.page.close()


def test_estimation_report_renders_offline_with_the_estimation_summary(trained, chromium):
    folder = trained["estimation"]
    url = (folder / "report.html").as_uri()
    seen = visit(chromium, url)
    assert_offline(seen, url)
    summary = json.loads((folder / "estimation.json").read_text())
    components = list(summary["components"])
    charts = seen.page.evaluate(CHARTS)
    assert [c["kind"] for c in charts] == ["line", "line", "scatter"]  # the 2023 dump has measured power
    assert [s["name"] for s in charts[0]["series"]] == [f"{c} {w}" for c in components for w in ("measured",
                                                                                                 "predicted")]
    assert [s["name"] for s in charts[1]["series"]] == components
    for chart in charts:
        assert chart["width"] > 100 and chart["height"] > 100 and len(chart["series"]) == chart["declared"]
    rows = seen.page.evaluate(ROWS, "table.components tbody tr")
    assert len(rows) == len(components)
    for component, row in zip(components, rows, strict=False):
        expected = summary["components"][component]
        for key in ("energy_joules", "mean_power_watts", "mae"):
            assert row["cells"][key]["value"] == pytest.approx(expected[key], abs=1e-3), (component, key)
    assert all(_number(r["cells"]["measured_rows"]["text"]) == summary["samples"] for r in rows)
    seen.page.close()


def test_served_report_route_is_documented_and_refuses_clearly(trained, tmp_path):
    models = tmp_path / "models"
    shutil.copytree(trained["models"] / "real", models / "old")
    (models / "old" / "report.html").unlink()  # as published before reports existed
    with ServerProcess(models) as server:
        assert "/pipelines/{name}/report" in httpx.get(f"{server.url}/openapi.json").json()["paths"]
        missing = httpx.get(f"{server.url}/pipelines/old/report")
        assert missing.status_code == 404 and "kepler-model report -p old" in missing.json()["message"]
        assert httpx.get(f"{server.url}/pipelines/nope/report").status_code == 404
        assert httpx.get(f"{server.url}/pipelines/a%2Fb/report").status_code in (400, 404)
        assert httpx.get(f"{server.url}/pipelines/.hidden/report").json()["error"] == "InvalidName"
        # `kepler-model report` rewrites the page in place: served from the next request
        check(kepler_model("report", "-p", "old", "--model-path", str(models)))
        assert httpx.get(f"{server.url}/pipelines/old/report").content == (models / "old" / "report.html").read_bytes()
