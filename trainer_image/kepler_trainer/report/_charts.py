"""The charts both reports draw, from plain columns: power over time (measured solid, predicted
dashed, one colour per component) and predicted against measured."""

from __future__ import annotations

from collections.abc import Sequence

from . import _svg

Column = Sequence[float | None]


def breaks(instances: Sequence[str], blocks: Sequence[str] | None = None) -> list[bool]:
    """A new line segment where the node (or the held-out block) changes."""
    blocks = blocks or [""] * len(instances)
    return [i > 0 and (instances[i] != instances[i - 1] or blocks[i] != blocks[i - 1]) for i in range(len(instances))]


def power_over_time(title: str, timestamps: Column, cuts: list[bool], components: list[str],
                    predicted: dict[str, Column], measured: dict[str, Column] | None = None,
                    y_label: str = "power (W)") -> str:
    series = []
    for i, c in enumerate(components):
        colour = _svg.colour(c, i)
        if measured is not None and c in measured:
            series.append(_svg.Series(f"{c} measured", timestamps, measured[c], colour, breaks=cuts))
        series.append(_svg.Series(f"{c} predicted" if measured else c, timestamps, predicted[c], colour,
                                  dashed=measured is not None, breaks=cuts))
    return _svg.line_chart(title, series, "time (UTC)", y_label)


def predicted_vs_measured(components: list[str], predicted: dict[str, Column], measured: dict[str, Column]) -> str:
    series = [_svg.Series(c, measured[c], predicted[c], _svg.colour(c, i)) for i, c in enumerate(components)]
    return _svg.scatter_chart("predicted against measured", series, "measured (W)", "predicted (W)")
