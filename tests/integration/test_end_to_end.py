"""Signed Noxys event → HTTP → real Azurite queue → queue function → alert in the emulator."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from tests.support import Env, dumps, emulator_state, post, sample, signed_headers
from tools.emulator.server import EmulatorServer

pytestmark = pytest.mark.integration

ALICE = "ce860c412c3cebc4af806281c2881c3c937a1d58"
BOB_ACTIVE = "f07bc4f4807706075293a1cbe006c71233cae764"
CANARY = "canary-pii-7f3e@private.example"
PROMPT = "Please summarise the contract"


def test_policy_violation_becomes_an_alert_on_the_right_device(
    host: Any, env: Env, emulator: EmulatorServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    body = sample("policy_violated")
    assert post(host, body, signed_headers(body)).status_code == 202
    queued = env.queued_texts()
    assert host.drain() == 1
    assert env.queued_texts() == [] and env.queued_texts(f"{env.queue}-poison") == []

    (alert,) = emulator_state(emulator)["alerts"]
    assert alert["machineId"] == ALICE
    assert alert["title"] == "Policy violation - Block PII on ChatGPT"
    assert alert["severity"] == "High" and alert["category"] == "Exfiltration"
    # the anchor is a real network event of that device to chatgpt.com near 14:32
    hunted = emulator.state.device_network_events(ALICE, *_window("2026-03-20T14:22:00Z", "2026-03-20T14:42:00Z"))
    assert (alert["reportId"], alert["eventTime"]) in {(str(r["ReportId"]), r["Timestamp"]) for r in hunted}
    assert "Email address" in alert["description"]

    # Privacy: the prompt text appears nowhere; the e-mail appears only as the user's identity.
    everything = [dumps(alert), *queued, caplog.text, dumps(emulator_state(emulator)["calls"])]
    for text in everything:
        assert PROMPT not in text
    without_user_line = "\n".join(li for li in alert["description"].splitlines() if not li.startswith("User: "))
    assert "alice@acme.fr" not in without_user_line + alert["title"] + alert["recommendedAction"]


def test_a_classification_value_never_leaves_the_function(
    host: Any, env: Env, emulator: EmulatorServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    doc = json.loads(sample("policy_violated"))
    doc["data"]["interaction"]["classifications"][0]["value"] = CANARY
    doc["data"]["interaction"]["content_metadata"]["text"] = f"mail {CANARY} now"
    body = json.dumps(doc).encode()
    assert post(host, body, signed_headers(body)).status_code == 202
    queued = env.queued_texts()
    host.drain()
    state = emulator_state(emulator)
    assert len(state["alerts"]) == 1
    for text in [*queued, caplog.text, dumps(state)]:
        assert CANARY not in text


def test_each_sample_ends_in_its_documented_state(
    host: Any, env: Env, emulator: EmulatorServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    names = ["high_risk", "alert_critical", "alert_high", "coach_no_device"]
    body = b"[" + b",".join(sample(n) for n in names) + b"]"
    assert post(host, body, signed_headers(body, msg_id="batch")).status_code == 202
    assert host.drain() == 4
    alerts = {a["title"]: a for a in emulator_state(emulator)["alerts"]}
    # BOB-WS-0042 has an old inactive record and the re-imaged active one: the active one wins.
    assert alerts["High-risk AI interaction detected - DeepSeek"]["machineId"] == BOB_ACTIVE
    assert alerts["Noxys critical alert - Repeated PII exfiltration attempts to ChatGPT"]["machineId"] == ALICE
    assert len(alerts) == 2
    assert "evt_01JQ8Z2222HIGH0000000001 (alert.severity_high) try 1: no_anchor" in caplog.text
    assert "evt_01JQ8Y0000COACH0000000001 (interaction.policy_violated) try 1: no_device" in caplog.text
    # expected conditions complete the message: nothing left to retry, nothing poisoned
    assert env.queued_texts() == [] and env.queued_texts(f"{env.queue}-poison") == []


def test_refusal_retrying_cannot_fix_is_dead_lettered_at_once_with_code_and_correlation(
    host: Any, env: Env, emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shared import wiring
    from tests.support import LIMITED_CLIENT

    monkeypatch.setenv("DEFENDER_CLIENT_ID", LIMITED_CLIENT[0])
    monkeypatch.setenv("DEFENDER_CLIENT_SECRET", LIMITED_CLIENT[1])
    wiring.reset()
    body = sample("policy_violated")
    assert post(host, body, signed_headers(body)).status_code == 202
    assert host.drain() == 1
    assert emulator_state(emulator)["alerts"] == []
    # 403 (missing AdvancedQuery.Read.All) cannot be fixed by retrying: dead-lettered, not lost
    assert env.queue_client().get_queue_properties().approximate_message_count == 0
    assert env.queued_texts(f"{env.queue}-poison") == []
    (letter,) = env.table("DeadLetters").list_entities()
    assert letter["event_id"] == "evt_01JQ8X4M2Z6N0K3T5V7W9Y1B3D" and letter["error_code"] == "Forbidden"
    assert "AdvancedQuery.Read.All" in letter["reason"] and len(letter["correlation_id"]) == 36
    assert "Please summarise" not in letter["message"]
    ledger = env.table("Ledger").get_entity("evt_01JQ8X4M2Z6N0K3T5V7W9Y1B3D", "event")
    assert ledger["state"] == "dead_lettered"


def _window(start: str, end: str) -> tuple[Any, Any]:
    from tools.emulator.state import parse_time

    return parse_time(start), parse_time(end)
