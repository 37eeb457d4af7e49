"""The one reader of Prometheus' range-query JSON, in both places it arrives, and the query-output writer.

Two documents share one shape of series (`{"metric": {...}, "values": [[t, "v"], ...]}`):
* a `query_range` answer from Prometheus, `{"status", "data": {"resultType": "matrix", "result": [series]}}`,
  read from the response body in memory (`read_answer`);
* the query-output file that `kepler-model query` writes and `train -i` reads, `{metric: [series]}`,
  memory-mapped (`load`): consumed pages are handed back to the kernel as the walk advances, so a
  1 GB file costs about the size of its numbers, not the size of its text.

A small cursor walks either document: keys in any order, unknown fields skipped without recursion
(a hostile file may nest 100,000 deep), labels decoded by orjson once their extent is known. Each
`values` array, which holds nearly all the bytes, is stripped to `t,v,t,v,...` and parsed by orjson
in one call: faster than pandas' C CSV parser on the same text, which the file reader used before,
and no pandas import for `kepler-model query` (docs/prometheus.md has the figures). numpy's text
parser takes the rare arrays with NaN or ±Inf, which JSON cannot spell. The cost of orjson is a
transient Python float per number, bounded by one series (at most 11,000 points per answer chunk,
a day at 3 s in a file).

Writing goes to a temporary file that is renamed into place.
"""

from __future__ import annotations

import mmap
import os
import re
import warnings
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
import orjson

from .data import QueryResult, Series
from .errors import InputError, PrometheusQueryError

_WS = re.compile(rb"\s*")
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_SCALAR = re.compile(rb"-?[0-9][0-9.eE+-]*|true|false|null")
_VALUES_END = re.compile(rb"\]\s*\]")
_NOT_NUMBERS = b' \t\r\n[]"'  # what `[t,"v"],[t,"v"]` loses to become `t,v,t,v`
_RELEASE_EVERY = 64 << 20  # give consumed pages of a mapped file back every 64 MiB
MAX_DEPTH = 512  # no query output nests deeper than 4; orjson itself stops at 1024

Failure = Callable[[str, int], Exception]  # (what went wrong, byte offset) -> the error to raise


class _Cursor:
    """A position in a JSON document (bytes or a mapped file); each method consumes one construct."""

    def __init__(self, buf: bytes | mmap.mmap, failure: Failure):
        self.buf, self.pos, self._failure = buf, 0, failure
        self._released = 0

    # -- primitives ------------------------------------------------------------------------
    def fail(self, what: str) -> Exception:
        return self._failure(what, self.pos)

    def skip_ws(self) -> None:
        self.pos = _WS.match(self.buf, self.pos).end()  # type: ignore[union-attr]  # \s* always matches

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

    def _members(self, opening: bytes, closing: bytes) -> Iterator[None]:
        """Once per member of a container; the caller consumes each member."""
        self.expect(opening)
        if self.peek() == closing:
            self.pos += 1
            return
        while True:
            yield None
            if not self.more(closing):
                return

    def object_keys(self) -> Iterator[str]:
        """The keys of an object, in order; the caller consumes each key's value before the next."""
        for _ in self._members(b"{", b"}"):
            key = self.string()
            self.expect(b":")
            yield key

    def array_items(self) -> Iterator[None]:
        return self._members(b"[", b"]")

    def value(self) -> object:
        """Any small JSON value, decoded by orjson once its extent is known."""
        start = self.skip()
        return orjson.loads(self.buf[start : self.pos])

    def skip(self) -> int:
        """Skip one value without recursion; returns its start."""
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
        if not isinstance(self.buf, mmap.mmap):
            return
        page_end = (self.pos // mmap.PAGESIZE) * mmap.PAGESIZE
        if page_end - self._released >= _RELEASE_EVERY:
            self.buf.madvise(mmap.MADV_DONTNEED, self._released, page_end - self._released)
            self._released = page_end

    def end(self) -> None:
        if self.peek() != b"":
            raise self.fail("trailing data")

    # -- the series shape both documents share ---------------------------------------------------
    def samples(self, metric: str) -> tuple[np.ndarray, np.ndarray]:
        """A `values` array as (timestamps, values), in time order."""
        self.expect(b"[")
        if self.peek() == b"]":
            self.pos += 1
            return np.empty(0), np.empty(0)
        m = _VALUES_END.search(self.buf, self.pos)
        if not m:
            raise self.fail(f"unterminated values of {metric}")
        raw = self.buf[self.pos : m.start() + 1]
        flat = _numbers(raw.translate(None, _NOT_NUMBERS))
        if flat.size != 2 * raw.count(b"["):
            raise self.fail(f"malformed sample in a series of {metric}")
        self.pos = m.end()
        ts, vs = flat[0::2], flat[1::2]
        if np.isnan(ts).any():
            raise self.fail(f"malformed sample in a series of {metric}")
        if ts.size > 1 and np.any(np.diff(ts) < 0):
            order = np.argsort(ts, kind="stable")
            ts, vs = ts[order], vs[order]
        return ts, vs

    def series(self, metric: str) -> Series:
        labels: dict[str, str] = {}
        ts = vs = np.empty(0)
        for key in self.object_keys():
            if key == "values":
                ts, vs = self.samples(metric)
            elif key == "metric":
                raw = self.value()
                if not isinstance(raw, dict):
                    raise self.fail(f"labels of {metric} are not an object")
                labels = {str(k): str(v) for k, v in raw.items()}
            else:
                self.skip()
        return Series(labels, ts, vs)

    def series_list(self, metric: str) -> list[Series]:
        out = []
        for _ in self.array_items():
            out.append(self.series(metric))
            self.release_consumed()
        return out


def _numbers(text: bytes) -> np.ndarray:
    """Comma-separated numbers as float64: orjson is the fastest exact parser at hand; numpy's text
    parser takes the NaN and ±Inf that JSON cannot spell. Garbage gives fewer numbers than the
    caller counted (numpy stops early, or refuses outright in newer versions)."""
    try:
        return np.array(orjson.loads(b"[" + text + b"]"), dtype=np.float64)
    except (orjson.JSONDecodeError, TypeError):  # TypeError: a string or null among the numbers
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            try:
                return np.fromstring(text, sep=",")  # noqa: NPY201 (text mode)
            except ValueError:
                return np.empty(0)


# -- a Prometheus query_range answer ---------------------------------------------------------------

def read_answer(body: bytes, query: str = "") -> list[Series]:
    """The series of a `query_range` answer; any other answer is a PrometheusQueryError."""

    def unexpected(what: str, pos: int) -> Exception:
        return PrometheusQueryError(f"unexpected answer to {query}: {what} at byte {pos}")

    cursor = _Cursor(body, unexpected)
    status: object = None
    error: object = None
    result_type: object = None
    result: list[Series] | None = None
    try:
        for key in cursor.object_keys():
            if key == "data":
                for field in cursor.object_keys():
                    if field == "resultType":
                        result_type = cursor.value()
                    elif field == "result" and result_type in (None, "matrix"):
                        result = cursor.series_list(query)
                    else:
                        cursor.skip()
            elif key in ("status", "error"):
                status, error = (cursor.value(), error) if key == "status" else (status, cursor.value())
            else:
                cursor.skip()
        cursor.end()
    except orjson.JSONDecodeError as exc:
        raise PrometheusQueryError(f"unexpected answer to {query}: JSONDecodeError: {exc}") from None
    if status != "success":
        raise PrometheusQueryError(f"Prometheus failed {query}: {error if error is not None else status}")
    if result_type != "matrix":
        raise PrometheusQueryError(f"Prometheus answered {query} with a {result_type}, not a matrix")
    if result is None:
        raise unexpected("no result", cursor.pos)
    return result


# -- the query-output file --------------------------------------------------------------------------

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

    def not_query_output(what: str, pos: int) -> Exception:
        return InputError(f"{path}: not a Kepler query output ({what} at byte {pos})")

    try:
        with open(path, "rb") as handle:
            if os.fstat(handle.fileno()).st_size == 0:
                raise InputError(f"{path}: file is empty")
            with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as buf:
                buf.madvise(mmap.MADV_SEQUENTIAL)
                cursor = _Cursor(buf, not_query_output)
                result = QueryResult()
                for name in cursor.object_keys():
                    if keep(name):
                        result.metrics[name] = cursor.series_list(name)
                    else:
                        cursor.skip()
                cursor.end()
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
