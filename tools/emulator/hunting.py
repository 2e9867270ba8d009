"""Advanced hunting, for the query shapes the connector sends (and only those).

The real service runs any KQL; the emulator implements the one anchor query of
``shared.anchor.hunting_query`` faithfully (time window, device, ``has_any`` domains, nearest
first) and answers 400 to anything else, so a change of the query shape is noticed in tests.
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


_DT = r"datetime\(([^)]+)\)"
_WINDOW = re.compile(rf"\|\s*where\s+Timestamp\s+between\s*\(\s*{_DT}\s*\.\.\s*{_DT}\s*\)")
_DEVICE = re.compile(r'\|\s*where\s+DeviceId\s*==\s*"([0-9a-f]{40})"')
_DOMAINS = re.compile(r"\|\s*where\s+RemoteUrl\s+has_any\s*\(([^)]*)\)")
_AROUND = re.compile(rf"datetime_diff\('second',\s*Timestamp,\s*{_DT}\)")
_TOP = re.compile(r"\|\s*top\s+(\d+)\s+by\s+Distance\s+asc")


def run(state: NetworkEvents, query: str) -> dict[str, Any]:
    if not isinstance(query, str) or not query.strip():
        raise ApiError(400, "MissingRequiredParameter", "Missing required parameter 'Query'.")
    q = query.strip()
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
