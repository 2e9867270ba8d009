"""The alert rules: one definition (infra/alerts/rules.json) deployed identically by Bicep and
Terraform, on the connector's metrics (never on log wording), each rule reading a metric the code
emits with attribute values the code can send. Their KQL is parsed and bound in test_kql."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider

from shared import telemetry
from tests.infra.test_templates import INFRA, TF, _tf_resources, bicep
from tests.support import ROOT

pytestmark = pytest.mark.infra

RULES = json.loads((INFRA / "alerts" / "rules.json").read_text())
ALL = [*RULES["rules"], RULES["noEvents"]]


def _accessor(node: Any) -> str:
    """``rule.title`` from pycep's parse of a property access (else the node as text)."""
    try:
        operands = node["operator"]["operands"]
        return f"{operands['operand_1']}.{operands['operand_2']}"
    except (KeyError, TypeError):
        return json.dumps(node)


def test_both_flavours_deploy_the_same_rules_from_one_file() -> None:
    template = bicep(INFRA / "app" / "alerts.bicep")
    assert "../alerts/rules.json" in json.dumps(template["variables"]["defined"])
    assert "../alerts/rules.json" in (TF / "alerts.tf").read_text()
    props = template["resources"]["alertRules"]["config"]["config"]["properties"]
    (criteria,) = props["criteria"]["allOf"]
    bicep_view = {
        "title": _accessor(props["displayName"]),
        "severity": _accessor(props["severity"]),
        "frequency": _accessor(props["evaluationFrequency"]),
        "window": _accessor(props["windowSize"]),
        "query": _accessor(criteria["query"]),
        "scope": props["scopes"],
        "fixed": (criteria["timeAggregation"], criteria["operator"], criteria["threshold"]),
        "periods": tuple(criteria["failingPeriods"].values()),
    }
    (tf,) = _tf_resources("azurerm_monitor_scheduled_query_rules_alert_v2").values()
    (tf_criteria,) = tf["criteria"]
    (tf_periods,) = tf_criteria["failing_periods"]
    tf_view = {
        "title": tf["display_name"],
        "severity": tf["severity"],
        "frequency": tf["evaluation_frequency"],
        "window": tf["window_duration"],
        "query": tf_criteria["query"],
        "scope": tf["scopes"],
        "fixed": (
            tf_criteria["time_aggregation_method"].strip('"'),
            tf_criteria["operator"].strip('"'),
            tf_criteria["threshold"],
        ),
        "periods": (tf_periods["number_of_evaluation_periods"], tf_periods["minimum_failing_periods_to_trigger_alert"]),
    }
    for key in ("title", "severity", "frequency", "window", "query"):
        assert bicep_view[key] == f"rule.{key}" and tf_view[key] == f"${{each.value.{key}}}"
    assert bicep_view["scope"] == ["workspaceId"] and tf_view["scope"] == ["${azurerm_log_analytics_workspace.main.id}"]
    assert bicep_view["fixed"] == tf_view["fixed"] == ("Count", "GreaterThan", 0)
    assert bicep_view["periods"] == tf_view["periods"] == (1, 1)


def test_the_optional_silence_rule_is_deployed_alike() -> None:
    main = bicep(INFRA / "main.bicep")["parameters"]["noEventsAlertHours"]
    assert main["default"] == 0
    alerts_bicep = (INFRA / "app" / "alerts.bicep").read_text()
    alerts_tf = (TF / "alerts.tf").read_text()
    assert "union(defined.noEvents, { window: 'PT${noEventsAlertHours}H' })" in alerts_bicep
    assert 'merge(local.alert_definitions.noEvents, { window = "PT${var.no_events_alert_hours}H" })' in alerts_tf
    assert "noEventsAlertHours: noEventsAlertHours" in (INFRA / "main.bicep").read_text()
    assert 'variable "no_events_alert_hours"' in (TF / "variables.tf").read_text()


def test_rules_cover_what_must_page_someone() -> None:
    assert {r["name"] for r in ALL} == {
        "dead-letters", "poison", "health-failing", "secret-30-days", "secret-7-days", "response-circuit-open",
        "function-failures", "no-events",
    }  # fmt: skip
    severity = {r["name"]: r["severity"] for r in ALL}
    assert severity["secret-7-days"] == 1 and severity["health-failing"] == 1
    assert "< 30" in next(r for r in ALL if r["name"] == "secret-30-days")["query"]
    assert "< 7" in next(r for r in ALL if r["name"] == "secret-7-days")["query"]


def test_no_rule_reads_log_wording() -> None:
    for rule in ALL:
        assert not re.search(r"\b(traces|AppTraces|message|Message)\b", rule["query"]), rule["name"]


def test_each_rule_reads_a_metric_the_code_emits_with_values_it_can_send() -> None:
    emitted = telemetry.Instruments.of(TracerProvider(), MeterProvider())
    names = {*emitted.counters, *emitted.histograms, *emitted.gauges}
    for rule in ALL:
        for metric in re.findall(r'Name == "([^"]+)"', rule["query"]):
            assert metric in names, rule["name"]
        for key, value in re.findall(r'tostring\(Properties\.(\w+)\) == "([^"]+)"', rule["query"]):
            assert telemetry.attribute(key, value) == value, rule["name"]


def test_operations_guide_says_how_to_diagnose_each_rule() -> None:
    guide = (ROOT / "docs" / "operations.md").read_text()
    for rule in ALL:
        assert f"`{rule['name']}`" in guide, rule["name"]
