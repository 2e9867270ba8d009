"""Response rules (pure): the file is validated whole with the failing field's path, rules match
or say why not, exclusions, and each guardrail's verdict."""

from __future__ import annotations

import json

import pytest

from shared.response.rules import (
    Guard,
    Limits,
    RulesError,
    Situation,
    excluded_by,
    parse_rules,
    verdict,
    why_not,
)
from tests.support import ROOT

SAMPLE = (ROOT / "samples" / "response-rules.json").read_text()
NOW = 1_774_000_000.0


def rules_with(**rule: object) -> str:
    base: dict[str, object] = {"name": "r", "then": [{"action": "isolate"}]}
    return json.dumps({"rules": [base | rule]})


def situation(**changes: object) -> Situation:
    values: dict[str, object] = {
        "event_type": "interaction.policy_violated",
        "severity": "High",
        "combined_risk": 0.93,
        "platform_id": "chatgpt",
        "platform_name": "ChatGPT",
        "policy_action": "block",
        "device_tags": (),
        "counts": {"device:60": 3},
    }
    return Situation(**(values | changes))  # type: ignore[arg-type]


def test_the_shipped_sample_is_valid_and_every_rule_is_a_dry_run() -> None:
    rules = parse_rules(SAMPLE)
    assert [r.name for r in rules.rules] == [
        "Block user on critical AI violation",
        "Auto-isolate devices with repeated violations",
    ]
    assert all(r.dry_run for r in rules.rules) and rules.permissions() == {}


@pytest.mark.parametrize(
    ("text", "named"),
    [
        (rules_with(then=[{"action": "isolate", "isolation_type": "Partial"}]), "rules[0].then[0].isolation_type"),
        (rules_with(then=[{"action": "reboot"}]), "rules[0].then[0]"),
        (rules_with(when={"repeat": {"count": 1, "within_minutes": 60}}), "rules[0].when.repeat.count"),
        (rules_with(when={"min_combined_risk": 1.5}), "rules[0].when.min_combined_risk"),
        (rules_with(then=[{"action": "tag_device", "tag": "bad;tag"}]), "rules[0].then[0].tag"),
        (rules_with(dryrun=False), "rules[0].dryrun"),
        (json.dumps({"rules": [], "limits": {"max_isolations_per_hour": -1}}), "limits.max_isolations_per_hour"),
    ],
)
def test_a_bad_file_is_refused_with_the_field_named(text: str, named: str) -> None:
    with pytest.raises(RulesError) as caught:
        parse_rules(text, "rules.json")
    assert f"rules.json: {named}:" in caught.value.problem


def test_not_json_says_where() -> None:
    with pytest.raises(RulesError, match=r"not JSON \(line 1"):
        parse_rules("{rules: []}")


def test_a_rule_is_a_dry_run_unless_it_says_otherwise() -> None:
    assert parse_rules(rules_with()).rules[0].dry_run is True
    live = parse_rules(rules_with(dry_run=False))
    assert live.permissions() == {"Machine.Isolate": ["r"]}


def test_each_condition_says_why_it_does_not_hold() -> None:
    rule = parse_rules(
        rules_with(
            when={
                "event_types": ["interaction.policy_violated"],
                "min_severity": "High",
                "min_combined_risk": 0.9,
                "platforms": ["chatgpt"],
                "policy_actions": ["block"],
                "repeat": {"count": 3, "within_minutes": 60, "per": "device"},
            }
        )
    ).rules[0]
    assert why_not(rule, situation()) is None
    assert why_not(rule, situation(event_type="interaction.high_risk")) == "event type interaction.high_risk not listed"
    assert why_not(rule, situation(severity="Medium")) == "severity Medium too low"
    assert why_not(rule, situation(combined_risk=0.5)) == "combined risk 0.50 below 0.9"
    assert why_not(rule, situation(platform_id="gemini", platform_name="Gemini")) == "platform Gemini not listed"
    assert why_not(rule, situation(policy_action="coach")) == "policy action coach not listed"
    assert why_not(rule, situation(counts={"device:60": 2})) == "2 of 3 events per device within 60 min"


def test_an_excluded_device_is_named_by_its_tag() -> None:
    rule = parse_rules(rules_with(when={"exclude_device_tags": ["NoAutoResponse"]})).rules[0]
    assert excluded_by(rule, situation(device_tags=("finance", "noautoresponse"))) == "NoAutoResponse"
    assert excluded_by(rule, situation(device_tags=("finance",))) is None


def test_guardrails() -> None:
    live = parse_rules(rules_with(dry_run=False)).rules[0]
    isolate = live.then[0]
    limits = Limits(max_isolations_per_hour=2, device_cooldown_minutes=60)
    assert verdict(isolate, live, "e1", Guard(), limits, NOW) == ("send", "")
    dry = parse_rules(rules_with()).rules[0]
    assert verdict(isolate, dry, "e1", Guard(), limits, NOW)[0] == "dry_run"
    cooling = Guard(cooldown_until=NOW + 600, cooldown_owner="e0")
    assert verdict(isolate, live, "e1", cooling, limits, NOW)[1].startswith("device cooldown until")
    assert verdict(isolate, live, "e0", cooling, limits, NOW) == ("send", "")  # the holder goes on
    running = Guard(pending={"Isolate": "a-1"})
    assert "already pending or running" in verdict(isolate, live, "e1", running, limits, NOW)[1]
    full = Guard(isolations_last_hour=2, isolation_owners=("e7", "e8"))
    assert verdict(isolate, live, "e1", full, limits, NOW) == ("skip", "hourly isolation cap reached (2)")
    assert verdict(isolate, live, "e7", full, limits, NOW) == ("send", "")  # one of the hour's own
