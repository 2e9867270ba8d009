"""In-memory Entra ID + Defender for Endpoint + Graph state, with an injectable clock.

The rules each service enforces live in its own module (:mod:`tools.emulator.entra`,
:mod:`tools.emulator.mde`, :mod:`tools.emulator.graph`, :mod:`tools.emulator.vault`,
:mod:`tools.emulator.logs`); this class holds the data they share and loads the fixture. The
HTTP layer (:mod:`tools.emulator.app`) only translates requests into calls on this object.
"""

from __future__ import annotations

import json
import random
import secrets
import threading
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from shared.clock import Clock, ManualClock, SystemClock
from tools.emulator.base import Client, Limiter
from tools.emulator.common import ApiError, Faults, TokenError, format_time, parse_time
from tools.emulator.entra import GRAPH_AUDIENCE, MDE_AUDIENCES, Entra
from tools.emulator.graph import Graph
from tools.emulator.identity import Identity, IdentityState
from tools.emulator.identity import load as load_identity
from tools.emulator.insights import InsightsState
from tools.emulator.logs import LogsState, declared_columns
from tools.emulator.mde import Mde
from tools.emulator.response import Response, ResponseState
from tools.emulator.vault import VaultState

__all__ = [
    "GRAPH_AUDIENCE",
    "MDE_AUDIENCES",
    "ApiError",
    "Clock",
    "DefenderState",
    "ManualClock",
    "TokenError",
    "format_time",
    "parse_time",
]

DEFAULT_FIXTURE = Path(__file__).with_name("fixtures") / "default.json"


class DefenderState(Entra, Mde, Graph, Response, Identity):
    """Tenants, apps, machines, network events, alerts and quotas of one emulated tenant set."""

    def __init__(
        self, fixture: dict[str, Any] | None = None, clock: Clock | None = None, token_lifetime: float = 3600
    ) -> None:
        self.clock: Clock = clock or SystemClock()
        # Long simulations move the emulator's clock by hours while MSAL caches tokens by real
        # time; they raise the lifetime instead of letting the two clocks disagree.
        self.token_lifetime = token_lifetime
        self.revoked_before = 0.0  # tokens issued before this (emulator time) are refused
        self.lock = threading.RLock()
        self.signing_key = secrets.token_bytes(32)
        self.clients: dict[tuple[str, str], Client] = {}
        self.tenants: set[str] = set()
        self.machines: list[dict[str, Any]] = []
        self.traffic: dict[str, list[tuple[str, int]]] = {}  # machine id -> [(domain, every seconds)]
        self.network_events: list[dict[str, Any]] = []
        self.process_events: list[dict[str, Any]] = []
        self.alerts: list[dict[str, Any]] = []
        self.incidents: dict[str, dict[str, Any]] = {}
        self.calls: list[dict[str, Any]] = []
        self.limiter = Limiter()
        self.throttled: dict[str, int] = {}
        self.merged: dict[str, int] = {}
        self.vault = VaultState()
        self.logs = LogsState(columns=declared_columns())
        self.insights = InsightsState()
        self.faults = Faults()
        self._rng = random.Random(self.faults.seed)  # noqa: S311 - reproducible fault injection
        self.next_alert = 1
        self.graph_alerts: list[dict[str, Any]] = []
        self.on_change: Callable[[], None] | None = None  # persistence (tools.emulator.persist)
        self.incident_delay = 0.0
        self.pending_incidents: dict[str, datetime] = {}
        self.response = ResponseState()
        self.identity = IdentityState()
        self.load(fixture if fixture is not None else json.loads(DEFAULT_FIXTURE.read_text()))

    # ---------------------------------------------------------------- fixture
    def load(self, fixture: dict[str, Any]) -> None:
        for tenant in fixture.get("tenants", []):
            tid = tenant["id"]
            self.tenants.add(tid)
            for c in tenant.get("clients", []):
                expires = parse_time(c["secret_expires"]) if c.get("secret_expires") else None
                self.clients[(tid, c["client_id"])] = Client(
                    tid, c["client_id"], c["secret"], list(c.get("roles", [])), expires
                )
        for m in fixture.get("machines", []):
            machine = {k: v for k, v in m.items() if k != "traffic"}
            self.machines.append(machine)
            self.traffic[machine["id"]] = [(t["domain"], int(t["every_seconds"])) for t in m.get("traffic", [])]
        self.network_events.extend(fixture.get("network_events", []))
        self.process_events.extend(fixture.get("process_events", []))
        load_identity(self.identity, fixture)
        for mi in fixture.get("managed_identities", []):
            self.vault.identities.add(mi["client_id"])
            if mi.get("key_vault_reader"):
                self.vault.readers.add(mi["client_id"])
            if mi.get("metrics_publisher"):
                self.logs.publishers.add(mi["client_id"])
                self.insights.publishers.add(mi["client_id"])

    def snapshot(self) -> dict[str, Any]:
        return {
            "now": format_time(self.clock.now()),
            "alerts": [dict(a) for a in self.alerts],
            "incidents": list(self.incidents.values()),
            "merged": dict(self.merged),
            "throttled": dict(self.throttled),
            "injected": dict(self.faults.injected),
            "graph_alerts": [dict(a) for a in self.graph_alerts],
            "machine_actions": [self._public(self._advance(a)) for a in self.response.actions],
            "indicators": list(self.response.indicators),
            "tickets": list(self.response.tickets),
            "mails": list(self.identity.mails),
            "groups": {g: list(v["members"]) for g, v in self.identity.groups.items()},
            "revoked_sessions": list(self.identity.revoked),
            "calls": list(self.calls),
        }
