"""The one conditional write and the one read-modify-write loop every table is built on, and the
filters that carry user input as parameters (quoted by the SDK, never by hand)."""

from __future__ import annotations

import dataclasses
import enum
from typing import Any

import pytest
from azure.data.tables import TableEntity

from ops.subject import Subject, SubjectRequests
from shared.delivery.coalesce import Group
from shared.delivery.ledger import (
    CombinedRisk,
    DefenderView,
    Entry,
    KeptFacts,
    Lease,
    Ledger,
    LedgerState,
    _from_entity,
    _to_row,
)
from shared.facts import EventFacts
from shared.storage import Codec, Contended, update_if_match, write_if_match
from tests.fakes import FakeTable


def test_a_missing_row_is_created_and_a_known_one_replaced_only_if_unchanged() -> None:
    table = FakeTable()
    first = write_if_match(table, {"PartitionKey": "p", "RowKey": "r", "n": 1}, None)
    assert first is not None and write_if_match(table, {"PartitionKey": "p", "RowKey": "r", "n": 9}, None) is None
    second = write_if_match(table, {"PartitionKey": "p", "RowKey": "r", "n": 2}, first)
    assert second is not None and write_if_match(table, {"PartitionKey": "p", "RowKey": "r", "n": 3}, first) is None
    assert table.rows[("p", "r")]["n"] == 2


def test_a_lost_race_reads_again_and_decides_on_the_fresh_row() -> None:
    table = FakeTable()
    write_if_match(table, {"PartitionKey": "p", "RowKey": "r", "n": 1}, None)
    seen: list[int] = []

    def add_one(row: dict[str, Any] | None) -> dict[str, Any]:
        assert row is not None
        seen.append(int(row["n"]))
        if len(seen) == 1:  # another instance writes between our read and our write
            table.upsert_entity({"PartitionKey": "p", "RowKey": "r", "n": 10})
        return {"n": int(row["n"]) + 1}

    stored = update_if_match(table, "p", "r", add_one, tries=3)
    assert stored is not None and stored.entity == {"PartitionKey": "p", "RowKey": "r", "n": 11}
    assert seen == [1, 10] and table.rows[("p", "r")]["n"] == 11


def test_mutate_may_stop_and_endless_contention_raises() -> None:
    table = FakeTable()
    assert update_if_match(table, "p", "r", lambda row: None, tries=3) is None and table.rows == {}

    def always_beaten(row: dict[str, Any] | None) -> dict[str, Any]:
        table.upsert_entity({"PartitionKey": "p", "RowKey": "r", "n": 0})
        return {"n": 1}

    backoffs: list[int] = []
    with pytest.raises(Contended):
        update_if_match(table, "p", "r", always_beaten, tries=3, backoff=backoffs.append)
    assert backoffs == [1, 2]


def test_a_subject_with_a_quote_in_the_address_is_found_through_parameters() -> None:
    """``o'neil@…`` was once a hand-quoted literal; the filter now carries it as a parameter, and the
    fake substitutes parameters exactly as the SDK does (a ``@name`` touching a parenthesis fails)."""
    tables: dict[str, FakeTable] = {}

    def table(name: str) -> FakeTable:
        return tables.setdefault(name, FakeTable())

    row = {"PartitionKey": "evt_1", "RowKey": "event", "event_id": "evt_1", "email": "o'neil@example.com"}
    table("Ledger").create_entity(row)
    table("Ledger").create_entity({**row, "PartitionKey": "evt_2", "event_id": "evt_2", "email": "neil@example.com"})
    found = SubjectRequests(table).find(Subject.of("email", "O'Neil@example.com"))
    assert [r["event_id"] for r in found.rows["Ledger"]] == ["evt_1"]


def test_a_record_round_trips_and_an_older_row_reads_with_the_defaults() -> None:
    codec = Codec(Group, lambda g: (g.key, "group"), in_key=("key",), limits={"alert_id": 3})
    row = codec.entity(Group("k", "evt_1", 12.5, count=3, alert_id="da123", note_scheduled=True))
    assert row == {
        "PartitionKey": "k", "RowKey": "group", "leader": "evt_1", "window_start": 12.5, "count": 3, "noted": 1,
        "alert_id": "da1", "incident_id": "", "state": "creating", "via": "", "reason": "", "note_scheduled": True,
        "note_due": 0.0, "note_id": "", "noting": 0, "noting_at": 0.0, "touched": 0, "last_note_at": 0.0,
        "last_event_at": 0.0, "until": 0.0,
    }  # fmt: skip
    stored = TableEntity({**row, "count": "3"})
    stored._metadata = {"etag": "W/1"}  # type: ignore[typeddict-item]  # the one key read
    back = codec.record(stored, key="k")
    assert back.count == 3 and back.etag == "W/1" and back.note_scheduled is True
    old = {"PartitionKey": "evt_9", "RowKey": "event", "state": "", "attempts": 2}  # written before most facts
    entry = _from_entity(TableEntity(old), "evt_9")
    assert entry.state == LedgerState.RECEIVED and entry.attempts == 2 and entry.facts.email is None
    assert _to_row(Entry("evt_9", attempts=2)) == {
        "PartitionKey": "evt_9", "RowKey": "event", "event_id": "evt_9", "state": "received", "event_type": "",
        "received_at": 0.0, "updated_at": 0.0, "attempts": 2, "errors": 0, "lease_owner": "", "lease_until": 0.0,
    }  # fmt: skip


class Tint(enum.StrEnum):
    RED = "red"
    BLUE = "blue"


@dataclasses.dataclass(frozen=True)
class Paint:
    tint: Tint = Tint.RED
    coats: int = 1
    label: str | None = None


@dataclasses.dataclass(frozen=True)
class Finish:
    paint: Paint = Paint()  # a part in a part: flattened too
    glossy: bool = False


@dataclasses.dataclass
class Wall:
    key: str
    finish: Finish = Finish()
    note: str = ""
    etag: str | None = None


@dataclasses.dataclass
class Clash:
    key: str
    coats: int = 0
    paint: Paint = Paint()


@dataclasses.dataclass
class MaybePart:
    key: str
    paint: Paint | None = None


def test_a_part_is_flattened_into_the_row_by_its_own_names_and_read_back() -> None:
    codec = Codec(Wall, lambda w: (w.key, "wall"), in_key=("key",), limits={"label": 4})
    wall = Wall("k", Finish(Paint(Tint.BLUE, 3, "x" * 9), glossy=True), note="n")
    row = codec.entity(wall)
    assert row == {
        "PartitionKey": "k", "RowKey": "wall", "tint": "blue", "coats": 3, "label": "xxxx", "glossy": True, "note": "n",
    }  # fmt: skip
    stored = TableEntity(row)
    stored._metadata = {"etag": "W/2"}  # type: ignore[typeddict-item]
    back = codec.record(stored, key="k")
    assert back == Wall("k", Finish(Paint(Tint.BLUE, 3, "xxxx"), glossy=True), note="n", etag="W/2")
    assert codec.entity(back) == row  # read and written again: the same properties
    unlabelled = codec.entity(Wall("k"))
    assert "label" not in unlabelled and unlabelled["tint"] == "red"  # None is not stored, in a part too


def test_an_older_row_without_a_part_reads_with_its_defaults() -> None:
    codec = Codec(Wall, lambda w: (w.key, "wall"), in_key=("key",))
    old = codec.record(TableEntity({"PartitionKey": "k", "RowKey": "wall", "note": "n", "tint": ""}), key="k")
    assert old == Wall("k", Finish(Paint(Tint.RED, 1, None), glossy=False), note="n")
    assert codec.entity(old) == {
        "PartitionKey": "k", "RowKey": "wall", "tint": "red", "coats": 1, "glossy": False, "note": "n",
    }  # fmt: skip


def test_a_property_name_used_twice_or_an_optional_part_is_refused() -> None:
    with pytest.raises(TypeError, match="used twice"):
        Codec(Clash, lambda c: (c.key, "c"))
    with pytest.raises(TypeError, match="not optional"):
        Codec(MaybePart, lambda m: (m.key, "m"))


def test_the_entry_parts_keep_every_property_name_and_its_place_in_the_row() -> None:
    """The names and order of the row before the fields were grouped into parts."""
    before = [
        "event_id", "state", "event_type", "received_at", "updated_at", "attempts", "errors", "lease_owner",
        "lease_until", "machine_id", "resolved_by", "anchor_report_id", "anchor_event_time", "group_role",
        "group_key", "intent_at", "unanswered", "alert_id", "incident_id", "coalesced_into", "via", "reason",
        "error_code", "correlation_id", "last_problem", "user", "user_id", "email", "platform", "device_name",
        "device_keys", "pii_types", "policy_action", "policy_id", "policy_name", "accepted_at", "device_risk",
        "device_exposure", "device_tags", "combined_risk", "risk_factors", "alert_at",
    ]  # fmt: skip
    texts = {n: f"{n}!" for n in ("machine_id", "resolved_by", "anchor_report_id", "anchor_event_time", "group_key")}
    outcome = {n: f"{n}!" for n in ("unanswered", "alert_id", "incident_id", "coalesced_into", "via", "reason")}
    everything = Entry(
        "evt_1", LedgerState.ALERT_CREATED, "t", 1.0, 2.0, 3, 4, Lease("o", 5.0), **texts, group_role="leader",
        intent_at=6.0, **outcome, error_code="e", correlation_id="c", last_problem="p",
        facts=KeptFacts(*(f"f{i}" for i in range(10))), accepted_at=7.0,
        defender=DefenderView("High", "Medium", "a\nb"), risk=CombinedRisk(0.5, "[]"), alert_at=8.0, etag="W/1",
    )  # fmt: skip
    row = _to_row(everything)
    assert list(row) == ["PartitionKey", "RowKey", *before]
    assert _from_entity(TableEntity(row), "evt_1") == dataclasses.replace(everything, etag=None)
    assert [f.name for f in dataclasses.fields(KeptFacts)] == [f.name for f in dataclasses.fields(EventFacts)]


def test_a_rewritten_old_row_gains_no_fact_it_did_not_have() -> None:
    """``ops.subject`` matches the ``user`` of a row without ``email``: a rewrite must not add one."""
    old = {"PartitionKey": "evt_2", "RowKey": "event", "event_id": "evt_2", "state": "received", "user": "a@b.fr"}
    entry = _from_entity(TableEntity(old), "evt_2")
    assert entry.facts == KeptFacts(user="a@b.fr") and entry.defender == DefenderView()
    row = _to_row(entry)
    assert row["user"] == "a@b.fr" and not {"email", "user_id", "device_risk", "combined_risk"} & set(row)


def test_a_known_copy_saves_the_read_and_a_stale_one_is_read_again() -> None:
    table = FakeTable()
    stored = update_if_match(table, "p", "r", lambda row: {"n": 1}, tries=2)
    assert stored is not None
    before = table.requests
    again = update_if_match(table, "p", "r", lambda row: {"n": int((row or {})["n"]) + 1}, tries=2, known=stored)
    assert again is not None and again.entity["n"] == 2 and table.requests == before + 1  # the write alone
    stale = update_if_match(table, "p", "r", lambda row: {"n": int((row or {})["n"]) + 1}, tries=2, known=stored)
    assert stale is not None and stale.entity["n"] == 3  # refused on the old ETag, then read: 2 + 1


def test_an_event_queued_again_reads_its_entry_instead_of_a_failing_create() -> None:
    table = FakeTable()
    ledger = Ledger(table)
    ledger.release(ledger.claim("evt_1", "interaction.policy_violated", 0.0, 30.0))
    before = table.requests
    ledger.release(
        ledger.claim("evt_1", "interaction.policy_violated", 60.0, 30.0)
    )  # a redelivery: create, read, write
    first = table.requests - before
    before = table.requests
    ledger.claim("evt_1", "interaction.policy_violated", 120.0, 30.0, again=True)  # read, write
    assert (first, table.requests - before) == (4, 2)  # (+ the release's write in the first)
