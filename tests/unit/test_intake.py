"""The webhook's whole status matrix, without Azurite: the intake use case with an in-memory queue.

The queue writer here is the port the intake is written against (a callable that durably adds a
message or raises QueueUnavailable); the integration tests run the same use case over real Azurite.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from shared.clock import ManualClock
from shared.config import load_settings
from shared.intake import MAX_MESSAGE_BYTES, Accepted, Intake, Refused, bundles
from shared.secrets import VaultUnavailable
from shared.storage import QueueUnavailable
from shared.tasks import EventBundle, QueuedEvent, parse_task
from tests.support import SAMPLE_DAY, TEST_SECRET, sample, signed_headers


class Queues:
    """The queue writer, and the hunting outbox's row keeper (``rows``)."""

    def __init__(self, fail_after: int | None = None, rows_fail: bool = False) -> None:
        self.sent: list[tuple[str, str]] = []
        self.rows: list[tuple[str, str, str]] = []  # (partition, event id, text)
        self.fail_after = fail_after
        self.rows_fail = rows_fail

    def __call__(self, queue: str, text: str) -> object:
        if self.fail_after is not None and len(self.sent) >= self.fail_after:
            raise QueueUnavailable(f"queue {queue}: ServiceRequestError")
        self.sent.append((queue, text))
        return "id"

    def keep_rows(self, rows: list[tuple[QueuedEvent, str]], partition: str) -> None:
        if self.rows_fail:
            raise QueueUnavailable("table HuntingOutbox: ServiceRequestError")
        self.rows += [(partition, task.event.id, text) for task, text in rows]

    def ids(self, queue: str) -> list[str]:
        """Event ids in the order a worker will deliver them: a bundle's events in their order."""
        out: list[str] = []
        for q, text in self.sent:
            if q == queue:
                task = parse_task(text)
                out += [e.event.id for e in task.events] if isinstance(task, EventBundle) else [task.event.id]  # type: ignore[union-attr]
        return out


def intake(
    queues: Queues | None = None,
    counts: list[tuple[str, int]] | None = None,
    *,
    secrets: list[str] | Exception | None = None,
    **env: str,
) -> Intake:
    settings = load_settings({"NOXYS_SIGNING_SECRET": TEST_SECRET, "EVENT_MAX_PAST_DAYS": "3650", **env})

    def signing(refresh: bool) -> list[str]:
        if isinstance(secrets, Exception):
            raise secrets
        return list(settings.noxys_signing_secrets) if secrets is None else secrets

    queues = queues if queues is not None else Queues()
    return Intake(
        settings,
        signing,
        queues,
        lambda name, n: (counts if counts is not None else []).append((name, n)),
        ManualClock(SAMPLE_DAY),
        keep_rows=queues.keep_rows,
    )


def receive(use_case: Intake, body: bytes, headers: dict[str, str] | None = None) -> Accepted | Refused:
    # the signature's clock is real time (signed_headers stamps now); the connector's is the sample day
    return use_case.receive(body, headers if headers is not None else signed_headers(body), now=datetime.now(UTC))


def test_a_signed_event_is_queued_and_accepted() -> None:
    queues, counts = Queues(), list[tuple[str, int]]()
    result = receive(intake(queues, counts), sample("policy_violated"))
    assert result == Accepted(["evt_01JQ8X4M2Z6N0K3T5V7W9Y1B3D"], [])
    assert result.status == 202 and queues.ids("noxys-events") == ["evt_01JQ8X4M2Z6N0K3T5V7W9Y1B3D"]
    assert ("ingest.accepted", 1) in counts


def test_criticals_take_the_priority_lane_and_unwanted_types_are_ignored() -> None:
    queues = Queues()
    names = ("high_risk", "created_not_forwarded", "alert_critical")
    body = b"[" + b",".join(sample(n) for n in names) + b"]"
    result = receive(intake(queues), body)
    assert isinstance(result, Accepted) and result.ignored == ["evt_01JQ900000CREATED00000001"]
    assert queues.ids("noxys-events-priority") == ["evt_01JQ8Z1111CRIT0000000001"]
    assert queues.ids("noxys-events") == ["evt_01JQ8X7B3C4D5E6F7G8H9J0K1M"]


HUNTING: dict[str, Any] = {"HUNTING_INGESTION_ENDPOINT": "https://dce.example", "HUNTING_DCR_IMMUTABLE_ID": "dcr-1"}


def test_hunting_rows_are_kept_in_the_outbox_beside_the_queued_event() -> None:
    queues = Queues()
    assert receive(intake(queues, **HUNTING), sample("high_risk")).status == 202
    assert queues.ids("noxys-events") == ["evt_01JQ8X7B3C4D5E6F7G8H9J0K1M"]
    minute = SAMPLE_DAY.strftime("%Y%m%d%H%M")
    assert [(p, i) for p, i, _ in queues.rows] == [(minute, "evt_01JQ8X7B3C4D5E6F7G8H9J0K1M")]
    assert '"value"' not in queues.rows[0][2]  # the redacted event, as on the queue


def test_an_outbox_that_cannot_be_written_is_503() -> None:
    result = receive(intake(Queues(rows_fail=True), **HUNTING), sample("high_risk"))
    assert isinstance(result, Refused) and (result.status, result.error) == (503, "queue_unavailable")


def test_hunting_without_an_outbox_is_refused_at_build() -> None:
    settings = load_settings({"NOXYS_SIGNING_SECRET": TEST_SECRET, **HUNTING})
    with pytest.raises(ValueError, match="outbox"):
        Intake(settings, lambda _: [], Queues(), lambda _n, _c: None, ManualClock(SAMPLE_DAY))


def _many(n: int, *, critical: int = 0) -> bytes:
    docs = []
    for i in range(n):
        doc = json.loads(sample("alert_critical" if i < critical else "high_risk"))
        doc["id"] = f"evt_many_{i:03d}"
        docs.append(doc)
    return json.dumps(docs).encode()


def test_a_large_batch_travels_in_few_bundles_per_lane_in_the_senders_order() -> None:
    queues = Queues()
    result = receive(intake(queues), _many(100, critical=3))
    assert isinstance(result, Accepted) and len(result.accepted) == 100
    normal = [t for q, t in queues.sent if q == "noxys-events"]
    assert 1 < len(normal) < 10 and all(parse_task(t).kind == "bundle" for t in normal)
    assert all(len(base64.b64encode(t.encode())) <= MAX_MESSAGE_BYTES for t in normal)
    assert queues.ids("noxys-events") == [f"evt_many_{i:03d}" for i in range(3, 100)]
    assert queues.ids("noxys-events-priority") == ["evt_many_000", "evt_many_001", "evt_many_002"]
    assert len([q for q, _ in queues.sent if q == "noxys-events-priority"]) == 3  # too few to bundle


def test_bundles_are_all_or_nothing_too() -> None:
    result = receive(intake(Queues(fail_after=1)), _many(100))
    assert isinstance(result, Refused) and result.status == 503


@pytest.mark.parametrize("limit", [3000, 5000, 20_000])
def test_bundles_never_pass_the_limit_and_lose_no_event(limit: int) -> None:
    texts = [json.dumps({"kind": "event", "n": i, "pad": "x" * (i * 37 % 900)}) for i in range(60)]
    packed = bundles(texts, SAMPLE_DAY, limit)
    assert all(4 * ((len(t.encode()) + 2) // 3) <= limit for t in packed)
    unpacked = [d for t in packed for d in (json.loads(t)["events"] if '"bundle"' in t[:40] else [json.loads(t)])]
    assert [d["n"] for d in unpacked] == list(range(60))


@pytest.mark.parametrize(
    ("change", "status", "error"),
    [
        (lambda b, h: (b"x" * (1024 * 1024 + 1), h), 413, "payload_too_large"),
        (lambda b, h: (b, {**h, "Content-Type": "text/plain"}), 415, "unsupported_media_type"),
        (lambda b, h: (b + b" ", h), 401, "unauthorized"),
        (lambda b, h: (b, {k: v for k, v in h.items() if k != "webhook-signature"}), 401, "unauthorized"),
        (lambda b, h: (b, {**h, "webhook-timestamp": "1"}), 401, "unauthorized"),
        (lambda b, h: (b"{", h), 401, "unauthorized"),  # the signature covers the body
    ],
    ids=["too-large", "not-json", "tampered", "unsigned", "old-timestamp", "other-body"],
)
def test_refusals_before_parsing(change: Any, status: int, error: str) -> None:
    queues, counts = Queues(), list[tuple[str, int]]()
    body = sample("high_risk")
    b, h = change(body, signed_headers(body))
    result = receive(intake(queues, counts), b, h)
    assert isinstance(result, Refused) and (result.status, result.error) == (status, error)
    assert queues.sent == []
    assert (("ingest.refused.signature", 1) in counts) == (status == 401)


def test_no_secret_configured_fails_closed() -> None:
    result = receive(intake(secrets=[]), sample("high_risk"))
    assert isinstance(result, Refused) and (result.status, result.error) == (503, "not_configured")
    assert "NOXYS_SIGNING_SECRET" in (result.message or "")


def test_an_unreadable_vault_is_503_so_noxys_retries() -> None:
    result = receive(intake(secrets=VaultUnavailable("Key Vault https://kv: unreachable")), sample("high_risk"))
    assert isinstance(result, Refused) and (result.status, result.error) == (503, "secrets_unavailable")


def test_a_required_bearer_token() -> None:
    use_case = intake(NOXYS_BEARER_TOKEN="tok-1")
    body = sample("high_risk")
    assert receive(use_case, body).status == 401
    assert receive(use_case, body, {**signed_headers(body), "Authorization": "Bearer tok-1"}).status == 202


def test_invalid_fields_are_400_naming_them_and_counted() -> None:
    counts: list[tuple[str, int]] = []
    doc = json.loads(sample("high_risk"))
    doc["data"]["interaction"]["risk_score"] = 7
    body = json.dumps(doc).encode()
    result = receive(intake(counts=counts), body)
    assert isinstance(result, Refused) and result.status == 400
    assert result.body()["errors"][0]["field"] == "data.interaction.risk_score"
    assert ("ingest.refused.invalid", 1) in counts


def test_an_event_too_large_for_the_queue_is_413_and_nothing_of_the_batch_is_queued(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from shared import intake as module

    monkeypatch.setattr(module, "MAX_MESSAGE_BYTES", 600)
    queues = Queues()
    body = b"[" + sample("high_risk") + b"," + sample("policy_violated") + b"]"
    result = receive(intake(queues), body)
    assert isinstance(result, Refused) and (result.status, result.error) == (413, "event_too_large")
    assert queues.sent == []


def test_storage_down_is_503_and_no_2xx_for_anything_not_queued() -> None:
    queues = Queues(fail_after=1)
    body = b"[" + sample("high_risk") + b"," + sample("policy_violated") + b"]"
    result = receive(intake(queues), body)
    assert isinstance(result, Refused) and (result.status, result.error) == (503, "queue_unavailable")


def test_unknown_types_are_counted_under_one_name() -> None:
    counts: list[tuple[str, int]] = []
    docs = []
    for i in range(3):
        doc = json.loads(sample("high_risk"))
        doc["id"], doc["type"] = f"evt_x{i}", f"made.up_{i}"
        docs.append(doc)
    assert receive(intake(counts=counts), json.dumps(docs).encode()).status == 202
    assert [c for c in counts if c[0].startswith("ingest.ignored.")] == [("ingest.ignored.unknown", 3)]
