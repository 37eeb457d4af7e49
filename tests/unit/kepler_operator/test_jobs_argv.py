"""Every command line the operator builds means, to the trainer's own parser, what its resource meant.

Specs are generated from the CRD schemas in crds/ (what the API server lets in): each leaf from its
enum, pattern, bounds or format, each list within its size, and the objects whose CEL rules say
"exactly one of" (a window, an estimation's input, a model selector) in each of their forms. The
pydantic models then decide, as the handlers do, which specs are valid. Each argv from `jobs.py` is
parsed with `kepler_trainer.cli.build_parser` (no subprocess) and read back through the trainer's own
resolvers (`cli.settings_from_args`, `trainer_names`, the pipeline-name rule), then compared with
the spec.
"""

from __future__ import annotations

import datetime
import os
import posixpath
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings, strategies as st
from pydantic import ValidationError

from kepler_operator import api, crdgen, jobs
from tests.support import checkout

cli = pytest.importorskip("kepler_trainer.cli")
trainers = pytest.importorskip("kepler_trainer.trainers")

REPO = checkout.ROOT
NOT_IN_ARGV = {"job", "schedule", "suspend", "historyLimit"}
"""Spec fields that shape the Job or the planning, never the command line (test_operator_jobs covers them)."""
ONE_OF = {
    "window": [{"intervalSeconds"}, {"start", "end"}],
    "input": [{"prometheus", "window"}, {"file"}],
    "model": [{"pipelineRef"}, {"pipelinePath"}],
}
"""By field name: the forms the CEL rules `has(self.a) != has(self.b)` allow (one group of fields is set)."""
ENVIRONMENT = ("PROM_SERVER", "PROM_QUERY_INTERVAL", "PROM_QUERY_STEP", "PROM_THIRDPARTY_METRICS", "PROM_CA_FILE",
               "PROM_BEARER_TOKEN_FILE", "KEPLER_MODEL_TERMINATION_LOG", "MODEL_PATH", "DATAPATH")
"""The trainer's environment defaults: the Job sets none of them (only HOME)."""
OFFSETS = st.sampled_from([datetime.UTC, datetime.timezone(datetime.timedelta(hours=2)),
                           datetime.timezone(-datetime.timedelta(hours=5, minutes=30))])


def spec_schema(kind: str) -> dict[str, Any]:
    doc = yaml.safe_load((REPO / "crds" / crdgen.FILE_NAMES[kind]).read_text())
    return doc["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]


def _text(schema: Mapping[str, Any]) -> st.SearchStrategy[str]:
    if schema.get("format") == "date-time":
        moments = st.datetimes(min_value=datetime.datetime(2000, 1, 1), max_value=datetime.datetime(2100, 1, 1),
                               timezones=OFFSETS)
        return moments.map(lambda moment: moment.isoformat())
    if "pattern" not in schema:
        return st.text(min_size=schema.get("minLength", 0), max_size=min(schema.get("maxLength", 64), 64))
    # JSON-schema `$` is the end of the text; Python's also matches before a final newline
    pattern = schema["pattern"].replace("$", r"\Z")
    return st.from_regex(pattern, fullmatch=True).filter(
        lambda s: schema.get("minLength", 0) <= len(s) <= schema.get("maxLength", 1 << 20))


def _leaf(schema: Mapping[str, Any]) -> st.SearchStrategy[Any]:
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kind = schema["type"]
    if kind == "boolean":
        return st.booleans()
    if kind == "integer":
        return st.integers(schema.get("minimum"), schema.get("maximum"))
    if kind == "number":
        return st.floats(schema.get("minimum"), schema.get("maximum"), allow_nan=False,
                         exclude_min=bool(schema.get("exclusiveMinimum")))
    assert kind == "string", schema
    return _text(schema)


def from_schema(schema: Mapping[str, Any], path: str = "") -> st.SearchStrategy[Any]:
    """Values the schema admits (CEL rules aside, but for the `ONE_OF` forms)."""
    kind = schema.get("type")
    if kind == "array":
        return st.lists(from_schema(schema["items"], path + "[]"), min_size=schema.get("minItems", 0),
                        max_size=min(schema.get("maxItems", 4), 4),
                        unique=schema.get("x-kubernetes-list-type") == "set")
    if kind == "object" and "properties" not in schema:  # a map: labelFilters
        names = _text({"pattern": api.LABEL_NAME, "maxLength": 128})
        return st.dictionaries(names, _leaf(schema["additionalProperties"]),
                               max_size=min(schema.get("maxProperties", 4), 4))
    if kind != "object":
        return _leaf(schema)
    fields = {name: from_schema(sub, f"{path}.{name}") for name, sub in schema["properties"].items()
              if not (path == "" and name in NOT_IN_ARGV)}
    required = set(schema.get("required", []))
    forms = ONE_OF.get(path.rsplit(".", 1)[-1], [set()])
    grouped = set().union(*forms)
    return st.one_of([st.fixed_dictionaries({n: fields[n] for n in fields if n in required | form},
                                            optional={n: fields[n] for n in fields
                                                      if n not in required | grouped})
                      for form in forms])


def _valid(model: type[api._Model], document: dict[str, Any]) -> Any:
    try:
        return model.model_validate(document)
    except ValidationError:
        assume(False)


def parse(argv: list[str]) -> Any:
    """The trainer's reading of a Job's command, as `kepler-model` itself would parse it."""
    assert argv[0] == "kepler-model"
    with mock.patch.dict(os.environ, {name: "" for name in ENVIRONMENT}):
        for name in ENVIRONMENT:
            del os.environ[name]
        return cli.build_parser(argv[1]).parse_args(argv[1:])


def _seconds(moment: datetime.datetime) -> float:
    return moment.timestamp()


def assert_prometheus_meant(args: Any, source: api.PrometheusSource, window: api.Window, prefix: str,
                            label_filters: Mapping[str, str]) -> None:
    if window.start is not None and window.end is not None:
        # the trainer resolves windows to the millisecond: shorter ones it refuses with exit 9 (a known limit)
        assume(round(_seconds(window.start), 3) < round(_seconds(window.end), 3))
    resolved = cli.settings_from_args(args)
    assert resolved.server == source.url.rstrip("/") and resolved.metric_prefix == prefix  # the same base URL
    assert resolved.step == window.step_seconds
    if window.interval_seconds is not None:
        assert resolved.end - resolved.start == pytest.approx(window.interval_seconds, abs=0.002)
    else:
        assert window.start is not None and window.end is not None
        assert (resolved.start, resolved.end) == (round(_seconds(window.start), 3), round(_seconds(window.end), 3))
    assert {(m.name, m.op, m.value) for m in resolved.label_filters} == \
        {(name, "=", value) for name, value in label_filters.items()}
    token = source.bearer_token_secret
    assert resolved.bearer_token_file == (Path(jobs.TOKEN_DIR, token.key) if token else None)
    ca = source.tls.ca_secret if source.tls else None
    assert resolved.ca_file == (Path(jobs.CA_DIR, ca.key) if ca else None)
    assert resolved.insecure_skip_tls_verify == bool(source.tls and source.tls.insecure_skip_verify)


def _volume(relative: str) -> str:
    return posixpath.join(jobs.MODELS_MOUNT, relative) if relative else jobs.MODELS_MOUNT


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(document=from_schema(spec_schema("TrainingPipeline")))
def test_every_training_command_means_its_spec(document):
    spec = _valid(api.TrainingPipelineSpec, document)
    args = parse(jobs.train_command(spec))
    assert args.command == "train" and args.func is cli.cmd_train
    assert_prometheus_meant(args, spec.prometheus, spec.window, spec.metric_prefix, spec.label_filters)
    assert cli._pipeline_name(args) == spec.pipeline_name
    assert [s.name for s in cli._sources(args)] == list(spec.energy_sources)
    assert (args.extractor, args.isolator) == (spec.extractor, spec.isolator.type)
    assert args.profile == (_volume(spec.isolator.profile) if spec.isolator.profile else None)
    idle = spec.isolator.idle_window
    if idle is None:
        assert (args.profile_start_time, args.profile_end_time, args.profile_step) == (None, None, None)
    else:
        assert (args.profile_start_time, args.profile_end_time) == (_seconds(idle.start), _seconds(idle.end))
        assert args.profile_step == idle.step_seconds
    assert trainers.trainer_names(args.abs_trainers) == list(spec.abs_trainers)
    assert trainers.trainer_names(args.dyn_trainers) == list(spec.dyn_trainers)
    assert cli._feature_groups(args) == list(spec.feature_groups or cli.DEFAULT_FEATURE_GROUPS)
    assert args.max_mae == spec.accuracy_gate.max_mae
    assert args.model_path == _volume(spec.storage.sub_path)
    assert (args.data_path, args.termination_log) == (jobs.WORK_DIR, jobs.TERMINATION_LOG)


PUBLISHED = st.builds(posixpath.join, st.just("") | _text({"pattern": api.SAFE_REL_PATH, "maxLength": 100}),
                      from_schema(spec_schema("TrainingPipeline")["properties"]["pipelineName"]))
"""Where a TrainingPipeline published: its sub-path, then its (CRD-checked) pipeline name."""
TP_DOCUMENT = {"prometheus": {"url": "http://p:9090"}, "window": {"intervalSeconds": 600}, "pipelineName": "std"}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(document=from_schema(spec_schema("EnergyEstimation")), published=PUBLISHED)
def test_every_estimation_command_means_its_spec(document, published):
    spec = _valid(api.EnergyEstimationSpec, document)
    if spec.model.pipeline_path is not None:  # see test_a_pipeline_path_the_trainer_refuses_is_refused
        assume(cli.pipeline_name_problem(posixpath.basename(spec.model.pipeline_path)) is None)
    pipeline = {"spec": TP_DOCUMENT, "status": {"pipelinePath": published}}
    where = jobs.resolve_model(spec, "est", pipeline, "pvc")
    args = parse(jobs.estimate_command(spec, where))
    assert args.command == "estimate" and args.func is cli.cmd_estimate
    source = spec.input
    if source.file is not None:
        assert args.input == _volume(source.file)
    else:
        assert source.prometheus is not None and source.window is not None
        assert args.input == ""
        assert_prometheus_meant(args, source.prometheus, source.window, source.metric_prefix, source.label_filters)
    model = spec.model
    meant_path = model.pipeline_path or published
    assert cli._pipeline_name(args) == posixpath.basename(meant_path)
    assert args.model_path == _volume(posixpath.dirname(meant_path))
    assert [s.name for s in cli._sources(args)] == [model.energy_source]
    assert args.output_type == model.output_type
    assert cli._feature_groups(args) == ([model.feature_group] if model.feature_group else
                                         list(cli.DEFAULT_FEATURE_GROUPS))
    assert args.model_name == model.model_name
    assert args.output == _volume(where.results_dir)
    assert (args.data_path, args.termination_log) == (jobs.WORK_DIR, jobs.TERMINATION_LOG)


@pytest.mark.parametrize("path", ["team/_hidden", "team/old.zip", "estimations", "team/estimations"])
def test_a_pipeline_path_the_trainer_refuses_is_refused(path):
    """Found by the property test above: the API admitted these, the trainer refused them (exit 7)."""
    assert cli.pipeline_name_problem(posixpath.basename(path)) is not None
    with pytest.raises(ValidationError):
        api.EnergyEstimationSpec.model_validate({"model": {"pipelinePath": path}, "input": {"file": "in.json"}})


def test_the_generator_reaches_every_form():
    """The strategies above are not vacuous: each `ONE_OF` form is produced and passes validation."""
    schema = spec_schema("EnergyEstimation")
    seen: set[tuple[bool, bool]] = set()

    @settings(max_examples=200, deadline=None, database=None)
    @given(from_schema(schema))
    def collect(document):
        try:
            spec = api.EnergyEstimationSpec.model_validate(document)
        except ValidationError:
            return
        seen.add((spec.input.file is None, spec.model.pipeline_ref is None))

    collect()
    assert seen == {(True, True), (True, False), (False, True), (False, False)}

