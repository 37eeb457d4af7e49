"""PromQL series selectors (`metric{label="value",...}`): parsed and matched with PromQL's semantics.

Standard library only: the feature sets (training) and the exporter (a slim image without pandas) share it.
"""

from __future__ import annotations

import re

_METRIC = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_SELECTOR = re.compile(rf"\s*({_METRIC})\s*(?:\{{(.*)\}})?\s*", re.DOTALL)
_MATCHER = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*(?:,|$)', re.DOTALL)


def parse_selector(query: str) -> tuple[str, list[tuple[str, str, str]]]:
    """(metric name, [(label, op, value)]) of a PromQL series selector; ValueError for anything else."""
    match = _SELECTOR.fullmatch(query)
    if not match:
        raise ValueError(f"not a PromQL series selector: {query!r} (expected metric{{label=\"value\",...}})")
    name, inner = match.group(1), (match.group(2) or "").strip()
    matchers, pos = [], 0
    while pos < len(inner):
        m = _MATCHER.match(inner, pos)
        if not m or m.end() == pos:
            raise ValueError(f"bad label matcher in {query!r} at {inner[pos:pos + 30]!r}")
        label, op, value = m.groups()
        value = re.sub(r"\\(.)", r"\1", value)
        if op in ("=~", "!~"):
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"bad regular expression {value!r} in {query!r}: {exc}") from None
        matchers.append((label, op, value))
        pos = m.end()
    return name, matchers


def matches(labels, matchers: list[tuple[str, str, str]]) -> bool:
    """PromQL semantics: a missing label is the empty string; regular expressions are anchored."""
    for label, op, value in matchers:
        have = labels.get(label, "")
        ok = {"=": have == value, "!=": have != value}.get(op)
        if ok is None:
            ok = bool(re.fullmatch(value, have)) == (op == "=~")
        if not ok:
            return False
    return True
