"""The delivery of one queued task: exactly one alert per event, paced, nothing lost.

For an event::

    ledger lease ─▶ final already? ─▶ duplicate, done
         │
         ▼
    resolve device (cache ▸ aadDeviceId ▸ FQDN ▸ hostname ▸ IP)   ─▶ none: no_device (or Graph fallback)
         │                                                          (the machine is checkpointed in the ledger)
    open coalescing group for device+policy? ─▶ join it: coalesced (a note task counts it on the alert)
         │
    crash left "creating"? ─▶ find our alert by its marker before creating again
         │
    anchor: the device's connection to the platform (hunting)  ─▶ none: no_anchor (or Graph fallback)
         │
    lead the group ─▶ record intent ─▶ CreateAlertByReference ─▶ record alert ─▶ tag incident

Expected conditions are :class:`Outcome` values, not exceptions; the delivery itself acts on
them (re-enqueue with the right delay, dead-letter with the reason) and the trigger only logs.
Waiting for quota (our own budget or Defender's 429) re-enqueues with the wait and completes
the message, so it never pushes an event towards poison. Transient failures back off
exponentially with jitter up to ``MAX_EVENT_AGE_HOURS``; a refusal that retrying cannot fix is
dead-lettered at once with Defender's error code and correlation id.
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol

from azure.core.exceptions import AzureError

from shared import anchor, devices
from shared.clock import Clock
from shared.config import Settings
from shared.defender.client import DefenderError, Paced
from shared.defender.context import CallContext, calls_for
from shared.delivery.coalesce import Groups, group_key
from shared.delivery.deadletter import DeadLetter, DeadLetters
from shared.delivery.devicecache import DeviceCache, identity
from shared.delivery.hold import Held
from shared.delivery.ledger import Entry, LeaseHeld, Ledger
from shared.delivery.message import NoteTask, QueuedEvent, TagTask, parse_task
from shared.delivery.sender import QueueSender
from shared.events import Envelope
from shared.mapping import AlertDraft, draft_alert

log = logging.getLogger(__name__)
MARKER = "Noxys event id: "


class Kind(StrEnum):
    CREATED = "created"
    COALESCED = "coalesced"
    DUPLICATE = "duplicate"
    NO_DEVICE = "no_device"
    NO_ANCHOR = "no_anchor"
    RETRY_AFTER = "retry_after"
    DEAD_LETTER = "dead_letter"
    NOTED = "noted"
    TAGGED = "tagged"
    HELD = "held"


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
    slot: datetime | None = None
    api: str | None = None
    transient_failure: bool = False


class MdeApi(devices.MachineApi, Protocol):
    def run_hunting_query(self, query: str) -> list[dict[str, Any]]: ...
    def create_alert_by_reference(self, alert: dict[str, Any]) -> dict[str, Any]: ...
    def list_alerts(self, odata_filter: str, top: int = 1000) -> list[dict[str, Any]]: ...
    def comment_alert(self, alert_id: str, comment: str) -> dict[str, Any]: ...


class IncidentApi(Protocol):
    def get_incident(self, incident_id: str) -> dict[str, Any]: ...
    def set_incident_tags(self, incident_id: str, tags: list[str]) -> None: ...


class AlertFallbackApi(Protocol):
    def create_alert(self, alert_input: dict[str, Any]) -> dict[str, Any]: ...


@dataclass
class Deps:
    settings: Settings
    mde: MdeApi
    ledger: Ledger
    groups: Groups
    devices: DeviceCache
    dead: DeadLetters
    sender: QueueSender
    clock: Clock
    incidents: IncidentApi | None = None
    fallback: AlertFallbackApi | None = None
    held: Held | None = None


def _failed(exc: DefenderError, stage: str) -> Outcome:
    if isinstance(exc, Paced):
        return Outcome(
            Kind.RETRY_AFTER,
            detail=f"{stage}: waiting for the {exc.api} budget",
            retry_after=exc.retry_after,
            slot=exc.slot,
            api=exc.api,
            error_code=exc.code,
        )
    if exc.transient:
        return Outcome(
            Kind.RETRY_AFTER,
            detail=f"{stage}: {exc.status} {exc.code}",
            retry_after=exc.retry_after,
            error_code=exc.code,
            correlation_id=exc.target,
            transient_failure=exc.status != 429,
        )
    return Outcome(
        Kind.DEAD_LETTER,
        detail=f"{stage}: {exc.status} {exc.code}: {exc.message}",
        error_code=exc.code,
        correlation_id=exc.target,
    )


class Delivery:
    def __init__(self, deps: Deps) -> None:
        self.d = deps
        self.s = deps.settings
        self._device_locks: dict[str, threading.Lock] = {}

    # ------------------------------------------------------------------ entry point
    def handle(self, text: str, *, queue: str, priority: bool = False) -> Outcome:
        task = parse_task(text)
        if isinstance(task, NoteTask):
            return self._note(task, queue)
        if isinstance(task, TagTask):
            return self._tag_task(task, queue)
        return self._event(task, queue, priority)

    # ------------------------------------------------------------------ events
    def _event(self, task: QueuedEvent, queue: str, priority: bool) -> Outcome:
        now = self.d.clock.now()
        event = task.event
        if not self.s.integration_enabled and self.d.held is not None:
            self.d.held.keep(task, queue)  # switched off: kept, no Defender call
            return Outcome(Kind.HELD, detail="integration switched off; kept until it is switched on")
        due = frozenset(api for api, slot in task.tickets.items() if slot <= now + timedelta(seconds=0.5))
        with calls_for(CallContext(event.id, task.attempt, priority, due)):
            try:
                entry = self.d.ledger.claim(event.id, event.type, now.timestamp(), self.s.delivery_lease_seconds)
            except LeaseHeld as held:
                outcome = Outcome(Kind.RETRY_AFTER, detail="another attempt holds this event", retry_after=held.wait)
                self._requeue(task, queue, outcome)
                return outcome
            if entry.final:
                return Outcome(Kind.DUPLICATE, detail=f"already {entry.state}", alert_id=entry.get("alert_id"))
            if now - task.first_received_at > timedelta(hours=self.s.max_event_age_hours):
                outcome = Outcome(
                    Kind.DEAD_LETTER,
                    detail=f"gave up after {self.s.max_event_age_hours:g} h "
                    f"({task.attempt} attempts; last: {entry.get('last_problem') or 'n/a'})",
                )
            else:
                try:
                    outcome = self._deliver(event, entry)
                except DefenderError as exc:
                    outcome = _failed(exc, "Defender")
                except AzureError:  # our own storage failed: free the lease, let the host retry
                    with contextlib.suppress(Exception):
                        self.d.ledger.save(entry, release=True)
                    raise
                except Exception as exc:  # a bug or an impossible value: counted, never an endless cycle
                    outcome = self._unexpected(entry, exc)
            self._settle(task, queue, entry, outcome)
            return outcome

    def _unexpected(self, entry: Entry, exc: Exception) -> Outcome:
        """An exception nobody planned for. Retrying may help (a passing glitch), so it is retried
        with backoff — but at most ``MAX_DELIVERY_ERRORS`` times in all, counted in the ledger
        (a re-enqueued copy is a new queue message, so the host's dequeue count cannot bound it),
        and then the event is dead-lettered with the reason, where ``replay`` can bring it back."""
        errors = int(entry.get("errors") or 0) + 1
        what = f"unexpected {exc.__class__.__name__}: {str(exc)[:300]}"
        log.error(
            "event %s: %s (error %d of %d)", entry.event_id, what, errors, self.s.max_delivery_errors, exc_info=exc
        )
        entry.fields["errors"] = errors
        if errors >= self.s.max_delivery_errors:
            return Outcome(Kind.DEAD_LETTER, detail=f"{what} (after {errors} tries)", error_code="UnexpectedError")
        return Outcome(Kind.RETRY_AFTER, detail=what, transient_failure=True)

    def _settle(self, task: QueuedEvent, queue: str, entry: Entry, outcome: Outcome) -> None:
        """Make the outcome durable: a retry is re-enqueued, a dead letter is stored, the lease freed."""
        if outcome.kind == Kind.RETRY_AFTER:
            self._requeue(task, queue, outcome)
            self.d.ledger.save(entry, release=True, last_problem=outcome.detail[:500])
        elif outcome.kind == Kind.DEAD_LETTER:
            self.d.dead.put(
                DeadLetter(
                    task.event.id,
                    outcome.detail,
                    outcome.error_code or "",
                    outcome.correlation_id or "",
                    self.d.clock.now().timestamp(),
                    queue,
                    task.model_copy(update={"tickets": {}}).to_text(),
                )
            )
            self.d.ledger.save(
                entry,
                "dead_lettered",
                reason=outcome.detail[:2000],
                error_code=outcome.error_code,
                correlation_id=outcome.correlation_id,
            )
            if entry.get("group_role") == "leader":
                self.d.groups.update(entry.get("group_key"), state="failed")

    def _requeue(self, task: QueuedEvent | NoteTask | TagTask, queue: str, outcome: Outcome) -> None:
        now = self.d.clock.now()
        failures = task.failures + (1 if outcome.transient_failure else 0)
        if outcome.slot is not None:
            delay = max(0.0, (outcome.slot - now).total_seconds()) + 0.05
        elif outcome.retry_after is not None:
            delay = outcome.retry_after + random.uniform(0, 1)  # noqa: S311 - jitter, not crypto
        else:
            backoff = min(self.s.retry_max_seconds, self.s.retry_base_seconds * 2 ** max(0, failures - 1))
            delay = backoff * random.uniform(0.8, 1.2)  # noqa: S311 - jitter, not crypto
        update: dict[str, Any] = {"attempt": task.attempt + 1, "failures": failures}
        if isinstance(task, QueuedEvent) and outcome.slot is not None and outcome.api:
            update["tickets"] = {**task.tickets, outcome.api: outcome.slot}
        self.d.sender.send(queue, task.model_copy(update=update).to_text(), delay)

    def _deliver(self, event: Envelope, entry: Entry) -> Outcome:
        now = self.d.clock.now()
        draft = draft_alert(event)

        # 1. the machine
        machine_id, resolved_by = entry.get("machine_id") or "", ""
        if not machine_id:
            found, resolved_by = self._resolve(event)
            if not found:
                return self._no_alert(event, entry, draft, Kind.NO_DEVICE, resolved_by, machine_id=None)
            machine_id = found

        # 2. an open group for this device and policy: join it, no alert call at all
        window = self.s.coalesce_window_minutes * 60
        key = group_key(event, machine_id, window) if window else ""
        if key and entry.get("group_role") != "leader":
            group = self.d.groups.try_join(key, event.id, now.timestamp())
            if group:
                return self._coalesced(entry, key, group.alert_id or "", group.leader, machine_id)
        if resolved_by:  # checkpoint before the paced steps: a retry does not look the machine up again
            self.d.ledger.save(entry, machine_id=machine_id, resolved_by=resolved_by)

        # 3. a crash may have left our alert behind: find it before creating another
        if entry.state == "creating":
            existing = self._find_own_alert(event, machine_id, float(entry.get("intent_at") or 0))
            if existing:
                return self._created(event, entry, existing, key, machine_id, recovered=True)

        # 4. the anchor (checkpointed too)
        if not entry.get("anchor_report_id"):
            query = (
                anchor.hunting_query(
                    machine_id,
                    draft.platform.domains,
                    event.occurred_at,
                    timedelta(minutes=self.s.anchor_window_minutes),
                )
                if draft.platform.domains
                else ""
            )
            found_anchor = (
                anchor.pick(self.d.mde.run_hunting_query(query), machine_id, draft.platform.domains, event.occurred_at)
                if query
                else None
            )
            if found_anchor is None:
                why = (
                    (
                        f"no connection to {', '.join(draft.platform.domains)} within "
                        f"±{self.s.anchor_window_minutes} min of the interaction"
                    )
                    if query
                    else "platform domain unknown"
                )
                return self._no_alert(event, entry, draft, Kind.NO_ANCHOR, why, machine_id=machine_id)
            self.d.ledger.save(
                entry, anchor_report_id=found_anchor.report_id, anchor_event_time=found_anchor.event_time
            )

        # 5. lead the group (someone may have led it meanwhile: then join)
        if key and entry.get("group_role") != "leader":
            role, group = self.d.groups.join_or_lead(key, event.id, now.timestamp())
            if role == "join":
                return self._coalesced(entry, key, group.alert_id, group.leader, machine_id)
            self.d.ledger.save(entry, group_role="leader", group_key=key)

        # 6. create, with the intent recorded first
        body = {
            "machineId": machine_id,
            "reportId": entry.get("anchor_report_id"),
            "eventTime": entry.get("anchor_event_time"),
            "severity": draft.severity,
            "title": draft.title,
            "description": draft.description,
            "recommendedAction": draft.recommended_action,
            "category": draft.category,
        }
        self.d.ledger.save(entry, "creating", intent_at=now.timestamp())
        try:
            alert = self.d.mde.create_alert_by_reference(body)
        except DefenderError as exc:
            if exc.status:  # Defender answered: nothing was created, no need to search next time
                self.d.ledger.save(entry, "received")
            return _failed(exc, "CreateAlertByReference")
        return self._created(event, entry, alert, key, machine_id)

    def _resolve(self, event: Envelope) -> tuple[str | None, str]:
        device = event.device
        if device is None:
            return None, "the event names no device"
        # Workers of one instance resolving the same new device share one lookup.
        with self._device_locks.setdefault(identity(device), threading.Lock()):
            now = self.d.clock.now()
            cached = self.d.devices.get(device, now.timestamp())
            if cached:
                if cached.machine_id:
                    return cached.machine_id, f"{cached.resolved_by} (cached)"
                return None, f"device {device.display_name}: {cached.resolved_by} (cached)"
            machine, why = devices.resolve(device, self.d.mde, when=event.occurred_at, now=now)
            ttl = (self.s.device_cache_ttl_minutes if machine else self.s.device_cache_negative_ttl_minutes) * 60
            self.d.devices.put(device, str(machine["id"]) if machine else None, why, now.timestamp(), ttl)
        if machine is None:
            return None, f"device {device.display_name}: {why}"
        return str(machine["id"]), why

    def _find_own_alert(self, event: Envelope, machine_id: str, intent_at: float) -> dict[str, Any] | None:
        since = datetime.fromtimestamp(intent_at - 300, tz=self.d.clock.now().tzinfo).strftime("%Y-%m-%dT%H:%M:%SZ")
        for alert in self.d.mde.list_alerts(f"alertCreationTime ge {since}"):
            if (
                alert.get("machineId") == machine_id
                and f"{MARKER}{event.id}\n" in str(alert.get("description", "")) + "\n"
            ):
                return alert
        return None

    def _created(
        self,
        event: Envelope,
        entry: Entry,
        alert: dict[str, Any],
        key: str,
        machine_id: str,
        *,
        recovered: bool = False,
    ) -> Outcome:
        alert_id = str(alert["id"])
        incident = str(alert["incidentId"]) if alert.get("incidentId") is not None else None
        self.d.ledger.save(entry, "alert_created", alert_id=alert_id, incident_id=incident)
        if key:
            group = self.d.groups.update(key, alert_id=alert_id, incident_id=incident or "", state="open")
            if group and group.count > group.noted:
                self._schedule_note(key)
        if incident:
            self._tag(incident, event.id)
        how = " (found after an interrupted attempt)" if recovered else ""
        return Outcome(
            Kind.CREATED,
            detail=f"alert {alert_id}{how}",
            alert_id=alert_id,
            incident_id=incident,
            machine_id=machine_id,
        )

    def _coalesced(self, entry: Entry, key: str, alert_id: str, leader: str, machine_id: str) -> Outcome:
        into = alert_id or f"event {leader}"
        self.d.ledger.save(
            entry, "coalesced", coalesced_into=into, group_key=key, alert_id=alert_id or None, machine_id=machine_id
        )
        self._schedule_note(key)
        return Outcome(
            Kind.COALESCED,
            detail=f"into {'alert ' + alert_id if alert_id else 'the alert of ' + into}",
            alert_id=alert_id or None,
        )

    def _no_alert(
        self, event: Envelope, entry: Entry, draft: AlertDraft, kind: Kind, why: str, *, machine_id: str | None
    ) -> Outcome:
        if self.s.alert_fallback == "graph" and self.d.fallback and (machine_id or event.user_email):
            alert = self.d.fallback.create_alert(_graph_alert(draft, machine_id, event.user_email))
            self.d.ledger.save(
                entry, "alert_created", alert_id=str(alert["id"]), via="graph", machine_id=machine_id, reason=why
            )
            return Outcome(
                Kind.CREATED,
                detail=f"Graph alert {alert['id']} ({why})",
                alert_id=str(alert["id"]),
                machine_id=machine_id,
            )
        self.d.ledger.save(entry, kind.value, reason=why, machine_id=machine_id)
        return Outcome(kind, detail=why, machine_id=machine_id)

    # ------------------------------------------------------------------ notes on coalesced alerts
    def _schedule_note(self, key: str) -> None:
        group = self.d.groups.schedule_note(key)
        if group is None:
            return
        now = self.d.clock.now()
        delay = max(0.0, group.last_note_at + self.s.coalesce_note_interval_seconds - now.timestamp())
        if not group.alert_id:
            delay = max(delay, 30.0)
        self.d.sender.send(self.s.events_queue_name, NoteTask(group=key, first_received_at=now).to_text(), delay)

    def _note(self, task: NoteTask, queue: str) -> Outcome:
        now = self.d.clock.now()
        group = self.d.groups.get(task.group)
        if group is None or group.state == "failed":
            if group:
                self.d.groups.update(task.group, note_scheduled=False)
            return Outcome(Kind.NOTED, detail="group gone or failed; nothing to note")
        if now - task.first_received_at > timedelta(hours=self.s.max_event_age_hours):
            self.d.groups.update(task.group, note_scheduled=False)
            return Outcome(Kind.DEAD_LETTER, detail="note abandoned after the maximum age")
        if not group.alert_id:
            outcome = Outcome(Kind.RETRY_AFTER, detail="alert not created yet", retry_after=30.0)
            self._requeue(task, queue, outcome)
            return outcome
        pending = group.count - group.noted
        if pending <= 0:
            self.d.groups.update(task.group, note_scheduled=False)
            return Outcome(Kind.NOTED, detail="nothing new")
        since = datetime.fromtimestamp(group.last_note_at or group.window_start, now.tzinfo)
        comment = (
            f"Noxys: {pending} more violation{'s' if pending > 1 else ''} since "
            f"{since.strftime('%Y-%m-%dT%H:%M:%SZ')} ({group.count} in total coalesced into this alert)."
        )
        with calls_for(CallContext(f"group:{task.group[:12]}", task.attempt)):
            try:
                self.d.mde.comment_alert(group.alert_id, comment)
            except DefenderError as exc:
                outcome = _failed(exc, "PATCH alert")
                if outcome.kind == Kind.RETRY_AFTER:
                    self._requeue(task, queue, outcome)
                else:
                    self.d.groups.update(task.group, note_scheduled=False)
                return outcome
        after = self.d.groups.update(task.group, noted=group.count, last_note_at=now.timestamp(), note_scheduled=False)
        if after and after.count > after.noted:
            self._schedule_note(task.group)
        return Outcome(Kind.NOTED, detail=f"{pending} more noted on alert {group.alert_id}", alert_id=group.alert_id)

    # ------------------------------------------------------------------ incident tags
    def _tag(self, incident_id: str, event_id: str | None) -> None:
        """Best effort right after the alert; on a transient failure a tag task retries later."""
        if self.s.incident_tagging == "off" or self.d.incidents is None:
            return
        try:
            self._apply_tags(incident_id)
        except DefenderError as exc:
            if exc.transient:
                now = self.d.clock.now()
                task = TagTask(incident_id=incident_id, event_id=event_id, first_received_at=now)
                self._requeue(task, self.s.events_queue_name, _failed(exc, "incident tags"))
            else:
                log.warning("incident %s not tagged: %s (check the incident permission)", incident_id, exc)

    def _apply_tags(self, incident_id: str) -> None:
        assert self.d.incidents is not None
        incident = self.d.incidents.get_incident(incident_id)
        have = list(incident.get("customTags") or incident.get("tags") or [])
        missing = [t for t in self.s.incident_tags if t not in have]
        if missing:
            self.d.incidents.set_incident_tags(incident_id, have + missing)

    def _tag_task(self, task: TagTask, queue: str) -> Outcome:
        if self.s.incident_tagging == "off" or self.d.incidents is None:
            return Outcome(Kind.TAGGED, detail="tagging off")
        if self.d.clock.now() - task.first_received_at > timedelta(hours=self.s.max_event_age_hours):
            return Outcome(Kind.DEAD_LETTER, detail=f"incident {task.incident_id} not tagged within the maximum age")
        with calls_for(CallContext(task.event_id, task.attempt)):
            try:
                self._apply_tags(task.incident_id)
            except DefenderError as exc:
                outcome = _failed(exc, "incident tags")
                if outcome.kind == Kind.RETRY_AFTER:
                    self._requeue(task, queue, outcome)
                return outcome
        return Outcome(Kind.TAGGED, detail=f"incident {task.incident_id} tagged")


def _graph_alert(draft: AlertDraft, machine_id: str | None, user: str | None) -> dict[str, Any]:
    entities: list[dict[str, str]] = []
    if machine_id:
        entities.append(
            {"entityType": "device", "entityIdentifier": "deviceId", "identifierValue": machine_id, "role": "impacted"}
        )
    if user:
        entities.append(
            {"entityType": "user", "entityIdentifier": "userPrincipalName", "identifierValue": user, "role": "impacted"}
        )
    return {
        "title": draft.title,
        "severity": draft.severity.lower(),
        "description": draft.description,
        "category": draft.category,
        "recommendedActions": draft.recommended_action,
        "entityDefinitions": entities,
        "isExcludedFromCorrelation": False,
    }
