"""What happens after an alert exists: notes on coalesced alerts and incident tags, each its own
queue task so that it is paced, retried and never delays the next alert; and the re-enqueue
that every retry goes through.

* a note ("N more violations since …") is scheduled at most every ``COALESCE_NOTE_INTERVAL_SECONDS``
  per group and records how many events it covered, so the comments add up to the true count;
* incident tags (``Noxys``, ``AI Firewall``) are applied right after the alert when Defender
  answered with an incident id; a transient failure leaves a tag task that retries later.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from shared.defender.context import CallContext, calls_for
from shared.defender.errors import DefenderError
from shared.delivery.coalesce import Group
from shared.delivery.ports import Deps
from shared.outcome import Kind, Outcome, from_error, retry_delay
from shared.tasks import NoteTask, QueuedEvent, TagTask

log = logging.getLogger(__name__)
INCIDENT_LOOKUP_FIRST_DELAY = 60.0  # seconds; then doubling, at most 30 min apart
# 60 s, then waits of 1, 2, 4, 8, 16, 30, 30 min: about 90 min in all, then the tags are given up (logged)
INCIDENT_LOOKUPS = 8


class Retry:
    """Put a task back on its queue for later: the delay follows the outcome (slot, Retry-After,
    or backoff), the attempt count goes up, a reserved pacing slot travels with the event."""

    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    def requeue(self, task: QueuedEvent | NoteTask | TagTask, queue: str, outcome: Outcome) -> None:
        s = self.deps.settings
        failures = task.failures + (1 if outcome.transient_failure else 0)
        delay = retry_delay(
            outcome, failures, self.deps.clock.now(), base=s.retry_base_seconds, cap=s.retry_max_seconds
        )
        update: dict[str, Any] = {"attempt": task.attempt + 1, "failures": failures}
        if isinstance(task, QueuedEvent) and outcome.slot is not None and outcome.api:
            update["tickets"] = {**task.tickets, outcome.api: outcome.slot}
        self.deps.sender.send(queue, task.model_copy(update=update).to_text(), delay)


class FollowUps:
    def __init__(self, deps: Deps, retry: Retry) -> None:
        self.deps = deps
        self.settings = deps.settings
        self.retry = retry

    def after_created(self, key: str, alert_id: str, incident_id: str | None, event_id: str) -> None:
        """The group learns its alert (its followers' notes can go out), the incident gets its tags."""
        if key:
            group = self.deps.groups.update(key, alert_id=alert_id, incident_id=incident_id or "", state="open")
            if group and group.count > group.noted:
                self.schedule_note(key)
        if incident_id:
            self.tag(incident_id, event_id)
        elif self.settings.incident_tagging != "off" and self.deps.incidents is not None:
            # Defender correlates into an incident later: read the alert again, then tag.
            task = TagTask(alert_id=alert_id, event_id=event_id, first_received_at=self.deps.clock.now())
            self.deps.sender.send(self.settings.events_queue_name, task.to_text(), INCIDENT_LOOKUP_FIRST_DELAY)

    # ------------------------------------------------------------------ notes on coalesced alerts
    def schedule_note(self, key: str, known: Group | None = None) -> None:
        group = self.deps.groups.schedule_note(key, known)
        if group is None:
            return
        now = self.deps.clock.now()
        delay = max(0.0, group.last_note_at + self.settings.coalesce_note_interval_seconds - now.timestamp())
        if not group.alert_id:
            delay = max(delay, 30.0)
        self.deps.sender.send(
            self.settings.events_queue_name, NoteTask(group=key, first_received_at=now).to_text(), delay
        )

    def note(self, task: NoteTask, queue: str) -> Outcome:
        now = self.deps.clock.now()
        group = self.deps.groups.get(task.group)
        if group is None or group.state == "failed":
            if group:
                self.deps.groups.update(task.group, note_scheduled=False)
            return Outcome(Kind.NOTED, detail="group gone or failed; nothing to note")
        if now - task.first_received_at > timedelta(hours=self.settings.max_event_age_hours):
            self.deps.groups.update(task.group, note_scheduled=False)
            return Outcome(Kind.DEAD_LETTER, detail="note abandoned after the maximum age")
        if not group.alert_id:
            outcome = Outcome(Kind.RETRY_AFTER, detail="alert not created yet", retry_after=30.0)
            self.retry.requeue(task, queue, outcome)
            return outcome
        pending = group.count - group.noted
        if pending <= 0:
            self.deps.groups.update(task.group, note_scheduled=False)
            return Outcome(Kind.NOTED, detail="nothing new")
        since = datetime.fromtimestamp(group.last_note_at or group.window_start, now.tzinfo)
        comment = (
            f"Noxys: {pending} more violation{'s' if pending > 1 else ''} since "
            f"{since.strftime('%Y-%m-%dT%H:%M:%SZ')} ({group.count} in total coalesced into this alert)."
        )
        with calls_for(CallContext(f"group:{task.group[:12]}", task.attempt)):
            try:
                self.deps.mde.comment_alert(group.alert_id, comment)
            except DefenderError as exc:
                outcome = from_error(exc, "PATCH alert")
                if outcome.kind == Kind.RETRY_AFTER:
                    self.retry.requeue(task, queue, outcome)
                else:
                    self.deps.groups.update(task.group, note_scheduled=False)
                return outcome
        after = self.deps.groups.update(
            task.group, noted=group.count, last_note_at=now.timestamp(), note_scheduled=False
        )
        if after and after.count > after.noted:
            self.schedule_note(task.group)
        return Outcome(Kind.NOTED, detail=f"{pending} more noted on alert {group.alert_id}", alert_id=group.alert_id)

    # ------------------------------------------------------------------ incident tags
    def tag(self, incident_id: str, event_id: str | None) -> None:
        """Best effort right after the alert; on a transient failure a tag task retries later."""
        if self.settings.incident_tagging == "off" or self.deps.incidents is None:
            return
        try:
            self._apply_tags(incident_id)
        except DefenderError as exc:
            if exc.transient:
                task = TagTask(incident_id=incident_id, event_id=event_id, first_received_at=self.deps.clock.now())
                self.retry.requeue(task, self.settings.events_queue_name, from_error(exc, "incident tags"))
            else:
                log.warning("incident %s not tagged: %s (check the incident permission)", incident_id, exc)

    def tag_task(self, task: TagTask, queue: str) -> Outcome:
        if self.settings.incident_tagging == "off" or self.deps.incidents is None:
            return Outcome(Kind.TAGGED, detail="tagging off")
        if self.deps.clock.now() - task.first_received_at > timedelta(hours=self.settings.max_event_age_hours):
            return Outcome(Kind.DEAD_LETTER, detail=f"incident {task.incident_id} not tagged within the maximum age")
        with calls_for(CallContext(task.event_id, task.attempt)):
            try:
                incident_id = task.incident_id or self._incident_of(task)
                if not incident_id:
                    return self._incident_not_yet(task, queue)
                self._apply_tags(incident_id)
            except DefenderError as exc:
                outcome = from_error(exc, "incident tags")
                if outcome.kind == Kind.RETRY_AFTER:
                    self.retry.requeue(task, queue, outcome)
                return outcome
        return Outcome(Kind.TAGGED, detail=f"incident {incident_id} tagged")

    def _incident_of(self, task: TagTask) -> str:
        """The incident Defender has put the alert in by now ('' while it has not)."""
        found = self.deps.mde.get_alert(task.alert_id or "").get("incidentId")
        return str(found) if found is not None else ""

    def _incident_not_yet(self, task: TagTask, queue: str) -> Outcome:
        """Paced and bounded: the lookups back off, and after INCIDENT_LOOKUPS the tags are given up."""
        if task.attempt + 1 >= INCIDENT_LOOKUPS:
            log.warning(
                "alert %s: no incident after %d lookups; its incident is not tagged", task.alert_id, task.attempt + 1
            )
            return Outcome(Kind.TAGGED, detail=f"alert {task.alert_id} has no incident yet; tagging given up")
        wait = min(INCIDENT_LOOKUP_FIRST_DELAY * 2**task.attempt, 1800.0)
        self.retry.requeue(task, queue, Outcome(Kind.RETRY_AFTER, detail="no incident yet", retry_after=wait))
        return Outcome(Kind.RETRY_AFTER, detail=f"alert {task.alert_id} not in an incident yet", retry_after=wait)

    def _apply_tags(self, incident_id: str) -> None:
        incidents = self.deps.incidents
        assert incidents is not None
        incident = incidents.get_incident(incident_id)
        have = list(incident.get("customTags") or incident.get("tags") or [])
        missing = [t for t in self.settings.incident_tags if t not in have]
        if missing:
            incidents.set_incident_tags(incident_id, have + missing)
