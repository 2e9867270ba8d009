"""The hunting outbox's grouping into entity group transactions, and its answer to a row that is
already gone (Azure fails the whole transaction then; Azurite does not, so this is a unit test)."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from shared import storage as module
from shared.delivery import hunting_outbox
from shared.delivery.hunting_outbox import HuntingOutbox, partition_of
from shared.events import parse_events
from shared.storage import transactions
from shared.tasks import QueuedEvent
from tests.support import SAMPLE_DAY, AzureLikeTable, violation


def _rows(n: int) -> list[tuple[QueuedEvent, str]]:
    out = []
    for i in range(n):
        (event,) = parse_events(json.dumps(violation(i)).encode())
        task = QueuedEvent.new(event, SAMPLE_DAY + timedelta(minutes=i // 150))
        out.append((task, task.to_text()))
    return out


def test_rows_go_in_transactions_of_one_partition_and_at_most_100() -> None:
    table = AzureLikeTable()
    HuntingOutbox(table).put(_rows(320))  # 150 in the first minute, 150 in the second, 20 in the third
    assert len(table.rows) == 320 and table.transactions == 5  # 100+50, 100+50, 20
    assert {k[0] for k in table.rows} == {partition_of(SAMPLE_DAY + timedelta(minutes=m)) for m in range(3)}


def test_a_missing_row_does_not_stop_the_others_and_is_not_counted() -> None:
    table = AzureLikeTable()
    outbox = HuntingOutbox(table)
    outbox.put(_rows(120))
    waiting = list(outbox.read())
    table.delete_entity(waiting[5].partition, waiting[5].row)
    assert outbox.remove(waiting) == 119 and table.rows == {}


def test_large_rows_are_cut_by_size_as_well(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(module, "MAX_TRANSACTION_CHARS", 5000)
    entities = [{"PartitionKey": "p", "RowKey": str(i), "task": "x" * 1000} for i in range(12)]
    groups = transactions(entities)
    assert [len(g) for g in groups] == [4, 4, 4] and [e for g in groups for e in g] == entities


def test_a_long_event_is_kept_in_chunks_and_read_back_whole() -> None:
    table = AzureLikeTable()
    (task, _), *_ = _rows(1)
    text = task.to_text()
    padded = text[:-1] + ', "pad": "' + "y" * 40_000 + '"}'  # extra keys are ignored when read back
    HuntingOutbox(table).put([(task, padded)])
    (stored,) = table.rows.values()
    assert {"task", "task1"} <= set(stored) and all(len(stored[k]) <= hunting_outbox.CHUNK for k in ("task", "task1"))
    (back,) = HuntingOutbox(table).read()
    assert back.task.event.id == task.event.id
