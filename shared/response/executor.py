"""Carrying out the response rules for one event: judge, reserve, send once, follow, tell.

For each rule the event meets (``shared.response.rules``), in order:

1. a dry-run rule records each would-be action and says so on the alert — nothing is sent;
2. an excluded device (one of the rule's ``exclude_device_tags``) is never touched — and for a live
   rule the tags are read **fresh** from Defender (``GET /api/machines/{id}``), never the cache;
3. a destructive action (isolate, restrict, collect) also needs, from that same fresh record, a
   machine that is neither a server nor high value (unless the rule allows it) and an identity
   proof: the Entra device id, or two identifiers that agree and a name no other record carries;
4. the device's cooldown is taken (or found held by another event: skip), Defender is asked what
   is already pending on the device, and each action is claimed in the store *before* it is sent —
   so a redelivered task or a worker killed mid-way never sends it twice — and takes a place in its
   hourly cap and in the hour's distinct devices, across all instances; a full cap skips it and
   opens the "response circuit" the health check reports;
5. a machine action is then followed (a queue task polls it, backing off) until Defender reports
   Succeeded, Failed, TimeOut or Cancelled; every verdict and final state goes to the audit trail,
   and onto the alert the SOC is looking at as one comment per rule *when its verdict changes*
   (a storm's cooldown skips are counted into the next comment, not written one by one).

Calls go through the same client, hence the same shared pacing budgets and audit, as the alert path.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from shared import telemetry
from shared.defender.context import CallContext, calls_for
from shared.defender.errors import CallRecord, DefenderError
from shared.devices import odata_literal
from shared.outcome import Kind, Outcome, from_error
from shared.response import rules as r
from shared.response.notify import recipient
from shared.response.store import ActionRow, ResponseStore
from shared.tasks import ActionStatusTask, ResponseTask

if TYPE_CHECKING:
    from shared.response.contain import Containment
    from shared.response.identity import Notifier

log = logging.getLogger(__name__)
FOLLOW_FIRST = 30.0  # seconds before the first status read; then doubling, at most 10 min apart
FOLLOW_FOR_HOURS = 24.0
SEGMENT = {
    "isolate": "isolate",
    "restrict_app_execution": "restrictCodeExecution",
    "av_scan": "runAntiVirusScan",
    "collect_investigation_package": "collectInvestigationPackage",
}


def _options(action: r.Action) -> dict[str, str]:
    """The machine action's own body field, as Defender names it."""
    if isinstance(action, r.Isolate):
        return {"IsolationType": action.isolation_type}
    if isinstance(action, r.AvScan):
        return {"ScanType": action.scan_type}
    return {}


class ResponseApi(Protocol):
    def get_machine(self, machine_id: str) -> dict[str, Any] | None: ...
    def list_machines(self, odata_filter: str | None = None, top: int | None = None) -> list[dict[str, Any]]: ...
    def machine_action(self, machine_id: str, segment: str, body: dict[str, Any]) -> dict[str, Any]: ...
    def list_machine_actions(self, odata_filter: str) -> list[dict[str, Any]]: ...
    def get_machine_action(self, action_id: str) -> dict[str, Any]: ...
    def tag_machine(self, machine_id: str, tag: str, action: str = "Add") -> dict[str, Any]: ...
    def add_indicator(self, indicator: dict[str, Any]) -> dict[str, Any]: ...
    def comment_alert(self, alert_id: str, comment: str) -> dict[str, Any]: ...


class TicketSink(Protocol):
    def open(self, msg_id: str, body: dict[str, Any]) -> str:
        """POST the signed ticket; its reference (or the HTTP status) on success, DefenderError otherwise."""


@dataclass
class ResponseDeps:
    rules: r.RulesFile
    api: ResponseApi
    store: ResponseStore
    now: Callable[[], datetime]
    send: Callable[[str, float], None]  # a task's text back on the queue after a delay
    audit: Callable[[CallRecord], None]
    alert_of: Callable[[str], str | None]  # the alert a (leader) event raised, from the ledger
    tickets: TicketSink | None = None
    notifier: Notifier | None = None  # notify_user: Graph sendMail (shared.response.identity)
    containment: Containment | None = None  # contain_user: the contain group (shared.response.contain)
    max_age: timedelta = timedelta(hours=24)  # MAX_EVENT_AGE_HOURS: a response retried longer is given up


def situation_of(task: ResponseTask) -> r.Situation:
    s = task.situation
    return r.Situation(
        str(s["event_type"]),
        s["severity"],
        float(s["combined_risk"]),
        str(s["platform_id"]),
        str(s["platform_name"]),
        str(s["policy_action"]),
        tuple(s.get("device_tags") or ()),
        {str(k): int(v) for k, v in (s.get("counts") or {}).items()},
        {str(k): str(v) for k, v in (s.get("device_ids") or {}).items()},
        policy_name=str(s.get("policy_name") or ""),
        pii_types=tuple(str(c) for c in s.get("pii_types") or ()),
        occurred_at=str(s.get("occurred_at") or ""),
    )


@dataclass(frozen=True)
class Said:
    """One action's verdict, as written on the alert and compared with the last comment."""

    text: str
    state: str
    detail: str = ""

    @property
    def cooldown(self) -> bool:
        return self.state == "skipped" and r.is_cooldown_skip(self.detail)


@dataclass(frozen=True)
class Fresh:
    """What Defender says of the machine now, read just before acting on it."""

    excluded_by: str | None = None  # an exclusion tag the machine carries now
    destructive_blocked: str = ""  # why isolate / restrict / collect may not touch it


DEVICE_ACTIONS = frozenset({*SEGMENT, "tag_device"})


class Responder:
    def __init__(self, deps: ResponseDeps) -> None:
        self.deps = deps

    # ------------------------------------------------------------------ a response task
    def handle(self, task: ResponseTask) -> Outcome:
        if self.deps.now() - task.first_received_at > self.deps.max_age:  # Defender down for a day: stop
            log.warning(
                "event %s: response given up after %s (attempt %d)", task.event_id, self.deps.max_age, task.attempt
            )
            return Outcome(Kind.DEAD_LETTER, detail=f"response given up after {self.deps.max_age}")
        alert_id = task.alert_id or (self.deps.alert_of(task.leader_event) if task.leader_event else None)
        if not alert_id and task.leader_event and task.attempt < 20:
            self._later(task, 30.0)  # the group's alert is not created yet: its comment needs it
            return Outcome(Kind.RETRY_AFTER, detail="waiting for the group's alert", retry_after=30.0)
        situation, lines = situation_of(task), []
        with calls_for(CallContext(task.event_id, task.attempt)):
            try:
                for i, rule in enumerate(self.deps.rules.rules):
                    if r.why_not(rule, situation) is None:
                        lines += self._rule(task, i, rule, situation, alert_id)
            except DefenderError as exc:
                outcome = from_error(exc, "response")
                if outcome.kind == Kind.RETRY_AFTER:
                    self._later(task, outcome.retry_after or 60.0)
                return outcome
        return Outcome(Kind.RESPONDED, detail="; ".join(lines) or "no rule applies", alert_id=alert_id)

    def _later(self, task: ResponseTask | ActionStatusTask, delay: float) -> None:
        self.deps.send(task.model_copy(update={"attempt": task.attempt + 1}).to_text(), delay)

    def _rule(self, task: ResponseTask, i: int, rule: r.Rule, s: r.Situation, alert_id: str | None) -> list[str]:
        tag = r.excluded_by(rule, s)  # the cached view first: an excluded device costs no call at all
        now = self.deps.now().timestamp()
        guard = r.Guard() if tag else self._guard(task, rule, now)
        fresh = Fresh()
        cooling = guard.holds_off(task.event_id, now)  # every action skipped anyway: no need to read
        if not tag and not rule.dry_run and not cooling and any(a.action in DEVICE_ACTIONS for a in rule.then):
            fresh = self._fresh(task, rule, s)
            tag = fresh.excluded_by
        if tag:
            self._record(task, rule.name, "excluded", f"device tag {tag}", "skipped")
            return [f"{rule.name}: device excluded by tag {tag}"]
        said = [
            self._action(task, i, j, rule, action, guard, fresh, s, now, alert_id) for j, action in enumerate(rule.then)
        ]
        if alert_id:
            self._comment(task, i, rule, alert_id, said)
        return [f"{rule.name}: " + "; ".join(x.text for x in said)]

    def _fresh(self, task: ResponseTask, rule: r.Rule, s: r.Situation) -> Fresh:
        """The machine as Defender has it now (paced like every call): its exclusion tags, and for
        a destructive action its value, platform and whether the event surely names it."""
        machine = self.deps.api.get_machine(task.machine_id)
        if machine is None:
            return Fresh(destructive_blocked="the machine is no longer in Defender")
        tag = r.fresh_exclusion(rule, machine)
        if tag or not any(a.action in r.DESTRUCTIVE for a in rule.then):
            return Fresh(excluded_by=tag)
        blocked = r.protected(rule, machine)
        if blocked is None:
            blocked = r.identity_proof(machine, s.device_ids, self._same_name(machine, s))
        return Fresh(destructive_blocked=blocked or "")

    def _same_name(self, machine: dict[str, Any], s: r.Situation) -> int:
        """How many machine records carry this machine's DNS name (1 when the Entra id proves it)."""
        aad = str(machine.get("aadDeviceId") or "").lower()
        dns = str(machine.get("computerDnsName") or "").lower()
        if (aad and s.device_ids.get("aad") == aad) or not dns:
            return 1
        found = self.deps.api.list_machines(f"computerDnsName eq {odata_literal(dns)}")
        return max(1, len({str(m.get("id")) for m in found}))

    def _comment(self, task: ResponseTask, i: int, rule: r.Rule, alert_id: str, said: list[Said]) -> None:
        """A comment on the alert when this rule's verdict on it changes: a storm of events on one
        alert writes one comment per change, and its cooldown skips are counted into the next."""
        store = self.deps.store
        row, _ = store.claim(ActionRow(task.event_id, f"r{i:02d}-comment", rule.name, "comment"))
        if row.state == "done":
            return
        last, skipped = store.comment_state(alert_id, i)
        verdict = "; ".join(f"{x.state}:{x.detail if x.state == 'skipped' else ''}" for x in said)
        if all(x.cooldown for x in said) or verdict == last:
            store.set_comment_state(alert_id, i, last, skipped + (1 if all(x.cooldown for x in said) else 0))
        else:
            head = "Noxys response (dry run: nothing was sent)" if rule.dry_run else "Noxys response"
            more = (
                f" ({skipped} other event(s) skipped by the device cooldown since the last comment)" if skipped else ""
            )
            text = f"{head}, rule '{rule.name}': " + "; ".join(x.text for x in said) + "." + more
            self.deps.api.comment_alert(alert_id, text)
            store.set_comment_state(alert_id, i, verdict, 0)
        row.state, row.dry_run, row.at = "done", rule.dry_run, self.deps.now().timestamp()
        store.save(row)

    def _guard(self, task: ResponseTask, rule: r.Rule, now: float) -> r.Guard:
        if rule.dry_run:
            return r.Guard()
        limits, store = self.deps.rules.limits, self.deps.store
        until, owner = store.take_cooldown(task.machine_id, task.event_id, now, limits.device_cooldown_minutes * 60)
        pending: dict[str, str] = {}
        if r.Guard(until, owner).holds_off(task.event_id, now):
            return r.Guard(until, owner)
        if any(a.action in SEGMENT for a in rule.then):  # never an action while the same one runs
            for found in self.deps.api.list_machine_actions(f"machineId eq '{task.machine_id}'"):
                if found.get("status") in ("Pending", "InProgress"):
                    pending.setdefault(str(found.get("type")), str(found.get("id")))
        return r.Guard(until, owner, pending)

    def _action(
        self,
        task: ResponseTask,
        i: int,
        j: int,
        rule: r.Rule,
        action: r.Action,
        guard: r.Guard,
        fresh: Fresh,
        s: r.Situation,
        now: float,
        alert_id: str | None,
    ) -> Said:
        what = r.describe(action)
        row = ActionRow(task.event_id, f"r{i:02d}a{j:02d}", rule.name, action.action, machine_id=task.machine_id)
        row.at, row.dry_run, row.alert_id = now, rule.dry_run, alert_id or ""
        row, fresh_row = self.deps.store.claim(row)
        if row.final or row.state == "sent":
            return Said(f"{what}: {row.state}{' ' + row.detail if row.detail else ''} (already recorded)", row.state)
        if not fresh_row and not rule.dry_run and action.action in SEGMENT:
            adopted = self._adopt(task, action, row)  # an earlier attempt may have sent it: ask Defender first
            if adopted:
                return Said(adopted, "sent")
        domain, why = "", ""
        if isinstance(action, r.BlockDomain):
            target, why = r.block_target(s.platform_id, task.domain, self.deps.rules.allowed_block_domains)
            domain = target or ""
        if not why and action.action in r.DESTRUCTIVE and fresh.destructive_blocked:
            why = fresh.destructive_blocked
        if isinstance(action, r.NotifyUser):
            return self._notify(task, row, rule, guard, s, now)
        if isinstance(action, r.ContainUser):
            return self._contain(task, row, not fresh_row, rule, action, guard, now)
        verdict, why = (
            ("skip", why) if why else r.verdict(action, rule, task.event_id, guard, self.deps.rules.limits, now)
        )
        if verdict == "send":
            why = self._reserve(task, row, action, now)
            verdict = "skip" if why else verdict
        if verdict != "send":
            row.state, row.detail = ("dry_run", "would " + what) if verdict == "dry_run" else ("skipped", why)
            self._settle(task, row)
            return Said(f"would {what}" if verdict == "dry_run" else f"{what}: skipped ({why})", row.state, row.detail)
        return self._send(task, action, row, what, domain)

    def _notify(
        self, task: ResponseTask, row: ActionRow, rule: r.Rule, guard: r.Guard, s: r.Situation, now: float
    ) -> Said:
        """``notify_user``: the same verdict, cap and claim as every action, plus one mail per user
        per ``notify_cooldown_minutes`` across instances; a dry run records the exact mail."""
        what, to = "e-mail the user", recipient(task.user)
        verdict, why = r.verdict(
            r.NotifyUser(action="notify_user"), rule, task.event_id, guard, self.deps.rules.limits, now
        )
        if to is None:
            verdict, why = "skip", "the event names no e-mail address for the user"
        elif self.deps.notifier is None or self.deps.notifier.problem:
            problem = self.deps.notifier.problem if self.deps.notifier else "NOTIFY_SENDER is not set"
            verdict, why = "skip", f"{problem} (NotifyNotConfigured)"
        mail = self.deps.notifier.mail(to, s) if to and self.deps.notifier else None
        if verdict == "dry_run" and mail is not None:
            row.state, row.detail = "dry_run", "would send:\n" + mail.preview()
            self.deps.store.save(row)
            self._record(task, row.rule, row.action, f"would send '{mail.subject}'", row.state)
            return Said(f"would {what} ('{mail.subject}')", row.state)
        if verdict == "send":
            minutes = self.deps.rules.limits.notify_cooldown_minutes
            why = self._user_guard("user", task, now, minutes, f"the user was e-mailed less than {minutes} min ago")
            why = why or self._reserve(task, row, r.NotifyUser(action="notify_user"), now)
            verdict = "skip" if why else verdict
        if verdict != "send" or mail is None or self.deps.notifier is None:
            row.state, row.detail = ("dry_run", "would " + what) if verdict == "dry_run" else ("skipped", why)
            self._settle(task, row)
            return Said(f"would {what}" if verdict == "dry_run" else f"{what}: skipped ({why})", row.state, row.detail)
        self.deps.notifier.send(mail)  # a transient error retries the task: the row is still 'intended'
        row.state, row.detail = "done", f"mail '{mail.subject}' sent"
        self._settle(task, row)
        return Said(f"{what}: done (mail sent)", "done")

    def _user_guard(self, kind: str, task: ResponseTask, now: float, minutes: int, held: str) -> str:
        """A per-person guard (``user``: the mail cooldown; ``contain``: the containment), taken for
        this event unless another event holds it, across instances; why not when it is held."""
        who = f"{kind}-" + hashlib.sha256(task.user.strip().casefold().encode()).hexdigest()[:24]  # no address
        until, owner = self.deps.store.take_cooldown(who, task.event_id, now, minutes * 60)
        if until > now and owner != task.event_id:
            return f"{held} (until {r.iso(until)})"
        return ""

    def _contain(
        self, task: ResponseTask, row: ActionRow, retry: bool, rule: r.Rule, action: r.ContainUser, guard: r.Guard,
        now: float,
    ) -> Said:  # fmt: skip
        """``contain_user``: the same verdict, cap and claim as every action; once per person per
        ``for_hours``; never a protected identity, read fresh (:mod:`shared.response.contain`)."""
        what, upn, c = r.describe(action), recipient(task.user), self.deps.containment
        verdict, why = r.verdict(action, rule, task.event_id, guard, self.deps.rules.limits, now)
        user_id = ""
        if verdict == "send":
            if upn is None:
                why = "the event names no e-mail address (user principal name) for the user"
            elif c is None or c.problem:
                why = f"{c.problem if c else 'CONTAIN_GROUP_ID is not set'} (ContainNotConfigured)"
            if not why and c is not None and upn is not None:
                user_id, why = c.user_of(upn)  # fresh, before every containment: protected never
            why = why or self._user_guard("contain", task, now, action.for_hours * 60, "the user is already contained")
            why = why or self._reserve(task, row, action, now)
            verdict = "skip" if why else verdict
        if verdict != "send" or c is None:
            row.state, row.detail = ("dry_run", "would " + what) if verdict == "dry_run" else ("skipped", why)
            self._settle(task, row)
            return Said(f"would {what}" if verdict == "dry_run" else f"{what}: skipped ({why})", row.state, row.detail)
        done = c.contain(user_id, action, now, retry=retry)
        row.state, row.detail, row.undo, row.release_at = "done", done.detail, done.undo, done.release_at
        row.action_id = "contain-" + hashlib.sha256(f"{task.event_id}/{row.key}".encode()).hexdigest()[:16]
        self._settle(task, row)
        return Said(f"{what}: done ({done.detail}; undo: response undo --action {row.action_id})", "done")

    def _reserve(self, task: ResponseTask, row: ActionRow, action: r.Action, now: float) -> str:
        """A place in the action's hourly cap, and for a device action in the hour's distinct
        devices, across all instances; the reason when a cap is full (the circuit opens)."""
        limits, store = self.deps.rules.limits, self.deps.store
        checks: list[tuple[str, str, int]] = [(action.action, f"{task.event_id}/{row.key}", limits.cap(action.action))]
        if action.action in DEVICE_ACTIONS:
            checks.append(("devices", task.machine_id, limits.max_devices_per_hour))
        for cap, holder, limit in checks:
            if not store.take_slot(cap, holder, now, limit):
                reason = r.cap_reason(cap, limit)
                store.trip(cap, reason, now)
                telemetry.response_action(action.action, "circuit_open")  # pages at once, not at the hourly check
                log.warning("event %s: %s", task.event_id, reason)
                return reason
        return ""

    def _adopt(self, task: ResponseTask, action: r.Action, row: ActionRow) -> str | None:
        kind = r.MACHINE_ACTION_TYPE[action.action]
        since = datetime.fromtimestamp(row.at - 5, self.deps.now().tzinfo).strftime("%Y-%m-%dT%H:%M:%S")
        query = f"machineId eq '{task.machine_id}' and type eq '{kind}'"
        found = [a for a in self.deps.api.list_machine_actions(query) if str(a.get("creationDateTimeUtc")) >= since]
        if not found:
            return None
        row.state, row.action_id, row.detail = "sent", str(found[0]["id"]), "found after an interrupted attempt"
        self.deps.store.save(row)
        self._record(task, row.rule, row.action, f"action {row.action_id} found after an interrupted attempt", "sent")
        self._follow(task, row)
        return f"{r.describe(action)}: sent (action {row.action_id}, found after an interrupted attempt)"

    def _send(self, task: ResponseTask, action: r.Action, row: ActionRow, what: str, domain: str) -> Said:
        comment = f"Noxys response rule '{row.rule}' (event {task.event_id})"
        try:
            done, row.undo = self._call(task, action, comment, domain)
        except DefenderError as exc:
            if exc.transient:
                raise  # the task is retried; the row stays 'intended' and is checked first
            if exc.code == "ActiveRequestAlreadyExists" and (adopted := self._adopt(task, action, row)):
                return Said(adopted, "sent")  # a duplicate of this task sent it a moment ago: the same action
            row.state, row.detail = "error", f"{exc.status} {exc.code}"
            self._settle(task, row)
            return Said(f"{what}: refused ({exc.status} {exc.code})", row.state, row.detail)
        if action.action in SEGMENT:
            row.state, row.action_id = "sent", done
            hours = getattr(action, "release_after_hours", None)
            row.release_at = self.deps.now().timestamp() + hours * 3600 if hours else 0.0
            self.deps.store.save(row)
            self._record(task, row.rule, row.action, f"sent, action {done}", "sent")
            self._follow(task, row)
            return Said(f"{what}: sent (action {done})", "sent")
        row.state, row.detail = "done", done
        self._settle(task, row)
        return Said(f"{what}: done{' (' + done + ')' if done else ''}", "done")

    def _call(self, task: ResponseTask, action: r.Action, comment: str, domain: str) -> tuple[str, str]:
        """Send it: (what Defender answered, what undoing it needs besides the action's own id)."""
        api = self.deps.api
        match action:
            case r.Isolate() | r.AvScan() | r.RestrictAppExecution() | r.CollectInvestigationPackage():
                body = {"Comment": comment, **_options(action)}
                return str(api.machine_action(task.machine_id, SEGMENT[action.action], body)["id"]), ""
            case r.TagDevice():
                api.tag_machine(task.machine_id, action.tag)
                return "", f"tag:{action.tag}"
            case r.BlockDomain():
                return self._indicator(domain, action, comment)
            case _:
                return self._ticket(task, comment), ""

    def _indicator(self, domain: str, action: r.BlockDomain, comment: str) -> tuple[str, str]:
        """``domain`` is what :func:`shared.response.rules.block_target` allowed, never the event's own host."""
        expires = self.deps.now() + timedelta(hours=action.expires_after_hours)
        found = self.deps.api.add_indicator(
            {
                "indicatorValue": domain,
                "indicatorType": "DomainName",
                "action": action.indicator_action,
                "title": f"Noxys: {action.indicator_action.lower()} {domain}",
                "description": comment,
                "expirationTime": expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "severity": "Medium",
                "generateAlert": False,
            }
        )
        said = f"indicator {found.get('id', '?')} on {domain} until {expires:%Y-%m-%dT%H:%M:%SZ}"
        return said, f"indicator:{found['id']}" if found.get("id") else ""

    def _ticket(self, task: ResponseTask, comment: str) -> str:
        if self.deps.tickets is None:
            raise DefenderError(400, "TicketNotConfigured", "TICKET_URL or its signing secret is not set")
        body = {
            "type": "noxys.response.ticket",
            "event_id": task.event_id,
            "summary": comment,
            "severity": task.situation.get("severity"),
            "combined_risk": task.situation.get("combined_risk"),
            "platform": task.situation.get("platform_name"),
            "user": task.user,
            "device": {"name": task.device_name, "defender_machine_id": task.machine_id},
            "defender_alert_id": task.alert_id,
            "created_at": self.deps.now().strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        return self.deps.tickets.open(f"noxys-{task.event_id}-ticket"[:200], body)

    def _settle(self, task: ResponseTask, row: ActionRow) -> None:
        self.deps.store.save(row)
        self._record(task, row.rule, row.action, row.detail, row.state)

    def _record(self, task: ResponseTask | ActionStatusTask, rule: str, action: str, detail: str, state: str) -> None:
        telemetry.response_action(action, state)
        self.deps.audit(
            CallRecord(
                time=self.deps.now().timestamp(),
                service="response",
                method=action.upper(),
                path=f"{state}: rule '{rule}'" + (f" ({detail})" if detail else ""),
                status=200,
                latency_ms=0,
                correlation_id=None,
                error_code=None if state not in ("error", "Failed", "TimeOut", "Cancelled") else state,
                event_id=task.event_id,
                attempt=task.attempt,
            )
        )

    # ------------------------------------------------------------------ following a machine action
    def _follow(self, task: ResponseTask, row: ActionRow) -> None:
        status = ActionStatusTask(
            event_id=task.event_id,
            row=row.key,
            action_id=row.action_id,
            alert_id=task.alert_id,
            first_received_at=self.deps.now(),
        )
        self.deps.send(status.to_text(), FOLLOW_FIRST)

    def follow(self, task: ActionStatusTask) -> Outcome:
        row = self.deps.store.get(task.event_id, task.row)
        if row is None or row.final:
            return Outcome(Kind.RESPONDED, detail="already final")
        with calls_for(CallContext(task.event_id, task.attempt)):
            try:
                status = str(self.deps.api.get_machine_action(task.action_id).get("status") or "")
            except DefenderError as exc:
                if exc.transient:
                    self._later(task, min(FOLLOW_FIRST * 2**task.attempt, 600.0))
                return from_error(exc, "machine action status")
            if status not in ("Succeeded", "Failed", "TimeOut", "Cancelled"):
                if self.deps.now() - task.first_received_at > timedelta(hours=FOLLOW_FOR_HOURS):
                    status = "TimeOut"
                else:
                    self._later(task, min(FOLLOW_FIRST * 2**task.attempt, 600.0))
                    return Outcome(Kind.RETRY_AFTER, detail=f"action {task.action_id} {status or 'unknown'}")
            row.state, row.detail = status, f"action {task.action_id}"
            self._settle_followed(task, row)
        return Outcome(Kind.RESPONDED, detail=f"{row.action} {status}")

    def _settle_followed(self, task: ActionStatusTask, row: ActionRow) -> None:
        self.deps.store.save(row)
        self._record(task, row.rule, row.action, row.detail, row.state)
        alert_id = task.alert_id or self.deps.alert_of(task.event_id)
        if alert_id:
            self.deps.api.comment_alert(
                alert_id, f"Noxys response, rule '{row.rule}': {row.action} on the device {row.state} ({row.detail})."
            )
