"""What the response executor remembers, in Table Storage, shared by every instance.

* **Action rows** (partition = the event): one per (rule, action) of the event, inserted *before*
  anything is sent. A redelivered task, or one a killed worker left half done, finds the row and
  never sends twice; a row still ``intended`` means the last attempt may have sent the action
  without recording it, so the executor asks Defender before sending again.
* **Guards** (partition ``guard``): the per-device cooldown (who holds it, until when), and per
  hourly cap (each action type, and the distinct devices acted on) who took a place in the last
  hour — changed only with ETags, so two instances never both pass. A cap that refuses an action
  writes a ``circuit-…`` row that the health check reports ("response circuit open").
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from shared.storage import Codec, Contended, EntityTable, read_row, table_key, update_if_match

GUARD = "guard"
SLOT_ATTEMPTS = 20  # conditional writes of one cap row before refusing the action
FINAL_STATES = ("Succeeded", "Failed", "TimeOut", "Cancelled", "done", "dry_run", "skipped", "error")


@dataclass
class ActionRow:
    event_id: str
    key: str
    rule: str
    action: str
    state: str = "intended"
    machine_id: str = ""
    action_id: str = ""
    detail: str = ""
    at: float = 0.0
    dry_run: bool = False
    alert_id: str = ""  # the alert the action was taken for (the false-positive release reads it)
    undo: str = ""  # what undoing needs besides the action: "tag:NoxysRisk", "indicator:42"
    release_at: float = 0.0  # release_after_hours: when the hourly sweep releases it (0: never)
    released: str = ""  # how and when it was released (empty: still in force)

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES

    @property
    def in_force(self) -> bool:
        """Sent or done live, and not released: what undo and the releases act on."""
        return not self.dry_run and not self.released and self.state in ("sent", "Succeeded", "done")


# ``event_id`` is stored too (a query by alert or machine finds the event back); ``key`` is the RowKey
_ACTION = Codec(
    ActionRow,
    lambda r: (table_key(r.event_id), r.key),
    in_key=("key",),
    limits={"rule": 200, "detail": 1000, "released": 500},
)


def _row(e: Any, event_id: str) -> ActionRow:
    row = _ACTION.record(e, key=str(e["RowKey"]), event_id=event_id)
    if not row.state:  # an empty state reads as the default, as it always did
        row.state = "intended"
    return row


@dataclass(frozen=True)
class _Cooldown:
    """A device's cooldown row (``device-<machine>``): who holds it, until when."""

    key: str
    until: float = 0.0
    owner: str = ""


@dataclass(frozen=True)
class _Cap:
    """An hourly cap's row (``cap-<cap>``): the last hour's (time, holder) pairs, as JSON."""

    key: str
    recent: str = ""


@dataclass(frozen=True)
class _Circuit:
    """A cap that refused an action (``circuit-<cap>``)."""

    key: str
    reason: str = ""
    tripped_at: float = 0.0


@dataclass(frozen=True)
class _Comment:
    """The last verdict commented on an alert for a rule (``comment-<alert>-<rule>``)."""

    key: str
    said: str = ""
    skipped: int = 0


_COOLDOWN = Codec(_Cooldown, lambda g: (GUARD, g.key), in_key=("key",))
_CAP = Codec(_Cap, lambda g: (GUARD, g.key), in_key=("key",))
_CIRCUIT = Codec(_Circuit, lambda g: (GUARD, g.key), in_key=("key",), limits={"reason": 500})
_COMMENT = Codec(_Comment, lambda g: (GUARD, g.key), in_key=("key",), limits={"said": 1000})


class ResponseStore:
    def __init__(self, table: EntityTable) -> None:
        self._table = table

    # ------------------------------------------------------------------ action rows
    def claim(self, row: ActionRow) -> tuple[ActionRow, bool]:
        """Insert the row; (the row as stored, True) when this call created it."""
        from azure.core.exceptions import ResourceExistsError

        try:
            self._table.create_entity(self._entity(row))
        except ResourceExistsError:
            return self.get(row.event_id, row.key) or row, False
        return row, True

    def get(self, event_id: str, key: str) -> ActionRow | None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            return _row(self._table.get_entity(table_key(event_id), key), event_id)
        except ResourceNotFoundError:
            return None

    def save(self, row: ActionRow) -> None:
        from azure.data.tables import UpdateMode

        self._table.upsert_entity(self._entity(row), mode=UpdateMode.REPLACE)

    @staticmethod
    def _entity(row: ActionRow) -> dict[str, Any]:
        return _ACTION.entity(row)

    def find(self, query: str, parameters: dict[str, Any]) -> list[ActionRow]:
        """Action rows matching an OData filter (values passed as parameters, never quoted by hand;
        the SDK substitutes a ``@name`` only as a whole word, so no parenthesis may touch one)."""
        rows = self._table.query_entities(
            f"PartitionKey ne @guard_partition and {query}",
            parameters={**parameters, "guard_partition": GUARD},
            results_per_page=1000,
        )
        return [_row(e, str(e.get("event_id") or "")) for e in rows]

    def between(self, since: float, until: float) -> list[dict[str, Any]]:
        """The action rows (comments and guards left out) recorded in [since, until), for reports."""
        query = "at ge @since and at lt @until and PartitionKey ne @guard and action ne @comment"
        values = {
            "since": float(round(since, 3)),
            "until": float(round(until, 3)),
            "guard": GUARD,
            "comment": "comment",
        }
        return [dict(e) for e in self._table.query_entities(query, parameters=values, results_per_page=1000)]

    def recent(self, since: float) -> dict[str, Any]:
        """Actions since ``since``: counts by action and state, dry runs, and the failures' reasons."""
        rows = self._table.query_entities(
            "at ge @since and PartitionKey ne @guard",
            parameters={"since": float(round(since, 3)), "guard": GUARD},
            results_per_page=1000,
        )
        counts: Counter[str] = Counter()
        failures: list[str] = []
        in_force: list[str] = []  # what `response undo --action` takes, as the operator sees it
        dry = 0
        for e in rows:
            counts[f"{e.get('action')} {e.get('state')}"] += 1
            dry += 1 if e.get("dry_run") else 0
            if e.get("state") in ("Failed", "TimeOut", "Cancelled", "error"):
                failures.append(
                    f"{e.get('action')} ({e.get('rule')}): {e.get('state')} {e.get('detail') or ''}".strip()
                )
            row = _row(e, str(e.get("event_id") or ""))
            if row.in_force and row.action_id:
                in_force.append(f"{row.action} on machine {row.machine_id}: action {row.action_id}")
        return {
            "by_action_and_state": dict(sorted(counts.items())),
            "dry_runs": dry,
            "failures": failures[-10:],
            "in_force": in_force[-10:],
        }

    # ------------------------------------------------------------------ guards
    def _guard(self, key: str) -> dict[str, Any]:
        values, _ = read_row(self._table, GUARD, key)
        return values or {}

    def take_cooldown(self, machine_id: str, event_id: str, now: float, seconds: float) -> tuple[float, str]:
        """Hold the device's cooldown for ``event_id`` unless someone else holds it; (until, holder)."""
        key = f"device-{machine_id}"
        held: list[tuple[float, str]] = []

        def hold(values: dict[str, Any] | None) -> dict[str, Any] | None:
            current = _COOLDOWN.record(values or {}, key=key)
            until, owner = current.until, current.owner
            held[:] = [(until, owner)]
            if (until > now and owner != event_id) or owner == event_id or seconds <= 0:
                return None
            return _COOLDOWN.entity(_Cooldown(key, now + seconds, event_id))

        try:
            if update_if_match(self._table, GUARD, key, hold, tries=5) is not None:
                return now + seconds, event_id
        except Contended:
            return self.cooldown(machine_id)
        return held[0]

    def cooldown(self, machine_id: str) -> tuple[float, str]:
        key = f"device-{machine_id}"
        current = _COOLDOWN.record(self._guard(key), key=key)
        return current.until, current.owner

    def take_slot(self, cap: str, holder: str, now: float, limit: int) -> bool:
        """A place for ``holder`` among the last hour's ``cap`` (an action type, or ``devices``);
        True when it has one (a holder that already has one keeps it: a retry is not counted twice)."""
        key = f"cap-{cap}"
        holder = hashlib.sha256(holder.encode()).hexdigest()[:16]  # bounded: the row holds up to 300
        has: list[bool] = []

        def place(values: dict[str, Any] | None) -> dict[str, Any] | None:
            recent = _last_hour(_CAP.record(values or {}, key=key), now)
            has[:] = [holder in (h for _, h in recent)]
            if has[0] or len(recent) >= limit:
                return None
            return _CAP.entity(_Cap(key, json.dumps([*recent, (now, holder)])))

        try:
            if update_if_match(self._table, GUARD, key, place, tries=SLOT_ATTEMPTS, backoff=_jitter) is not None:
                return True
        except Contended:
            return False  # still contended: refuse rather than overshoot the cap
        return has[0]

    def trip(self, cap: str, reason: str, now: float) -> None:
        """Remember that ``cap`` refused an action (the health check reports it for an hour)."""
        from azure.data.tables import UpdateMode

        self._table.upsert_entity(_CIRCUIT.entity(_Circuit(f"circuit-{cap}", reason, now)), mode=UpdateMode.REPLACE)

    def comment_state(self, alert_id: str, rule: int) -> tuple[str, int]:
        """The last verdict commented on the alert for rule ``rule``, and the cooldown skips since."""
        key = f"comment-{table_key(alert_id)}-{rule:02d}"
        current = _COMMENT.record(self._guard(key), key=key)
        return current.said, current.skipped

    def set_comment_state(self, alert_id: str, rule: int, said: str, skipped: int) -> None:
        from azure.data.tables import UpdateMode

        key = f"comment-{table_key(alert_id)}-{rule:02d}"
        self._table.upsert_entity(_COMMENT.entity(_Comment(key, said, skipped)), mode=UpdateMode.REPLACE)

    def open_circuits(self, now: float) -> list[str]:
        """The caps that refused an action in the last hour, as sentences."""
        rows = self._table.query_entities(
            "PartitionKey eq @guard and RowKey ge @lo and RowKey lt @hi",
            parameters={"guard": GUARD, "lo": "circuit-", "hi": "circuit."},
            results_per_page=100,
        )
        circuits = [_CIRCUIT.record(e, key=str(e["RowKey"])) for e in rows]
        return [c.reason for c in circuits if now - c.tripped_at < 3600]


def _jitter(attempt: int) -> None:
    """Instances racing for one cap row stop colliding in lockstep (from the third try on)."""
    if attempt >= 3:
        time.sleep(random.uniform(0, min(0.04, 0.002 * (attempt - 1))))  # noqa: S311 - jitter, not security


def _last_hour(cap: _Cap, now: float) -> list[tuple[float, str]]:
    """A cap's (time, holder) pairs of the last hour."""
    return [(float(t), str(e)) for t, e in json.loads(cap.recent or "[]") if now - float(t) < 3600]
