"""The seam between the API clients and the shared pacing: which budget a call spends, the
Protocol a pacer implements, and the refusal it raises. The clients depend on this, not on the
delivery package; ``shared.delivery.pacing`` implements it."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol


class BudgetSpent(Exception):
    """This call must wait ``wait`` seconds; the caller comes back holding a ticket for ``slot``."""

    def __init__(self, api: str, wait: float, slot: datetime) -> None:
        super().__init__(f"{api} budget spent: next slot in {wait:.1f}s")
        self.api = api
        self.wait = wait
        self.slot = slot


class Budget(Protocol):
    def acquire(self, api: str, *, priority: bool = False, ticketed: bool = False) -> None:
        """Take a token, or raise BudgetSpent."""

    def block(self, api: str, seconds: float) -> None:
        """Defender said 429 with Retry-After: nobody calls ``api`` before ``seconds`` from now."""


def api_of(method: str, path: str) -> str:
    """Which budget a call spends (the path without host and query)."""
    p = path.split("?")[0].lower()
    if p.startswith("/api/alerts/createalertbyreference"):
        return "alerts.create"
    if p.startswith("/api/alerts") or (p.startswith("/api/machines/") and p.endswith("/alerts")):
        return "alerts"  # a device's alerts (the timeline) spend the alerts budget, as Defender counts them
    if p.startswith("/api/machineactions") or (
        method.upper() == "POST" and p.startswith("/api/machines/") and not p.endswith("/tags")
    ):
        return "actions"
    if p.startswith("/api/machines"):
        return "machines"
    if p.startswith("/api/indicators"):
        return "indicators"
    if p.startswith("/api/advancedqueries"):
        return "hunting"
    if p.startswith("/api/incidents"):
        return "incidents"
    if p.startswith(("/v1.0/", "/beta/")):
        return "graph"
    return "other"
