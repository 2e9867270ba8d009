"""The one conditional write and the one read-modify-write loop every table is built on, and the
filters that carry user input as parameters (quoted by the SDK, never by hand)."""

from __future__ import annotations

from typing import Any

import pytest
from azure.data.tables import TableEntity

from ops.subject import Subject, SubjectRequests
from shared.delivery.coalesce import Group
from shared.delivery.ledger import Entry, Ledger, LedgerState, _from_entity, _to_row
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
    assert entry.state == LedgerState.RECEIVED and entry.attempts == 2 and entry.email is None
    assert _to_row(Entry("evt_9", attempts=2)) == {
        "PartitionKey": "evt_9", "RowKey": "event", "event_id": "evt_9", "state": "received", "event_type": "",
        "received_at": 0.0, "updated_at": 0.0, "attempts": 2, "errors": 0, "lease_owner": "", "lease_until": 0.0,
    }  # fmt: skip


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
