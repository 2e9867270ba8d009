"""The fake Table holds to what the stores rely on, checked through the stores themselves with the
queries they really send: a fake that let a stale write through or ignored a filter would make the
delivery's unit tests pass for the wrong reason."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import UpdateMode

from shared import retention
from shared.config import load_settings
from shared.delivery.coalesce import Groups
from shared.delivery.deadletter import DeadLetter, DeadLetters
from shared.delivery.ledger import LeaseHeld, Ledger, LedgerState
from shared.delivery.patterns import Observation, PatternStore
from tests.fakes import FakeTable, odata_filter


def test_a_write_with_a_stale_etag_is_refused_and_a_fresh_one_goes_through() -> None:
    table = FakeTable()
    if_match = MatchConditions.IfNotModified
    first = table.create_entity({"PartitionKey": "p", "RowKey": "r", "n": 1})["etag"]
    row = {"PartitionKey": "p", "RowKey": "r", "n": 2}
    second = table.update_entity(row, UpdateMode.REPLACE, etag=first, match_condition=if_match)["etag"]
    with pytest.raises(ResourceModifiedError):
        table.update_entity({**row, "n": 3}, UpdateMode.REPLACE, etag=first, match_condition=if_match)
    assert table.get_entity("p", "r")["n"] == 2 and table.get_entity("p", "r").metadata["etag"] == second
    with pytest.raises(ResourceExistsError):
        table.create_entity({"PartitionKey": "p", "RowKey": "r"})
    with pytest.raises(ResourceNotFoundError):
        table.update_entity({"PartitionKey": "p", "RowKey": "gone"})


def test_two_instances_joining_one_group_both_count_and_a_second_join_counts_nothing() -> None:
    table = FakeTable()
    one, two = Groups(table), Groups(table)
    assert one.lead_or_join("k", "evt_1", 0.0)[0] == "lead"
    for g, event_id in ((two, "evt_2"), (one, "evt_3"), (one, "evt_3")):  # the last: a redelivered follower
        assert g.lead_or_join("k", event_id, 1.0)[0] == "join"
        g.join("k", event_id, 1.0)  # once the event is recorded coalesced
    assert sorted(one.read_all("k").members) == ["evt_2", "evt_3"]


def test_a_second_claim_while_the_lease_is_held_is_refused() -> None:
    ledger = Ledger(FakeTable())
    ledger.claim("evt_1", "t", 100.0, 300)
    with pytest.raises(LeaseHeld):
        ledger.claim("evt_1", "t", 150.0, 300)
    assert ledger.claim("evt_1", "t", 401.0, 300).attempts == 2


def test_the_ledger_s_queries_filter_by_state_row_and_time() -> None:
    ledger = Ledger(FakeTable())
    for i, at in enumerate((100.0, 200.0, 300.0)):
        entry = ledger.claim(f"evt_{i}", "t", at, 300)
        if i:
            ledger.mark_no_alert(entry, LedgerState.NO_DEVICE, "none", None)
    assert ledger.counts() == {"received": 1, "no_device": 2}
    assert [e.event_id for e in ledger.between(150.0, 300.0)] == ["evt_1"]


def test_dead_letters_are_listed_from_their_partition() -> None:
    table = FakeTable()
    table.upsert_entity({"PartitionKey": "other", "RowKey": "x", "event_id": "no", "message": "{}"})
    letters = DeadLetters(table)
    letters.put(DeadLetter("evt_1", "why", "Forbidden", "", 1.0, "q", "{}"))
    assert [d.event_id for d in letters.all()] == ["evt_1"] and letters.count() == 1


def test_the_pattern_window_query_with_its_or_reads_the_window_and_the_platforms_row() -> None:
    store = PatternStore(FakeTable(), interval=3600)
    at = 1_700_000_000.0
    for i, when in enumerate((at - 90_000, at - 60, at)):  # the first is outside the 24 h window
        store.record(Observation(f"evt_{i}", when, "alice-laptop", "alice@acme.fr", "ChatGPT", "EMAIL"))
    found = store.read(Observation("evt_9", at + 1, "alice-laptop", "alice@acme.fr", "Claude", ""))
    assert found.available and len(found.device_seen) == 2 and len(found.user_seen) == 2
    assert found.user_platforms == {"ChatGPT"}


def test_and_binds_tighter_than_or_and_parameters_are_values() -> None:
    keep = odata_filter("a eq 1 or b eq 2 and c eq @c", {"c": "x'y"})
    assert keep({"a": 1}) and keep({"b": 2, "c": "x'y"}) and not keep({"b": 2, "c": "z"})
    assert odata_filter("name eq 'o''neil'")({"name": "o'neil"})


def test_retention_s_filters_select_the_rows_they_name() -> None:
    """Every retention rule is a filter the fake reads (``and``, ``or`` in parentheses, numbers,
    booleans); the ledger's keeps a final entry past its days and leaves a live one."""
    now = datetime(2026, 3, 20, tzinfo=UTC)
    found = {rule.table: odata_filter(rule.expired) for rule in retention.rules(load_settings({}), now)}
    old = (now - timedelta(days=400)).timestamp()
    assert found["Ledger"]({"RowKey": "event", "updated_at": old, "state": "alert_created"})
    assert not found["Ledger"]({"RowKey": "event", "updated_at": old, "state": "creating"})
    assert not found["Groups"]({"PartitionKey": "g1", "RowKey": "group", "last_event_at": old, "note_scheduled": True})
    assert found["Groups"]({"PartitionKey": "g1", "RowKey": "group", "last_event_at": old, "note_scheduled": False})
    assert found["Groups"]({"PartitionKey": "g1", "RowKey": "m-evt_1", "at": old})
    assert not found["Groups"]({"PartitionKey": "g1", "RowKey": "m-evt_1", "at": now.timestamp()})
    assert found["Groups"]({"PartitionKey": "group", "RowKey": "g0", "last_event_at": old, "note_scheduled": False})
