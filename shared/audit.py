"""The audit trail: every outbound Defender/Graph call, one Table row each.

Kept: time, service, method, path, status, latency, Noxys event id, correlation id, attempt and
error code. Never kept: tokens, secrets, request or response bodies (the alert text carries the
user's identity; the body of a hunting query or PATCH is not needed to answer "what did the
connector do, when, and what did Defender say"). Rows are partitioned by UTC day, so an export
reads only the days asked for and retention deletes whole days.
"""

from __future__ import annotations

import csv
import io
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from shared.defender.errors import CallRecord
from shared.storage import Codec

FIELDS = (
    "time",
    "service",
    "method",
    "path",
    "status",
    "latency_ms",
    "event_id",
    "correlation_id",
    "attempt",
    "error_code",
)


def _day(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%d")


@dataclass(frozen=True)
class AuditRow:
    """The stored row of one call (its property names are the table's, and :data:`FIELDS`);
    ``day`` and ``row`` are its keys only."""

    day: str
    row: str
    time: str
    service: str
    method: str
    path: str
    status: int
    latency_ms: float  # an int when the call was not timed (0): stored as given
    event_id: str
    correlation_id: str
    attempt: int
    error_code: str


_CODEC = Codec(AuditRow, lambda r: (r.day, r.row), in_key=("day", "row"), limits={"path": 1000})


def audit_row(call: CallRecord) -> AuditRow:
    when = datetime.fromtimestamp(call.time, UTC)
    return AuditRow(
        day=_day(when),
        row=f"{when.strftime('%H%M%S.%f')}-{uuid.uuid4().hex[:8]}",
        time=when.isoformat().replace("+00:00", "Z"),
        service=call.service,
        method=call.method,
        path=call.path,
        status=call.status,
        latency_ms=call.latency_ms,
        event_id=call.event_id or "",
        correlation_id=call.correlation_id or "",
        attempt=call.attempt,
        error_code=call.error_code or "",
    )


class AuditTrail:
    def __init__(self, table: Any) -> None:
        self._table = table

    def record(self, call: CallRecord) -> None:
        self._table.create_entity(_CODEC.entity(audit_row(call)))

    def record_erasure(self, when: datetime, rows: int) -> None:
        """That a data-subject erasure happened and how many rows it removed — never whose."""
        self.record(
            CallRecord(
                time=when.timestamp(),
                service="connector",
                method="ERASE",
                path=f"data-subject erasure: {rows} row(s) deleted",
                status=200,
                latency_ms=0,
                correlation_id=None,
                error_code=None,
                event_id=None,
                attempt=0,
            )
        )

    def rows(self, since: datetime, until: datetime) -> Iterator[dict[str, Any]]:
        """Calls with since <= time < until, oldest first."""
        day: date = since.astimezone(UTC).date()
        last = until.astimezone(UTC).date()
        lo, hi = since.astimezone(UTC).isoformat(), until.astimezone(UTC).isoformat()
        while day <= last:
            found = self._table.query_entities("PartitionKey eq @day", parameters={"day": day.isoformat()})
            rows = sorted(found, key=lambda e: e["RowKey"])
            for e in rows:
                stamp = str(e["time"]).replace("Z", "+00:00")
                if lo <= stamp < hi:
                    yield {k: e.get(k) for k in FIELDS}
            day += timedelta(days=1)

    def purge(self, now: datetime, retention_days: int) -> int:
        """Delete every row older than the retention (by day partition); returns how many."""
        cutoff = _day(now - timedelta(days=retention_days))
        removed = 0
        found = self._table.query_entities(
            "PartitionKey lt @cutoff", parameters={"cutoff": cutoff}, select=["PartitionKey", "RowKey"]
        )
        for e in found:
            self._table.delete_entity(e["PartitionKey"], e["RowKey"])
            removed += 1
        return removed


FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _inert(value: Any) -> Any:
    """A CSV cell a spreadsheet will not run: text starting with ``= + - @``, a tab or a carriage
    return is a formula to Excel and LibreOffice (``=HYPERLINK(…)`` from an event id), so it gets a
    leading apostrophe, which they show as text (OWASP's CSV injection advice)."""
    return f"'{value}" if isinstance(value, str) and value.startswith(FORMULA_START) else value


def export(rows: Iterator[dict[str, Any]], fmt: str) -> Iterator[str]:
    """Render rows as JSON lines or CSV (header first), one string per line; CSV cells are made
    inert for spreadsheets, JSON keeps every value as it is."""
    if fmt == "jsonl":
        for row in rows:
            yield json.dumps(row, ensure_ascii=False)
        return
    buf = io.StringIO()
    # "\r\n" as the terminator makes the writer quote a cell holding either character (with
    # "\n" alone, a carriage return in a cell went out bare and split the row for a reader)
    writer = csv.DictWriter(buf, fieldnames=FIELDS, lineterminator="\r\n")
    writer.writeheader()
    yield buf.getvalue().removesuffix("\r\n")
    for row in rows:
        buf.seek(0)
        buf.truncate()
        writer.writerow({k: _inert(v) for k, v in row.items()})
        yield buf.getvalue().removesuffix("\r\n")
