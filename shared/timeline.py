"""One device's timeline around a moment (pure): the Noxys events, their anchor connections,
Defender's other alerts on the device, and its network and process events from advanced hunting,
merged in time order — the "Incident Correlation" view, for ``python -m shared timeline`` and for
the report's HTML.

What goes in is what the connector already keeps or Defender returns; what comes out names no
PII value and no prompt text: a Noxys event is its type, platform, policy and outcome; a process
is its file name and its parent's (never a command line, which can carry secrets); a connection is
its remote host and action.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.delivery.ledger import Entry

TAKE = 200  # rows per hunting table: a timeline is read by a person
NETWORK_COLUMNS = ("Timestamp", "RemoteUrl", "RemoteIP", "ActionType", "InitiatingProcessFileName")
PROCESS_COLUMNS = ("Timestamp", "FileName", "InitiatingProcessFileName", "ActionType")


@dataclass(frozen=True, order=True)
class Item:
    time: str  # ISO 8601 UTC, to the second: sorts as it reads
    source: str  # noxys | defender | hunting
    kind: str  # event | anchor | alert | network | process
    summary: str


def iso(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse(text: Any) -> datetime | None:
    try:
        found = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None
    return found if found.tzinfo else found.replace(tzinfo=UTC)


def _kql_time(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def hunting_query(table: str, machine_id: str, start: datetime, end: datetime) -> str:
    """The advanced hunting query for one device's rows of ``table`` in [start, end]; the machine
    id is a Defender id (40 hex characters), checked before it is put in the query."""
    if len(machine_id) != 40 or any(c not in "0123456789abcdef" for c in machine_id):
        raise ValueError(f"not a Defender machine id: {machine_id[:60]!r}")
    columns = NETWORK_COLUMNS if table == "DeviceNetworkEvents" else PROCESS_COLUMNS
    return (
        f"{table}\n"
        f"| where Timestamp between (datetime({_kql_time(start)}) .. datetime({_kql_time(end)}))\n"
        f'| where DeviceId == "{machine_id}"\n'
        f"| project {', '.join(columns)}\n"
        f"| order by Timestamp asc | take {TAKE}"
    )


def _in(t: datetime | None, start: datetime, end: datetime) -> bool:
    return t is not None and start <= t <= end


def _noxys(entries: Iterable[Entry], machine_id: str, start: datetime, end: datetime) -> tuple[list[Item], set[str]]:
    """The device's Noxys events and their anchor connections; the alerts they raised."""
    out: list[Item] = []
    ours: set[str] = set()
    for e in entries:
        if e.machine_id != machine_id:
            continue
        ours.add(e.alert_id or "")
        at = datetime.fromtimestamp(e.accepted_at or e.received_at, UTC)
        if _in(at, start, end):
            policy = f" (policy '{e.facts.policy_name}')" if e.facts.policy_name else ""
            outcome = e.state.value + (f", alert {e.alert_id}" if e.alert_id else "")
            out.append(
                Item(iso(at), "noxys", "event", f"{e.event_type} on {e.facts.platform or '?'}{policy}: {outcome}")
            )
        anchor = _parse(e.anchor_event_time) if e.anchor_event_time else None
        if anchor is not None and _in(anchor, start, end):
            said = f"connection the alert is anchored on (report {e.anchor_report_id}, event {e.event_id})"
            out.append(Item(iso(anchor), "defender", "anchor", said))
    return out, ours


def _rows(
    rows: Iterable[Mapping[str, Any]], key: str, start: datetime, end: datetime
) -> list[tuple[datetime, Mapping[str, Any]]]:
    found = [(_parse(r.get(key)), r) for r in rows]
    return [(t, r) for t, r in found if t is not None and _in(t, start, end)]


def _alert(a: Mapping[str, Any]) -> str:
    return f"{a.get('severity', '?')} alert {a.get('id')}: {a.get('title', '')} ({a.get('status', '')})"


def _network(r: Mapping[str, Any]) -> str:
    by = f" by {r['InitiatingProcessFileName']}" if r.get("InitiatingProcessFileName") else ""
    return f"{r.get('ActionType') or 'connection'} to {r.get('RemoteUrl') or r.get('RemoteIP')}{by}"


def _process(r: Mapping[str, Any]) -> str:
    parent = f" (from {r['InitiatingProcessFileName']})" if r.get("InitiatingProcessFileName") else ""
    return f"{r.get('ActionType') or 'process'} {r.get('FileName')}{parent}"


def merge(
    entries: Iterable[Entry],
    device_alerts: Iterable[Mapping[str, Any]],
    network: Iterable[Mapping[str, Any]],
    process: Iterable[Mapping[str, Any]],
    *,
    machine_id: str,
    start: datetime,
    end: datetime,
) -> list[Item]:
    """Everything of the four sources inside [start, end], oldest first (at one second, Noxys first)."""
    out, ours = _noxys(entries, machine_id, start, end)
    others = [(t, a) for t, a in _rows(device_alerts, "alertCreationTime", start, end) if str(a.get("id")) not in ours]
    out += [Item(iso(t), "defender", "alert", _alert(a)) for t, a in others]
    out += [Item(iso(t), "hunting", "network", _network(r)) for t, r in _rows(network, "Timestamp", start, end)]
    out += [Item(iso(t), "hunting", "process", _process(r)) for t, r in _rows(process, "Timestamp", start, end)]
    return sorted(out, key=lambda i: (i.time, ("noxys", "defender", "hunting").index(i.source), i.kind, i.summary))


def window(around: datetime, minutes: int) -> tuple[datetime, datetime]:
    return around - timedelta(minutes=minutes), around + timedelta(minutes=minutes)


def render_text(items: list[Item], title: str) -> str:
    width = max((len(i.kind) for i in items), default=5)
    lines = [title, *(f"{i.time}  {i.source:<8} {i.kind:<{width}}  {i.summary}" for i in items)]
    if not items:
        lines.append("(nothing on this device in the window)")
    return "\n".join(lines) + "\n"


def render_json(items: list[Item]) -> str:
    return json.dumps([asdict(i) for i in items], indent=2, ensure_ascii=False) + "\n"
