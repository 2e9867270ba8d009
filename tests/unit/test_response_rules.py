"""Response rules (pure): the file is validated whole with the failing field's path, rules match
or say why not, exclusions, and each guardrail's verdict."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shared.response.files import start_warnings
from shared.response.rules import (
    Guard,
    Limits,
    PerHour,
    RulesError,
    Situation,
    block_target,
    excluded_by,
    identity_proof,
    parse_rules,
    protected,
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
        "Tag the device and open a ticket on a critical AI violation",
        "Auto-isolate devices with repeated violations",
    ]
    assert all(r.dry_run for r in rules.rules) and rules.permissions() == {}
    first, repeat = rules.rules  # the critical rule names what it does, and does not isolate
    assert [a.action for a in first.then] == ["tag_device", "ticket"]
    assert repeat.then[0].action == "isolate"


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
    limits = Limits(device_cooldown_minutes=60)
    assert verdict(isolate, live, "e1", Guard(), limits, NOW) == ("send", "")
    dry = parse_rules(rules_with()).rules[0]
    assert verdict(isolate, dry, "e1", Guard(), limits, NOW)[0] == "dry_run"
    cooling = Guard(cooldown_until=NOW + 600, cooldown_owner="e0")
    said = verdict(isolate, live, "e1", cooling, limits, NOW)[1]
    assert said == "device cooldown until 2026-03-20T09:56:40Z (60 min)"  # ISO 8601 UTC, not an epoch
    assert verdict(isolate, live, "e0", cooling, limits, NOW) == ("send", "")  # the holder goes on
    running = Guard(pending={"Isolate": "a-1"})
    assert "already pending or running" in verdict(isolate, live, "e1", running, limits, NOW)[1]


# ---------------------------------------------------------------------- strict files (issue 19, item 7)
@pytest.mark.parametrize(
    ("text", "named"),
    [
        (rules_with(dry_run="false"), "rules[0].dry_run: Input should be a valid boolean"),
        (rules_with(dry_run=0), "rules[0].dry_run: Input should be a valid boolean"),
        ('{"rules": [], "limits": {"device_cooldown_minutes": 60.0}}', "limits.device_cooldown_minutes"),
        ('{"rules": [], "limits": {"max_per_hour": {"isolate": -1}}}', "limits.max_per_hour.isolate"),
        ('{"rules": [], "limits": {"max_per_hour": {"reboot": 1}}}', "limits.max_per_hour.reboot"),
        ('{"rules": [], "limits": {"max_devices_per_hour": 1e308}}', "limits.max_devices_per_hour"),
        (rules_with(when={"min_combined_risk": "0.5"}), "rules[0].when.min_combined_risk"),
        ('{"rules": [], "allowed_block_domains": ["com"]}', "allowed_block_domains[0]"),
        ('{"rules": [], "allowed_block_domains": ["10.0.0.1"]}', "allowed_block_domains[0]"),
    ],
)
def test_a_sloppy_value_is_refused_not_coerced(text: str, named: str) -> None:
    with pytest.raises(RulesError) as caught:
        parse_rules(text, "rules.json")
    assert f"rules.json: {named}" in caught.value.problem


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ('{"rules": [], "rules": []}', "duplicate key 'rules'"),
        ('{"rules": [], "limits": {"max_devices_per_hour": NaN}}', "NaN is not a number"),
        ('{"rules": [], "limits": {"max_devices_per_hour": -Infinity}}', "-Infinity is not a number"),
        ('{"rules": [], "limits": {"max_devices_per_hour": 1e999}}', "out of range"),
        ('{"rules": [], "limits": {"max_devices_per_hour": ' + "9" * 5000 + "}}", "a number of 5000 characters"),
        ("[" * 100_000 + "]" * 100_000, "nested more than 16 levels"),
        (b'{"rules": [{"name": "caf\xe9"}]}', "not UTF-8 (byte 24)"),
        (b" " * 1_000_001, "1,000,001 bytes"),
    ],
)
def test_a_hostile_file_is_a_clear_error_never_a_traceback(text: str | bytes, says: str) -> None:
    with pytest.raises(RulesError) as caught:
        parse_rules(text, "rules.json")
    assert caught.value.problem.startswith("rules.json") and says in caught.value.problem


def test_the_default_caps_and_the_older_isolation_setting() -> None:
    limits = parse_rules('{"rules": []}').limits
    assert {k: limits.cap(k) for k in PerHour.model_fields} == {
        "isolate": 5, "restrict_app_execution": 5, "collect_investigation_package": 5, "av_scan": 20,
        "tag_device": 50, "block_domain": 3, "ticket": 60, "notify_user": 30, "contain_user": 10,
    }  # fmt: skip
    assert limits.max_devices_per_hour == 10
    older = parse_rules('{"rules": [], "limits": {"max_isolations_per_hour": 1}}').limits
    assert older.cap("isolate") == 1
    both = parse_rules('{"rules": [], "limits": {"max_isolations_per_hour": 1, "max_per_hour": {"isolate": 2}}}')
    assert both.limits.cap("isolate") == 2


# ---------------------------------------------------------------------- trust boundaries (items 1, 3, 4)
def test_block_domain_acts_on_the_catalogue_or_the_operator_list_never_the_event_host() -> None:
    assert block_target("chatgpt", "google.com", []) == ("chatgpt.com", "")
    assert block_target("newbot", "google.com", [])[0] is None
    assert "allowed_block_domains" in block_target("newbot", "google.com", [])[1]
    assert block_target("newbot", "chat.newbot.ai", ["newbot.ai"]) == ("chat.newbot.ai", "")
    assert block_target("newbot", "newbot.ai.evil.com", ["newbot.ai"])[0] is None
    assert block_target("newbot", "", ["newbot.ai"]) == (None, "the platform's domain is unknown")


MACHINE = {
    "id": "ce860c412c3cebc4af806281c2881c3c937a1d58",
    "computerDnsName": "alice-laptop.acme.local",
    "aadDeviceId": "5b1c3a9e-0d7f-4c1b-9a8e-2f6d4e3c2b1a",
    "lastIpAddress": "10.1.2.3",
    "osPlatform": "Windows11",
    "deviceValue": "Normal",
}


def test_a_destructive_action_needs_the_entra_id_or_two_agreeing_identifiers() -> None:
    assert identity_proof(MACHINE, {"aad": MACHINE["aadDeviceId"]}, 1) is None
    assert identity_proof(MACHINE, {"hostname": "alice-laptop", "ip": "10.1.2.3"}, 1) is None
    assert identity_proof(MACHINE, {"fqdn": "alice-laptop.acme.local", "ip": "10.1.2.3"}, 1) is None
    assert "its name only" in str(identity_proof(MACHINE, {"hostname": "alice-laptop"}, 1))
    # host name and FQDN are one identifier, however spelt: a victim's DNS name is not enough
    dns_name = "alice-laptop.acme.local"
    assert "its name only" in str(identity_proof(MACHINE, {"hostname": dns_name, "fqdn": dns_name}, 1))
    assert "its IP address only" in str(identity_proof(MACHINE, {"hostname": "bob-ws", "ip": "10.1.2.3"}, 1))
    other = "0c4f2b7e-3d1a-4e5f-9b8c-7a6d5e4f3c2b"
    assert "differs" in str(identity_proof(MACHINE, {"aad": other, "hostname": "alice-laptop"}, 1))
    both = {"hostname": "alice-laptop", "ip": "10.1.2.3"}
    assert "ambiguous: 2 machine records" in str(identity_proof(MACHINE, both, 2))


def test_servers_and_high_value_devices_are_protected_unless_the_rule_allows_it() -> None:
    rule = parse_rules(rules_with(dry_run=False)).rules[0]
    allowed = parse_rules(rules_with(dry_run=False, allow_servers_and_high_value=True)).rules[0]
    assert protected(rule, MACHINE) is None
    assert "high value" in str(protected(rule, MACHINE | {"deviceValue": "High"}))
    assert "server (WindowsServer2022)" in str(protected(rule, MACHINE | {"osPlatform": "WindowsServer2022"}))
    assert protected(allowed, MACHINE | {"deviceValue": "High", "osPlatform": "WindowsServer2022"}) is None
    assert "server (Ubuntu)" in str(protected(rule, MACHINE | {"osPlatform": "Ubuntu"}))  # Linux: a server


def test_command_1_names_a_bad_file_before_anything_runs(tmp_path: Path) -> None:
    bad = tmp_path / "rules.json"
    bad.write_text('{"rules": [], "rules": []}')
    risk = tmp_path / "missing-risk.json"
    said = start_warnings({"RESPONSE_RULES_FILE": str(bad), "RISK_CONFIG_FILE": str(risk)})
    assert said == [
        f"⚠ RESPONSE_RULES_FILE: {bad}: duplicate key 'rules' (one of the two values would be silently ignored)"
        " — automated response is OFF; alerts are delivered as usual",
        f"⚠ RISK_CONFIG_FILE: {risk} cannot be read (No such file or directory)"
        " — the combined risk score uses the default weights",
    ]
    assert start_warnings({"RESPONSE_RULES_FILE": str(ROOT / "samples" / "response-rules.json")}) == []


def test_command_1_names_a_mistyped_response_setting_before_anything_runs() -> None:
    said = start_warnings({"TICKET_URL": "http://tickets.acme.local/"})
    assert len(said) == 1 and said[0].startswith("⚠ TICKET_URL: must be an https:// URL")
    assert "automated response is OFF; alerts are delivered as usual" in said[0]
