"""The delivery of one queued task: exactly one alert per event, paced, nothing lost.

For an event, one method per step, each returning an :class:`Outcome` (stop here) or ``None``
(go on)::

    a storm's follower, first delivery, device cached, group known: member row ▸ ledger row (final) ▸ done
         │ (else)
    ledger lease ─▶ final already? ─▶ duplicate, done
         │
    _device      resolve (cache ▸ aadDeviceId ▸ FQDN ▸ hostname ▸ IP)   ─▶ none: no_device (or Graph fallback)
         │
    _group       an open group for device+policy+window? join it: coalesced (the notes count it on the
         │       alert); its leader found no anchor: no_anchor; else lead it (the machine checkpointed
         │       with the role), before the paced steps, so the rest of the storm joins at once
    _recover     "creating" left by a crash or a lost answer (5xx, timeout)? find our alert by its
         │       marker and adopt it; not listed yet: wait out the indexing grace, then create
         │
    _anchor      the device's connection to the platform (hunting, over the group's whole window)
         │                                                        ─▶ none: no_anchor for the group (or Graph fallback)
    _create      record intent ─▶ CreateAlertByReference ─▶ record alert ─▶ follow-ups (note, incident tags)

Expected conditions are :class:`Outcome` values, not exceptions; the delivery itself acts on
them (re-enqueue with the right delay, dead-letter with the reason) and the trigger only logs.
Waiting for quota (our own budget or Defender's 429) re-enqueues with the wait and completes
the message, so it never pushes an event towards poison. Transient failures back off
exponentially with jitter up to ``MAX_EVENT_AGE_HOURS``; a refusal that retrying cannot fix is
dead-lettered at once with Defender's error code and correlation id; an unexpected exception is
retried at most ``MAX_DELIVERY_ERRORS`` times, then dead-lettered with its name.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import zlib
from collections import Counter, OrderedDict
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from shared import anchor, devices
from shared.defender.context import CallContext, calls_for
from shared.defender.errors import CallRecord, DefenderError
from shared.delivery.coalesce import JOINABLE, Group, bucket_of, group_key
from shared.delivery.deadletter import DeadLetter
from shared.delivery.devicecache import identity, view_of
from shared.delivery.followups import FollowUps, Retry
from shared.delivery.ledger import AlreadyRecorded, Entry, LeaseHeld, LedgerState
from shared.delivery.patterns import Observation
from shared.delivery.ports import Deps
from shared.events import Envelope
from shared.facts import EventFacts, facts
from shared.mapping import AlertDraft, draft_alert, with_assessment
from shared.outcome import Kind, Outcome, from_error
from shared.response.rules import repeats, why_not
from shared.response.situation import situation
from shared.risk import DeviceView, Patterns, assess
from shared.storage import is_storage_error
from shared.tasks import (
    ActionStatusTask,
    EventBundle,
    NoteTask,
    QueuedEvent,
    ResponseTask,
    TagTask,
    parse_task,
)

log = logging.getLogger(__name__)
DEVICE_LOCK_STRIPES = 64  # locks shared by the devices of one instance: bounded memory, few collisions
BUNDLE_BUDGET_SECONDS = 60.0  # a bundle's events delivered in one invocation at most this long
MARKER = "Noxys event id: "
WINDOWS_KEPT = 1024  # events whose windows an instance keeps (a few hundred bytes each)
WINDOWS_KEPT_SECONDS = 900.0


@dataclass
class Attempt:
    """What one delivery attempt has learned so far; the steps fill it in."""

    event: Envelope
    entry: Entry
    draft: AlertDraft
    now: datetime
    facts: EventFacts
    machine_id: str = ""
    resolved_by: str = ""
    key: str = ""  # the coalescing group ("" when coalescing is off)
    view: DeviceView = field(default_factory=DeviceView)
    observation: Observation | None = None
    patterns: Patterns | None = None  # read lazily (``Delivery._windows``)
    assessed: bool = False


class Delivery:
    def __init__(self, deps: Deps) -> None:
        self.deps = deps
        self.settings = deps.settings
        self.retry = Retry(deps)
        self.followups = FollowUps(deps, self.retry)
        # A fixed set of locks, a device's chosen by a stable hash of its identity: one per device
        # would grow with every device ever seen; two devices sharing a stripe only wait in turn.
        self._device_locks = tuple(threading.Lock() for _ in range(DEVICE_LOCK_STRIPES))
        self._read_windows: OrderedDict[str, tuple[float, Patterns]] = OrderedDict()  # see ``_windows``

    # ------------------------------------------------------------------ entry point
    def handle(self, text: str, *, queue: str, priority: bool = False) -> Outcome:
        task = parse_task(text)
        if isinstance(task, EventBundle):
            return self._bundle(task, queue, priority)
        if isinstance(task, NoteTask):
            return self.followups.note(task, queue)
        if isinstance(task, TagTask):
            return self.followups.tag_task(task, queue)
        if isinstance(task, ResponseTask | ActionStatusTask):
            if self.deps.responder is None:
                return Outcome(Kind.RESPONDED, detail="automated response is off (no RESPONSE_RULES_FILE)")
            if isinstance(task, ResponseTask):
                return self.deps.responder.handle(task)
            return self.deps.responder.follow(task)
        return self._event(task, queue, priority)

    def _bundle(self, bundle: EventBundle, queue: str, priority: bool) -> Outcome:
        """Each event of a webhook request's bundle, delivered here in the order Noxys sent them,
        exactly as from its own message (a retry or a dead letter is already per event). An event
        that raises, and every event after it, are queued one message each, so the host's retries
        and poison apply to that event alone; so are the rest once :data:`BUNDLE_BUDGET_SECONDS`
        have passed, so a slow Defender never brings a bundle near the function timeout. If that
        queueing fails too, the bundle raises and is delivered again: what was done is then
        ``duplicate``."""
        parts: list[Outcome] = []
        started = time.monotonic()
        for i, task in enumerate(bundle.events):
            late = time.monotonic() - started > BUNDLE_BUDGET_SECONDS
            failed: Exception | None = None
            if not late:
                try:
                    parts.append(self._event(task, queue, priority))
                    continue
                except Exception as exc:  # queued alone below, where the host retries it alone
                    failed = exc
            rest = bundle.events[i:]
            for alone in rest:
                self.deps.sender.send(queue, alone.to_text(), 0)
            why = f"{failed.__class__.__name__} on event {task.event.id}" if failed else "time budget spent"
            log.warning("bundle: %s; %d event(s) queued one message each", why, len(rest))
            break
        kinds = Counter(p.kind.value for p in parts)
        summary = ", ".join(f"{k} {n}" for k, n in sorted(kinds.items()))
        queued = len(bundle.events) - len(parts)
        detail = f"{len(parts)} of {len(bundle.events)} event(s) delivered ({summary or 'none'})" + (
            f", {queued} queued one message each" if queued else ""
        )
        return Outcome(Kind.BUNDLE, detail=detail, parts=tuple(parts))

    def _event(self, task: QueuedEvent, queue: str, priority: bool) -> Outcome:
        if self.deps.held is not None and not self.deps.held.is_on():
            self.deps.held.keep(task, queue)  # switched off: kept, no Defender call
            return Outcome(Kind.HELD, detail="integration switched off; kept until it is switched on")
        now, kept = self.deps.clock.now(), facts(task.event)  # the facts once: ledger, windows, response
        due = frozenset(api for api, slot in task.tickets.items() if slot <= now + timedelta(seconds=0.5))
        with calls_for(CallContext(task.event.id, task.attempt, priority, due)):
            followed = self._follow(task, kept) if task.attempt == 0 else None
            if followed is not None:
                return followed
            try:
                entry = self.deps.ledger.claim(
                    task.event.id,
                    task.event.type,
                    now.timestamp(),
                    self.settings.delivery_lease_seconds,
                    kept,
                    task.first_received_at.timestamp(),
                    again=task.attempt > 0,  # queued again by an earlier attempt: its entry exists
                )
            except LeaseHeld as held:
                outcome = Outcome(Kind.RETRY_AFTER, detail="another attempt holds this event", retry_after=held.wait)
                self.retry.requeue(task, queue, outcome)
                return outcome
            if entry.final:
                return self._duplicate(entry)
            outcome = self._attempt(task, entry, kept)
            self._settle(task, queue, entry, outcome)
            return outcome

    def _follow(self, task: QueuedEvent, kept: EventFacts) -> Outcome | None:
        """A storm's follower on its first delivery, its device cached and its group known: its
        ledger row written once, in its final state, then its member row — no lease (both writes
        are inserts keyed by the event, so a second copy of it counts nothing twice). ``None``:
        take the full path (claim, resolve, …) — also when another copy recorded it meanwhile
        and is still at work."""
        window, device, now = self.settings.coalesce_window_minutes * 60, task.event.device, self.deps.clock.now()
        cached = self.deps.devices.get(device, now.timestamp()) if window and device else None
        if cached is None or not cached.machine_id:
            return None
        key = group_key(task.event, cached.machine_id, window)
        group = self.deps.groups.known(key, now.timestamp()) or self.deps.groups.get(key)
        if group is None or group.leader == task.event.id or group.state not in (*JOINABLE, "no_anchor"):
            return None
        entry = self.deps.ledger.fresh(
            task.event.id, task.event.type, now.timestamp(), kept, task.first_received_at.timestamp()
        )
        a = self._begin(task.event, entry, kept)
        a.machine_id, a.resolved_by, a.key, a.view = (
            cached.machine_id,
            f"{cached.resolved_by} (cached)",
            key,
            cached.view,
        )
        try:
            if group.state == "no_anchor":
                return self._after_no_anchor(a, group)
            return self._coalesced(a, group)
        except AlreadyRecorded:
            existing = self.deps.ledger.get(task.event.id)
            return self._duplicate(existing) if existing and existing.final else None

    def _duplicate(self, entry: Entry) -> Outcome:
        """Delivered before. A follower killed after its ledger row is counted and noted all the
        same: the redelivery writes its member row (again: an insert that changes nothing) and
        arranges its note; a leader killed after its dead letter marks its group failed."""
        if entry.state == LedgerState.COALESCED and entry.group_key:  # (its member row: an idempotent insert)
            self.deps.groups.join(entry.group_key, entry.event_id, self.deps.clock.now().timestamp())
            self.followups.arrange_note(entry.group_key)
        elif entry.state == LedgerState.ALERT_CREATED and entry.leads_group and entry.group_key and entry.alert_id:
            known = self.deps.groups.known(entry.group_key)
            if not (known and known.alert_id):  # killed between its alert and its group write
                key, via, at = entry.group_key, entry.via or "", entry.alert_at or 0.0
                self.followups.open_group(key, entry.event_id, entry.alert_id, entry.incident_id, via, at)
        elif entry.state == LedgerState.DEAD_LETTERED:
            known = self.deps.groups.known(entry.group_key or "")
            if not (known and known.state == "failed" and known.leader == entry.event_id):
                self._leader_failed(entry)
        return Outcome(Kind.DUPLICATE, detail=f"already {entry.state.value}", alert_id=entry.alert_id)

    def _attempt(self, task: QueuedEvent, entry: Entry, kept: EventFacts) -> Outcome:
        if self.deps.clock.now() - task.first_received_at > timedelta(hours=self.settings.max_event_age_hours):
            return Outcome(
                Kind.DEAD_LETTER,
                detail=f"gave up after {self.settings.max_event_age_hours:g} h "
                f"({task.attempt} attempts; last: {entry.last_problem or 'n/a'})",
            )
        try:
            return self._deliver(task.event, entry, kept)
        except DefenderError as exc:
            return from_error(exc, "Defender")
        except Exception as exc:
            if is_storage_error(exc):  # our own storage failed: free the lease, let the host retry
                with contextlib.suppress(Exception):
                    self.deps.ledger.release(entry)
                raise
            return self._unexpected(entry, exc)

    def _unexpected(self, entry: Entry, exc: Exception) -> Outcome:
        """An exception nobody planned for. Retrying may help (a passing glitch), so it is retried
        with backoff — but at most ``MAX_DELIVERY_ERRORS`` times in all, counted in the ledger
        (a re-enqueued copy is a new queue message, so the host's dequeue count cannot bound it),
        and then the event is dead-lettered with the reason, where ``replay`` can bring it back."""
        errors = self.deps.ledger.count_error(entry)
        what = f"unexpected {exc.__class__.__name__}: {str(exc)[:300]}"
        limit = self.settings.max_delivery_errors
        log.error("event %s: %s (error %d of %d)", entry.event_id, what, errors, limit, exc_info=exc)
        if errors >= limit:
            return Outcome(Kind.DEAD_LETTER, detail=f"{what} (after {errors} tries)", error_code="UnexpectedError")
        return Outcome(Kind.RETRY_AFTER, detail=what, transient_failure=True)

    def _settle(self, task: QueuedEvent, queue: str, entry: Entry, outcome: Outcome) -> None:
        """Make the outcome durable: a retry is re-enqueued, a dead letter is stored, the lease freed."""
        if outcome.kind == Kind.RETRY_AFTER:
            self.retry.requeue(task, queue, outcome)
            self.deps.ledger.release(entry, last_problem=outcome.detail)
        elif outcome.kind == Kind.DEAD_LETTER:
            letter = DeadLetter(
                task.event.id,
                outcome.detail,
                outcome.error_code or "",
                outcome.correlation_id or "",
                self.deps.clock.now().timestamp(),
                queue,
                task.model_copy(update={"tickets": {}}).to_text(),
            )
            self.deps.dead.put(letter)
            self.deps.ledger.mark_dead(entry, outcome.detail, outcome.error_code, outcome.correlation_id)
            self._leader_failed(entry)

    def _leader_failed(self, entry: Entry) -> None:
        """A dead-lettered leader's group is ``failed``, so the next event of its window takes it
        over (also when this runs only on the message's redelivery: killed after the dead letter)."""
        if entry.leads_group and entry.group_key:
            self.deps.groups.update_if_leader(entry.group_key, entry.event_id, state="failed")

    # ------------------------------------------------------------------ the steps
    def _begin(self, event: Envelope, entry: Entry, kept: EventFacts) -> Attempt:
        """An attempt on ``event``: its alert drafted, and the event counted in the windows (every
        event counts there, whatever becomes of it)."""
        attempt = Attempt(event, entry, draft_alert(event, self.settings.platform_domains), self.deps.clock.now(), kept)
        self._record(attempt)
        return attempt

    def _deliver(self, event: Envelope, entry: Entry, kept: EventFacts) -> Outcome:
        attempt = self._begin(event, entry, kept)
        for step in (self._device, self._group, self._assess, self._recover_interrupted, self._anchor):
            outcome = step(attempt)
            if outcome is not None:
                return outcome
        return self._create(attempt)

    def _device(self, a: Attempt) -> Outcome | None:
        if a.entry.machine_id:  # checkpointed by an earlier attempt
            a.machine_id, a.view = a.entry.machine_id, self.deps.ledger.device_view(a.entry)
            return None
        found, a.resolved_by, a.view = self._resolve(a.event)
        if not found:
            return self._no_alert(a, Kind.NO_DEVICE, a.resolved_by, machine_id=None)
        a.machine_id = found
        return None

    def _record(self, a: Attempt) -> None:
        store = self.deps.patterns
        if store is None or not self.settings.risk_patterns:
            return
        kept, device = a.facts, identity(a.event.device) if a.event.device else ""
        when = a.event.occurred_at.timestamp()
        a.observation = Observation(a.event.id, when, device, kept.user, kept.platform, kept.pii_types)
        store.record(a.observation)

    def _windows(self, a: Attempt) -> Patterns:
        """The windows, read only when something needs them, and once per event on this instance
        for :data:`WINDOWS_KEPT_SECONDS`: a leader queued again for its creation slot keeps the score
        (and the severity) its first attempt found, instead of reading them again."""
        if a.patterns is None:
            store = self.deps.patterns
            if store is None or a.observation is None:
                a.patterns = Patterns(available=False, why="RISK_PATTERNS is off")
            else:
                now = self.deps.clock.now().timestamp()
                kept = self._read_windows.get(a.event.id)
                fresh = kept is not None and kept[0] > now
                a.patterns = kept[1] if kept and fresh else store.read(a.observation)
                if not fresh and a.patterns.available:
                    self._read_windows[a.event.id] = (now + WINDOWS_KEPT_SECONDS, a.patterns)
                    while len(self._read_windows) > WINDOWS_KEPT:
                        self._read_windows.popitem(last=False)
        return a.patterns

    def _assess(self, a: Attempt, *, windows: bool = True) -> Outcome | None:
        """The combined score: raises the draft's severity (never lowers it) and explains itself.
        A coalesced event's score is only kept (hunting), so its windows are read only when the
        rules need them anyway."""
        patterns = self._windows(a) if windows else Patterns(available=False, why="not read for a coalesced event")
        found = assess(
            a.event, patterns, a.view, self.deps.risk, base=a.draft.severity, now=a.event.occurred_at.timestamp()
        )
        a.draft = with_assessment(a.draft, found.line(), found.severity)
        self.deps.ledger.note_risk(a.entry, found.score, found.factors_json())
        a.assessed = True
        return None

    def _group(self, a: Attempt) -> Outcome | None:
        """Join the storm's group, or lead it (before the anchor search: the rest of the storm then
        joins at once instead of each event waiting for a hunting slot of its own)."""
        window = self.settings.coalesce_window_minutes * 60
        a.key = group_key(a.event, a.machine_id, window) if window else ""
        if not a.key:
            if a.resolved_by:  # checkpoint before the paced steps: a retry does not look the machine up again
                self.deps.ledger.checkpoint_device(a.entry, a.machine_id, a.resolved_by, a.view)
            return None
        if a.entry.leads_group:  # an earlier attempt led it — unless another event took it over since
            if a.entry.state != LedgerState.CREATING:  # a retry (a slot wait): it still leads, no read
                return None
            now_led = self.deps.groups.get(a.key)  # a create that may have worked (a lost answer, a replay)
            if now_led is None or now_led.leader == a.event.id:
                return None
            recovered = self._recover_interrupted(a)  # our own alert, made before the take-over?
            if recovered is not None:  # adopted (or still within the search grace)
                return recovered
            a.entry.group_role = None  # (in memory: the coalesced write below carries it)
        _, until = bucket_of(a.event.occurred_at.timestamp(), window)
        role, group = self.deps.groups.lead_or_join(a.key, a.event.id, a.now.timestamp(), until)
        if role == "join":
            return self._coalesced(a, group)
        if role == "no_anchor":
            return self._after_no_anchor(a, group)
        resolved_by = a.resolved_by or a.entry.resolved_by or ""
        self.deps.ledger.mark_leader(a.entry, a.key, a.machine_id, resolved_by, a.view)
        if role == "relead":  # the failed leader's members stopped their notes: one waits for this alert
            self.followups.arrange_note(a.key)
        return None

    def _recover_interrupted(self, a: Attempt) -> Outcome | None:
        """An earlier attempt may have made the alert: it was interrupted after recording its intent,
        or Defender's answer was lost (a 5xx, a timeout). Look for the alert by its marker line
        (the alerts budget, not the creation one) and adopt it. Not listed yet: Defender may still
        be indexing it, so wait until ``ALERT_SEARCH_GRACE_SECONDS`` after the intent and look once
        more; only then create."""
        if a.entry.state != LedgerState.CREATING:
            return None
        intent = a.entry.intent_at or 0.0
        existing = self._find_own_alert(a.event, a.machine_id, intent)
        why = (
            f"found after an ambiguous answer ({a.entry.unanswered})"
            if a.entry.unanswered
            else "found after an interrupted attempt"
        )
        if existing:
            self._audit(a, f"alert {existing['id']} {why}")
            return self._created(a, existing, how=why)
        left = intent + self.settings.alert_search_grace_seconds - a.now.timestamp()
        if left > 0:
            return Outcome(
                Kind.RETRY_AFTER,
                detail=f"alert not listed yet after an earlier create ({a.entry.unanswered or 'interrupted'}); "
                f"searching again in {left:.0f} s before creating",
                retry_after=left,
            )
        log.info("event %s: no alert listed %.0f s after the earlier create; creating", a.event.id, -left)
        return None

    def _anchor(self, a: Attempt) -> Outcome | None:
        """The leader of a group searches the group's whole window (± the anchor window) and picks
        the connection nearest its own event: every member's own search would have looked inside
        that span, so "none" holds for the whole group."""
        if a.entry.anchor_report_id:  # checkpointed
            return None
        domains = a.draft.platform.domains
        if not domains:
            why = f"no known domain for {a.draft.platform.name} (an in-house platform? add it to PLATFORM_DOMAINS)"
            return self._no_alert(a, Kind.NO_ANCHOR, why, machine_id=a.machine_id)
        window = timedelta(minutes=self.settings.anchor_window_minutes)
        around = a.event.occurred_at
        span = None
        if a.key:
            start, end = bucket_of(around.timestamp(), self.settings.coalesce_window_minutes * 60)
            tz = around.tzinfo
            span = (datetime.fromtimestamp(start, tz) - window, datetime.fromtimestamp(end, tz) + window)
        rows = self.deps.mde.run_hunting_query(anchor.hunting_query(a.machine_id, domains, around, window, span=span))
        found = anchor.pick(rows, a.machine_id, domains, around)
        if found is None:
            within = (
                f"between {span[0].strftime('%H:%M')} and {span[1].strftime('%H:%M')} UTC (this device's storm window "
                f"±{self.settings.anchor_window_minutes} min)"
                if span
                else f"within ±{self.settings.anchor_window_minutes} min of the interaction"
            )
            why = f"no connection to {', '.join(domains)} {within}"
            return self._no_alert(a, Kind.NO_ANCHOR, why, machine_id=a.machine_id)
        self.deps.ledger.checkpoint_anchor(a.entry, found.report_id, found.event_time)
        return None

    def _create(self, a: Attempt) -> Outcome:
        body = {
            "machineId": a.machine_id,
            "reportId": a.entry.anchor_report_id,
            "eventTime": a.entry.anchor_event_time,
            "severity": a.draft.severity,
            "title": a.draft.title,
            "description": a.draft.description,
            "recommendedAction": a.draft.recommended_action,
            "category": a.draft.category,
        }
        self.deps.ledger.mark_creating(a.entry, a.now.timestamp())  # the intent, before the call
        try:
            alert = self.deps.mde.create_alert_by_reference(body)
        except DefenderError as exc:
            if exc.nothing_done:  # a 400/401/403/404/429, or never sent: nothing to search for next time
                self.deps.ledger.mark_not_created(a.entry)
            else:  # a 5xx or no answer may hide an alert that was made: the next attempt searches first
                self.deps.ledger.mark_unanswered(a.entry, f"{exc.status or 'no answer'} {exc.code}")
            return from_error(exc, "CreateAlertByReference")
        return self._created(a, alert)

    # ------------------------------------------------------------------ helpers of the steps
    def _resolve(self, event: Envelope) -> tuple[str | None, str, DeviceView]:
        device = event.device
        if device is None:
            return None, "the event names no device", DeviceView()
        # Workers of one instance resolving the same new device share one lookup.
        with self._device_lock(identity(device)):
            now = self.deps.clock.now()
            cached = self.deps.devices.get(device, now.timestamp())
            if cached:
                if cached.machine_id:
                    return cached.machine_id, f"{cached.resolved_by} (cached)", cached.view
                return None, f"device {device.display_name}: {cached.resolved_by} (cached)", cached.view
            machine, why = devices.resolve(device, self.deps.mde, when=event.occurred_at, now=now)
            minutes = (
                self.settings.device_cache_ttl_minutes if machine else self.settings.device_cache_negative_ttl_minutes
            )
            view = view_of(machine)
            found = str(machine["id"]) if machine else None
            self.deps.devices.put(
                device, found, why, now.timestamp(), minutes * 60, view, observed_at=event.occurred_at.timestamp()
            )
        if found is None:
            return None, f"device {device.display_name}: {why}", view
        return found, why, view

    def _device_lock(self, key: str) -> threading.Lock:
        return self._device_locks[zlib.crc32(key.encode()) % DEVICE_LOCK_STRIPES]

    def _find_own_alert(self, event: Envelope, machine_id: str, intent_at: float) -> dict[str, Any] | None:
        """The alert an earlier create made, searched in the few minutes around that create (its
        HTTP timeout and a margin either side), so a replay hours later still reads one small page."""
        tz, margin = self.deps.clock.now().tzinfo, 300 + self.settings.http_timeout_seconds
        since, until = (
            datetime.fromtimestamp(t, tz=tz).strftime("%Y-%m-%dT%H:%M:%SZ")
            for t in (intent_at - 300, intent_at + margin)
        )
        for alert in self.deps.mde.list_alerts(f"alertCreationTime ge {since} and alertCreationTime le {until}"):
            if alert.get("machineId") == machine_id and marked(str(alert.get("description", ""))) == event.id:
                return alert
        return None

    def _audit(self, a: Attempt, what: str) -> None:
        """A decision of the delivery itself (no call of its own), kept with the calls it explains."""
        if self.deps.audit is None:
            return
        record = CallRecord(
            time=self.deps.clock.now().timestamp(),
            service="delivery",
            method="ADOPT",
            path=what,
            status=200,
            latency_ms=0,
            correlation_id=None,
            error_code=None,
            event_id=a.event.id,
            attempt=a.entry.attempts,
        )
        try:
            self.deps.audit(record)
        except Exception as exc:  # the audit must never break delivery
            log.warning("audit not written: %s", exc.__class__.__name__)

    def _created(self, a: Attempt, alert: dict[str, Any], *, how: str = "") -> Outcome:
        alert_id = str(alert["id"])
        incident = str(alert["incidentId"]) if alert.get("incidentId") is not None else None
        self._respond(a, alert_id, None)  # before the ledger's final write: a retry enqueues it again
        self.deps.ledger.mark_created(a.entry, alert_id, incident, at=self.deps.clock.now().timestamp())
        self.followups.after_created(a.key, alert_id, incident, a.event.id)
        return Outcome(
            Kind.CREATED,
            detail=f"alert {alert_id}" + (f" ({how})" if how else ""),
            alert_id=alert_id,
            incident_id=incident,
            machine_id=a.machine_id,
        )

    def _coalesced(self, a: Attempt, group: Group) -> Outcome:
        alert_id = group.alert_id or ""
        into = alert_id or f"event {group.leader}"
        if not a.assessed:  # joined before the score was needed (not when it joined at the last moment)
            self._assess(a, windows=bool(self.deps.rules and repeats(self.deps.rules)))
        self._respond(a, alert_id or None, None if alert_id else group.leader)
        self.deps.ledger.mark_coalesced(a.entry, into, a.key, alert_id or None, a.machine_id, a.resolved_by)
        self.deps.groups.join(a.key, a.event.id, a.now.timestamp())  # counted only once it is a follower
        self.followups.arrange_note(a.key)
        return Outcome(
            Kind.COALESCED,
            detail=f"into {'alert ' + alert_id if alert_id else 'the alert of ' + into}",
            alert_id=alert_id or None,
        )

    def _respond(self, a: Attempt, alert_id: str | None, leader: str | None) -> None:
        """Queue the response rules' work when at least one rule applies; the executor does the rest
        (exactly once per action, whatever happens to this attempt)."""
        rules = self.deps.rules
        if rules is None or not a.machine_id:
            return
        patterns = self._windows(a) if repeats(rules) else Patterns(available=False, why="no repeat condition")
        found = situation(a.event, a.draft, a.entry.risk.combined_risk, a.view, patterns, rules)
        if all(why_not(rule, found) is not None for rule in rules.rules):
            return
        task = ResponseTask(
            event_id=a.event.id,
            machine_id=a.machine_id,
            alert_id=alert_id,
            leader_event=leader,
            situation=asdict(found),
            domain=a.draft.platform.domains[0] if a.draft.platform.domains else "",
            user=a.facts.user,
            device_name=a.facts.device_name,
            first_received_at=self.deps.clock.now(),
        )
        self.deps.sender.send(self.settings.events_queue_name, task.to_text(), 0)

    def _no_alert(self, a: Attempt, kind: Kind, why: str, *, machine_id: str | None) -> Outcome:
        leads = bool(a.key) and a.entry.leads_group
        fallback = self.deps.fallback
        if self.settings.alert_fallback == "graph" and fallback and (machine_id or a.event.user_email):
            alert = fallback.create_alert(graph_alert(a.draft, machine_id, a.event.user_email))
            alert_id = str(alert["id"])
            at = self.deps.clock.now().timestamp()
            self.deps.ledger.mark_created(
                a.entry, alert_id, None, at=at, machine_id=machine_id, via="graph", reason=why
            )
            if leads:  # the group's members are coalesced into the Graph alert (no notes on it)
                self.followups.after_created(a.key, alert_id, None, a.event.id, via="graph")
            return Outcome(
                Kind.CREATED, detail=f"Graph alert {alert_id} ({why})", alert_id=alert_id, machine_id=machine_id
            )
        if leads and kind == Kind.NO_ANCHOR:  # first the group: new arrivals stop joining; the note each
            self.deps.groups.update_if_leader(a.key, a.event.id, state="no_anchor", reason=why)  # member arranged
        state = LedgerState.NO_DEVICE if kind == Kind.NO_DEVICE else LedgerState.NO_ANCHOR
        self.deps.ledger.mark_no_alert(a.entry, state, why, machine_id, a.resolved_by)
        return Outcome(kind, detail=why, machine_id=machine_id)

    def _after_no_anchor(self, a: Attempt, group: Group) -> Outcome:
        """The group's leader searched this device's storm window and found no connection: this
        event's own search would look at the same minutes, so it ends the same way, uncalled."""
        why = f"{group.reason} (searched once for this device's storm window by event {group.leader})"
        self.deps.ledger.mark_no_alert(a.entry, LedgerState.NO_ANCHOR, why, a.machine_id, a.resolved_by)
        return Outcome(Kind.NO_ANCHOR, detail=why, machine_id=a.machine_id)


def marked(description: str) -> str | None:
    """The event id an alert was made for: its *last* ``Noxys event id:`` line, which the connector
    writes after everything Noxys supplied (so a summary carrying a forged marker line cannot make
    another event adopt this alert)."""
    ids = [line.removeprefix(MARKER) for line in description.splitlines() if line.startswith(MARKER)]
    return ids[-1] if ids else None


def graph_tactic(category: str) -> str:
    """Graph's createAlert takes a MITRE ATT&CK tactic, not MDE's category: data sent to an AI
    platform is exfiltration; the rest (a risky interaction, a Noxys alert) is collection."""
    return category if category in ("Exfiltration", "Collection", "CredentialAccess") else "Collection"


def graph_alert(draft: AlertDraft, machine_id: str | None, user: str | None) -> dict[str, Any]:
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
        "category": graph_tactic(draft.category),
        "recommendedActions": draft.recommended_action,
        "entityDefinitions": entities,
        "isExcludedFromCorrelation": False,
    }
