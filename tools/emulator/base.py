"""The state every emulated service shares (clock, lock, apps, machines, calls, faults) and the
per-call machinery (fault injection, quotas, the call record). The services are mixins over it:
:mod:`tools.emulator.entra`, :mod:`tools.emulator.mde`, :mod:`tools.emulator.graph`."""

from __future__ import annotations

import math
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from shared.clock import Clock
from tools.emulator.common import ApiError, Faults, format_time
from tools.emulator.insights import InsightsState
from tools.emulator.logs import LogsState
from tools.emulator.vault import VaultState

# quota name -> [(window seconds, max calls)]
QUOTAS: dict[str, list[tuple[int, int]]] = {
    "alerts.create": [(60, 15)],
    "alerts": [(60, 100), (3600, 1500)],
    "machines": [(60, 100), (3600, 1500)],
    "hunting": [(60, 45), (3600, 1500)],
    "incidents": [(60, 50)],
    "actions": [(60, 100), (3600, 1500)],
    "indicators": [(60, 100)],
}


@dataclass
class Client:
    tenant_id: str
    client_id: str
    secret: str
    roles: list[str]
    secret_expires: datetime | None = None


@dataclass
class Limiter:
    calls: dict[tuple[str, str], deque[datetime]] = field(default_factory=dict)

    def take(self, key: tuple[str, str], now: datetime, rules: list[tuple[int, int]]) -> None:
        """Count one call or raise 429 with the seconds until the oldest call leaves the window."""
        q = self.calls.setdefault(key, deque())
        longest = max(w for w, _ in rules)
        while q and (now - q[0]).total_seconds() >= longest:
            q.popleft()
        wait = 0.0
        for window, limit in rules:
            inside = [t for t in q if (now - t).total_seconds() < window]
            if len(inside) >= limit:
                wait = max(wait, window - (now - inside[-limit]).total_seconds())
        if wait > 0:
            raise ApiError(429, "TooManyRequests", "Rate limit is exceeded.", retry_after=max(1, math.ceil(wait)))
        q.append(now)


class Base:
    """Attributes set by ``DefenderState.__init__``; the per-call helpers every service uses."""

    clock: Clock
    token_lifetime: float
    revoked_before: float
    lock: threading.RLock
    signing_key: bytes
    clients: dict[tuple[str, str], Client]
    tenants: set[str]
    machines: list[dict[str, Any]]
    traffic: dict[str, list[tuple[str, int]]]
    network_events: list[dict[str, Any]]
    process_events: list[dict[str, Any]]  # DeviceProcessEvents rows (fixture or test-seeded)
    alerts: list[dict[str, Any]]
    incidents: dict[str, dict[str, Any]]
    calls: list[dict[str, Any]]
    limiter: Limiter
    throttled: dict[str, int]
    merged: dict[str, int]
    vault: VaultState
    logs: LogsState
    insights: InsightsState
    faults: Faults
    _rng: random.Random
    next_alert: int
    graph_alerts: list[dict[str, Any]]
    on_change: Callable[[], None] | None
    incident_delay: float  # seconds before a new alert is correlated into an incident (0: at once)
    pending_incidents: dict[str, datetime]

    def slow_down(self, path: str) -> None:
        """Latency after the work is done: a client timing out does not undo what happened."""
        f = self.faults
        if f.latency and f.latency_path in path:
            f.count("latency")
            time.sleep(f.latency)  # the emulator is slow, as a real service can be

    def inject(self, path: str = "") -> None:
        """Apply the switched-on failures to one API call (before quota and handler: nothing is done)."""
        f = self.faults
        if f.burst_429 > 0 and f.fail_path in path:
            f.burst_429 -= 1
            f.count("429")
            raise ApiError(429, "TooManyRequests", "Rate limit is exceeded.", retry_after=f.burst_retry_after)
        if (f.fail_next > 0 and f.fail_path in path) or (f.error_rate and self._rng.random() < f.error_rate):
            f.fail_next = max(0, f.fail_next - 1)
            f.count("503")
            raise ApiError(503, "ServiceUnavailable", "The service is temporarily unavailable.")

    def take_quota(self, claims: dict[str, Any], name: str) -> None:
        key = (f"{claims.get('tid')}/{claims.get('appid')}", name)
        try:
            self.limiter.take(key, self.clock.now(), QUOTAS[name])
        except ApiError:
            self.throttled[name] = self.throttled.get(name, 0) + 1
            raise

    def record(self, method: str, path: str, status: int) -> None:
        self.calls.append({"time": format_time(self.clock.now()), "method": method, "path": path, "status": status})

    def calls_of(self, path: str) -> list[dict[str, Any]]:
        return [c for c in self.calls if c["path"] == path]
