"""Advanced hunting, for the query shapes the connector sends (and only those).

The real service runs any KQL; the emulator implements the one anchor query of
``shared.anchor.hunting_query`` faithfully (time window, device, ``has_any`` domains, nearest
first), and the timeline's (``shared.timeline``: one device's ``DeviceNetworkEvents`` or
``DeviceProcessEvents`` in a window, projected, oldest first, bounded), and answers 400 to anything
else, so a change of the query shape is noticed in tests.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Protocol

from shared.platforms import on_domain
from tools.emulator.common import ApiError, parse_time


class NetworkEvents(Protocol):
    def device_network_events(self, device_id: str, start: datetime, end: datetime) -> list[dict[str, Any]]:
        """Rows of DeviceNetworkEvents for one device in a time range."""

    def device_process_events(self, device_id: str, start: datetime, end: datetime) -> list[dict[str, Any]]:
        """Rows of DeviceProcessEvents for one device in a time range."""


_DT = r"datetime\(([^)]+)\)"
_WINDOW = re.compile(rf"\|\s*where\s+Timestamp\s+between\s*\(\s*{_DT}\s*\.\.\s*{_DT}\s*\)")
_DEVICE = re.compile(r'\|\s*where\s+DeviceId\s*==\s*"([0-9a-f]{40})"')
_DOMAINS = re.compile(r"\|\s*where\s+RemoteUrl\s+has_any\s*\(([^)]*)\)")
_AROUND = re.compile(rf"datetime_diff\('second',\s*Timestamp,\s*{_DT}\)")
_TOP = re.compile(r"\|\s*top\s+(\d+)\s+by\s+Distance\s+asc")
# the timeline's shape (shared.timeline): one device, a window, named columns, oldest first, bounded
_PROJECT = re.compile(r"\|\s*project\s+([A-Za-z, ]+?)\s*\|")
_ORDERED = re.compile(r"\|\s*order\s+by\s+Timestamp\s+asc\s*\|\s*take\s+(\d+)\s*$")
# the columns of each table the emulator knows (a subset of the real schema); another is a 400
TABLES = {
    "DeviceNetworkEvents": frozenset({"Timestamp", "DeviceId", "DeviceName", "ReportId", "ActionType", "RemoteUrl",
                                      "RemoteIP", "RemotePort", "Protocol", "InitiatingProcessFileName"}),
    "DeviceProcessEvents": frozenset({"Timestamp", "DeviceId", "DeviceName", "ReportId", "ActionType", "FileName",
                                      "FolderPath", "ProcessCommandLine", "AccountName", "InitiatingProcessFileName"}),
}  # fmt: skip


def _timeline(state: NetworkEvents, q: str) -> dict[str, Any] | None:
    """The timeline query on either table, or None when the query is not of that shape."""
    table = q.split("|", 1)[0].strip()
    window, device, project, ordered = (p.search(q) for p in (_WINDOW, _DEVICE, _PROJECT, _ORDERED))
    if table not in TABLES or _DOMAINS.search(q) or not (window and device and project and ordered):
        return None
    try:
        start, end = parse_time(window.group(1)), parse_time(window.group(2))
    except ValueError:
        raise ApiError(400, "BadRequest", "Syntax error: invalid datetime literal.") from None
    read = state.device_network_events if table == "DeviceNetworkEvents" else state.device_process_events
    rows = sorted(read(device.group(1), start, end), key=lambda r: parse_time(r["Timestamp"]))[: int(ordered.group(1))]
    columns = [c.strip() for c in project.group(1).split(",") if c.strip()]
    unknown = [c for c in columns if c not in TABLES[table]]
    if unknown:
        raise ApiError(400, "BadRequest", f"Failed to resolve column '{unknown[0]}' in {table}.")
    schema = [{"Name": c, "Type": "DateTime" if c == "Timestamp" else "String"} for c in columns]
    return {
        "Stats": {"ExecutionTime": 0.01},
        "Schema": schema,
        "Results": [{c: r.get(c) for c in columns} for r in rows],
    }


def run(state: NetworkEvents, query: str) -> dict[str, Any]:
    if not isinstance(query, str) or not query.strip():
        raise ApiError(400, "MissingRequiredParameter", "Missing required parameter 'Query'.")
    q = query.strip()
    if (timeline := _timeline(state, q)) is not None:
        return timeline
    if not q.startswith("DeviceNetworkEvents"):
        raise ApiError(400, "BadRequest", "Query shape not supported by the emulator (expects DeviceNetworkEvents).")
    window, device, domains, around, top = (p.search(q) for p in (_WINDOW, _DEVICE, _DOMAINS, _AROUND, _TOP))
    if not (window and device and domains and around and top):
        raise ApiError(400, "BadRequest", "Query shape not supported by the emulator.")
    try:
        start, end, centre = parse_time(window.group(1)), parse_time(window.group(2)), parse_time(around.group(1))
    except ValueError:
        raise ApiError(400, "BadRequest", "Syntax error: invalid datetime literal.") from None
    names = tuple(d.strip().strip('"').lower() for d in domains.group(1).split(",") if d.strip())
    rows = [
        r for r in state.device_network_events(device.group(1), start, end) if on_domain(str(r["RemoteUrl"]), names)
    ]
    rows.sort(key=lambda r: abs((parse_time(r["Timestamp"]) - centre).total_seconds()))
    rows = rows[: int(top.group(1))]
    results = [{k: r[k] for k in ("Timestamp", "ReportId", "DeviceId", "RemoteUrl")} for r in rows]
    schema = [
        {"Name": "Timestamp", "Type": "DateTime"},
        {"Name": "ReportId", "Type": "Int64"},
        {"Name": "DeviceId", "Type": "String"},
        {"Name": "RemoteUrl", "Type": "String"},
    ]
    return {"Stats": {"ExecutionTime": 0.01}, "Schema": schema, "Results": results}
