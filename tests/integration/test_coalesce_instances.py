"""Storm groups shared by several instances, on real Azurite: a join is one insert of its own
member row (never a write of the group row), a stale copy never makes anyone lead a live group,
and the notes' chain cannot miss a member that joins while a note is deciding to stop."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from shared import wiring
from shared.delivery.coalesce import NOTE_LOST, NOTE_MARGIN, Groups
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


def test_a_join_is_one_insert_and_joining_twice_counts_once(env: Env) -> None:
    table = Counted(wiring.table("Groups"))
    a, b = Groups(table), Groups(wiring.table("Groups"))
    assert a.lead_or_join("g1", "evt_0", 1.0)[0] == "lead"
    table.calls.clear()
    assert a.lead_or_join("g1", "evt_1", 2.0)[0] == "join"
    a.join("g1", "evt_1", 2.0)  # (once the event is recorded coalesced)
    assert table.calls == ["create_entity"]  # its own copy says "led": no read, no group write
    assert b.lead_or_join("g1", "evt_2", 3.0)[0] == "join"  # another instance (it reads the group once)
    b.join("g1", "evt_2", 3.0)
    a.join("g1", "evt_1", 4.0)  # a redelivered follower
    assert sorted(a.read_all("g1").members) == ["evt_1", "evt_2"]
    stored = wiring.table("Groups").get_entity("g1", "group")
    assert (stored["leader"], stored["count"]) == ("evt_0", 1)  # followers never touch the group row


def test_a_failed_leader_is_replaced_and_its_members_are_counted_on_the_new_alert(env: Env) -> None:
    a, b = Groups(wiring.table("Groups")), Groups(wiring.table("Groups"))
    a.lead_or_join("g2", "evt_0", 1.0)
    a.join("g2", "evt_1", 1.5)
    b.update("g2", state="failed")  # A still remembers it as led and creating
    role, group = a.lead_or_join("g2", "evt_0", 2.0)  # the failed leader itself, replayed: leads again
    assert (role, group.leader, group.state) == ("relead", "evt_0", "creating")
    a.update("g2", state="failed")
    assert b.lead_or_join("g2", "evt_2", 2.5)[0] == "relead"  # "failed" is read from the table: replaced
    stale = Groups(wiring.table("Groups"))
    stale.lead_or_join("g2", "evt_3", 3.0)  # joins, and now remembers the group as led…
    stale.join("g2", "evt_3", 3.0)
    b.update("g2", state="failed")
    assert stale.lead_or_join("g2", "evt_4", 3.5)[0] == "join"  # …so a stale copy joins: a member row
    stale.join("g2", "evt_4", 3.5)
    role, group = b.lead_or_join("g2", "evt_5", 4.0)
    assert (role, group.leader, group.noted) == ("relead", "evt_5", 1)
    assert wiring.table("Groups").get_entity("g2", "group")["leader"] == "evt_5"
    assert sorted(a.read_all("g2").members) == ["evt_1", "evt_3", "evt_4"]  # all counted on evt_5's alert by its notes


def test_joins_from_two_instances_at_once_are_all_counted(env: Env) -> None:
    instances = [Groups(wiring.table("Groups")), Groups(wiring.table("Groups"))]
    instances[0].lead_or_join("g3", "leader", 1.0)

    def join(i: int) -> str:
        role = instances[i % 2].lead_or_join("g3", f"evt_{i % 50}", float(i))[0]  # 10 redelivered
        instances[i % 2].join("g3", f"evt_{i % 50}", float(i))
        return role

    with ThreadPoolExecutor(8) as pool:
        assert set(pool.map(join, range(60))) == {"join"}
    assert len(instances[1].read_all("g3").members) == 50


def test_a_joiner_relies_on_a_pending_note_only_while_it_is_ahead(env: Env) -> None:
    a = Groups(wiring.table("Groups"))
    a.lead_or_join("g4", "evt_0", 1.0)
    table = Counted(wiring.table("Groups"))
    b = Groups(table)
    b.lead_or_join("g4", "evt_1", 10.0)
    sent: list[tuple[str, float]] = []
    b.arrange_note("g4", 10.0, lambda g: 300.0, lambda token, wait: sent.append((token, wait)))
    stored = wiring.table("Groups").get_entity("g4", "group")
    assert [w for _, w in sent] == [300.0] and stored["note_id"] == sent[0][0]  # nothing pending: one sent
    table.calls.clear()
    b.arrange_note("g4", 20.0, lambda g: 300.0, lambda token, wait: sent.append((token, wait)))
    assert table.calls == [] and len(sent) == 1  # due at 310: ahead of it, relied on
    late = 310.0 - NOTE_MARGIN + 1  # the note may be running: no reliance on the copy
    b.arrange_note("g4", late, lambda g: 300.0, lambda token, wait: sent.append((token, wait)))
    assert table.calls == ["update_entity"] and wiring.table("Groups").get_entity("g4", "group")["touched"] == 1
    assert len(sent) == 1


def test_a_note_long_overdue_is_taken_as_lost_and_replaced(env: Env) -> None:
    """The group expects a note whose task never reached the queue (or went to poison): well past
    its due time, a joiner schedules a new one with a new token (the old, if it ever runs, is
    dropped as superseded)."""
    g = Groups(wiring.table("Groups"))
    g.lead_or_join("g6", "evt_0", 1.0)
    g.update("g6", alert_id="da1", state="open", note_scheduled=True, note_due=100.0, note_id="lost")
    sent: list[tuple[str, float]] = []
    g.arrange_note("g6", 100.0 + NOTE_LOST + 1, lambda _: 0.0, lambda token, wait: sent.append((token, wait)))
    assert len(sent) == 1 and wiring.table("Groups").get_entity("g6", "group")["note_id"] == sent[0][0] != "lost"


def test_a_note_about_to_stop_counts_again_when_someone_joined_meanwhile(env: Env) -> None:
    """The race the chain is built for: the note reads the group and finds nothing new; before it
    writes "no note pending", a follower joins and, seeing the note due now, touches the group.
    The note's stop is then refused (its ETag is old), so it reads again and sees the member."""
    note, follower = Groups(wiring.table("Groups")), Groups(wiring.table("Groups"))
    note.lead_or_join("g5", "evt_0", 1.0)
    note.update("g5", alert_id="da1", state="open", note_scheduled=True, note_due=100.0)
    group, members, _ = note.read_all("g5")
    assert group is not None and 1 + len(members) <= group.noted  # nothing new: about to stop
    follower.lead_or_join("g5", "evt_1", 100.0)
    follower.join("g5", "evt_1", 100.0)
    follower.arrange_note("g5", 100.0, lambda g: 0.0, lambda token, wait: None)  # due now: touched
    assert not note.stop_notes(group)  # refused
    group, members, _ = note.read_all("g5")
    assert group is not None and group.note_scheduled and members == ["evt_1"]
