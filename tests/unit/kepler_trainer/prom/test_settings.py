"""kepler_trainer.prom._settings: three frozen concerns, their union, and text -> values without argparse."""

from __future__ import annotations

import argparse
import ast
from pathlib import Path

import pytest
from pydantic import ValidationError

from kepler_trainer import cli, prom
from kepler_trainer.errors import InputError, PrometheusQueryError

PROM_PACKAGE = Path(prom.__file__).parent


def test_the_three_concerns_share_no_field_and_prom_settings_is_exactly_their_union():
    groups = (prom.PrometheusSettings, prom.QueryWindow, prom.MetricSelection)
    fields = [set(group.model_fields) for group in groups]
    assert sum(map(len, fields)) == len(set().union(*fields)), "a field name in two concerns would shadow one"
    assert set(prom.PromSettings.model_fields) == set().union(*fields)


def test_each_layer_can_be_given_only_its_concern():
    settings = prom.PromSettings(server="http://prom:9090/", start=0, end=30, step=3,
                                 label_filters=(prom.LabelMatcher.parse("job=kepler"),))
    assert isinstance(settings, prom.PrometheusSettings) and isinstance(settings, prom.QueryWindow)
    window = prom.QueryWindow(start=0, end=30, step=3)
    assert prom.chunk_windows(window) == prom.chunk_windows(settings) == [(0, 10)]
    assert prom.PrometheusSettings(server="http://prom:9090/").url == settings.url == "http://prom:9090"


def test_settings_are_frozen():
    settings = prom.PromSettings(start=0, end=60)
    with pytest.raises(ValidationError):
        settings.start = 10  # type: ignore[misc]
    with pytest.raises(TypeError):
        settings.label_filters[0:0] = ()  # type: ignore[index]  # a tuple: not even in place


@pytest.mark.parametrize("model, values, field", [
    (prom.PrometheusSettings, {"server": "prom:9090"}, "server"),
    (prom.PrometheusSettings, {"concurrency": 65}, "concurrency"),
    (prom.PrometheusSettings, {"timeout": 0}, "timeout"),
    (prom.QueryWindow, {"start": 10, "end": 10}, None),
    (prom.QueryWindow, {"start": 0, "end": 10, "max_points": 11_001}, "max_points"),
])
def test_each_concern_validates_its_own_fields(model, values, field):
    with pytest.raises(ValidationError) as exc:
        model(**values)
    assert [e["loc"] for e in exc.value.errors()] == [(field,) if field else ()]


@pytest.mark.parametrize("parse, text, message", [
    (prom.parse_time, "yesterday", "invalid time 'yesterday'"),
    (prom.parse_seconds, "5x", "invalid duration '5x'"),
    (prom.parse_seconds, "-3", "must be positive"),
])
def test_text_is_refused_with_a_value_error_and_the_cli_shows_the_same_words(parse, text, message):
    with pytest.raises(ValueError, match=message) as library:
        parse(text)
    assert not isinstance(library.value, argparse.ArgumentTypeError)
    wrapper = cli.parse_time if parse is prom.parse_time else cli.parse_seconds
    with pytest.raises(argparse.ArgumentTypeError) as command_line:
        wrapper(text)
    assert str(command_line.value) == str(library.value)


def test_label_equals_keeps_any_value_verbatim_but_checks_the_name():
    assert prom.LabelMatcher.equals("instance=~.*") == prom.LabelMatcher(name="instance", op="=", value="~.*")
    assert prom.LabelMatcher.equals("a==b").value == "=b"
    for bad in ("no-equals", "bad-name=x", "=x"):
        with pytest.raises(ValueError, match="bad label filter"):
            prom.LabelMatcher.equals(bad)


def test_nothing_in_the_prom_package_knows_argparse():
    for module in PROM_PACKAGE.glob("*.py"):
        tree = ast.parse(module.read_text())
        imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
        assert "argparse" not in imported, module.name
        assert "Namespace" not in module.read_text(), module.name


@pytest.mark.parametrize("argv, error, fragment", [
    (["--concurrency", "0"], InputError, "invalid Prometheus settings: concurrency: "),
    (["--start-time", "200", "--end-time", "100"], PrometheusQueryError, "window: bad window"),
])
def test_the_cli_turns_a_validation_error_into_its_one_line_message_and_exit_code(tmp_path, capsys, argv,
                                                                                error, fragment):
    code = cli.main(["query", "-s", "http://127.0.0.1:9", "--data-path", str(tmp_path), "-q", *argv])
    err = capsys.readouterr().err
    assert code == error.exit_code
    assert err.startswith(f"kepler-model: error: {fragment}") and err.count("\n") == 1, err
