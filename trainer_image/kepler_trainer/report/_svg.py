"""Static SVG charts, written by hand: lines over time, predicted-vs-measured scatter, grouped bars.

No plotting library: a chart is a few hundred bytes of axes plus one `<path>` per series, so a page
with dozens of charts stays small, needs no script, and renders in any browser offline. Each series
is a `<g class="series" data-name=...>`, which is what the browser tests count.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from html import escape

WIDTH, HEIGHT = 600, 240
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 52, 12, 24, 34
LEGEND_ROW = 16
PALETTE = {"package": "#1f77b4", "core": "#e6720c", "uncore": "#2a9d2a", "dram": "#c62828",
           "platform": "#7b4fb8"}
EXTRA_COLOURS = ("#8c564b", "#d6338f", "#5f6b73", "#9aa11f", "#14a3b8")
HEADROOM = 0.04  # above the highest value, so that the top mark stays inside the frame
UNIX_TIME_FLOOR = 1e8  # x values above this are seconds since the epoch: ticks show clock time


def colour(name: str, index: int) -> str:
    return PALETTE.get(name, EXTRA_COLOURS[index % len(EXTRA_COLOURS)])


@dataclass
class Series:
    """One line or point cloud. `breaks[i]` true starts a new segment at point i (another node,
    another held-out block); a None value leaves a gap."""

    name: str
    x: Sequence[float | None]
    y: Sequence[float | None]
    colour: str
    dashed: bool = False
    breaks: Sequence[bool] = field(default_factory=list)


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values covering [low, high]."""
    if not (math.isfinite(low) and math.isfinite(high)) or high <= low:
        return [low] if math.isfinite(low) else [0.0]
    raw = (high - low) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.ceil(low / step) * step
    return [first + i * step for i in range(int((high - first) / step + 1e-9) + 1)]


def _label(value: float, clock: bool) -> str:
    if clock:
        return datetime.fromtimestamp(value, UTC).strftime("%H:%M")
    return f"{value:g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.1e}"


def _extent(values: list[float], pad_zero: bool = False, headroom: float = 0.0) -> tuple[float, float]:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return 0.0, 1.0
    low, high = min(finite), max(finite)
    if pad_zero:
        low = min(low, 0.0)
    if high - low < 1e-9:
        high = low + 1.0
    return low, high + (high - low) * headroom


class _Frame:
    """The plotting area of one chart: data -> pixel mapping, axes and legend."""

    def __init__(self, x_range: tuple[float, float], y_range: tuple[float, float], legend_rows: int,
                 width: int = WIDTH, height: int = HEIGHT):
        self.width, self.height = width, height + legend_rows * LEGEND_ROW
        self.left, self.right = MARGIN_LEFT, width - MARGIN_RIGHT
        self.top, self.bottom = MARGIN_TOP + legend_rows * LEGEND_ROW + 6, self.height - MARGIN_BOTTOM
        self.x0, self.x1 = x_range
        self.y0, self.y1 = y_range

    def px(self, x: float) -> float:
        return self.left + (x - self.x0) / (self.x1 - self.x0) * (self.right - self.left)

    def py(self, y: float) -> float:
        return self.bottom - (y - self.y0) / (self.y1 - self.y0) * (self.bottom - self.top)

    def axes(self, x_label: str, y_label: str, clock: bool, x_ticks: list[float] | None = None) -> str:
        parts = [f'<g class="axes"><rect x="{self.left}" y="{self.top}" width="{self.right - self.left}" '
                 f'height="{self.bottom - self.top}" class="plot-area"/>']
        for y in _ticks(self.y0, self.y1):
            py = _n(self.py(y))
            parts.append(f'<line x1="{self.left}" x2="{self.right}" y1="{py}" y2="{py}" class="grid"/>'
                         f'<text x="{self.left - 4}" y="{py}" class="ty">{_label(y, False)}</text>')
        for x in x_ticks if x_ticks is not None else _ticks(self.x0, self.x1):
            px = _n(self.px(x))
            parts.append(f'<text x="{px}" y="{self.bottom + 14}" class="tx">{escape(_label(x, clock))}</text>')
        parts.append(f'<text x="{(self.left + self.right) / 2:g}" y="{self.height - 4}" class="axis-label" '
                     f'text-anchor="middle">{escape(x_label)}</text>'
                     f'<text transform="translate(12 {(self.top + self.bottom) / 2:g}) rotate(-90)" '
                     f'class="axis-label" text-anchor="middle">{escape(y_label)}</text></g>')
        return "".join(parts)

    def legend(self, entries: list[tuple[str, str, bool]]) -> str:
        """Swatches in rows of three above the plot area."""
        parts = ['<g class="legend">']
        for i, (name, fill, dashed) in enumerate(entries):
            x, y = self.left + (i % 3) * 170, MARGIN_TOP + 6 + (i // 3) * LEGEND_ROW
            dash = ' stroke-dasharray="4 3"' if dashed else ""
            parts.append(f'<line x1="{x}" x2="{x + 18}" y1="{y}" y2="{y}" stroke="{fill}" stroke-width="2"{dash}/>'
                         f'<text x="{x + 22}" y="{y}" class="lg">{escape(name)}</text>')
        parts.append("</g>")
        return "".join(parts)


def _n(value: float) -> str:
    """A pixel coordinate, to a tenth of a pixel, without trailing zeros."""
    text = f"{value:.1f}"
    return text[:-2] if text.endswith(".0") else text


def _legend_rows(count: int) -> int:
    return (count + 2) // 3


def _svg(kind: str, title: str, frame: _Frame, body: str, series_count: int) -> str:
    return (f'<svg class="chart" data-kind="{kind}" data-series="{series_count}" role="img" '
            f'xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {frame.width} {frame.height}" '
            f'width="{frame.width}" height="{frame.height}"><title>{escape(title)}</title>'
            f'<text x="{frame.left}" y="14" class="chart-title">{escape(title)}</text>{body}</svg>')


def line_chart(title: str, series: list[Series], x_label: str, y_label: str) -> str:
    """Lines over x (clock time when x is epoch seconds); each series a `<path>`."""
    x_range = _extent([x for s in series for x in s.x])
    clock = x_range[0] > UNIX_TIME_FLOOR
    frame = _Frame(x_range, _extent([y for s in series for y in s.y], pad_zero=True, headroom=HEADROOM),
                   _legend_rows(len(series)))
    body = [frame.axes(x_label, y_label, clock), frame.legend([(s.name, s.colour, s.dashed) for s in series])]
    for s in series:
        dash = ' stroke-dasharray="4 3"' if s.dashed else ""
        body.append(f'<g class="series" data-name="{escape(s.name)}" data-points="{_count(s)}">'
                    f'<path d="{_line_path(frame, s)}" fill="none" stroke="{s.colour}" stroke-width="1.4"'
                    f'{dash}/></g>')
    return _svg("line", title, frame, "".join(body), len(series))


def _count(s: Series) -> int:
    return sum(1 for x, y in zip(s.x, s.y, strict=False) if x is not None and y is not None)


def _line_path(frame: _Frame, s: Series) -> str:
    """Each segment as `M x y l dx dy dx dy ...`: relative steps between positions rounded to a tenth of
    a pixel (so they add up exactly), in SVG's short number forms: about 7 bytes a point."""
    segments: list[list[tuple[int, int]]] = []
    pen_down = False
    for i, (x, y) in enumerate(zip(s.x, s.y, strict=False)):
        if x is None or y is None:
            pen_down = False
            continue
        if not pen_down or (i < len(s.breaks) and s.breaks[i]):
            segments.append([])
        segments[-1].append((round(frame.px(x) * 10), round(frame.py(y) * 10)))
        pen_down = True
    return "".join(_segment(points) for points in segments)


def _segment(points: list[tuple[int, int]]) -> str:
    """One segment; a run of level steps (a component at a constant value) becomes one step."""
    (x0, y0), steps = points[0], []
    for (a, b), (c, d) in zip(points, points[1:], strict=False):
        if steps and d == b and steps[-1][1] == 0:
            steps[-1] = (steps[-1][0] + c - a, 0)
        else:
            steps.append((c - a, d - b))
    numbers = [_tenths(v) for step in steps for v in step]
    text = f"M{_tenths(x0)} {_tenths(y0)}"
    if numbers:
        text += "l" + numbers[0] + "".join(t if t.startswith("-") else " " + t for t in numbers[1:])
    return text


def _tenths(value: int) -> str:
    """An integer number of tenths as SVG's shortest decimal: 12 -> 1.2, 5 -> .5, -5 -> -.5, 30 -> 3."""
    sign, whole, tenth = "-" if value < 0 else "", abs(value) // 10, abs(value) % 10
    if tenth == 0:
        return f"{sign}{whole}"
    return f"{sign}{whole if whole else ''}.{tenth}"


def scatter_chart(title: str, series: list[Series], x_label: str, y_label: str) -> str:
    """Predicted (y) against measured (x), same scale on both axes, with the identity line y = x.
    Points are zero-length round-capped path segments: a few bytes each."""
    low, high = _extent([v for s in series for v in (*s.x, *s.y)], pad_zero=True)
    frame = _Frame((low, high), (low, high), _legend_rows(len(series) + 1))
    body = [frame.axes(x_label, y_label, False),
            frame.legend([(s.name, s.colour, False) for s in series] + [("y = x", "#555", True)]),
            f'<line class="identity" x1="{_n(frame.px(low))}" y1="{_n(frame.py(low))}" x2="{_n(frame.px(high))}" '
            f'y2="{_n(frame.py(high))}" stroke="#555" stroke-dasharray="4 3"/>']
    for s in series:
        # whole pixels (a dot is 3.5 px wide), each pixel once: overlapping dots add nothing to see
        pixels = dict.fromkeys((round(frame.px(x)), round(frame.py(y))) for x, y in zip(s.x, s.y, strict=False)
                               if x is not None and y is not None)
        dots = "".join(f"M{x} {y}h0" for x, y in pixels)
        body.append(f'<g class="series" data-name="{escape(s.name)}" data-points="{_count(s)}">'
                    f'<path d="{dots}" stroke="{s.colour}" stroke-width="3.5" stroke-linecap="round" '
                    f'stroke-opacity="0.6"/></g>')
    return _svg("scatter", title, frame, "".join(body), len(series))


def bar_chart(title: str, categories: list[str], series: list[Series], y_label: str) -> str:
    """Grouped bars: one group per category (a held-out block), one bar per series (`y` by category)."""
    frame = _Frame((0.0, float(len(categories))), _extent([y for s in series for y in s.y], pad_zero=True,
                                                          headroom=HEADROOM),
                   _legend_rows(len(series)))
    slot = (frame.right - frame.left) / max(len(categories), 1)
    bar = slot * 0.8 / max(len(series), 1)
    body = [frame.axes("held-out block", y_label, False, x_ticks=[]),
            frame.legend([(s.name, s.colour, False) for s in series])]
    for i, name in enumerate(categories):
        body.append(f'<text x="{_n(frame.left + slot * (i + 0.5))}" y="{frame.bottom + 14}" class="tx">'
                    f'{escape(name[:16])}</text>')
    for j, s in enumerate(series):
        rects = []
        for i, y in enumerate(s.y):
            if y is None:
                continue
            top = frame.py(max(y, 0.0))
            rects.append(f'<rect x="{_n(frame.left + slot * (i + 0.1) + bar * j)}" y="{_n(top)}" width="{_n(bar)}" '
                         f'height="{_n(frame.py(0.0) - top)}"><title>{escape(categories[i])}: {y:g}</title></rect>')
        body.append(f'<g class="series" data-name="{escape(s.name)}" data-points="{len(rects)}" '
                    f'fill="{s.colour}">{"".join(rects)}</g>')
    return _svg("bar", title, frame, "".join(body), len(series))
