"""The operator's policy (kepler_operator.policy) and the validation it relies on (api): default deny,
URL prefixes that cannot be tricked, the admin's settings read from the Deployment's environment."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from kepler_operator import api, policy
from kepler_operator.errors import PolicyDeniedError
from kepler_operator.settings import OperatorSettings
from kepler_trainer import features

RULES = policy.Policy(trainer_image="registry.local/trainer:1", default_pvc="kepler-models",
                      allowed_images=("registry.local/team/*", "quay.io/x/trainer@sha256:abc"),
                      allowed_prometheus_urls=("http://prom.monitoring.svc:9090", "https://thanos.example/api/prom/"),
                      allowed_pvcs=("team-models",))


def tp(**change) -> api.TrainingPipelineSpec:
    return api.TrainingPipelineSpec.model_validate({
        "prometheus": {"url": "http://prom.monitoring.svc:9090"}, "window": {"intervalSeconds": 600},
        "pipelineName": "p", **change})


@pytest.mark.parametrize("url, allowed", [
    ("http://prom.monitoring.svc:9090", True),
    ("http://prom.monitoring.svc:9090/", True),
    ("http://PROM.monitoring.svc:9090/prometheus", True),
    ("https://thanos.example/api/prom", True),
    ("https://thanos.example:443/api/prom/v1", True),
    ("https://thanos.example/api/prometheus", False),      # a prefix of the name, not of the path
    ("https://thanos.example/api/prom/../../admin", False),
    ("https://thanos.example/api/prom/%2e%2e/admin", False),
    ("http://thanos.example/api/prom", False),             # the scheme is part of the origin
    ("http://prom.monitoring.svc", False),                  # port 80, not 9090
    ("http://prom.monitoring.svc:9091", False),
    ("http://prom.monitoring.svc:9090.evil.example", False),
    ("http://prom.monitoring.svc:9090@evil.example", False),
    ("http://evil.example\\@prom.monitoring.svc:9090", False),
    ("http://evil.example#@prom.monitoring.svc:9090", False),
    ("ftp://prom.monitoring.svc:9090", False),
])
def test_prometheus_urls_match_an_allowed_origin_and_path_prefix(url, allowed):
    assert RULES.url_allowed(url) is allowed


def test_nothing_is_allowed_by_default():
    rules = policy.Policy.from_settings(OperatorSettings())
    assert rules.image_allowed(None) and rules.image_allowed(OperatorSettings().trainer_image)
    assert not rules.image_allowed("busybox")
    assert not rules.url_allowed("http://prometheus:9090")
    assert rules.pvc_allowed(None) and rules.pvc_allowed("kepler-models") and not rules.pvc_allowed("other")


def test_images_are_exact_or_under_a_starred_prefix():
    assert RULES.image_allowed("registry.local/trainer:1") and RULES.image_allowed("registry.local/team/t:2")
    assert RULES.image_allowed("quay.io/x/trainer@sha256:abc")
    assert not RULES.image_allowed("registry.local/trainer:2") and not RULES.image_allowed("registry.local/teamx")


def test_settings_come_from_the_environment_as_comma_lists(monkeypatch):
    monkeypatch.setenv("KEPLER_OPERATOR_ALLOWED_IMAGES", "a:1, b/*")
    monkeypatch.setenv("KEPLER_OPERATOR_ALLOWED_PROMETHEUS_URLS", "http://p:9090,https://q/x")
    monkeypatch.setenv("KEPLER_OPERATOR_ALLOWED_PVCS", "*")
    rules = policy.Policy.from_settings(OperatorSettings())
    assert rules.allowed_images == ("a:1", "b/*") and rules.allowed_prometheus_urls == ("http://p:9090", "https://q/x")
    assert rules.pvc_allowed("anything")


@pytest.mark.parametrize("change, field", [
    ({"job": {"image": "busybox"}}, "spec.job.image"),
    ({"prometheus": {"url": "http://attacker:9090"}}, "spec.prometheus.url"),
    ({"storage": {"pvcName": "payroll"}}, "spec.storage.pvcName"),
])
def test_a_refusal_names_the_field(change, field):
    with pytest.raises(PolicyDeniedError) as caught:
        policy.check_training(RULES, tp(**change))
    assert str(caught.value).startswith(field) and caught.value.reason == "PolicyDenied"


def test_allowed_specs_pass():
    policy.check_training(RULES, tp(job={"image": "registry.local/team/trainer:3"}, storage={"pvcName": "team-models"}))


def test_secrets_need_the_opt_in_label():
    spec = tp(prometheus={"url": "http://prom.monitoring.svc:9090", "bearerTokenSecret": {"name": "tok"},
                          "tls": {"caSecret": {"name": "ca"}}})
    used = policy.secrets_used(spec.prometheus, "spec.prometheus")
    assert used == [("spec.prometheus.bearerTokenSecret", "tok"), ("spec.prometheus.tls.caSecret", "ca")]
    policy.check_secret(*used[0], {policy.CREDENTIALS_LABEL: "true"})
    for labels in ({}, {policy.CREDENTIALS_LABEL: "True"}, {policy.CREDENTIALS_LABEL: "yes"}, None):
        with pytest.raises(PolicyDeniedError, match="spec.prometheus.bearerTokenSecret"):
            policy.check_secret(*used[0], labels)


# ---------------------------------------------------------------------------------- validation

@pytest.mark.parametrize("schedule", ["61 * * * *", "0 24 * * *", "0 0 0 * *", "0 0 * 13 *", "0 0 * * 8",
                                      "*/0 * * * *", "0 0 30 2 *", "0 0 31 4,6,9,11 *", "* * * *", "@reboot"])
def test_bad_schedules_are_invalid(schedule):
    with pytest.raises(ValidationError, match="schedule"):
        tp(schedule=schedule)


@pytest.mark.parametrize("schedule", ["* * * * *", "*/15 0-6 1,15 * mon-fri", "0 0 29 2 *", "@daily",
                                      "0 12 ? JAN-MAR *", "5 4 * * 7"])
def test_good_schedules_are_valid(schedule):
    assert tp(schedule=schedule).schedule == schedule


@pytest.mark.parametrize("name", ["x.zip", "X.Zip", "estimations", "", ".hidden", "a/b"])
def test_colliding_pipeline_names_are_refused_by_operator_and_trainer_alike(name):
    with pytest.raises(ValidationError, match="pipelineName"):
        tp(pipelineName=name)
    assert features.pipeline_name_problem(name) is not None


@pytest.mark.parametrize("filters", [{"instance=~": ".*"}, {"bad-name": "x"}, {"x" * 129: "v"}, {"k": "v" * 1025},
                                     {f"k{i}": "v" for i in range(17)}])
def test_label_filters_are_checked_by_pydantic_too(filters):
    with pytest.raises(ValidationError, match="labelFilters"):
        tp(labelFilters=filters)
