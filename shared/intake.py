"""The webhook use case without the Functions runtime: verify, validate, route, queue, count.

:meth:`Intake.receive` turns a request (body and headers) into an :class:`Accepted` or a
:class:`Refused` value — every status of the contract (docs/webhook.md) is one of them — so the
whole status matrix is unit-testable with an in-memory queue, and the blueprint only maps the
value to an HTTP response. Noxys waits for this answer and a cold start already costs seconds, so
nothing here calls Defender: each forwarded event becomes its own queue message, and only once
every message of the request is durably queued is the answer 202. A request is judged as a whole
(parsed, validated, serialised and size-checked) before its first message is sent.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from shared.clock import Clock
from shared.config import KNOWN_EVENT_TYPES, Settings
from shared.delivery.message import QueuedEvent
from shared.events import Envelope, FieldError, InvalidEvents, parse_events
from shared.mapping import is_critical
from shared.secrets import VaultUnavailable
from shared.storage import QueueUnavailable
from shared.webhook import WebhookError, check_bearer, verify_signature

log = logging.getLogger(__name__)
MAX_BODY_BYTES = 1024 * 1024
MAX_MESSAGE_BYTES = 64 * 1024  # Azure Storage queue message limit (after base64)


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
    def __call__(self, queue: str, text: str, *, time_to_live: int | None = None) -> object:
        """Durably add one message, or raise QueueUnavailable."""


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

    def receive(self, body: bytes, headers: Mapping[str, str], *, now: datetime) -> Accepted | Refused:
        """``now`` (real time) checks the sender's signature timestamp; the queued event is stamped
        with the connector's clock, which decides its age and the date window."""
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
        accepted = [e for e in events if e.type in wanted]
        try:
            messages = self._messages(events, accepted, stamp, batch=body.lstrip().startswith(b"["))
        except InvalidEvents as exc:  # judged as a whole: nothing of this request has been queued
            return self._invalid(exc)
        failed = self._send_all(messages)
        if failed:
            log.error("webhook could not queue %d message(s): %s (answering 503)", len(failed), failed[0])
            return Refused(503, "queue_unavailable", "events could not be queued; retry later")
        return self._accepted(events, accepted)

    def _send_all(self, messages: list[tuple[str, str, int | None]]) -> list[str]:
        """Send every message (concurrently when a pool is given); the failures, as text. All or
        nothing for the answer: one failure is a 503, so no 2xx covers a message not durably queued."""

        def one(message: tuple[str, str, int | None]) -> str | None:
            queue, text, ttl = message
            try:
                self.send(queue, text, time_to_live=ttl)
            except QueueUnavailable as exc:
                return str(exc)
            return None

        if self.pool is None or len(messages) < 2:
            results = [one(m) for m in messages]
        else:
            results = list(self.pool.map(one, messages))
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
            if exc.status == 401:
                self.count("ingest.refused.signature", 1)
            return Refused(exc.status, "not_configured" if exc.status == 503 else "unauthorized", exc.reason)
        return None

    def _invalid(self, exc: InvalidEvents) -> Refused:
        log.warning("webhook rejected %d invalid field(s): %s", len(exc.errors), ", ".join(e.field for e in exc.errors))
        self.count("ingest.refused.invalid", 1)
        error = "event_too_large" if exc.status == 413 else "invalid_event"
        return Refused(exc.status, error, errors=exc.errors)

    def _messages(
        self, events: list[Envelope], accepted: list[Envelope], stamp: datetime, *, batch: bool
    ) -> list[tuple[str, str, int | None]]:
        """Every queue message of the request, serialised and size-checked before any is sent.

        A message over the queue's 64 KiB limit would fail at enqueue, which used to answer 503
        ("retry") for a body that can never succeed; the field limits make this unreachable for
        valid events, and this check keeps it a 413 naming the event if they ever do not.
        """
        s = self.settings
        hunting = [e for e in events if e.type in s.hunting_event_types] if s.hunting_configured else []
        plan: list[tuple[str, Envelope, int | None]] = [
            (s.events_priority_queue_name if is_critical(e) else s.events_queue_name, e, None) for e in accepted
        ]
        plan += [(s.hunting_queue_name, e, -1) for e in hunting]  # hunting rows never expire
        positions = {e.id: i for i, e in enumerate(events)}
        out: list[tuple[str, str, int | None]] = []
        errors: list[FieldError] = []
        status = 413
        for queue, event, ttl in plan:
            where = f"[{positions[event.id]}]" if batch else "body"
            try:
                text = QueuedEvent.new(event, stamp).to_text()
            except ValueError as exc:  # pydantic's serialisation error is a ValueError too
                errors.append(FieldError(field=where, message=f"cannot be serialised ({exc.__class__.__name__})"))
                status = 400
                continue
            size = 4 * ((len(text.encode("utf-8")) + 2) // 3)  # base64, as host.json's messageEncoding says
            if size > MAX_MESSAGE_BYTES:
                errors.append(
                    FieldError(field=where, message=f"too large for the queue ({size} > {MAX_MESSAGE_BYTES} bytes)")
                )
            out.append((queue, text, ttl))
        if errors:
            raise InvalidEvents(errors, status)
        return out

    def _accepted(self, events: list[Envelope], accepted: list[Envelope]) -> Accepted:
        done = [e.id for e in accepted]
        ignored = [e for e in events if e.type not in set(self.settings.forward_event_types)]
        self.count("ingest.accepted", len(done))
        by_name = Counter(e.type if e.type in KNOWN_EVENT_TYPES else "unknown" for e in ignored)
        for name, n in sorted(by_name.items()):  # sender-chosen type names never become counter names
            self.count(f"ingest.ignored.{name}", n)
        if ignored:
            log.info("webhook ignored %d event(s) of types not in FORWARD_EVENT_TYPES", len(ignored))
        log.info("webhook accepted %d event(s)", len(done))
        return Accepted(done, [e.id for e in ignored])
