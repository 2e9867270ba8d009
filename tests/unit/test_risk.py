"""The combined risk score: one test per factor, the severity rule (raise, never lower), the
explanation line, and the configuration's validation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shared.events import Envelope, parse_events
from shared.mapping import draft_alert, with_assessment
from shared.risk import DeviceView, Patterns, RiskConfig, RiskConfigError, assess, load_config
from tests.support import sample

NOW = 1_774_000_000.0
CFG = RiskConfig()


def event(**changes: object) -> Envelope:
    doc = json.loads(sample("policy_violated"))
    it = doc["data"]["interaction"]
    it.update({"classification_level": "Internal", "risk_score": 0.40}, **changes)
    doc["data"]["policy"]["action"] = "log"
    (parsed,) = parse_events(json.dumps(doc).encode())
    return parsed


NONE, PLAIN = Patterns(), DeviceView()


def factors(e: Envelope, patterns: Patterns = NONE, device: DeviceView = PLAIN) -> dict[str, float]:
    found = assess(e, patterns, device, CFG, base="Low", now=NOW)
    return {f.name: f.weight for f in found.factors}


def test_an_event_alone_scores_what_noxys_said() -> None:
    found = assess(event(), Patterns(), DeviceView(), CFG, base="Low", now=NOW)
    assert (found.score, found.factors, found.severity) == (0.40, (), "Low")
    assert found.line() == "Combined risk 0.40 = Noxys 0.40"


def test_device_violations_in_the_last_hour() -> None:
    seen = (NOW - 4000, NOW - 1800, NOW - 600, NOW - 60, NOW)  # 4 within the hour
    assert factors(event(), Patterns(device_seen=seen)) == {"device_violations_1h": 0.04 + 0.02}


def test_user_violations_in_24_hours() -> None:
    seen = tuple(NOW - i * 3600 for i in range(6))
    assert factors(event(), Patterns(user_seen=seen))["user_violations_24h"] == pytest.approx(0.06)


def test_distinct_pii_types_and_platforms_of_the_user() -> None:
    p = Patterns(user_pii_types=frozenset({"EMAIL", "IBAN", "PHONE"}), user_platforms=frozenset({"a", "b", "c"}))
    assert factors(event(), p) == {"user_pii_types_24h": 0.04, "user_platforms_24h": 0.03}


def test_a_platform_the_user_never_used() -> None:
    assert factors(event(), Patterns(new_platform=True)) == {"new_platform": 0.03}


def test_classification_level_policy_action_and_pii_types_in_the_prompt() -> None:
    e = event(
        classification_level="Restricted",
        classifications=[{"type": t, "score": 0.9} for t in ("EMAIL", "IBAN", "PHONE")],
    )
    assert factors(e) == {"classification": 0.05, "pii_types_in_event": 0.02}


def test_defender_device_risk_and_exposure() -> None:
    assert factors(event(), device=DeviceView("High", "Medium")) == {
        "defender_device_risk": 0.05,
        "defender_exposure": 0.01,
    }


def test_the_score_raises_severity_but_never_lowers_what_the_event_gives() -> None:
    e = event(risk_score=0.78)
    raised = assess(e, Patterns(device_seen=(NOW,) * 5), DeviceView("High"), CFG, base="Medium", now=NOW)
    assert raised.score == pytest.approx(0.78 + 0.08 + 0.05) and raised.severity == "High"
    assert raised.line() == (
        "Combined risk 0.91 = Noxys 0.78 + 5 violations on this device in 1 h (+0.08)"
        " + Defender device risk High (+0.05)"
    )
    kept = assess(event(risk_score=0.1), Patterns(), DeviceView(), CFG, base="High", now=NOW)
    assert kept.severity == "High"  # a Noxys critical alert stays High whatever the score


def test_the_line_goes_under_the_headline_and_the_marker_stays() -> None:
    e = event(risk_score=0.78)
    found = assess(e, Patterns(device_seen=(NOW,) * 5), DeviceView("High"), CFG, base="Medium", now=NOW)
    draft = with_assessment(draft_alert(e), found.line(), found.severity)
    lines = draft.description.splitlines()
    assert lines[1].startswith("Combined risk 0.91") and f"Noxys event id: {e.id}" in lines
    assert draft.severity == "High"


def test_an_unreadable_pattern_store_scores_the_event_alone_and_says_why() -> None:
    down = Patterns(device_seen=(NOW,) * 9, available=False, why="pattern store unreachable (ServiceRequestError)")
    found = assess(event(), down, DeviceView(), CFG, base="Low", now=NOW)
    assert found.factors == () and "patterns unavailable: pattern store unreachable" in found.line()


def test_hunting_factors_are_types_and_counts_only() -> None:
    found = assess(event(), Patterns(device_seen=(NOW,) * 3), DeviceView("High"), CFG, base="Low", now=NOW)
    assert json.loads(found.factors_json()) == [
        {"factor": "device_violations_1h", "value": 3, "weight": 0.04},
        {"factor": "defender_device_risk", "value": "High", "weight": 0.05},
    ]


def test_a_config_file_overrides_and_a_bad_one_names_the_field(tmp_path: Path) -> None:
    good = tmp_path / "risk.json"
    good.write_text(json.dumps({"new_platform_for_user": 0.1}))
    assert load_config(str(good)).new_platform_for_user == 0.1
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"device_violations_1h": {"from_count": 0, "weight": 0.1}}))
    with pytest.raises(RiskConfigError, match=r"device_violations_1h\.from_count: Input should be greater than"):
        load_config(str(bad))
    bad.write_text(json.dumps({"device_violation_1h": {}}))
    with pytest.raises(RiskConfigError, match="device_violation_1h: Extra inputs are not permitted"):
        load_config(str(bad))


def test_the_line_is_left_out_rather_than_cut_the_event_id_off() -> None:
    e = event(risk_score=0.78)
    draft = draft_alert(e)
    full = draft.__class__(
        **{**draft.__dict__, "description": draft.description + "x" * (3995 - len(draft.description))}
    )
    kept = with_assessment(full, "Combined risk 0.91 = …", "High")
    assert kept.description == full.description and kept.severity == "High"


def test_explain_names_what_is_wrong_with_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from ops.cli import main

    batch = tmp_path / "batch.json"
    batch.write_text("[" + sample("policy_violated").decode() + "," + sample("high_risk").decode() + "]")
    assert main(["explain", str(batch)]) == 2
    assert "holds 2 events: give one event" in capsys.readouterr().err
    assert main(["explain", str(tmp_path / "missing.json")]) == 2
    assert "cannot read" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ('{"new_platform_for_user": NaN}', "NaN is not a number"),
        ('{"new_platform_for_user": -Infinity}', "-Infinity is not a number"),
        ('{"new_platform_for_user": 1e308}', "new_platform_for_user: Input should be less than or equal to 1"),
        ('{"new_platform_for_user": -0.5}', "new_platform_for_user: Input should be greater than or equal to 0"),
        ('{"new_platform_for_user": "0.1"}', "new_platform_for_user: Input should be a valid number"),
        ('{"defender_risk": {"High": -1}}', "defender_risk.High: Input should be greater than or equal to 0"),
        ('{"new_platform_for_user": 0.1, "new_platform_for_user": 0.2}', "duplicate key 'new_platform_for_user'"),
        ('{"device_violations_1h": {"from_count": ' + "1" * 5000 + ', "weight": 0.1}}', "5000 characters"),
        ('{"a":' * 500 + "1" + "}" * 500, "nested more than"),
    ],
)
def test_a_hostile_or_sloppy_weight_is_refused_naming_the_field(tmp_path: Path, text: str, says: str) -> None:
    path = tmp_path / "risk.json"
    path.write_text(text)
    with pytest.raises(RiskConfigError) as caught:
        load_config(str(path))
    assert caught.value.problem.startswith(str(path)) and says in caught.value.problem


def test_a_risk_file_that_is_not_utf8_is_named(tmp_path: Path) -> None:
    path = tmp_path / "risk.json"
    path.write_bytes(b'{"defender_risk": {"H\xffgh": 0.1}}')
    with pytest.raises(RiskConfigError, match="is not UTF-8"):
        load_config(str(path))
