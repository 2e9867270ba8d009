"""The connectivity timer and the command line."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from shared import wiring
from shared.cli import main, shift_to_now
from shared.functions.health import check_connectivity
from tests.conftest import SAMPLES, TEST_SECRET, Env

pytestmark = pytest.mark.integration


def test_connectivity_ok(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    assert check_connectivity() is True
    assert "Defender connectivity OK" in caplog.text


def test_connectivity_failure_is_named_and_secret_not_logged(
    env: Env, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("DEFENDER_CLIENT_SECRET", "definitely-wrong-secret")
    wiring.reset()
    caplog.set_level(logging.DEBUG)
    assert check_connectivity() is False
    assert "AADSTS7000215" in caplog.text and "definitely-wrong-secret" not in caplog.text


def test_connectivity_unconfigured(env: Env, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.delenv("DEFENDER_TENANT_ID")
    wiring.reset()
    assert check_connectivity() is False
    assert "DEFENDER_TENANT_ID" in caplog.text


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
