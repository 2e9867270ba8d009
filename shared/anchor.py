"""The anchor event: the device's own connection to the AI platform, found by advanced hunting.

CreateAlertByReference needs ``machineId`` + ``reportId`` + ``eventTime`` of an event Defender
already has. For an AI interaction the natural one is the ``DeviceNetworkEvents`` row where that
device reached the platform's domain closest to the interaction time: Defender then correlates
our alert with everything else it knows about the device and the user.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from shared.devices import MACHINE_ID
from shared.platforms import on_domain


@dataclass(frozen=True)
class Anchor:
    machine_id: str
    report_id: str
    event_time: str  # passed back exactly as hunting returned it
    remote_url: str


def _kql_time(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def hunting_query(
    machine_id: str,
    domains: tuple[str, ...],
    around: datetime,
    window: timedelta,
    *,
    span: tuple[datetime, datetime] | None = None,
) -> str:
    """KQL for the connections nearest ``around``, within ``window`` of it or over ``span`` (a storm
    group's whole window); inputs are validated so nothing user-made is injected."""
    if not MACHINE_ID.match(machine_id):
        raise ValueError("machine id must be 40 lower-case hex characters")
    if not domains or any(not d.replace("-", "").replace(".", "").isalnum() for d in domains):
        raise ValueError("domains must be plain host names")
    names = ", ".join(f'"{d}"' for d in domains)
    lo, hi = span or (around - window, around + window)
    return (
        "DeviceNetworkEvents\n"
        f"| where Timestamp between (datetime({_kql_time(lo)}) .. datetime({_kql_time(hi)}))\n"
        f'| where DeviceId == "{machine_id}"\n'
        f"| where RemoteUrl has_any ({names})\n"
        f"| extend Distance = abs(datetime_diff('second', Timestamp, datetime({_kql_time(around)})))\n"
        "| top 5 by Distance asc\n"
        "| project Timestamp, ReportId, DeviceId, RemoteUrl"
    )


def pick(rows: list[dict[str, Any]], machine_id: str, domains: tuple[str, ...], around: datetime) -> Anchor | None:
    """The row nearest ``around`` that really is this device on one of the domains."""
    best: tuple[float, Anchor] | None = None
    for row in rows:
        remote, stamp = str(row.get("RemoteUrl") or ""), row.get("Timestamp")
        if row.get("DeviceId") != machine_id or not stamp or row.get("ReportId") is None:
            continue
        if not on_domain(remote, domains):
            continue
        try:
            when = datetime.fromisoformat(str(stamp).replace("Z", "+00:00"))
        except ValueError:
            continue
        distance = abs((when - around).total_seconds())
        anchor = Anchor(machine_id, str(row["ReportId"]), str(stamp), remote)
        if best is None or distance < best[0]:
            best = (distance, anchor)
    return best[1] if best else None
