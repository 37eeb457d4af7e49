"""The page around the charts: one HTML document, its style inlined, no script, and a content
security policy that forbids every fetch, so opening it can never reach the network."""

from __future__ import annotations

from collections.abc import Iterable
from html import escape

CSP = "default-src 'none'; style-src 'unsafe-inline'"
STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:1.5em auto;max-width:1240px;padding:0 1em;color:#222}
h1{font-size:1.5em;margin:.2em 0}h2{font-size:1.2em;margin:1.4em 0 .4em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.4em 0}th,td{padding:2px 8px;border-bottom:1px solid #eee;text-align:left}
td.n{text-align:right;font-variant-numeric:tabular-nums}tr.best td{background:#eef6ee;font-weight:600}
.fail{color:#b00020}.muted{color:#666}.charts{display:flex;flex-wrap:wrap;gap:8px}
svg.chart{font-size:11px;background:#fff}svg .plot-area{fill:#fafafa;stroke:#ccc}svg .grid{stroke:#e4e4e4}
svg .tx,svg .ty{fill:#555}svg .tx{text-anchor:middle}svg .ty{text-anchor:end;dominant-baseline:middle}
svg .lg{dominant-baseline:middle}svg .chart-title{font-weight:600;font-size:12px}dl.kv{display:grid;
grid-template-columns:max-content auto;gap:0 1em;margin:.4em 0}dl.kv dt{color:#555}dl.kv dd{margin:0}
"""


def page(title: str, body: Iterable[str]) -> str:
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
            f'<meta name="viewport" content="width=device-width,initial-scale=1">'
            f'<title>{escape(title)}</title><style>{STYLE}</style></head><body>{"".join(body)}</body></html>\n')


def key_values(pairs: Iterable[tuple[str, object]], css: str = "kv") -> str:
    items = "".join(f"<dt>{escape(str(k))}</dt><dd>{escape(text(v))}</dd>" for k, v in pairs)
    return f'<dl class="{css}">{items}</dl>'


def table(headers: list[str], rows: Iterable[str], css: str) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    return f'<table class="{css}"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def cell(value: object, key: str | None = None, number: bool = False, css: str = "", title: str = "",
         link: str = "") -> str:
    """A table cell; `key` names the metadata value it shows (`data-key`), for the tests to compare."""
    classes = " ".join(c for c in ("n" if number else "", css) if c)
    attrs = (f' class="{classes}"' if classes else "") + (f' title="{escape(title)}"' if title else "")
    if key:
        attrs += f' data-key="{escape(key)}"'
        if isinstance(value, float):  # the exact figure, where the text shows it rounded
            attrs += f' data-value="{value!r}"'
    shown = escape(text(value))
    return f'<td{attrs}><a href="{escape(link)}">{shown}</a></td>' if link else f"<td{attrs}>{shown}</td>"


def text(value: object) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
    if isinstance(value, (list, tuple)):
        return ", ".join(text(v) for v in value)
    return str(value)
