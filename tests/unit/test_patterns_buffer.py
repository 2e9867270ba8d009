"""Pattern observations written behind: batched per partition, a window's own partitions written
before it is read, nothing dropped while the table is briefly unwritable."""

from __future__ import annotations

import pytest
from azure.core.exceptions import ServiceRequestError

from shared.delivery import patterns as module
from shared.delivery.patterns import Observation, PatternStore, partition
from tests.support import AzureLikeTable


def _seen(i: int, device: str = "alice-laptop", user: str = "alice@acme.fr") -> Observation:
    return Observation(f"evt_{i:04d}", 1_700_000_000.0 + i, device, user, "ChatGPT", "EMAIL")


def test_a_storm_is_a_few_transactions_not_a_write_per_event() -> None:
    table = AzureLikeTable()
    store = PatternStore(table, interval=3600)
    for i in range(150):
        store.record(_seen(i))
    assert table.rows == {} and store.waiting() == 300  # nothing written yet
    store.flush()
    assert len(table.rows) == 300 and table.transactions == 4  # 100 + 50 per partition, two partitions
    store.record(_seen(500))
    store.record(_seen(501))
    store.flush()  # two rows a partition: single upserts, cheaper than a small transaction
    assert len(table.rows) == 304 and table.transactions == 4
    store.record(_seen(3))  # a redelivered event rewrites its own row
    store.flush()
    assert len(table.rows) == 304


def test_a_read_writes_its_own_partitions_first_and_leaves_the_rest_to_batch() -> None:
    table = AzureLikeTable()
    store = PatternStore(table, interval=3600)
    store.record(_seen(1))
    store.record(_seen(2, device="bob-ws", user="bob@acme.fr"))
    mine = _seen(1)
    store.flush(frozenset(partition(k, s) for k, s in (("d", mine.device), ("u", mine.user))))
    assert {pk for pk, _ in table.rows} == {partition("d", "alice-laptop"), partition("u", "alice@acme.fr")}
    assert store.waiting() == 2


def test_an_unwritable_table_keeps_the_rows_for_the_next_flush(monkeypatch: pytest.MonkeyPatch) -> None:
    table = AzureLikeTable()
    store = PatternStore(table, interval=3600)
    for i in range(3):
        store.record(_seen(i))
    table.down = ServiceRequestError("storage unreachable")
    store.flush()  # logged, not raised: the store is an aid
    assert table.rows == {} and store.waiting() == 6
    table.down = None
    store.flush()
    assert len(table.rows) == 6 and store.waiting() == 0
    monkeypatch.setattr(module, "MAX_PENDING", 4)
    table.down = ServiceRequestError("storage unreachable")
    for i in range(10, 13):
        store.record(_seen(i))
    store.flush()
    assert store.waiting() == 4  # bounded: the oldest were dropped (and logged)
    table.down = None
    store.close()  # written now, not at the interpreter's exit
    assert store.waiting() == 0 and len(table.rows) == 10
