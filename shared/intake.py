"""The webhook use case without the Functions runtime: verify, validate, route, queue, count.

:meth:`Intake.receive` turns a request (body and headers) into an :class:`Accepted` or a
:class:`Refused` value — every status of the contract (docs/webhook.md) is one of them — so the
whole status matrix is unit-testable with an in-memory queue, and the blueprint only maps the
value to an HTTP response. Noxys waits for this answer and a cold start already costs seconds, so
nothing here calls Defender: each forwarded event becomes a queue message, and only once every
message of the request is durably queued is the answer 202. A request is judged as a whole
(parsed, validated, serialised and size-checked) before its first message is sent.

What costs the webhook time is the number of storage writes, not their size, so a request that
carries many events for one lane sends them as a few bundles (``EventBundle``, each up to the
queue's 64 KiB), whose events a worker delivers one by one, and its hunting rows go to the hunting
outbox 100 to a transaction. One event is still one message.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Any, Protocol

from shared.clock import Clock
from shared.config import KNOWN_EVENT_TYPES, Settings
from shared.delivery.hunting_outbox import partition_of
from shared.events import Envelope, FieldError, InvalidEvents, parse_events
from shared.mapping import is_critical
from shared.secrets import VaultUnavailable
from shared.storage import QueueUnavailable
from shared.tasks import EventBundle, QueuedEvent, bundle_overhead
from shared.telemetry import REFUSAL_REASONS, traceparent
from shared.webhook import WebhookError, check_bearer, verify_signature

log = logging.getLogger(__name__)
MAX_BODY_BYTES = 1024 * 1024
MAX_MESSAGE_BYTES = 64 * 1024  # Azure Storage queue message limit (after base64)
BUNDLE_FROM = 5  # events for one lane in one request from which they travel in bundles


@dataclass(frozen=True)
class Accepted:
    accepted: list[str]
    ignored: list[str]
    status: int = 202

    def body(self) -> dict[str, Any]:
        return {"accepted": self.accepted, "ignored": self.ignored}


@dataclass(frozen=True)
class Refused:
    status: int
    error: str
    message: str | None = None
    errors: list[FieldError] = field(default_factory=list)
    setting: str | None = None

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"error": self.error}
        if self.setting:
            out["setting"] = self.setting
        if self.message:
            out["message"] = self.message
        if self.errors:
            out["errors"] = [e.model_dump() for e in self.errors]
        return out


class QueueWriter(Protocol):
    def __call__(self, queue: str, text: str) -> object:
        """Durably add one message, or raise QueueUnavailable."""


class RowKeeper(Protocol):
    def __call__(self, rows: list[tuple[QueuedEvent, str]], partition: str) -> None:
        """Durably keep a request's hunting rows (filed under ``partition``), or raise QueueUnavailable."""


def queue_for(settings: Settings, event: Envelope) -> str:
    """The lane: criticals have their own queue, so a backlog of the others never delays them."""
    return settings.events_priority_queue_name if is_critical(event) else settings.events_queue_name


def _encoded(size: int) -> int:
    return 4 * ((size + 2) // 3)  # base64, as host.json's messageEncoding says


def bundles(texts: list[str], now: datetime, limit: int = MAX_MESSAGE_BYTES) -> list[str]:
    """``texts`` (each within ``limit`` on its own) packed in order into as few bundles as fit."""
    out: list[list[str]] = []
    size = 0
    overhead = bundle_overhead(now)
    for text in texts:
        length = len(text.encode("utf-8"))
        if out and _encoded(size + 1 + length) <= limit:
            out[-1].append(text)
            size += 1 + length
        else:
            out.append([text])
            size = overhead + length
    return [EventBundle.pack(group, now) if len(group) > 1 else group[0] for group in out]


@dataclass(frozen=True)
class Plan:
    """What a request becomes: queue messages (each within the queue's limit) and hunting rows."""

    messages: list[tuple[str, str]] = field(default_factory=list)  # (queue, text)
    rows: list[tuple[QueuedEvent, str]] = field(default_factory=list)


def precheck(body: bytes, headers: Mapping[str, str]) -> Refused | None:
    """What can be refused before any setting is read: the size and the media type."""
    if len(body) > MAX_BODY_BYTES:
        return Refused(413, "payload_too_large", f"body over {MAX_BODY_BYTES} bytes")
    content_type = {k.lower(): v for k, v in headers.items()}.get("content-type")
    media = (content_type or "").split(";")[0].strip().lower()
    if not (media == "application/json" or (media.startswith("application/") and media.endswith("+json"))):
        return Refused(415, "unsupported_media_type", "Content-Type must be application/json")
    return None


@dataclass
class Intake:
    settings: Settings
    secrets: Callable[[bool], list[str]]  # the accepted signing secrets; True: re-read the vault
    send: QueueWriter
    count: Callable[[str, int], None]  # best effort: a counter never changes the answer
    clock: Clock
    pool: Executor | None = None  # a batch's messages are sent concurrently through it
    keep_rows: RowKeeper | None = None  # the hunting outbox
    suppressed: Callable[[], frozenset[str]] | None = None  # policy ids and names the review suppressed

    def __post_init__(self) -> None:
        if self.settings.hunting_configured and self.keep_rows is None:
            raise ValueError("hunting is configured: the intake needs the hunting outbox to keep rows in")

    def receive(self, body: bytes, headers: Mapping[str, str], *, now: datetime) -> Accepted | Refused:
        """``now`` (real time) checks the sender's signature timestamp; the queued event is stamped
        with the connector's clock, which decides its age and the date window. Every refusal is
        counted here, once, by its reason (``shared.telemetry.REFUSAL_REASONS``)."""
        result = self._receive(body, headers, now)
        if isinstance(result, Refused):
            self.count(f"ingest.refused.{REFUSAL_REASONS.get(result.error, 'other')}", 1)
        return result

    def _receive(self, body: bytes, headers: Mapping[str, str], now: datetime) -> Accepted | Refused:
        refused = precheck(body, headers) or self._authenticate(body, headers, now)
        if refused:
            return refused
        stamp = self.clock.now()
        try:
            events = parse_events(
                body,
                now=stamp,
                max_past=timedelta(days=self.settings.event_max_past_days),
                max_future=timedelta(hours=self.settings.event_max_future_hours),
            )
        except InvalidEvents as exc:
            return self._invalid(exc)
        wanted = set(self.settings.forward_event_types)
        accepted = [e for e in events if e.type in wanted and not self._suppressed(e)]
        try:
            plan = self._plan(events, accepted, stamp, batch=body.lstrip().startswith(b"["))
        except InvalidEvents as exc:  # judged as a whole: nothing of this request has been queued
            return self._invalid(exc)
        failed = self._send_all(plan, partition_of(stamp))
        if failed:
            log.error("webhook could not queue %d message(s): %s (answering 503)", len(failed), failed[0])
            return Refused(503, "queue_unavailable", "events could not be queued; retry later")
        return self._accepted(events, accepted)

    def _suppressed(self, event: Envelope) -> bool:
        """A policy the review suppressed raises no alert; its events still go to hunting (shared.suppress)."""
        policy = event.data.policy
        if self.suppressed is None or policy is None:
            return False
        off = self.suppressed()
        return bool(off) and bool({policy.id, policy.name} & off)

    def _send_all(self, plan: Plan, partition: str) -> list[str]:
        """Every write of the plan (side by side when a pool is given); the failures, as text. All
        or nothing for the answer: one failure is a 503, so no 2xx covers anything not durably kept."""
        writes: list[Callable[[], object]] = [partial(self.send, queue, text) for queue, text in plan.messages]
        if plan.rows and self.keep_rows is not None:
            writes.append(partial(self.keep_rows, plan.rows, partition))

        def one(write: Callable[[], object]) -> str | None:
            try:
                write()
            except QueueUnavailable as exc:
                return str(exc)
            return None

        results = [one(w) for w in writes] if self.pool is None or len(writes) < 2 else list(self.pool.map(one, writes))
        return [r for r in results if r is not None]

    def _authenticate(self, body: bytes, headers: Mapping[str, str], now: datetime) -> Refused | None:
        lower = {k.lower(): v for k, v in headers.items()}
        try:
            check_bearer(lower, self.settings.noxys_bearer_token)
            try:
                verify_signature(body, lower, self.secrets(False), now=now)
            except WebhookError as first:
                if first.status != 401 or not self.settings.key_vault_url:
                    raise
                verify_signature(body, lower, self.secrets(True), now=now)  # rotated in Key Vault?
        except VaultUnavailable as exc:
            log.error("webhook refused: signing secret unavailable: %s", exc)
            return Refused(503, "secrets_unavailable", str(exc))
        except WebhookError as exc:
            log.warning("webhook refused (%s): %s", exc.status, exc.reason)
            return Refused(exc.status, "not_configured" if exc.status == 503 else "unauthorized", exc.reason)
        return None

    def _invalid(self, exc: InvalidEvents) -> Refused:
        log.warning("webhook rejected %d invalid field(s): %s", len(exc.errors), ", ".join(e.field for e in exc.errors))
        error = "event_too_large" if exc.status == 413 else "invalid_event"
        return Refused(exc.status, error, errors=exc.errors)

    def _plan(self, events: list[Envelope], accepted: list[Envelope], stamp: datetime, *, batch: bool) -> Plan:
        """Every write of the request, serialised and size-checked before any is made.

        Each event must fit the queue's 64 KiB on its own (an event of a bundle that fails is
        queued alone). A message over the limit would fail at enqueue, which used to answer 503
        ("retry") for a body that can never succeed; the field limits make this unreachable for
        valid events, and this check keeps it a 413 naming the event if they ever do not.
        """
        s = self.settings
        hunting = [e for e in events if e.type in s.hunting_event_types] if s.hunting_configured else []
        positions = {e.id: i for i, e in enumerate(events)}
        texts: dict[str, tuple[QueuedEvent, str]] = {}
        errors: list[FieldError] = []
        status = 413
        trace = traceparent()  # the webhook request's span: every delivery of these events joins its trace
        for event in {e.id: e for e in [*accepted, *hunting]}.values():
            where = f"[{positions[event.id]}]" if batch else "body"
            task = QueuedEvent.new(event, stamp, trace)
            try:
                text = task.to_text()
            except ValueError as exc:  # pydantic's serialisation error is a ValueError too
                errors.append(FieldError(field=where, message=f"cannot be serialised ({exc.__class__.__name__})"))
                status = 400
                continue
            size = _encoded(len(text.encode("utf-8")))
            if size > MAX_MESSAGE_BYTES:
                errors.append(
                    FieldError(field=where, message=f"too large for the queue ({size} > {MAX_MESSAGE_BYTES} bytes)")
                )
            texts[event.id] = (task, text)
        if errors:
            raise InvalidEvents(errors, status)
        lanes: dict[str, list[str]] = {}
        for event in accepted:
            lanes.setdefault(queue_for(s, event), []).append(texts[event.id][1])
        messages = [
            (queue, text)
            for queue, lane in lanes.items()
            for text in (bundles(lane, stamp) if len(lane) >= BUNDLE_FROM else lane)
        ]
        return Plan(messages, [texts[e.id] for e in hunting])

    def _accepted(self, events: list[Envelope], accepted: list[Envelope]) -> Accepted:
        done = [e.id for e in accepted]
        ignored = [e for e in events if e.type not in set(self.settings.forward_event_types)]
        suppressed = [e for e in events if e.type in set(self.settings.forward_event_types) and e.id not in set(done)]
        if suppressed:
            self.count("ingest.suppressed", len(suppressed))
            log.info("webhook: %d event(s) of a suppressed policy go to hunting only", len(suppressed))
        self.count("ingest.accepted", len(done))
        by_name = Counter(e.type if e.type in KNOWN_EVENT_TYPES else "unknown" for e in ignored)
        for name, n in sorted(by_name.items()):  # sender-chosen type names never become counter names
            self.count(f"ingest.ignored.{name}", n)
        if ignored:
            log.info("webhook ignored %d event(s) of types not in FORWARD_EVENT_TYPES", len(ignored))
        log.info("webhook accepted %d event(s)", len(done))
        return Accepted(done, [e.id for e in [*ignored, *suppressed]])
