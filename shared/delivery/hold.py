"""The on/off switch, and the events kept while the integration is switched off.

Where the switch lives: a row of its own table (``<prefix>Switch``), never only an app setting. A
provision replaces every app setting (Bicep's ``siteConfig.appSettings``, the azapi body), so an
``azd up`` or ``terraform apply`` would otherwise re-arm a connector the operator had switched
off. The infra therefore never writes ``INTEGRATION_ENABLED``; the row keeps the state, and the
setting counts only as the first default and, when the operator *changes* it by hand, as an
order (:func:`decide`). ``python -m shared switch off|on`` writes the row directly.

Switched off, the connector still verifies, accepts and keeps every event — it only makes no
Defender call. Each event waits here, ordered by when it was received; switched back on, the
``release_held_events`` timer puts them back on their queue oldest first (a fresh age, so the
time spent waiting never counts against ``MAX_EVENT_AGE_HOURS``). Releasing enqueues before it
deletes, so a crash in between can only cause a duplicate message, which the ledger absorbs:
each event still becomes exactly one alert.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from shared.clock import Clock, SystemClock
from shared.storage import Codec, EntityTable, table_key, write_if_match
from shared.tasks import QueuedEvent

PARTITION = "held"
SWITCH_KEY = ("switch", "integration")  # PartitionKey, RowKey of the one row of the Switch table
SWITCH_CACHE_SECONDS = 30.0  # how long an instance reuses the state it read: a switch takes effect within this


@dataclass(frozen=True)
class SwitchState:
    """``on``: whether events go to Defender. ``seen``: ``INTEGRATION_ENABLED`` as the app last saw
    it (None: absent, which is what every provision leaves)."""

    on: bool
    seen: bool | None


def decide(stored: SwitchState | None, setting: bool | None) -> SwitchState:
    """The switch's state from the stored one and the app setting as it is now.

    Nothing stored yet: the setting is the first default (absent: on). Afterwards the stored state
    wins, unless the setting has *changed* since it was last seen — an operator who edits the app
    setting by hand means it. A provision never writes the setting, so it changes nothing here.
    """
    if stored is None:
        return SwitchState(on=True if setting is None else setting, seen=setting)
    if setting is not None and setting != stored.seen:
        return SwitchState(on=setting, seen=setting)
    return SwitchState(on=stored.on, seen=setting)


_SWITCH = Codec(SwitchState, lambda _: SWITCH_KEY)  # ``seen`` None is not stored, and reads back as None


def _row(state: SwitchState) -> dict[str, Any]:
    return _SWITCH.entity(state)


class Switch:
    """Loads and stores the switch's row; :func:`decide` is the policy."""

    def __init__(self, table: EntityTable, setting: bool | None, clock: Clock | None = None) -> None:
        self._table = table
        self._setting = setting
        self._clock = clock or SystemClock()
        self._cached: tuple[datetime, bool] | None = None

    def _load(self) -> tuple[SwitchState | None, str | None]:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            row = self._table.get_entity(*SWITCH_KEY)
        except ResourceNotFoundError:
            return None, None
        return _SWITCH.record(row), row.metadata.get("etag")

    def _store(self, state: SwitchState, etag: str | None) -> None:
        """A first row is created, a known one replaced only if unchanged since it was read: two
        instances deciding at once cannot undo an operator's switch written in between."""
        write_if_match(self._table, _row(state), etag)  # None: another writer won, its state stands

    def current(self) -> bool:
        """The state as stored, read only: what ``status`` and the CLI show. Only the app itself
        observes its setting (:meth:`is_on`); a workstation's ``local.settings.json`` is not the app's."""
        stored, _ = self._load()
        return True if stored is None else stored.on

    def is_on(self) -> bool:
        """The app's view: its own setting observed (:func:`decide`), reused for a few seconds."""
        now = self._clock.now()
        if self._cached and now - self._cached[0] < timedelta(seconds=SWITCH_CACHE_SECONDS):
            return self._cached[1]
        stored, etag = self._load()
        state = decide(stored, self._setting)
        if state != stored:
            self._store(state, etag)
        self._cached = (now, state.on)
        return state.on

    def set(self, on: bool) -> None:
        """The operator's switch (``python -m shared switch``): the state, whatever the setting says."""
        from azure.data.tables import UpdateMode

        stored, _ = self._load()
        seen = stored.seen if stored else None
        self._table.upsert_entity(_row(SwitchState(on=on, seen=seen)), mode=UpdateMode.REPLACE)
        self._cached = None


@dataclass(frozen=True)
class HeldRow:
    """A kept event's row: ``row`` (its RowKey) is when it was first received, then its id."""

    row: str
    event_id: str = ""
    queue: str = ""
    message: str = ""


_HELD = Codec(HeldRow, lambda h: (PARTITION, h.row), in_key=("row",))
_IN_PARTITION = "PartitionKey eq @partition"


class Held:
    def __init__(self, table: EntityTable, switch: Switch | None = None) -> None:
        self._table = table
        self.switch = switch

    def is_on(self, observe: bool = True) -> bool:
        """Whether events go to Defender now (without a switch: always). ``observe=False``: read
        only, for a report (the health record, ``status``) that must not act on a setting."""
        if self.switch is None:
            return True
        return self.switch.is_on() if observe else self.switch.current()

    def keep(self, task: QueuedEvent, queue: str) -> None:
        from azure.data.tables import UpdateMode

        row = f"{task.first_received_at:%Y%m%dT%H%M%S.%f}-{table_key(task.event.id)}"
        held = HeldRow(row, task.event.id, queue, task.to_text())
        self._table.upsert_entity(_HELD.entity(held), mode=UpdateMode.REPLACE)

    def count(self) -> int:
        rows = self._table.query_entities(_IN_PARTITION, parameters={"partition": PARTITION}, select=["RowKey"])
        return sum(1 for _ in rows)

    def release(self, send: Any, now: datetime, limit: int = 500) -> int:
        """Re-enqueue up to ``limit`` kept events, oldest first; returns how many."""
        rows = self._table.query_entities(_IN_PARTITION, parameters={"partition": PARTITION}, results_per_page=limit)
        released = 0
        for e in rows:  # Table Storage returns a partition in RowKey order: oldest first
            held = _HELD.record(e, row=str(e["RowKey"]))
            task = QueuedEvent.model_validate_json(held.message)
            send(held.queue, task.model_copy(update={"first_received_at": now, "attempt": 0, "failures": 0}).to_text())
            self._table.delete_entity(PARTITION, held.row)
            released += 1
            if released >= limit:
                break
        return released
