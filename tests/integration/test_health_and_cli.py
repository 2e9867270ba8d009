"""The connectivity timer and the command line."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from ops.cli import main, shift_to_now
from shared import wiring
from shared.status import run_health_check
from tests.support import SAMPLES, TEST_SECRET, Env

pytestmark = pytest.mark.integration


def test_health_check_connects(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    assert run_health_check(wiring.status_deps())["connection"]["ok"] is True
    assert "Successfully connected to Defender for Endpoint" in caplog.text


def test_health_check_failure_is_named_and_secret_not_logged(
    env: Env, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("DEFENDER_CLIENT_SECRET", "definitely-wrong-secret")
    wiring.reset()
    caplog.set_level(logging.DEBUG)
    record = run_health_check(wiring.status_deps())
    assert record["connection"]["ok"] is False and record["connection"]["problems"][0]["code"] == "bad_secret"
    assert "definitely-wrong-secret" not in caplog.text and "definitely-wrong-secret" not in json.dumps(record)


def test_health_check_unconfigured(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DEFENDER_TENANT_ID")
    wiring.reset()
    record = run_health_check(wiring.status_deps())
    assert record["connection"]["problems"][0]["code"] == "not_configured"
    assert "DEFENDER_TENANT_ID" in record["connection"]["problems"][0]["message"]


def test_send_sample_posts_a_signed_event(host: Any, env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{host.http_port}/api/noxys/events"
    assert main(["send-sample", str(SAMPLES / "high_risk.json"), "--url", url, "--secret", TEST_SECRET]) == 0
    assert capsys.readouterr().out.startswith("202 ")
    (text,) = env.queued_texts()
    assert json.loads(text)["event"]["created_at"] >= datetime.now(UTC).strftime("%Y-%m-%dT%H:%M")[:13]


def test_send_sample_fails_with_wrong_secret(host: Any, env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{host.http_port}/api/noxys/events"
    other = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo="
    assert main(["send-sample", str(SAMPLES / "high_risk.json"), "--url", url, "--secret", other]) == 1
    assert capsys.readouterr().out.startswith("401 ")


def test_send_sample_unreachable_and_missing_file(tmp_path: Path) -> None:
    from tools.azurite import free_port

    url = f"http://127.0.0.1:{free_port()}/api/noxys/events"
    assert main(["send-sample", str(SAMPLES / "high_risk.json"), "--url", url, "--secret", TEST_SECRET]) == 1
    assert main(["send-sample", str(tmp_path / "none.json"), "--secret", TEST_SECRET]) == 2


def test_shift_to_now_keeps_the_gaps() -> None:
    doc = json.loads((SAMPLES / "policy_violated.json").read_text())
    now = datetime(2026, 11, 27, 8, 0, 0, tzinfo=UTC)
    out = shift_to_now(doc, now)
    assert out["created_at"] == "2026-11-27T08:00:00Z"
    assert out["data"]["interaction"]["occurred_at"] == "2026-11-27T07:59:59Z"
    assert out["data"]["interaction"]["classifications"] == doc["data"]["interaction"]["classifications"]
