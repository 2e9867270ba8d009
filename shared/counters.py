"""Counters for status: what arrived, what was refused or ignored, what each delivery became.

One Table row per (hour, counter, shard); an increment picks a random shard so that parallel
workers rarely contend on one ETag. Reading sums the rows of the hours asked for. Best effort
by design: a counter that fails to write is logged, never allowed to fail a delivery.
"""

from __future__ import annotations

import logging
import random
from datetime import datetime, timedelta

from shared.storage import EntityTable

log = logging.getLogger(__name__)
SHARDS = 8
MARKS = "marks"


def _hour(t: datetime) -> str:
    return t.strftime("%Y%m%d%H")


class Counters:
    def __init__(self, table: EntityTable) -> None:
        self._table = table

    def add(self, name: str, now: datetime, n: int = 1) -> None:
        from azure.core import MatchConditions
        from azure.core.exceptions import AzureError, ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
        from azure.data.tables import UpdateMode

        if n <= 0:
            return
        pk, rk = _hour(now), f"{name}|{random.randrange(SHARDS)}"  # noqa: S311 - spreading load, not crypto
        try:
            for _ in range(10):
                try:
                    e = self._table.get_entity(pk, rk)
                except ResourceNotFoundError:
                    try:
                        self._table.create_entity({"PartitionKey": pk, "RowKey": rk, "name": name, "count": n})
                        return
                    except ResourceExistsError:
                        continue
                e["count"] = int(e["count"]) + n
                try:
                    self._table.update_entity(
                        e,
                        mode=UpdateMode.REPLACE,
                        etag=e.metadata["etag"],
                        match_condition=MatchConditions.IfNotModified,
                    )
                    return
                except ResourceModifiedError:
                    continue
        except AzureError as exc:
            log.warning("counter %s not updated: %s", name, exc.__class__.__name__)

    def totals(self, now: datetime, hours: int = 24) -> dict[str, int]:
        since = _hour(now - timedelta(hours=hours - 1))
        out: dict[str, int] = {}
        for e in self._table.query_entities(f"PartitionKey ge '{since}' and PartitionKey lt '{MARKS}'"):
            out[e["name"]] = out.get(e["name"], 0) + int(e["count"])
        return out

    def mark(self, name: str, value: str) -> None:
        from azure.core.exceptions import AzureError
        from azure.data.tables import UpdateMode

        try:
            self._table.upsert_entity({"PartitionKey": MARKS, "RowKey": name, "value": value}, mode=UpdateMode.REPLACE)
        except AzureError as exc:
            log.warning("mark %s not updated: %s", name, exc.__class__.__name__)

    def marks(self) -> dict[str, str]:
        return {e["RowKey"]: e["value"] for e in self._table.query_entities(f"PartitionKey eq '{MARKS}'")}
