"""The hand-written SVG charts and the held-out sample they draw from."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from kepler_trainer.report import _svg
from kepler_trainer.report._heldout import MAX_ROWS, sample


def decode(path: str) -> list[list[tuple[float, float]]]:
    """The absolute points of each segment of an `M x y l dx dy ...` path."""
    segments = []
    for move in re.findall(r"M[^M]+", path):
        numbers = [float(n) for n in re.findall(r"-?\d*\.?\d+", move)]
        points = [(numbers[0], numbers[1])]
        for dx, dy in zip(numbers[2::2], numbers[3::2], strict=False):
            points.append((round(points[-1][0] + dx, 1), round(points[-1][1] + dy, 1)))
        segments.append(points)
    return segments


def test_line_chart_draws_each_point_where_it_belongs_and_breaks_at_gaps():
    x = [1, 2, 3, 4, 5, 6]
    series = _svg.Series("a", x, [1.0, 2.0, None, 4.0, 5.0, 6.0], "#000",
                         breaks=[False, False, False, False, True, False])
    svg = _svg.line_chart("t", [series], "x", "y")
    path = re.search(r'<g class="series"[^>]*><path d="([^"]+)"', svg).group(1)
    segments = decode(path)
    assert [len(s) for s in segments] == [2, 1, 2]  # [1,2] [4] [5,6]
    left, top, width, height = map(float, re.search(
        r'<rect x="([\d.]+)" y="([\d.]+)" width="([\d.]+)" height="([\d.]+)" class="plot-area"', svg).groups())
    drawn = [p for s in segments for p in s]
    assert [p[0] for p in drawn] == [round(left + (v - 1) / 5 * width, 1) for v in (1, 2, 4, 5, 6)]
    ys = [p[1] for p in drawn]
    assert ys == sorted(ys, reverse=True) and all(top <= y <= top + height for y in ys)
    assert 'data-series="1"' in svg and 'data-points="5"' in svg


def test_names_are_escaped():
    svg = _svg.scatter_chart("<b>", [_svg.Series('x"><script>', [1.0], [1.0], "#000")], "m", "p")
    assert "<script>" not in svg and "<b>" not in svg


def test_scatter_has_the_identity_line_from_corner_to_corner():
    svg = _svg.scatter_chart("t", [_svg.Series("a", [0.0, 10.0], [1.0, 9.0], "#000")], "m", "p")
    x1, y1, x2, y2 = map(float, re.search(r'class="identity" x1="([\d.]+)" y1="([\d.]+)" x2="([\d.]+)" '
                                          r'y2="([\d.]+)"', svg).groups())
    assert x1 == _svg.MARGIN_LEFT and x2 == _svg.WIDTH - _svg.MARGIN_RIGHT and y1 > y2


def test_ticks_cover_the_range_with_round_steps():
    ticks = _svg._ticks(0.3, 97.0)
    assert ticks[0] >= 0.3 and ticks[-1] <= 97.0 and len(ticks) >= 4
    assert len({round(b - a, 9) for a, b in zip(ticks, ticks[1:], strict=False)}) == 1


def test_held_out_sample_is_bounded_time_ordered_and_errors_use_every_row():
    n = 3000
    rng = np.random.default_rng(1)
    data = pd.DataFrame({"timestamp": np.arange(n, dtype=float)[::-1], "instance": ["a"] * n,
                         "package_power": rng.uniform(10, 50, n)})
    folds = [np.arange(0, 1000), np.arange(1000, n)]
    predicted = [pd.DataFrame({"package_power": data["package_power"].iloc[f] + 1.5}, index=data.index[f])
                 for f in folds]
    kept = sample(data, ["package_power"], predicted, ["x", "y"])
    assert kept["rows"] == n and len(kept["timestamp"]) == MAX_ROWS
    stamps = kept["timestamp"]
    assert stamps == sorted(stamps) and stamps[0] == 0 and stamps[-1] == n - 1
    assert [b["rows"] for b in kept["blocks"]] == [1000, 2000]
    assert all(abs(b["mae"]["package"] - 1.5) < 1e-9 for b in kept["blocks"])
    assert all(abs(p - m - 1.5) < 2e-3 for p, m in zip(kept["predicted"]["package"], kept["measured"]["package"],
                                                       strict=False))
    assert sample(data, ["package_power"], predicted[:1], ["held-out"])["blocks"] == []


def test_a_level_run_is_one_step_and_overlapping_dots_one_dot():
    flat = _svg.Series("zero", [1, 2, 3, 4], [0.0, 0.0, 0.0, 0.0], "#000")
    rising = _svg.Series("one", [1, 2, 3, 4], [1.0, 1.0, 2.0, 2.0], "#111")
    svg = _svg.line_chart("t", [flat, rising], "x", "y")
    paths = re.findall(r'<g class="series"[^>]*><path d="([^"]+)"', svg)
    (zero,), (one,) = decode(paths[0]), decode(paths[1])
    assert len(zero) == 2 and zero[0][1] == zero[1][1] and zero[1][0] > zero[0][0]  # first to last, level
    assert len(one) == 4 and one[0][1] == one[1][1] > one[2][1] == one[3][1]  # level, up, level
    scatter = _svg.scatter_chart("s", [_svg.Series("z", [0.0] * 50 + [5.0], [0.0] * 50 + [5.0], "#000")], "m", "p")
    dots = re.search(r'<g class="series" data-name="z" data-points="51"><path d="([^"]+)"', scatter).group(1)
    assert dots.count("M") == 2


def test_kepler_loadability_is_shown_as_recorded_else_unknown():
    from kepler_trainer.report._pipeline import loadable

    assert loadable({}) == "unknown"
    assert loadable({"kepler_weights": True}) == "yes" and loadable({"kepler_weights": False}) == "no"
    assert loadable({"kepler_weights": {"0.7.12": True, "0.7.11": False}}) == "0.7.11: no, 0.7.12: yes"
