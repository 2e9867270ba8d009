"""The delivery's dependencies: the Defender/Graph APIs it calls (Protocols, so a test or another
client can stand in) and the state it keeps. Built once by ``shared.wiring``, the composition root."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from shared import devices
from shared.clock import Clock
from shared.config import Settings
from shared.defender.errors import CallRecord
from shared.delivery.coalesce import Groups
from shared.delivery.deadletter import DeadLetters
from shared.delivery.devicecache import DeviceCache
from shared.delivery.hold import Held
from shared.delivery.ledger import Ledger
from shared.delivery.patterns import PatternStore
from shared.delivery.sender import QueueSender
from shared.response.executor import Responder
from shared.response.rules import RulesFile
from shared.risk import RiskConfig


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
    patterns: PatternStore | None = None
    risk: RiskConfig = field(default_factory=RiskConfig)
    rules: RulesFile | None = None
    responder: Responder | None = None
    audit: Callable[[CallRecord], None] | None = None  # the delivery's own decisions (an adopted alert)
