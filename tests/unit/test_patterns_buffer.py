"""Pattern observations written behind and packed: one row per partition and flush (one request),
a window read as a range whatever row holds its oldest observation, each event counted once,
packs split under Azure's size limits, nothing dropped while the table is briefly unwritable; and
what reads the table besides the windows (retention, the data-subject search and erasure)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from azure.core.exceptions import ServiceRequestError

from ops.subject import Subject, SubjectRequests, export_view
from shared import retention
from shared.config import load_settings
from shared.delivery import patterns as module
from shared.delivery.patterns import BUCKET_SECONDS, WINDOW_SECONDS, Observation, PatternStore, partition
from tests.fakes import FakeTable
from tests.support import AzureLikeTable

T = 1_700_000_100.0  # a bucket's start (a multiple of BUCKET_SECONDS, 300 s)


def _seen(i: int, device: str = "alice-laptop", user: str = "alice@acme.fr", at: float | None = None) -> Observation:
    return Observation(f"evt_{i:04d}", T + i if at is None else at, device, user, "ChatGPT", "EMAIL")


def _held(table: FakeTable) -> list[str]:
    """Every event id the table's rows hold, read from the stored JSON (not the product's reader)."""
    ids: list[str] = []
    for row in table.rows.values():
        if "obs" in row:
            ids += [e[0] for e in json.loads(row["obs"])]
        elif "event_id" in row:
            ids.append(row["event_id"])
    return ids


def test_many_observations_of_a_partition_in_one_flush_are_one_request() -> None:
    table = AzureLikeTable()
    store = PatternStore(table, interval=3600)
    for i in range(150):  # all within one minute's bucket
        store.record(_seen(i % 50))
        store.record(_seen(1000 + i, device=f"pc-{i % 3}", user="bob@acme.fr", at=T + i / 10))
    assert table.rows == {} and store.waiting() == 600  # nothing written yet; one per partition counted in
    store.flush()
    assert table.requests == 6 and table.transactions == 0  # alice's two partitions, bob's, three PCs: upserts
    assert len(table.rows) == 6 and sorted(_held(table)).count("evt_0007") == 6  # 3 records x 2 partitions
    store.record(_seen(500))
    store.flush()  # a second flush: a fresh row per partition, nothing rewritten
    assert table.requests == 8 and len(table.rows) == 8


def test_a_redelivered_event_is_counted_once() -> None:
    table = AzureLikeTable()
    store = PatternStore(table, interval=3600)
    for i in range(3):
        store.record(_seen(i))
    store.flush()
    store.record(_seen(1))  # redelivered: another flush, another row…
    store.flush()
    store.record(_seen(2))  # and another, not written yet
    found = store.read(_seen(9))
    assert _held(table).count("evt_0001") == 4  # …so the table holds it twice per partition
    assert found.available and len(found.device_seen) == 3 and len(found.user_seen) == 3
    told = PatternStore(table).read(_seen(1), recorded=False)  # `explain` of an event already counted
    assert len(told.device_seen) == 3 and len(told.user_seen) == 3


def test_an_observation_just_inside_the_window_in_an_older_buckets_row_is_counted() -> None:
    table = AzureLikeTable()
    store = PatternStore(table, interval=3600)
    assert T % BUCKET_SECONDS == 0
    now = T + WINDOW_SECONDS + 30  # the window starts 30 s into the bucket that starts at T
    store.record(_seen(1, at=T + 29))  # 24 h and a second ago: out
    store.record(_seen(2, at=T + 31))  # 24 h less a second ago: in
    store.flush()
    assert len(table.rows) == 2  # one row a partition holds both (its key is the bucket's start, T)
    found = store.read(_seen(3, at=now), recorded=False)
    assert found.device_seen == (T + 31, now) and found.user_seen == (T + 31, now)


def test_a_pack_over_the_size_limit_is_split_and_written_in_one_transaction() -> None:
    table = AzureLikeTable()  # refuses a string property over 64 KiB, as Azure does
    store = PatternStore(table, interval=3600)
    for i in range(400):  # ~230 characters each: ~92,000 a partition, all in one bucket
        store.record(
            Observation(f"evt_{i:04d}_" + "x" * 190, T + i / 10, "alice-laptop", "alice@acme.fr", "ChatGPT", "EMAIL")
        )
    store.flush()
    assert store.waiting() == 0 and table.requests == 2 and table.transactions == 2  # one a partition
    assert len(table.rows) >= 8 and max(len(r["obs"].encode("utf-16-le")) for r in table.rows.values()) <= 65536
    found = store.read(_seen(9999, at=T + 41), recorded=False)
    assert len(found.device_seen) == 401 and len(found.user_seen) == 401


def test_counts_stop_at_max_rows_and_the_platforms_row_is_still_read(monkeypatch: pytest.MonkeyPatch) -> None:
    table = AzureLikeTable()
    store = PatternStore(table, interval=3600)
    store.read(_seen(1))  # remembers ChatGPT for alice
    monkeypatch.setattr(module, "MAX_ROWS", 5)
    for i in range(2, 9):
        store.record(_seen(i))
        store.flush()  # a row each
    found = store.read(Observation("evt_new", T + 20, "alice-laptop", "alice@acme.fr", "Claude", ""))
    assert len(found.device_seen) == 5 and len(found.user_seen) == 5
    assert found.new_platform  # the platforms row sorts after the window's rows, beyond the cap: read too


def test_rows_written_before_packing_are_still_read_and_counted_once() -> None:
    table = AzureLikeTable()
    for pk in (partition("d", "alice-laptop"), partition("u", "alice@acme.fr")):  # one row an observation
        for i, types in ((1, "EMAIL"), (5, "IBAN")):
            old = {"event_id": f"evt_{i:04d}", "at": T + i, "platform": "Gemini", "pii_types": types}
            table.upsert_entity(
                {"PartitionKey": pk, "RowKey": f"o-{int((T + i) * 1000):015d}-0123456789abcde{i}", **old}
            )
    store = PatternStore(table, interval=3600)
    store.record(_seen(1))  # evt_0001 redelivered after the upgrade: packed now
    store.record(_seen(2))
    found = store.read(_seen(2))
    assert sorted(found.device_seen) == [T + 1, T + 2, T + 5] and sorted(found.user_seen) == [T + 1, T + 2, T + 5]
    assert found.user_pii_types == {"IBAN", "EMAIL"} and found.user_platforms == {"Gemini", "ChatGPT"}


def test_an_unwritable_table_keeps_the_observations_for_the_next_flush(monkeypatch: pytest.MonkeyPatch) -> None:
    table = AzureLikeTable()
    store = PatternStore(table, interval=3600)
    for i in range(3):
        store.record(_seen(i))
    table.down = ServiceRequestError("storage unreachable")
    store.flush()  # logged, not raised: the store is an aid
    assert table.rows == {} and store.waiting() == 6
    table.down = None
    store.flush()
    assert (
        len(table.rows) == 2
        and store.waiting() == 0
        and sorted(_held(table)) == sorted(2 * ["evt_0000", "evt_0001", "evt_0002"])
    )
    monkeypatch.setattr(module, "MAX_PENDING", 4)
    table.down = ServiceRequestError("storage unreachable")
    for i in range(10, 13):
        store.record(_seen(i))
    store.flush()
    assert store.waiting() == 4  # bounded: the oldest were dropped (and logged)
    table.down = None
    store.close()  # written now, not at the interpreter's exit
    assert store.waiting() == 0 and len(_held(table)) == 10


def test_a_read_counts_this_process_s_unwritten_observations_and_writes_none() -> None:
    table = AzureLikeTable()
    store = PatternStore(table, interval=3600)
    store.record(_seen(1))
    store.record(_seen(2, device="bob-ws", user="bob@acme.fr"))
    mine = _seen(3)
    store.record(mine)
    found = store.read(mine)
    assert len(found.device_seen) == 2 and len(found.user_seen) == 2  # evt_0001 and itself, from memory
    assert {pk for pk, _ in table.rows} == {partition("u", "alice@acme.fr")}  # only the platforms row
    assert store.waiting() == 6  # left for the next flush, packed with the rest
    store.flush()
    assert len(store.read(mine).device_seen) == 2  # from the table now, each once


def test_a_read_during_a_flush_counts_the_observations_being_written(monkeypatch: pytest.MonkeyPatch) -> None:
    table = AzureLikeTable()
    store = PatternStore(table, interval=3600)
    during: list[int] = []
    upsert = table.upsert_entity

    def slow_upsert(entity: dict[str, Any], **kwargs: Any) -> Any:  # another thread reads meanwhile
        if str(entity["RowKey"]).startswith("o-") and not during:
            during.append(len(store.read(_seen(9), recorded=False).device_seen))
        return upsert(entity, **kwargs)

    monkeypatch.setattr(table, "upsert_entity", slow_upsert)
    store.record(_seen(1))
    store.record(_seen(2))
    store.flush()
    assert during == [3]  # evt_0001, evt_0002 (neither pending nor in the table yet) and itself


def test_retention_purges_a_pack_once_its_newest_observation_has_expired() -> None:
    table = AzureLikeTable()
    store = PatternStore(table, interval=3600)
    store.record(_seen(1, at=T + 1))
    store.record(_seen(2, at=T + 59))  # the same bucket: one row a partition, newest at T + 59
    store.record(_seen(3, at=T + 600))  # another bucket
    store.flush()
    now = datetime.fromtimestamp(T + 30 + 2 * 86400, UTC)  # two days after T + 30: the default retention
    rule = next(r for r in retention.rules(load_settings({}), now) if r.table == "Patterns" and "o-" in r.expired)
    assert retention.purge(table, rule, limit=100) == 0  # T + 59 is still within its two days
    later = datetime.fromtimestamp(T + 60 + 2 * 86400, UTC)
    rule = next(r for r in retention.rules(load_settings({}), later) if r.table == "Patterns" and "o-" in r.expired)
    assert retention.purge(table, rule, limit=100) == 2  # that bucket's row in both partitions
    assert sorted(_held(table)) == ["evt_0003", "evt_0003"]


def test_a_subject_export_finds_the_persons_observations_and_erasure_leaves_the_others() -> None:
    tables = {name: FakeTable() for name in ("Ledger", "Held", "DeadLetters", "HuntingOutbox", "Groups", "Patterns",
                                              "Responses", "Audit")}  # fmt: skip
    for event_id, email in (("evt_0001", "alice@acme.fr"), ("evt_0002", "bob@acme.fr")):
        tables["Ledger"].upsert_entity({"PartitionKey": event_id, "RowKey": "event", "event_id": event_id,
                                        "email": email, "user_id": "u"})  # fmt: skip
    store = PatternStore(tables["Patterns"], interval=3600)
    store.record(_seen(1, device="shared-pc"))  # alice's, on a PC bob uses too: one pack for both
    store.record(_seen(2, device="shared-pc", user="bob@acme.fr"))
    store.record(_seen(3, device="kiosk"))  # no e-mail; a user id equal to alice's address: not hers
    store.read(_seen(1, device="shared-pc"), recorded=True)  # and alice's platforms row
    store.flush()
    requests = SubjectRequests(lambda name: tables[name])
    found = requests.find(Subject.of("email", "alice@acme.fr"))
    mine = found.rows["Patterns"]
    assert sorted((r["PartitionKey"], r.get("event_id", "")) for r in mine) == [
        (partition("d", "shared-pc"), "evt_0001"), (partition("u", "alice@acme.fr"), ""),
        (partition("u", "alice@acme.fr"), "evt_0001"),
    ]  # fmt: skip
    shown = [r for r in export_view(found)["Patterns"] if "event_id" in r]
    assert (
        shown
        == [{"event_id": "evt_0001", "at": "2023-11-14T22:15:01Z", "platform": "ChatGPT", "pii_types": "EMAIL"}] * 2
    )

    assert found.counts()["Patterns"] == 3 and requests.erase(found) == 3 + 1  # and her ledger row
    assert sorted(_held(tables["Patterns"])) == ["evt_0002", "evt_0002", "evt_0003", "evt_0003"]
    kept = {pk for pk, _ in tables["Patterns"].rows}  # the shared PC's and alice's packs rewritten, not deleted
    assert kept == {
        partition(k, s) for k, s in (("d", "shared-pc"), ("u", "alice@acme.fr"), ("u", "bob@acme.fr"), ("d", "kiosk"))
    }
    assert requests.find(Subject.of("email", "alice@acme.fr")).rows["Patterns"] == []
    assert store.read(_seen(9, device="shared-pc", user="bob@acme.fr"), recorded=False).device_seen == (T + 2, T + 9)
