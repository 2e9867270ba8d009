"""The forward orchestration: resolve device → find anchor → create alert.

Returns an :class:`Outcome` for every *expected* condition (no device, no anchor, throttled,
a request Defender will never accept) rather than raising, so the trigger alone decides what
each outcome means for the queue message; the ledger, pacing and coalescing plug in here
without touching the trigger.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import Any, Protocol

from shared import anchor, devices
from shared.defender.client import DefenderError
from shared.events import Envelope
from shared.mapping import draft_alert

log = logging.getLogger(__name__)


class DefenderApi(Protocol):
    def list_machines(self, odata_filter: str | None = None, top: int | None = None) -> list[dict[str, Any]]: ...
    def run_hunting_query(self, query: str) -> list[dict[str, Any]]: ...
    def create_alert_by_reference(self, alert: dict[str, Any]) -> dict[str, Any]: ...


class Kind(StrEnum):
    CREATED = "created"
    COALESCED = "coalesced"
    NO_DEVICE = "no_device"
    NO_ANCHOR = "no_anchor"
    RETRY_AFTER = "retry_after"
    DEAD_LETTER = "dead_letter"


@dataclass(frozen=True)
class Outcome:
    kind: Kind
    detail: str = ""
    alert_id: str | None = None
    incident_id: str | None = None
    machine_id: str | None = None
    retry_after: float | None = None
    error_code: str | None = None
    correlation_id: str | None = None


def _failed(exc: DefenderError, stage: str) -> Outcome:
    if exc.transient:
        return Outcome(
            Kind.RETRY_AFTER,
            detail=f"{stage}: {exc.status} {exc.code}",
            retry_after=exc.retry_after,
            error_code=exc.code,
            correlation_id=exc.target,
        )
    return Outcome(
        Kind.DEAD_LETTER,
        detail=f"{stage}: {exc.status} {exc.code}: {exc.message}",
        error_code=exc.code,
        correlation_id=exc.target,
    )


def forward(event: Envelope, api: DefenderApi, *, anchor_window: timedelta) -> Outcome:
    """Deliver one event as one Defender alert, or say precisely why not."""
    draft = draft_alert(event)
    device = event.device
    if device is None:
        return Outcome(Kind.NO_DEVICE, detail="the event names no device")
    try:
        machine, how = devices.resolve(device, lambda f: api.list_machines(f))
    except DefenderError as exc:
        return _failed(exc, "machine lookup")
    if machine is None:
        return Outcome(Kind.NO_DEVICE, detail=f"no Defender machine matches device {device.display_name}")
    machine_id = str(machine["id"])
    log.info("event %s: device %s resolved by %s to machine %s", event.id, device.display_name, how, machine_id)

    if not draft.platform.domains:
        return Outcome(Kind.NO_ANCHOR, detail="platform domain unknown", machine_id=machine_id)
    query = anchor.hunting_query(machine_id, draft.platform.domains, event.occurred_at, anchor_window)
    try:
        rows = api.run_hunting_query(query)
    except DefenderError as exc:
        return _failed(exc, "advanced hunting")
    found = anchor.pick(rows, machine_id, draft.platform.domains, event.occurred_at)
    if found is None:
        return Outcome(
            Kind.NO_ANCHOR,
            detail=f"no connection to {', '.join(draft.platform.domains)} within ±{anchor_window} of the interaction",
            machine_id=machine_id,
        )

    body = {
        "machineId": found.machine_id,
        "reportId": found.report_id,
        "eventTime": found.event_time,
        "severity": draft.severity,
        "title": draft.title,
        "description": draft.description,
        "recommendedAction": draft.recommended_action,
        "category": draft.category,
    }
    try:
        alert = api.create_alert_by_reference(body)
    except DefenderError as exc:
        return _failed(exc, "CreateAlertByReference")
    return Outcome(
        Kind.CREATED,
        detail=f"alert {alert['id']}",
        alert_id=str(alert["id"]),
        incident_id=str(alert["incidentId"]) if alert.get("incidentId") is not None else None,
        machine_id=machine_id,
    )
