"""The pattern windows behind the combined risk score and the response rules' ``repeat``: recent
events per device and per user, in Table Storage, shared by every instance.

One row per observation (``o-<ms>-<event>``) in a partition per subject (``d|<device>``,
``u|<user>``): an insert never conflicts, so a storm on one laptop costs no ETag retries, and a
redelivered event inserts nothing (the row exists), so it is never counted twice. A window is one
range query on the partition (at most :data:`MAX_ROWS` rows read: counts above that read as that
many). A user's platforms are remembered longer, in one merged row per user, for "a platform this
user never used before". Rows are purged by retention (``PATTERNS_RETENTION_DAYS``).

The store is an aid, never a gate: when it cannot be read, the score is the event's alone and the
reason is logged — an alert is never held back for it.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from functools import partial
from typing import Any

from shared.risk import Patterns
from shared.storage import EntityTable, table_key

log = logging.getLogger(__name__)
WINDOW_SECONDS = 86400.0
MAX_ROWS = 1000
PLATFORMS_ROW = "platforms"


@dataclass(frozen=True)
class Observation:
    event_id: str
    at: float
    device: str  # the device as Noxys identified it ("" when none)
    user: str  # lower-cased e-mail or user id ("" when none)
    platform: str
    pii_types: str  # comma-separated type codes


def _row_key(o: Observation) -> str:
    return f"o-{int(o.at * 1000):015d}-{hashlib.sha256(o.event_id.encode()).hexdigest()[:16]}"


def partition(kind: str, subject: str) -> str:
    return table_key(f"{kind}|{subject}")


def _platform_property(platform: str) -> str:
    return "p_" + hashlib.sha256(platform.encode()).hexdigest()[:16]


class PatternStore:
    def __init__(self, table: EntityTable, pool: Executor | None = None) -> None:
        self._table = table
        self._pool = pool

    def _all(self, calls: list[Callable[[], Any]]) -> list[Any]:
        if self._pool is None:
            return [c() for c in calls]
        return [f.result() for f in [self._pool.submit(c) for c in calls]]

    def observe(self, o: Observation, *, record: bool = True) -> Patterns:
        """Record ``o`` (unless ``record`` is False: ``explain``) and read the windows around it."""
        try:
            return self._observe(o, record)
        except Exception as exc:  # the store is an aid, never a gate
            log.warning("patterns unavailable for event %s: %s", o.event_id, exc.__class__.__name__)
            return Patterns(available=False, why=f"pattern store unreachable ({exc.__class__.__name__})")

    def _observe(self, o: Observation, record: bool) -> Patterns:
        subjects = [(k, s) for k, s in (("d", o.device), ("u", o.user)) if s]
        if record:
            self._all([partial(self._insert, partition(k, s), o) for k, s in subjects])
        reads: list[Callable[[], Any]] = [partial(self._window, partition(k, s), o.at) for k, s in subjects]
        if o.user:
            reads.append(lambda: self._platforms(partition("u", o.user)))
        found = dict(zip([k for k, _ in subjects] + (["p"] if o.user else []), self._all(reads), strict=True))
        device_rows, user_rows = found.get("d", []), found.get("u", [])
        known: dict[str, Any] | None = found.get("p")
        new_platform = bool(known) and _platform_property(o.platform) not in (known or {}) and bool(o.platform)
        if record and o.user and o.platform and _platform_property(o.platform) not in (known or {}):
            self._remember_platform(partition("u", o.user), o)  # only a platform not known yet: one write less
        if not record:  # explain: the windows as they would be with this event in them
            mine = {"at": o.at, "platform": o.platform, "pii_types": o.pii_types}
            device_rows, user_rows = device_rows + [mine] * bool(o.device), user_rows + [mine] * bool(o.user)
        return Patterns(
            device_seen=tuple(float(r["at"]) for r in device_rows),
            user_seen=tuple(float(r["at"]) for r in user_rows),
            user_pii_types=frozenset(c for r in user_rows for c in str(r.get("pii_types") or "").split(",") if c),
            user_platforms=frozenset(str(r["platform"]) for r in user_rows if r.get("platform")),
            new_platform=new_platform,
        )

    def _insert(self, pk: str, o: Observation) -> None:
        from azure.core.exceptions import ResourceExistsError

        with contextlib.suppress(ResourceExistsError):  # a redelivered event: already counted
            self._table.create_entity(
                {
                    "PartitionKey": pk,
                    "RowKey": _row_key(o),
                    "event_id": o.event_id,
                    "at": o.at,
                    "platform": o.platform,
                    "pii_types": o.pii_types,
                }
            )

    def _window(self, pk: str, now: float) -> list[dict[str, Any]]:
        lo = f"o-{int((now - WINDOW_SECONDS) * 1000):015d}"
        hi = f"o-{int((now + 60) * 1000):015d}"
        query = f"PartitionKey eq '{pk}' and RowKey ge '{lo}' and RowKey lt '{hi}'"
        rows = self._table.query_entities(query, select=["at", "platform", "pii_types"], results_per_page=MAX_ROWS)
        out: list[dict[str, Any]] = []
        for page in rows.by_page():
            out.extend(dict(r) for r in page)
            break  # one page: counts above MAX_ROWS read as MAX_ROWS
        return out

    def _platforms(self, pk: str) -> dict[str, Any] | None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            return dict(self._table.get_entity(pk, PLATFORMS_ROW))
        except ResourceNotFoundError:
            return None

    def _remember_platform(self, pk: str, o: Observation) -> None:
        from azure.data.tables import UpdateMode

        entity = {"PartitionKey": pk, "RowKey": PLATFORMS_ROW, _platform_property(o.platform): o.at}
        self._table.upsert_entity(entity, mode=UpdateMode.MERGE)  # a merge: concurrent writers never conflict
