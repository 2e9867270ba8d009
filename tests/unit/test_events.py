"""Envelope parsing: errors name the field, unknown fields are ignored, PII never survives."""

from __future__ import annotations

import json

import pytest

from shared.events import MAX_EVENTS_PER_REQUEST, InvalidEvents, parse_events
from tests.support import SAMPLES, sample

PII_VALUES = ["alice@acme.fr", "+33 6 12 34 56 78", "sk-live-0000000000000000", "FR7630006000011234567890189"]
PROMPT = "Please summarise the contract"


def fields(exc: pytest.ExceptionInfo[InvalidEvents]) -> list[str]:
    return [e.field for e in exc.value.errors]


@pytest.mark.parametrize("path", sorted(SAMPLES.glob("*.json")), ids=lambda p: p.stem)
def test_every_sample_parses(path: object) -> None:
    (event,) = parse_events(path.read_bytes())  # type: ignore[attr-defined]
    assert event.id.startswith("evt_")


def test_parsed_event_carries_no_pii_value_or_prompt_text() -> None:
    for name in ("policy_violated", "high_risk", "coach_no_device"):
        (event,) = parse_events(sample(name))
        dumped = event.model_dump_json()
        assert PROMPT not in dumped
        assert '"value"' not in dumped and '"text"' not in dumped
        for value in PII_VALUES[1:]:
            assert value not in dumped
    (event,) = parse_events(sample("policy_violated"))
    assert event.data.interaction is not None
    assert [c.type for c in event.data.interaction.classifications] == ["EMAIL"]
    assert event.user_email == "alice@acme.fr"  # the user's identity is forwarded, by design


def test_content_metadata_keeps_only_allowlisted_keys() -> None:
    doc = json.loads(sample("policy_violated"))
    doc["data"]["interaction"]["content_metadata"]["snippet"] = "secret project"
    (event,) = parse_events(json.dumps(doc).encode())
    assert "secret project" not in event.model_dump_json()


def test_unknown_fields_are_ignored() -> None:
    doc = json.loads(sample("high_risk"))
    doc["future_field"] = {"x": 1}
    doc["data"]["interaction"]["new_thing"] = [1, 2]
    (event,) = parse_events(json.dumps(doc).encode())
    assert event.type == "interaction.high_risk"


def test_array_of_events_and_duplicates_kept_once() -> None:
    body = b"[" + sample("high_risk") + b"," + sample("alert_high") + b"," + sample("high_risk") + b"]"
    assert [e.type for e in parse_events(body)] == ["interaction.high_risk", "alert.severity_high"]


def test_required_envelope_fields_are_named() -> None:
    with pytest.raises(InvalidEvents) as exc:
        parse_events(b'{"id": "evt_x"}')
    assert fields(exc) == ["type", "created_at", "data"]


def test_errors_in_an_array_carry_the_index() -> None:
    good = json.loads(sample("high_risk"))
    bad = json.loads(sample("high_risk"))
    bad["data"]["interaction"]["risk_score"] = 3
    bad["created_at"] = "yesterday"
    with pytest.raises(InvalidEvents) as exc:
        parse_events(json.dumps([good, bad, 7]).encode())
    assert fields(exc) == ["[1].created_at", "[1].data.interaction.risk_score", "[2]"]


def test_interaction_type_without_interaction_is_an_error() -> None:
    doc = {"id": "evt_1", "type": "interaction.policy_violated", "created_at": "2026-03-20T14:32:01Z", "data": {}}
    with pytest.raises(InvalidEvents) as exc:
        parse_events(json.dumps(doc).encode())
    assert fields(exc) == ["data.interaction"]


def test_error_messages_never_echo_the_value() -> None:
    doc = json.loads(sample("policy_violated"))
    doc["data"]["interaction"]["classifications"][0]["score"] = "alice@acme.fr"
    with pytest.raises(InvalidEvents) as exc:
        parse_events(json.dumps(doc).encode())
    assert "alice@acme.fr" not in str(exc.value)
    assert fields(exc) == ["data.interaction.classifications[0].score"]


@pytest.mark.parametrize(
    ("body", "message"),
    [(b"{not json", "invalid JSON"), (b"[]", "empty array"), (b'"text"', "JSON object"), (b"\xff", "invalid JSON")],
)
def test_bad_bodies(body: bytes, message: str) -> None:
    with pytest.raises(InvalidEvents) as exc:
        parse_events(body)
    assert message in exc.value.errors[0].message


def test_more_than_100_events_is_refused() -> None:
    doc = json.loads(sample("high_risk"))
    items = [dict(doc, id=f"evt_{i}") for i in range(MAX_EVENTS_PER_REQUEST + 1)]
    with pytest.raises(InvalidEvents) as exc:
        parse_events(json.dumps(items).encode())
    assert fields(exc) == ["body"] and "at most 100" in exc.value.errors[0].message
    assert len(parse_events(json.dumps(items[:100]).encode())) == 100
