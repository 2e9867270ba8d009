"""Reading alerts back from Defender as they are now (status, classification, determination): one
listing for the period, then one paced GET per alert the listing missed, waiting out the shared
budget or Defender's 429. Used by the compliance report and review (ops) and by the weekly review
the health timer runs (deployed), so it lives with the deployed code."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from shared.defender.errors import DefenderError

MAX_WAIT = 60.0  # seconds a read-back waits for the budget before trying the same alert again


def read_back(
    client: Any,
    ids: list[str],
    since: datetime,
    *,
    sleep: Callable[[float], None] = time.sleep,
    progress: Callable[[], None] = lambda: None,
) -> dict[str, dict[str, Any]]:
    """Each alert as Defender has it now: one listing for the period, then one paced GET per
    alert the listing did not return (older, or more than it pages)."""
    wanted, found = set(ids), {}
    start = (since - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    try:
        for alert in _patient(lambda: client.list_alerts(f"alertCreationTime ge {start}", top=10000), sleep):
            if str(alert.get("id")) in wanted:
                found[str(alert["id"])] = alert
                progress()
    except DefenderError:
        pass  # fall back to one GET per alert
    for alert_id in sorted(wanted - set(found)):
        try:
            found[alert_id] = _patient(lambda a=alert_id: client.get_alert(a), sleep)  # type: ignore[misc]
        except DefenderError as exc:
            found[alert_id] = {"error": "not found in Defender" if exc.status == 404 else f"{exc.status} {exc.code}"}
        progress()
    return found


def _patient(call: Callable[[], Any], sleep: Callable[[float], None], tries: int = 6) -> Any:
    """``call``, waiting out our budget or Defender's 429 (Retry-After) a few times."""
    for attempt in range(tries):
        try:
            return call()
        except DefenderError as exc:
            if exc.status != 429 or attempt == tries - 1:
                raise
            sleep(min(MAX_WAIT, max(1.0, exc.retry_after or 1.0)))
    raise AssertionError("unreachable")
