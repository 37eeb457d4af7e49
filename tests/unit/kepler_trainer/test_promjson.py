"""kepler_trainer.promjson: one reader for Prometheus answers and query-output files."""

from __future__ import annotations

import math

import numpy as np
import orjson
import pytest

from kepler_trainer import promjson
from kepler_trainer.data import QueryResult, Series
from kepler_trainer.errors import InputError, PrometheusQueryError

SERIES = {"metric": {"__name__": "kepler_x_total", "odd": 'a "]]" b'},
          "values": [[1793491203, "2"], [1793491200, "1"], [1793491206, "NaN"]]}  # out of order on purpose


def answer(**data) -> bytes:
    return orjson.dumps({"status": "success", "data": {"resultType": "matrix", "result": [SERIES], **data}})


def test_an_answer_and_a_file_holding_the_same_series_read_the_same(tmp_path):
    from_answer = promjson.read_answer(answer())
    path = tmp_path / "q.json"
    path.write_bytes(orjson.dumps({"kepler_x_total": [SERIES]}))
    from_file = promjson.load(path).metrics["kepler_x_total"]
    for a, b in zip(from_answer, from_file, strict=True):
        assert a.labels == b.labels == SERIES["metric"]
        np.testing.assert_array_equal(a.timestamps, [1793491200, 1793491203, 1793491206])  # sorted by time
        np.testing.assert_array_equal(a.values, b.values)
        assert a.values[:2].tolist() == [1.0, 2.0] and math.isnan(a.values[2])


def test_result_type_after_result_and_unknown_fields_are_fine():
    body = orjson.dumps({"data": {"result": [SERIES], "stats": {"x": [[1]]}, "resultType": "matrix"},
                         "warnings": ["partial"], "status": "success"})
    assert len(promjson.read_answer(body)[0]) == 3


@pytest.mark.parametrize("body, fragment", [
    (answer()[:-40], "unexpected answer to q"),                                     # cut off mid-values
    (answer().replace(b'"NaN"', b'"x"'), "malformed sample"),
    (answer().replace(b"1793491200,", b'"NaN",'), "malformed sample"),             # a NaN timestamp
    (b'{"status":"success","data":{"resultType":"matrix","result":' + b"[" * 5000 + b"]" * 5000 + b"}}",
     "unexpected answer to q"),
    (b'{"status":"success","data":{"resultType":"matrix","result":[{"metric":' + b"[" * 5000 + b"]" * 5000
     + b"}]}}", "nested deeper than"),
    (answer() + b" trailing", "trailing data"),
    (b'{"status":"success","data":{"resultType":"matrix"}}', "no result"),
    (b'{"status":"error"}', "Prometheus failed q: error"),
])
def test_a_broken_answer_is_a_query_error_never_a_traceback(body, fragment):
    with pytest.raises(PrometheusQueryError, match=fragment):
        promjson.read_answer(body, "q")


def test_an_empty_object_is_an_empty_query_output(tmp_path):
    path = tmp_path / "empty.json"
    path.write_text(" { } ")
    assert promjson.load(path).metrics == {}


def test_a_file_round_trips_through_the_writer_and_the_reader(tmp_path):
    written = QueryResult({"m": [Series({"a": "1"}, np.array([1.0, 2.0]), np.array([-math.inf, 1e-300]))]})
    again = promjson.load(promjson.dump(written, tmp_path / "m.json")).metrics["m"][0]
    assert again.values.tolist() == [-math.inf, 1e-300] and dict(again.labels) == {"a": "1"}


def test_a_broken_file_is_an_input_error_naming_the_file(tmp_path):
    path = tmp_path / "bad.json"
    path.write_bytes(orjson.dumps({"m": [SERIES]}).replace(b'"NaN"', b"[]"))
    with pytest.raises(InputError, match="bad.json: not a Kepler query output"):
        promjson.load(path)
