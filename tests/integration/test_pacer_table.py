"""The Table-backed budget holds across instances: many pacers, one limit."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime

import pytest

from shared.clock import ManualClock
from shared.delivery.pacing import BudgetSpent, Pacer, Quota
from tools.azurite import Azurite

pytestmark = pytest.mark.integration


def test_eight_instances_never_exceed_the_shared_limit(azurite: Azurite) -> None:
    from azure.data.tables import TableClient

    name = f"P{uuid.uuid4().hex[:10]}"
    TableClient.from_connection_string(azurite.connection_string, name).create_table()
    clock = ManualClock(datetime(2026, 3, 20, 12, 0, tzinfo=UTC))
    quota = {"alerts.create": Quota(((60, 15),), queue=True)}
    # eight "instances": separate clients and pacers, sharing only the table
    pacers = [
        Pacer(TableClient.from_connection_string(azurite.connection_string, name), quota, clock) for _ in range(8)
    ]
    granted: list[int] = []
    refused: list[float] = []
    lock = threading.Lock()

    def worker(p: Pacer, n: int) -> None:
        for _ in range(n):
            try:
                p.acquire("alerts.create")
                with lock:
                    granted.append(1)
            except BudgetSpent as spent:
                with lock:
                    refused.append(spent.wait)

    threads = [threading.Thread(target=worker, args=(p, 5)) for p in pacers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(granted) == 15 and len(refused) == 25
    assert all(w > 0 for w in refused)
    clock.advance(62)
    with pytest.raises(BudgetSpent):  # a newcomer queues behind the 25 that hold slots
        pacers[0].acquire("alerts.create")
    pacers[1].acquire("alerts.create", ticketed=True)  # a slot holder gets its token


def test_block_after_429_holds_every_instance(azurite: Azurite) -> None:
    from azure.data.tables import TableClient

    name = f"P{uuid.uuid4().hex[:10]}"
    TableClient.from_connection_string(azurite.connection_string, name).create_table()
    clock = ManualClock(datetime(2026, 3, 20, 12, 0, tzinfo=UTC))
    quota = {"hunting": Quota(((60, 45),))}
    a, b = (Pacer(TableClient.from_connection_string(azurite.connection_string, name), quota, clock) for _ in range(2))
    a.block("hunting", 30)
    with pytest.raises(BudgetSpent) as spent:
        b.acquire("hunting", priority=True)
    assert spent.value.wait == 30
    clock.advance(30)
    b.acquire("hunting")
