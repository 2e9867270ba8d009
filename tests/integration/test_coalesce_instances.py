"""Storm groups shared by several instances, on real Azurite: each instance's remembered copy of a
group saves the read on a join, and a stale copy never commits anything."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from shared import wiring
from shared.delivery.coalesce import Groups
from tests.support import Env

pytestmark = pytest.mark.integration


class Counted:
    """The real TableClient, counting the requests sent through it."""

    def __init__(self, table: Any) -> None:
        self._table = table
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._table, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(name)
            return method(*args, **kwargs)

        return call


def test_a_join_on_the_instance_that_wrote_the_group_last_is_one_write(env: Env) -> None:
    table = Counted(wiring.table("Groups"))
    a, b = Groups(table), Groups(wiring.table("Groups"))
    assert a.join_or_lead("g1", "evt_0", 1.0)[0] == "lead"
    table.calls.clear()
    assert a.try_join("g1", "evt_1", 2.0) is not None
    assert table.calls == ["update_entity"]  # no read: its own copy, checked by the write's ETag
    assert b.try_join("g1", "evt_2", 3.0) is not None  # another instance joins: A's copy is now stale
    table.calls.clear()
    joined = a.try_join("g1", "evt_3", 4.0)
    assert table.calls == ["update_entity", "get_entity", "update_entity"]  # refused, read again, written
    assert joined is not None and joined.count == 4
    stored = wiring.table("Groups").get_entity("group", "g1")
    assert stored["count"] == 4 and stored["leader"] == "evt_0"


def test_a_failed_leader_is_read_from_the_table_not_from_a_copy(env: Env) -> None:
    a, b = Groups(wiring.table("Groups")), Groups(wiring.table("Groups"))
    a.join_or_lead("g2", "evt_0", 1.0)
    b.update("g2", state="failed")  # A still remembers it as led and creating
    role, group = a.join_or_lead("g2", "evt_5", 2.0)
    assert (role, group.leader) == ("lead", "evt_5")
    assert wiring.table("Groups").get_entity("group", "g2")["leader"] == "evt_5"


def test_joins_from_two_instances_at_once_are_all_counted(env: Env) -> None:
    instances = [Groups(wiring.table("Groups")), Groups(wiring.table("Groups"))]
    instances[0].join_or_lead("g3", "leader", 1.0)

    def join(i: int) -> bool:
        return instances[i % 2].try_join("g3", f"evt_{i}", float(i)) is not None

    with ThreadPoolExecutor(8) as pool:
        assert all(pool.map(join, range(60)))
    assert wiring.table("Groups").get_entity("group", "g3")["count"] == 61
