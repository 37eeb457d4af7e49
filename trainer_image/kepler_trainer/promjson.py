"""Read and write the query-output JSON (metric -> list of range-query series) without loading it whole.

The file is memory-mapped and walked by a small parser: labels and other small values are decoded
as JSON, while each `values` array, which holds nearly all the bytes, goes straight to numpy in one
call. Consumed pages are handed back to the kernel as the walk advances, so a 1 GB file costs
about the size of its numbers, not the size of its text. Writing goes to a temporary file that is
renamed into place.
"""

from __future__ import annotations

import io
import mmap
import os
import re
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import orjson

from .data import QueryResult, Series
from .errors import InputError

_WS = re.compile(rb"\s*")
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_SCALAR = re.compile(rb"-?[0-9][0-9.eE+-]*|true|false|null")
_VALUES_END = re.compile(rb"\]\s*\]")
_RELEASE_EVERY = 64 << 20  # give consumed pages back every 64 MiB
MAX_DEPTH = 512  # no query output nests deeper than 4; orjson itself stops at 1024


class _Parser:
    """A cursor over the mapped file; each method consumes one JSON construct."""

    def __init__(self, buf: mmap.mmap, path: Path):
        self.buf, self.path, self.pos = buf, path, 0
        self._released = 0

    # -- primitives ------------------------------------------------------------------------
    def fail(self, what: str) -> InputError:
        return InputError(f"{self.path}: not a Kepler query output ({what} at byte {self.pos})")

    def skip_ws(self) -> None:
        self.pos = _WS.match(self.buf, self.pos).end()

    def peek(self) -> bytes:
        self.skip_ws()
        return self.buf[self.pos : self.pos + 1]

    def expect(self, char: bytes) -> None:
        if self.peek() != char:
            raise self.fail(f"expected {char.decode()!r}")
        self.pos += 1

    def more(self, close: bytes) -> bool:
        """After an item: True if a comma follows, False if the container closes."""
        nxt = self.peek()
        self.pos += 1
        if nxt == b",":
            return True
        if nxt == close:
            return False
        self.pos -= 1
        raise self.fail(f"expected ',' or {close.decode()!r}")

    def string(self) -> str:
        self.skip_ws()
        m = _STRING.match(self.buf, self.pos)
        if not m:
            raise self.fail("expected a string")
        self.pos = m.end()
        return orjson.loads(m.group())

    def value(self) -> object:
        """Any small JSON value, decoded by orjson once its extent is known."""
        start = self._value_end_scan()
        return orjson.loads(self.buf[start : self.pos])

    def _value_end_scan(self) -> int:
        """Skip one value without recursion (a hostile file may nest 100,000 deep); returns its start."""
        self.skip_ws()
        start = self.pos
        closers: list[bytes] = []  # the closing bracket of each container we are in
        while True:
            ch = self.peek()
            if ch == b'"':
                self.string()
            elif ch in (b"{", b"["):
                if len(closers) >= MAX_DEPTH:
                    raise self.fail(f"nested deeper than {MAX_DEPTH}")
                self.pos += 1
                close = b"}" if ch == b"{" else b"]"
                if self.peek() == close:
                    self.pos += 1
                else:
                    closers.append(close)
                    if close == b"}":
                        self.string()
                        self.expect(b":")
                    continue
            else:
                m = _SCALAR.match(self.buf, self.pos)
                if not m:
                    raise self.fail("unexpected character")
                self.pos = m.end()
            # one value done: next item of the innermost container, or close containers
            while closers:
                if self.more(closers[-1]):
                    if closers[-1] == b"}":
                        self.string()
                        self.expect(b":")
                    break
                closers.pop()
            if not closers:
                return start

    def release_consumed(self) -> None:
        page_end = (self.pos // mmap.PAGESIZE) * mmap.PAGESIZE
        if page_end - self._released >= _RELEASE_EVERY:
            self.buf.madvise(mmap.MADV_DONTNEED, self._released, page_end - self._released)
            self._released = page_end

    # -- the query-output shapes --------------------------------------------------------------
    def samples(self, metric: str) -> tuple[bytes, int]:
        """The `values` array as `ts,value` lines (parsed later, a whole metric at once), and its length."""
        self.expect(b"[")
        if self.peek() == b"]":
            self.pos += 1
            return b"", 0
        m = _VALUES_END.search(self.buf, self.pos)
        if not m:
            raise self.fail(f"unterminated values of {metric}")
        raw = self.buf[self.pos : m.start()].translate(None, b' \t\r\n["')
        self.pos = m.end()
        return raw.replace(b"],", b"\n"), raw.count(b"],") + 1

    def series(self, metric: str) -> tuple[dict[str, str], bytes, int]:
        labels: dict[str, str] = {}
        lines, count = b"", 0
        self.expect(b"{")
        if self.peek() == b"}":
            self.pos += 1
        else:
            while True:
                key = self.string()
                self.expect(b":")
                if key == "values":
                    lines, count = self.samples(metric)
                elif key == "metric":
                    raw = self.value()
                    if not isinstance(raw, dict):
                        raise self.fail(f"labels of {metric} are not an object")
                    labels = {str(k): str(v) for k, v in raw.items()}
                else:
                    self.value()
                if not self.more(b"}"):
                    break
        return labels, lines, count

    def metric_series(self, metric: str) -> list[Series]:
        pending: list[tuple[dict[str, str], bytes, int]] = []
        self.expect(b"[")
        if self.peek() == b"]":
            self.pos += 1
            return []
        while True:
            pending.append(self.series(metric))
            self.release_consumed()
            if not self.more(b"]"):
                break
        return [Series(labels, ts, vs) for labels, ts, vs in _parse_samples(pending, self.fail, metric)]

    def document(self, keep: Callable[[str], bool]) -> QueryResult:
        result = QueryResult()
        self.expect(b"{")
        if self.peek() == b"}":
            return result
        while True:
            name = self.string()
            self.expect(b":")
            if keep(name):
                result.metrics[name] = self.metric_series(name)
            else:
                self._value_end_scan()
            if not self.more(b"}"):
                break
        return result


def _parse_samples(pending, fail, metric: str):
    """Parse the `ts,value` lines of all series of a metric in one pass of pandas' C parser."""
    import pandas as pd  # about three times faster than numpy's text parsing, but slow to import

    text = b"\n".join(lines for _, lines, count in pending if count)
    total = sum(count for _, _, count in pending)
    if total:
        try:
            table = pd.read_csv(io.BytesIO(text), header=None, names=["t", "v"], dtype=np.float64,
                                engine="c", na_filter=True, keep_default_na=False, na_values=["NaN"])
        except (ValueError, pd.errors.ParserError):
            raise fail(f"malformed sample in a series of {metric}") from None
        if len(table) != total or table["t"].isna().any():
            raise fail(f"malformed sample in a series of {metric}")
        ts_all, vs_all = table["t"].to_numpy(), table["v"].to_numpy()
    offset = 0
    for labels, _, count in pending:
        ts, vs = (ts_all[offset:offset + count], vs_all[offset:offset + count]) if count else (np.empty(0), np.empty(0))
        offset += count
        if ts.size > 1 and np.any(np.diff(ts) < 0):
            order = np.argsort(ts, kind="stable")
            ts, vs = ts[order], vs[order]
        yield labels, ts, vs


def resolve_input(name: str | os.PathLike[str], data_path: Path, suffix: str = ".json") -> Path:
    """A path as given if it exists, else the upstream convention `<data-path>/<stem><suffix>`."""
    given = Path(name)
    for candidate in (given, data_path / given, data_path / f"{given}{suffix}"):
        if candidate.is_file():
            return candidate
    raise InputError(f"input {str(name)!r} not found (looked for {given} and {data_path / given}{suffix})")


def load(path: str | os.PathLike[str], keep: Callable[[str], bool] = lambda name: True) -> QueryResult:
    """Read a query-output JSON file; `keep` selects metric names (others are skipped unparsed)."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            if os.fstat(handle.fileno()).st_size == 0:
                raise InputError(f"{path}: file is empty")
            with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as buf:
                buf.madvise(mmap.MADV_SEQUENTIAL)
                parser = _Parser(buf, path)
                result = parser.document(keep)
                if parser.peek() != b"":
                    raise parser.fail("trailing data")
                return result
    except FileNotFoundError:
        raise InputError(f"input file {path} not found") from None
    except (IsADirectoryError, PermissionError) as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}") from None
    except orjson.JSONDecodeError as exc:
        raise InputError(f"{path}: invalid JSON ({exc})") from None


# -- writing ---------------------------------------------------------------------------------------


def _format_numbers(arr: np.ndarray) -> list[bytes]:
    """Round-trip text of each number: integers without a fraction, as Prometheus writes them.

    orjson formats a whole list in C; only non-finite values (which JSON cannot carry) take the slow path.
    """
    if not arr.size:
        return []
    finite = np.isfinite(arr)
    if finite.all():
        if np.all(arr == np.floor(arr)) and np.all(np.abs(arr) < 2**53):
            return orjson.dumps(arr.astype(np.int64).tolist())[1:-1].split(b",")
        return orjson.dumps(arr.tolist())[1:-1].split(b",")
    return [_go_float(v).encode() for v in arr.tolist()]


def _go_float(v: float) -> str:
    if v != v:
        return "NaN"
    if v in (float("inf"), float("-inf")):
        return "+Inf" if v > 0 else "-Inf"
    return str(int(v)) if v.is_integer() and abs(v) < 2**53 else repr(v)


def _series_json(series: Series) -> bytes:
    ts = _format_numbers(series.timestamps)
    vs = _format_numbers(series.values)
    values = b",".join([b"[" + t + b',"' + v + b'"]' for t, v in zip(ts, vs, strict=False)])
    return b'{"metric":' + orjson.dumps(dict(series.labels)) + b',"values":[' + values + b"]}"


def iter_json(result: QueryResult) -> Iterable[bytes]:
    """The document in pieces, one series at a time."""
    yield b"{"
    for i, (name, series_list) in enumerate(result.metrics.items()):
        yield (b"," if i else b"") + orjson.dumps(name) + b":["
        for j, series in enumerate(series_list):
            yield (b"," if j else b"") + _series_json(series)
        yield b"]"
    yield b"}"


def dump(result: QueryResult, path: str | os.PathLike[str]) -> Path:
    """Write `result` to `path` atomically (a temporary sibling, then a rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as out:
            for chunk in iter_json(result):
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
