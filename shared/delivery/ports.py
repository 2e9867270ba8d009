"""The delivery's dependencies: the Defender/Graph APIs it calls and the state it keeps, each a
Protocol naming only what the delivery uses (so a test fake or another store can stand in, and
this package never imports the response executor it feeds: ``shared.response`` and
``shared.delivery`` meet only in ``shared.tasks`` and ``shared.outcome``). The values it reads —
settings, risk weights, the rules file — are plain data. Built once by ``shared.wiring``, the
composition root."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from shared import devices
from shared.clock import Clock
from shared.config import Settings
from shared.defender.errors import CallRecord
from shared.delivery.coalesce import Group, GroupRead, Role
from shared.delivery.deadletter import DeadLetter
from shared.delivery.devicecache import Cached
from shared.delivery.ledger import Entry, LedgerState
from shared.delivery.patterns import Observation
from shared.delivery.sender import QueueSender
from shared.events import Device
from shared.facts import EventFacts
from shared.outcome import Outcome
from shared.response.rules import RulesFile
from shared.risk import DeviceView, Patterns, RiskConfig
from shared.tasks import ActionStatusTask, QueuedEvent, ResponseTask


class MdeApi(devices.MachineApi, Protocol):
    def run_hunting_query(self, query: str) -> list[dict[str, Any]]: ...
    def create_alert_by_reference(self, alert: dict[str, Any]) -> dict[str, Any]: ...
    def list_alerts(self, odata_filter: str, top: int = 1000) -> list[dict[str, Any]]: ...
    def comment_alert(self, alert_id: str, comment: str) -> dict[str, Any]: ...
    def get_alert(self, alert_id: str) -> dict[str, Any]: ...


class IncidentApi(Protocol):
    def get_incident(self, incident_id: str) -> dict[str, Any]: ...
    def set_incident_tags(self, incident_id: str, tags: list[str]) -> None: ...


class AlertFallbackApi(Protocol):
    def create_alert(self, alert_input: dict[str, Any]) -> dict[str, Any]: ...


class LedgerPort(Protocol):
    """What the delivery uses of :class:`~shared.delivery.ledger.Ledger`."""

    def get(self, event_id: str) -> Entry | None: ...
    def fresh(
        self,
        event_id: str,
        event_type: str,
        now: float,
        facts: EventFacts | None = None,
        accepted_at: float | None = None,
    ) -> Entry: ...
    def settle_no_anchor(self, event_id: str, group_key: str, reason: str) -> bool: ...

    def claim(
        self,
        event_id: str,
        event_type: str,
        now: float,
        lease_seconds: float,
        facts: EventFacts | None = None,
        accepted_at: float | None = None,
        *,
        again: bool = False,
    ) -> Entry: ...
    def release(self, entry: Entry, *, last_problem: str | None = None) -> None: ...
    def checkpoint_device(self, entry: Entry, machine_id: str, resolved_by: str, view: DeviceView) -> None: ...
    def device_view(self, entry: Entry) -> DeviceView: ...
    def note_risk(self, entry: Entry, score: float, factors_json: str) -> None: ...
    def checkpoint_anchor(self, entry: Entry, report_id: str, event_time: str) -> None: ...
    def mark_leader(
        self, entry: Entry, group_key: str, machine_id: str, resolved_by: str, view: DeviceView
    ) -> None: ...
    def count_error(self, entry: Entry) -> int: ...
    def mark_creating(self, entry: Entry, intent_at: float) -> None: ...
    def mark_not_created(self, entry: Entry) -> None: ...
    def mark_unanswered(self, entry: Entry, what: str) -> None: ...
    def mark_created(
        self,
        entry: Entry,
        alert_id: str,
        incident_id: str | None,
        *,
        at: float | None = None,
        machine_id: str | None = None,
        via: str | None = None,
        reason: str | None = None,
    ) -> None: ...
    def mark_coalesced(
        self, entry: Entry, into: str, group_key: str, alert_id: str | None, machine_id: str, resolved_by: str = ""
    ) -> None: ...
    def mark_no_alert(
        self, entry: Entry, state: LedgerState, reason: str, machine_id: str | None, resolved_by: str = ""
    ) -> None: ...
    def mark_dead(self, entry: Entry, reason: str, error_code: str | None, correlation_id: str | None) -> None: ...


class GroupsPort(Protocol):
    """What the delivery uses of :class:`~shared.delivery.coalesce.Groups`."""

    def known(self, key: str, now: float | None = None) -> Group | None: ...
    def get(self, key: str) -> Group | None: ...
    def lead_or_join(self, key: str, event_id: str, now: float, until: float = 0.0) -> tuple[Role, Group]: ...
    def join(self, key: str, event_id: str, now: float) -> None: ...
    def read_all(self, key: str) -> GroupRead: ...
    def update(self, key: str, **changes: Any) -> Group | None: ...
    def arrange_note(
        self, key: str, now: float, delay: Callable[[Group], float], send: Callable[[str, float], None]
    ) -> None: ...
    def update_if_leader(self, key: str, event_id: str, **changes: Any) -> Group | None: ...
    def stop_notes(self, g: Group, **changes: Any) -> bool: ...
    def commit(self, g: Group, **changes: Any) -> bool: ...


class DeviceCachePort(Protocol):
    """What the delivery uses of :class:`~shared.delivery.devicecache.DeviceCache`."""

    def get(self, device: Device, now: float) -> Cached | None: ...
    def put(
        self,
        device: Device,
        machine_id: str | None,
        resolved_by: str,
        now: float,
        ttl_seconds: float,
        view: DeviceView | None = None,
        observed_at: float | None = None,
    ) -> None: ...


class DeadLetterPort(Protocol):
    """What the delivery uses of :class:`~shared.delivery.deadletter.DeadLetters`."""

    def put(self, letter: DeadLetter) -> None: ...


class HeldPort(Protocol):
    """What the delivery uses of :class:`~shared.delivery.hold.Held`."""

    def is_on(self, observe: bool = True) -> bool: ...
    def keep(self, task: QueuedEvent, queue: str) -> None: ...


class PatternsPort(Protocol):
    """What the delivery uses of :class:`~shared.delivery.patterns.PatternStore`."""

    def record(self, o: Observation) -> None: ...
    def read(self, o: Observation, *, recorded: bool = True) -> Patterns: ...


class ResponderPort(Protocol):
    """What the delivery uses of :class:`~shared.response.executor.Responder`."""

    def handle(self, task: ResponseTask) -> Outcome: ...
    def follow(self, task: ActionStatusTask) -> Outcome: ...


@dataclass
class Deps:
    settings: Settings
    mde: MdeApi
    ledger: LedgerPort
    groups: GroupsPort
    devices: DeviceCachePort
    dead: DeadLetterPort
    sender: QueueSender
    clock: Clock
    incidents: IncidentApi | None = None
    fallback: AlertFallbackApi | None = None
    held: HeldPort | None = None
    patterns: PatternsPort | None = None
    risk: RiskConfig = field(default_factory=RiskConfig)
    rules: RulesFile | None = None
    responder: ResponderPort | None = None
    audit: Callable[[CallRecord], None] | None = None  # the delivery's own decisions (an adopted alert)
