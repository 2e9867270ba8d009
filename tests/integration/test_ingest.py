"""POST /api/noxys/events over HTTP through the dev host, into a real Azurite queue."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from shared import wiring
from shared.tasks import QueuedEvent
from tests.support import Env, post, sample, signed_headers

pytestmark = pytest.mark.integration


def test_accepted_event_is_queued_base64_and_pii_free(host: Any, env: Env) -> None:
    body = sample("policy_violated")
    resp = post(host, body, signed_headers(body))
    assert resp.status_code == 202
    assert resp.json() == {"accepted": ["evt_01JQ8X4M2Z6N0K3T5V7W9Y1B3D"], "ignored": []}
    (text,) = env.queued_texts()  # base64-decoded: the host's encoding
    queued = QueuedEvent.model_validate_json(text)
    assert queued.event.id == "evt_01JQ8X4M2Z6N0K3T5V7W9Y1B3D" and queued.attempt == 0
    assert "Please summarise" not in text and '"value"' not in text


def test_array_enqueues_each_forwarded_event_and_ignores_the_rest(host: Any, env: Env) -> None:
    body = b"[" + b",".join(sample(n) for n in ("high_risk", "created_not_forwarded", "alert_critical")) + b"]"
    resp = post(host, body, signed_headers(body, msg_id="batch_1"))
    assert resp.status_code == 202
    assert resp.json() == {
        "accepted": ["evt_01JQ8X7B3C4D5E6F7G8H9J0K1M", "evt_01JQ8Z1111CRIT0000000001"],
        "ignored": ["evt_01JQ900000CREATED00000001"],
    }
    # criticals go to the priority queue, so a backlog of the others never delays them
    assert [QueuedEvent.model_validate_json(t).event.id for t in env.queued_texts()] == [
        "evt_01JQ8X7B3C4D5E6F7G8H9J0K1M"
    ]
    priority = [QueuedEvent.model_validate_json(t).event.id for t in env.queued_texts(env.priority_queue)]
    assert priority == ["evt_01JQ8Z1111CRIT0000000001"]


def test_forward_event_types_setting_filters(host: Any, env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FORWARD_EVENT_TYPES", "alert.severity_critical")
    wiring.reset()
    body = sample("high_risk")
    resp = post(host, body, signed_headers(body))
    assert resp.status_code == 202 and resp.json()["ignored"] == ["evt_01JQ8X7B3C4D5E6F7G8H9J0K1M"]
    assert env.queued_texts() == []


@pytest.mark.parametrize(
    ("mutate", "status", "error"),
    [
        (lambda b, h: (b + b" ", h), 401, "unauthorized"),
        (lambda b, h: (b, {**h, "webhook-signature": "v1,garbage"}), 401, "unauthorized"),
        (lambda b, h: (b, {k: v for k, v in h.items() if k != "webhook-id"}), 401, "unauthorized"),
        (lambda b, h: (b, {**h, "webhook-timestamp": str(int(time.time()) - 3600)}), 401, "unauthorized"),
        (lambda b, h: (b, {**h, "Content-Type": "text/plain"}), 415, "unsupported_media_type"),
        (lambda b, h: (b, {k: v for k, v in h.items() if k != "Content-Type"}), 415, "unsupported_media_type"),
        (lambda b, h: (b"x" * (1024 * 1024 + 1), h), 413, "payload_too_large"),
    ],
    ids=["tampered", "bad-signature", "no-id", "replayed", "text-plain", "no-content-type", "over-1MiB"],
)
def test_refusals_queue_nothing(host: Any, env: Env, mutate: Any, status: int, error: str) -> None:
    body = sample("high_risk")
    b, h = mutate(body, signed_headers(body))
    resp = post(host, b, h)
    assert resp.status_code == status
    assert resp.json()["error"] == error
    assert env.queued_texts() == []


def test_invalid_envelope_is_400_naming_fields(host: Any, env: Env) -> None:
    doc = json.loads(sample("high_risk"))
    del doc["created_at"]
    doc["data"]["interaction"]["risk_score"] = "high"
    body = json.dumps(doc).encode()
    resp = post(host, body, signed_headers(body))
    assert resp.status_code == 400
    assert [e["field"] for e in resp.json()["errors"]] == ["created_at", "data.interaction.risk_score"]
    assert env.queued_texts() == []


def test_invalid_json_is_400(host: Any, env: Env) -> None:
    body = b'{"id": "evt_1",'
    resp = post(host, body, signed_headers(body))
    assert resp.status_code == 400 and resp.json()["errors"][0]["field"] == "body"


def test_bearer_token_required_when_configured(host: Any, env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOXYS_BEARER_TOKEN", "tok-abc")
    wiring.reset()
    body = sample("high_risk")
    assert post(host, body, signed_headers(body)).status_code == 401
    assert post(host, body, {**signed_headers(body), "Authorization": "Bearer tok-abc"}).status_code == 202


def test_no_signing_secret_refuses_everything(host: Any, env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOXYS_SIGNING_SECRET")
    wiring.reset()
    body = sample("high_risk")
    resp = post(host, body, signed_headers(body))
    assert resp.status_code == 503 and "NOXYS_SIGNING_SECRET" in resp.json()["message"]
    assert env.queued_texts() == []


def test_bad_setting_is_503_naming_it(host: Any, env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FORWARD_EVENT_TYPES", "interaction.bogus")
    wiring.reset()
    body = sample("high_risk")
    resp = post(host, body, signed_headers(body))
    assert resp.status_code == 503 and resp.json()["setting"] == "FORWARD_EVENT_TYPES"


def test_unwritable_queue_is_503_so_noxys_retries(host: Any, env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    from tools.azurite import free_port

    dead = env.azurite.connection_string.replace(f":{env.azurite.queue_port}/", f":{free_port()}/")
    monkeypatch.setenv("AzureWebJobsStorage", dead)
    wiring.reset()
    body = sample("high_risk")
    resp = post(host, body, signed_headers(body))
    assert resp.status_code == 503 and resp.json()["error"] == "queue_unavailable"
