"""Every command line the operator builds means, to the trainer's own parser, what its resource meant.

Specs are generated from the CRD schemas in crds/ (what the API server lets in): each leaf from its
enum, pattern, bounds or format, each list within its size, and the objects whose CEL rules say
"exactly one of" (a window, an estimation's input, a model selector) in each of their forms. The
pydantic models then decide, as the handlers do, which specs are valid. The operator maps each spec
onto an invocation (`jobs.train_invocation`, `jobs.estimate_invocation`); the contract writes its argv
(`kepler_contract.invocation`), which is parsed with `kepler_trainer.cli.build_parser` (no subprocess)
and read back through the trainer's own resolvers (`cli.settings_from_args`, `trainer_names`, the
pipeline-name rule): every field of the invocation must come back as it was. That the invocation is
what the spec meant is checked by name: a setting the spec and the invocation both name (`abs_trainers`,
`max_mae`, `step_seconds`, ...) has the same value on both sides.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import enum
import os
import posixpath
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings, strategies as st
from pydantic import ValidationError

from kepler_contract import invocation, vocabulary
from kepler_operator import api, crdgen, jobs
from tests.support import checkout

cli = pytest.importorskip("kepler_trainer.cli")
featuresets = pytest.importorskip("kepler_trainer.featuresets")
trainers = pytest.importorskip("kepler_trainer.trainers")

REPO = checkout.ROOT
NOT_IN_ARGV = {"job", "schedule", "suspend", "historyLimit"}
"""Spec fields that shape the Job or the planning, never the command line (test_jobs.py covers them)."""
ONE_OF = {
    "window": [{"intervalSeconds"}, {"start", "end"}],
    "input": [{"prometheus", "window"}, {"file"}],
    "model": [{"pipelineRef"}, {"pipelinePath"}],
    "featureSet": [{"preset"}, {"file"}],
    "isolator": [set(), {"profile"}, {"idleWindow"}],
    "": [set(), {"featureGroups"}, {"featureSet", "onnxConfigMap"}],
}
"""By field name ("" for the spec): the forms the CEL rules of the kind `has(self.a) != has(self.b)` allow
(one group of fields is set, the other groups' fields are not)."""
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


def _names(values: tuple[enum.Enum, ...]) -> list[str]:
    return [v.value for v in values]


def assert_query_read(args: Any, query: invocation.PrometheusQuery) -> None:
    """The trainer's Prometheus settings (`cli.settings_from_args`) are the query's."""
    if query.start is not None and query.end is not None:
        # the trainer resolves windows to the millisecond: shorter ones it refuses with exit 9 (a known limit)
        assume(round(_seconds(query.start), 3) < round(_seconds(query.end), 3))
    resolved = cli.settings_from_args(args)
    assert resolved.server == query.server.rstrip("/")  # the same base URL
    assert (resolved.step, resolved.metric_prefix) == (query.step_seconds, query.metric_prefix)
    if query.interval_seconds is not None:
        assert resolved.end - resolved.start == pytest.approx(query.interval_seconds, abs=0.002)
    else:
        assert query.start is not None and query.end is not None
        assert (resolved.start, resolved.end) == (round(_seconds(query.start), 3), round(_seconds(query.end), 3))
    assert sorted((m.name, m.op, m.value) for m in resolved.label_filters) == \
        [(name, "=", value) for name, value in query.label_equals]
    assert resolved.bearer_token_file == (Path(query.bearer_token_file) if query.bearer_token_file else None)
    assert resolved.ca_file == (Path(query.ca_file) if query.ca_file else None)
    assert resolved.insecure_skip_tls_verify == query.insecure_skip_tls_verify


def _files(args: Any) -> invocation.Files:
    return invocation.Files(model_path=args.model_path, data_path=args.data_path,
                            termination_log=args.termination_log)


def _groups_meant(groups: tuple[vocabulary.FeatureGroup, ...]) -> list[str]:
    return _names(groups) or list(cli.DEFAULT_FEATURE_GROUPS)  # none named: every group the data supports


def _history_windows(text: str | None) -> list[int]:
    """The windows `--history` gives a feature set (the trainer's reading; any set will do)."""
    if not text:
        return []
    return list(featuresets.with_history(featuresets.PRESETS["kepler-vm"], text).history.windows)


def _same(value: Any) -> Any:
    return value


Reading = Callable[[Any], Any]
"""From the trainer's parsed arguments to what it will use, read with its own resolvers."""
Meaning = Callable[[Any], Any] | None
"""From an invocation field's value to the same form; None: checked on its own (the Prometheus query)."""

TRAIN_FIELDS: dict[str, tuple[Reading, Meaning]] = {
    "query": (_same, None),  # assert_query_read
    "pipeline_name": (lambda args: cli._pipeline_name(args), _same),
    "files": (_files, _same),
    "energy_sources": (lambda args: [s.name for s in cli._sources(args)], _names),
    "extractor": (lambda args: args.extractor, lambda v: v.value),
    "isolator": (lambda args: args.isolator, lambda v: v.value),
    "profile": (lambda args: args.profile, _same),
    "idle_window": (lambda args: (args.profile_start_time, args.profile_end_time, args.profile_step),
                    lambda w: (None, None, None) if w is None else (_seconds(w.start), _seconds(w.end),
                                                                    w.step_seconds)),
    "abs_trainers": (lambda args: trainers.trainer_names(args.abs_trainers), _names),
    "dyn_trainers": (lambda args: trainers.trainer_names(args.dyn_trainers), _names),
    "feature_groups": (lambda args: cli._feature_groups(args), _groups_meant),
    "features": (lambda args: args.features, _same),
    "join_map": (lambda args: featuresets.parse_mapping(args.join_map or ""), dict),
    "history_seconds": (lambda args: _history_windows(args.history), list),
    "max_mae": (lambda args: args.max_mae, _same),
    "max_mape": (lambda args: args.max_mape, _same),
    "max_idle_bias": (lambda args: args.max_idle_bias, _same),
}
"""Every field of `TrainInvocation`, as the trainer reads it back (test_every_field_is_read_back)."""

ESTIMATE_FIELDS: dict[str, tuple[Reading, Meaning]] = {
    "source": (_same, None),  # a file (-i) or a query: checked in the test
    "pipeline_name": (lambda args: cli._pipeline_name(args), _same),
    "output": (lambda args: args.output, _same),
    "files": (_files, _same),
    "energy_source": (lambda args: [s.name for s in cli._sources(args)], lambda v: [v.value]),
    "output_type": (lambda args: args.output_type, lambda v: v.value),
    "feature_group": (lambda args: cli._feature_groups(args), lambda v: _groups_meant((v,) if v else ())),
    "model_name": (lambda args: args.model_name, _same),
}
"""Every field of `EstimateInvocation`, as the trainer reads it back."""


def _plain(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


SHAPED_OTHERWISE = {"isolator"}
"""A spec object whose invocation counterpart is one of its fields (`isolator.type`): compared on its own."""


def assert_same_named_settings(pairs: list[tuple[Any, Any]]) -> None:
    """What the spec meant: each (spec part, invocation part) pair agrees on every setting they both name
    (`abs_trainers`, `max_mae`, `step_seconds`, ...); unset is unset on both sides."""
    for spec_part, run_part in pairs:
        shared = set(type(spec_part).model_fields) & {f.name for f in dataclasses.fields(run_part)} - SHAPED_OTHERWISE
        assert shared, (spec_part, run_part)
        for name in shared:
            meant, got = _plain(getattr(spec_part, name)), _plain(getattr(run_part, name))
            assert meant == got or (not meant and not got), name


def assert_read_back(args: Any, run: Any, fields: Mapping[str, tuple[Reading, Meaning]]) -> None:
    for name, (reading, meaning) in fields.items():
        if meaning is not None:
            assert reading(args) == meaning(getattr(run, name)), name


@pytest.mark.parametrize("kind, fields", [(invocation.TrainInvocation, TRAIN_FIELDS),
                                          (invocation.EstimateInvocation, ESTIMATE_FIELDS)])
def test_every_field_is_read_back(kind, fields):
    """A field added to an invocation fails here until the property tests read it back from the trainer."""
    assert set(fields) == {f.name for f in dataclasses.fields(kind)}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(document=from_schema(spec_schema("TrainingPipeline")))
def test_every_training_command_means_its_spec(document):
    spec = _valid(api.TrainingPipelineSpec, document)
    run = jobs.train_invocation(spec)
    parts = [(spec, run), (spec, run.query), (spec.window, run.query), (spec.accuracy_gate, run)]
    assert_same_named_settings(parts + ([(spec.isolator.idle_window, run.idle_window)]
                                        if spec.isolator.idle_window else []))
    assert run.isolator.value == spec.isolator.type
    args = parse(invocation.train_argv(run))
    assert args.command == "train" and args.func is cli.cmd_train
    assert_query_read(args, run.query)
    assert_read_back(args, run, TRAIN_FIELDS)


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
    run = jobs.estimate_invocation(spec, jobs.resolve_model(spec, "est", pipeline, "pvc"))
    assert_same_named_settings([(spec.model, run)] + ([(spec.input, run.source), (spec.input.window, run.source)]
                                                      if spec.input.window else []))
    args = parse(invocation.estimate_argv(run))
    assert args.command == "estimate" and args.func is cli.cmd_estimate
    if isinstance(run.source, str):
        assert args.input == run.source
    else:
        assert args.input == ""
        assert_query_read(args, run.source)
    assert_read_back(args, run, ESTIMATE_FIELDS)
    # the model the trainer loads is in the folder the spec named, or the one its TrainingPipeline published
    meant = spec.model.pipeline_path or published
    assert posixpath.join(cli._model_path(args), cli._pipeline_name(args)) == posixpath.join(jobs.MODELS_MOUNT,
                                                                                              meant)


def test_the_jobs_run_what_the_contract_writes():
    """The Job's container command is the contract's argv of the spec's invocation (no second writer)."""
    spec = _valid(api.TrainingPipelineSpec, TP_DOCUMENT)
    assert jobs.train_command(spec) == invocation.train_argv(jobs.train_invocation(spec))


@pytest.mark.parametrize("command", ["train", "estimate"])
def test_every_contract_flag_is_an_option_of_the_trainer(command):
    """The flag table and the parser agree on every spelling (the Prometheus options included)."""
    subcommands = next(a for a in cli.build_parser(command)._actions if isinstance(a, argparse._SubParsersAction))
    declared = {s for action in subcommands.choices[command]._actions for s in action.option_strings}
    flags = [v for v in vars(invocation).values() if isinstance(v, invocation.Flag)]
    assert len(flags) > 30
    for flag in flags:
        assert set(flag.names) <= declared, flag


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

