"""POST /api/noxys/events: verify, validate, filter, enqueue, answer 202. Nothing slower.

Noxys waits for this answer, and a cold start already costs seconds, so the Defender call
never happens here: each forwarded event goes on the queue as its own message and only then is
202 returned. If the queue cannot be written the answer is 503 and Noxys retries; no 2xx is
ever given for an event that is not durably queued.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

import azure.functions as func

from shared.config import KNOWN_EVENT_TYPES, ConfigError, Settings, get_settings
from shared.delivery.message import QueuedEvent
from shared.events import Envelope, FieldError, InvalidEvents, parse_events
from shared.functions.http import json_response
from shared.webhook import WebhookError, check_bearer, verify_signature

log = logging.getLogger(__name__)
bp = func.Blueprint()

MAX_BODY_BYTES = 1024 * 1024
MAX_MESSAGE_BYTES = 64 * 1024  # Azure Storage queue message limit


def _is_json(content_type: str | None) -> bool:
    media = (content_type or "").split(";")[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


def handle(body: bytes, headers: Mapping[str, str], *, now: datetime | None = None) -> func.HttpResponse:
    """The whole webhook, callable without the Functions runtime (tests, dev host, CLI).

    ``now`` (real time) checks the sender's signature timestamp; the queued event is stamped
    with the connector's clock, which decides its age.
    """
    now = now or datetime.now(UTC)
    lower = {k.lower(): v for k, v in headers.items()}
    if len(body) > MAX_BODY_BYTES:
        return json_response(413, {"error": "payload_too_large", "message": f"body over {MAX_BODY_BYTES} bytes"})
    if not _is_json(lower.get("content-type")):
        return json_response(
            415, {"error": "unsupported_media_type", "message": "Content-Type must be application/json"}
        )
    try:
        settings = get_settings()
    except ConfigError as exc:
        log.error("webhook refused: %s", exc)
        return json_response(503, {"error": "not_configured", "setting": exc.setting, "message": str(exc)})
    from shared.secrets import VaultUnavailable
    from shared.wiring import signing_secrets

    try:
        check_bearer(lower, settings.noxys_bearer_token)
        try:
            verify_signature(body, lower, signing_secrets(), now=now)
        except WebhookError as first:
            if first.status != 401 or not settings.key_vault_url:
                raise
            verify_signature(body, lower, signing_secrets(refresh=True), now=now)  # rotated in Key Vault?
    except VaultUnavailable as exc:
        log.error("webhook refused: signing secret unavailable: %s", exc)
        return json_response(503, {"error": "secrets_unavailable", "message": str(exc)})
    except WebhookError as exc:
        log.warning("webhook refused (%s): %s", exc.status, exc.reason)
        if exc.status == 401:
            _count("ingest.refused.signature")
        error = "not_configured" if exc.status == 503 else "unauthorized"
        return json_response(exc.status, {"error": error, "message": exc.reason})
    from shared.wiring import clock

    stamp = clock().now()
    try:
        events = parse_events(
            body,
            now=stamp,
            max_past=timedelta(days=settings.event_max_past_days),
            max_future=timedelta(hours=settings.event_max_future_hours),
        )
    except InvalidEvents as exc:
        log.warning("webhook rejected %d invalid field(s): %s", len(exc.errors), ", ".join(e.field for e in exc.errors))
        _count("ingest.refused.invalid")
        return json_response(400, {"error": "invalid_event", "errors": [e.model_dump() for e in exc.errors]})

    wanted = set(settings.forward_event_types)
    accepted = [e for e in events if e.type in wanted]
    ignored = [e.id for e in events if e.type not in wanted]
    try:
        messages = _messages(settings, events, accepted, stamp, batch=body.lstrip().startswith(b"["))
    except InvalidEvents as exc:  # judged as a whole: nothing of this request has been queued
        log.warning(
            "webhook rejected %d unqueueable event(s): %s", len(exc.errors), ", ".join(e.field for e in exc.errors)
        )
        _count("ingest.refused.invalid")
        error = "event_too_large" if exc.status == 413 else "invalid_event"
        return json_response(exc.status, {"error": error, "errors": [e.model_dump() for e in exc.errors]})

    from shared.storage import QueueUnavailable, enqueue

    for queue, text, ttl in messages:
        try:
            enqueue(settings, queue, text, time_to_live=ttl)
        except QueueUnavailable as exc:
            log.error("webhook could not queue to %s: %s (answering 503)", queue, exc)
            return json_response(
                503, {"error": "queue_unavailable", "message": "events could not be queued; retry later"}
            )
    done = [e.id for e in accepted]
    _count("ingest.accepted", len(done))
    for kind in {e.type for e in events if e.type not in wanted}:
        name = kind if kind in KNOWN_EVENT_TYPES else "unknown"  # sender-chosen names stay bounded
        _count(f"ingest.ignored.{name}", sum(1 for e in events if e.type == kind))
    if ignored:
        log.info("webhook ignored %d event(s) of types not in FORWARD_EVENT_TYPES", len(ignored))
    log.info("webhook accepted %d event(s)", len(done))
    return json_response(202, {"accepted": done, "ignored": ignored})


def _messages(
    settings: Settings, events: list[Envelope], accepted: list[Envelope], stamp: datetime, *, batch: bool
) -> list[tuple[str, str, int | None]]:
    """Every queue message of the request, serialised and size-checked before any is sent.

    A message over the queue's 64 KiB limit would fail at enqueue, which used to answer 503
    (\"retry\") for a body that can never succeed; the field limits make this unreachable for
    valid events, and this check keeps it a 413 naming the event if they ever do not.
    """
    from shared.mapping import is_critical

    out: list[tuple[str, str, int | None]] = []
    errors: list[FieldError] = []
    positions = {e.id: i for i, e in enumerate(events)}
    hunting = [e for e in events if e.type in settings.hunting_event_types] if settings.hunting_configured else []
    plan = [
        *(
            (settings.events_priority_queue_name if is_critical(e) else settings.events_queue_name, e, None)
            for e in accepted
        ),
        *((settings.hunting_queue_name, e, -1) for e in hunting),  # rows for the hunting table never expire
    ]
    status = 413
    for queue, event, ttl in plan:
        where = f"[{positions[event.id]}]" if batch else "body"
        try:
            text = QueuedEvent.new(event, stamp).to_text()
            size = 4 * ((len(text.encode("utf-8")) + 2) // 3)  # base64, as host.json's messageEncoding says
        except ValueError as exc:  # pydantic's serialisation error is a ValueError too
            errors.append(FieldError(field=where, message=f"cannot be serialised ({exc.__class__.__name__})"))
            status = 400
            continue
        if size > MAX_MESSAGE_BYTES:
            errors.append(
                FieldError(field=where, message=f"too large for the queue ({size} > {MAX_MESSAGE_BYTES} bytes encoded)")
            )
        out.append((queue, text, ttl))
    if errors:
        raise InvalidEvents(errors, status)
    return out


def _count(name: str, n: int = 1) -> None:
    """Best effort: counting must never change the webhook's answer."""
    try:
        from shared.wiring import clock, counters

        counters().add(name, clock().now(), n)
    except Exception as exc:
        log.warning("counter %s not updated: %s", name, exc.__class__.__name__)


@bp.route(route="noxys/events", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
def noxys_events(req: func.HttpRequest) -> func.HttpResponse:
    return handle(req.get_body(), dict(req.headers))
