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
import uuid
from collections import OrderedDict
from datetime import datetime, timedelta
from typing import Any

from shared.defender.context import CallContext, calls_for
from shared.defender.errors import DefenderError
from shared.delivery.coalesce import ATTEMPTS, Group
from shared.delivery.ports import Deps
from shared.outcome import Kind, Outcome, from_error, retry_delay
from shared.tasks import NoteTask, QueuedEvent, TagTask

log = logging.getLogger(__name__)
INCIDENT_LOOKUP_FIRST_DELAY = 60.0  # seconds; then doubling, at most 30 min apart
# 60 s, then waits of 1, 2, 4, 8, 16, 30, 30 min: about 90 min in all, then the tags are given up (logged)
INCIDENT_LOOKUPS = 8
TAGGED_KEPT = 1024  # incident ids an instance remembers having tagged
NOTE_QUIET = 60.0  # seconds without a new member after which a note ends its chain (a joiner restarts it)
FUNCTION_TIMEOUT_SECONDS = 300.0  # host.json functionTimeout: no run of a note outlives it
NOTE_WAIT_FOR_ALERT = 30.0  # seconds before a note first looks again at a group whose alert is not made yet


def _mark(group: Group, total: int) -> str:
    """What a note's comment says of its total: unique to the group (alerts of two windows of one
    storm merge in Defender), so an earlier group's comment cannot confirm this group's claim."""
    return f"({total} in total coalesced into this alert from storm {group.key[:8]})"


class Retry:
    """Put a task back on its queue for later: the delay follows the outcome (slot, Retry-After,
    or backoff), the attempt count goes up, a reserved pacing slot travels with the event."""

    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    def later(self, task: QueuedEvent | NoteTask | TagTask, outcome: Outcome) -> tuple[int, float]:
        """The task's failures counting this outcome, and how long it waits before its next try."""
        s = self.deps.settings
        failures = task.failures + (1 if outcome.transient_failure else 0)
        now = self.deps.clock.now()
        return failures, retry_delay(outcome, failures, now, base=s.retry_base_seconds, cap=s.retry_max_seconds)

    def requeue(self, task: QueuedEvent | NoteTask | TagTask, queue: str, outcome: Outcome) -> None:
        failures, delay = self.later(task, outcome)
        update: dict[str, Any] = {"attempt": task.attempt + 1, "failures": failures}
        if isinstance(task, QueuedEvent) and outcome.slot is not None and outcome.api:
            update["tickets"] = {**task.tickets, outcome.api: outcome.slot}
        self.deps.sender.send(queue, task.model_copy(update=update).to_text(), delay)


class FollowUps:
    def __init__(self, deps: Deps, retry: Retry) -> None:
        self.deps = deps
        self.settings = deps.settings
        self.retry = retry
        # incidents this instance tagged: a device's next alert joins its open incident, whose tags
        # are there already (bounded; an analyst removing them is seen after a restart at worst)
        self._tagged: OrderedDict[str, None] = OrderedDict()

    def after_created(self, key: str, alert_id: str, incident_id: str | None, event_id: str, via: str = "") -> None:
        """The group learns its alert (its followers' notes can go out), the incident gets its tags."""
        if key:  # followers that joined meanwhile arranged their note already: it waits for this
            self.open_group(key, event_id, alert_id, incident_id, via, self.deps.clock.now().timestamp())
        if via:
            return
        if incident_id:
            self.tag(incident_id, event_id)
        elif self.settings.incident_tagging != "off" and self.deps.incidents is not None:
            # Defender correlates into an incident later: read the alert again, then tag.
            task = TagTask(alert_id=alert_id, event_id=event_id, first_received_at=self.deps.clock.now())
            self.deps.sender.send(self.settings.events_queue_name, task.to_text(), INCIDENT_LOOKUP_FIRST_DELAY)

    def open_group(self, key: str, leader: str, alert_id: str, incident_id: str | None, via: str, at: float) -> None:
        """The group's alert exists (made ``at``: the alert says its first event, notes count from
        there) — written only while ``leader`` still leads the group."""
        opened = {"alert_id": alert_id, "incident_id": incident_id or "", "state": "open", "via": via}
        self.deps.groups.update_if_leader(key, leader, **opened, last_note_at=at)

    # ------------------------------------------------------------------ notes on coalesced alerts
    def arrange_note(self, key: str) -> None:
        """After a member row is written: a note will count it (see ``shared.delivery.coalesce``)."""
        known = self.deps.groups.known(key)
        if known is not None and known.via:
            return  # its alert was made by Graph: nothing will ever be noted on it
        now = self.deps.clock.now()

        def delay(g: Group) -> float:
            """A note interval after the last note; a first note of a group whose alert is still
            being made a whole interval from now (the alert is usually there by then)."""
            interval = self.settings.coalesce_note_interval_seconds
            if not g.alert_id and g.state == "creating":
                return max(float(interval), NOTE_WAIT_FOR_ALERT)
            return max(0.0, g.last_note_at + interval - now.timestamp())

        def send(token: str, wait: float) -> None:
            task = NoteTask(group=key, token=token, first_received_at=now)
            self.deps.sender.send(self.settings.events_queue_name, task.to_text(), wait)

        self.deps.groups.arrange_note(key, now.timestamp(), delay, send)

    def _again(self, task: NoteTask, now: datetime, wait: float, **changes: Any) -> None:
        """The next note of the chain (or this one, later), with a new token: sent first, then the
        group expects it (with ``changes``) — a crash between leaves the group expecting this very
        message, which the host delivers again; the new one is then dropped when it runs."""
        token = uuid.uuid4().hex
        nxt = task.model_copy(update={"token": token})
        self.deps.sender.send(self.settings.events_queue_name, nxt.to_text(), wait)
        due = now.timestamp() + wait
        self.deps.groups.update(task.group, note_scheduled=True, note_due=due, note_id=token, **changes)

    def note(self, task: NoteTask, queue: str) -> Outcome:
        """One run of a group's note chain: settle, wait for the alert, or write "N more" once."""
        now = self.deps.clock.now()
        for _ in range(ATTEMPTS):
            group, members, last_joined = self.deps.groups.read_all(task.group)
            if group is None:
                return Outcome(Kind.NOTED, detail="group gone; nothing to note")
            if not group.note_scheduled or group.note_id != task.token:
                return Outcome(Kind.NOTED, detail="superseded: the group expects another note")
            ended = self._ended(group, members)
            if now - task.first_received_at > timedelta(hours=self.settings.max_event_age_hours):
                ended = "note abandoned after the maximum age"
            if ended is not None:
                if self.deps.groups.stop_notes(group):
                    return Outcome(Kind.NOTED, detail=ended)
                continue  # someone joined or touched it meanwhile: look again
            if not group.alert_id:  # looked at less and less often, at most a note interval apart
                wait = min(
                    NOTE_WAIT_FOR_ALERT * 2 ** min(task.attempt, 8), self.settings.coalesce_note_interval_seconds
                )
                self._again(task.model_copy(update={"attempt": task.attempt + 1}), now, max(wait, 1.0))
                return Outcome(Kind.RETRY_AFTER, detail="alert not created yet", retry_after=wait)
            outcome = self._one_note(task, group, 1 + len(members), now, last_joined)
            if outcome is not None:
                return outcome
        raise RuntimeError(f"coalescing group {task.group}: too much contention")

    def _one_note(self, task: NoteTask, group: Group, total: int, now: datetime, last_joined: float) -> Outcome | None:
        """Claim ``total`` (a conditional write: one copy of this note at a time), then comment.
        A claim left by a run that died or lost Defender's answer is looked up on the alert before
        anything is posted again. ``None``: the group changed meanwhile, read it again."""
        groups = self.deps.groups
        if group.noting:
            busy = group.noting_at + self._claim_seconds() - now.timestamp()
            if busy > 0:  # another run of this note is writing it: look again once it is surely done
                self.deps.sender.send(self.settings.events_queue_name, task.to_text(), busy)
                return Outcome(Kind.RETRY_AFTER, detail="another run of this note is writing it", retry_after=busy)
            try:
                posted = self._posted(group)
            except DefenderError as exc:  # throttled or failing: look again later, the claim kept
                return self._retry_note(task, from_error(exc, "GET alert"), now)
            if posted:
                return self._noted(task, group, group.noting, total, now, last_joined, "confirmed: posted earlier")
        if total <= group.noted:
            return Outcome(Kind.NOTED, detail="nothing new") if groups.stop_notes(group, noting=0) else None
        if not groups.commit(group, noting=total, noting_at=now.timestamp()):
            return None
        return self._write_note(task, group, total, now, last_joined)

    def _claim_seconds(self) -> float:
        """How long a claimed comment may still be another run's, at work: one ``comment_alert``,
        twice the HTTP timeout at most (a 401 refreshes the token and sends again), and a margin;
        never past the function timeout, which ends any run."""
        return min(2 * self.settings.http_timeout_seconds + 30.0, FUNCTION_TIMEOUT_SECONDS + 30.0)

    def _posted(self, group: Group) -> bool:
        """Whether the alert already carries the comment claimed for ``group.noting``."""
        with calls_for(CallContext(f"group:{group.key[:12]}", 0)):
            comments = self.deps.mde.get_alert(group.alert_id).get("comments") or []
        mark = _mark(group, group.noting)
        return any(mark in str(c.get("comment") if isinstance(c, dict) else c) for c in comments)

    def _write_note(self, task: NoteTask, group: Group, total: int, now: datetime, last_joined: float) -> Outcome:
        pending = total - group.noted
        since = datetime.fromtimestamp(group.last_note_at or group.window_start, now.tzinfo)
        comment = (
            f"Noxys: {pending} more violation{'s' if pending > 1 else ''} since "
            f"{since.strftime('%Y-%m-%dT%H:%M:%SZ')} {_mark(group, total)}."
        )
        with calls_for(CallContext(f"group:{task.group[:12]}", task.attempt)):
            try:
                self.deps.mde.comment_alert(group.alert_id, comment)
            except DefenderError as exc:
                return self._note_failed(task, group, exc, now)
        return self._noted(
            task, group, total, total, now, last_joined, f"{pending} more noted on alert {group.alert_id}"
        )

    def _note_failed(self, task: NoteTask, group: Group, exc: DefenderError, now: datetime) -> Outcome:
        """Nothing posted (a 429, a refusal): the claim is dropped. Perhaps posted (a 5xx, no
        answer): the claim stays, and the next run looks at the alert before posting again."""
        outcome = from_error(exc, "PATCH alert")
        clear = {"noting": 0} if exc.nothing_done else {}
        if outcome.kind == Kind.RETRY_AFTER:
            return self._retry_note(task, outcome, now, **clear)
        self._give_up(task, **clear)
        return outcome

    def _retry_note(self, task: NoteTask, outcome: Outcome, now: datetime, **changes: Any) -> Outcome:
        """Defender said wait, or failed for now: this note again after the outcome's delay."""
        failures, wait = self.retry.later(task, outcome)
        self._again(task.model_copy(update={"attempt": task.attempt + 1, "failures": failures}), now, wait, **changes)
        return outcome

    def _noted(
        self,
        task: NoteTask,
        group: Group,
        total: int,
        present: int,
        now: datetime,
        last_joined: float,
        detail: str,
    ) -> Outcome:
        """The comment for ``total`` is on the alert: recorded, and the chain goes on an interval
        later — or ends here, once the group's window is over or nobody joined for
        :data:`NOTE_QUIET` seconds, no more than ``total`` events are in the group as this run
        read it (``present``), and nobody joined since the claim (a later event arranges a note of
        its own, as any joiner does when no note is pending)."""
        at = now.timestamp()
        done: dict[str, Any] = {"noted": total, "count": total, "noting": 0, "last_note_at": at, "last_event_at": at}
        ended = ((bool(group.until) and at > group.until) or last_joined + NOTE_QUIET < at) and present <= total
        if not (ended and self.deps.groups.stop_notes(group, **done)):
            self._again(task, now, self.settings.coalesce_note_interval_seconds, **done)
        return Outcome(Kind.NOTED, detail=detail, alert_id=group.alert_id)

    def _give_up(self, task: NoteTask, **changes: Any) -> None:
        """No note is pending any more — retried until the write holds (a joiner touching the group
        must not leave it expecting a note nobody will run)."""
        for _ in range(ATTEMPTS):
            group = self.deps.groups.get(task.group)
            if group is None or group.note_id != task.token or self.deps.groups.stop_notes(group, **changes):
                return

    def _ended(self, group: Group, members: list[str]) -> str | None:
        """Why there is nothing to note on this group ever again (its members settled first)."""
        if group.state == "no_anchor":
            return f"no anchor for the group: {self._settle_no_anchor(group, members)} member(s) settled"
        if group.state == "failed" or group.via:
            return f"group {group.state}{' (Graph alert)' if group.via else ''}"
        return None

    def _settle_no_anchor(self, group: Group, members: list[str]) -> int:
        """Members that joined before the leader found no connection end as it did (their own
        search would have looked at the same device, platform and minutes)."""
        why = f"{group.reason} (searched once for this device's storm window by event {group.leader})"
        return sum(self.deps.ledger.settle_no_anchor(member, group.key, why) for member in members)

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
        if incident_id in self._tagged:
            return
        incident = incidents.get_incident(incident_id)
        have = list(incident.get("customTags") or incident.get("tags") or [])
        missing = [t for t in self.settings.incident_tags if t not in have]
        if missing:
            incidents.set_incident_tags(incident_id, have + missing)
        self._tagged[incident_id] = None
        while len(self._tagged) > TAGGED_KEPT:
            self._tagged.popitem(last=False)
