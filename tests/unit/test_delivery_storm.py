"""A storm's followers, against fakes (tests/fakes.py): what a follower costs, every point where
it can die, a leader that finds no anchor, and the notes' count — which must equal the events
coalesced into the alert exactly, whatever was killed or delivered twice."""

from __future__ import annotations

import heapq
import json
import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from shared.outcome import Kind, Outcome
from tests.fakes import Crash, Fault, World
from tests.support import SAMPLE_DAY
from tests.unit.test_delivery_crashes import crash_after
from tests.unit.test_delivery_outcomes import MACHINE, QUEUE, event_id, message, ready, state


def run_queue(w: World, *, limit: int = 200) -> list[Outcome | str]:
    """Everything the deliveries sent, delivered in due order on the simulated clock (as the host
    would, a crash makes the same message visible again after the lease)."""
    seen: list[Outcome | str] = []
    due: list[tuple[float, int, str]] = []
    taken = 0
    for _ in range(limit):
        for _q, text, delay in w.sender.sent[taken:]:
            heapq.heappush(due, (w.clock.now().timestamp() + delay, len(due) + taken, text))
        taken = len(w.sender.sent)
        if not due:
            return seen
        at, _, text = heapq.heappop(due)
        if at > w.clock.now().timestamp():
            w.clock.advance(at - w.clock.now().timestamp())
        try:
            seen.append(w.delivery.handle(text, queue=QUEUE))
        except Crash as died:
            seen.append(str(died))
            heapq.heappush(due, (w.clock.now().timestamp() + w.settings.delivery_lease_seconds, -1, text))
    raise AssertionError(f"the queue did not settle: {seen[-10:]}")


def noted(w: World) -> int:
    """Events counted on the alert: its own, plus every note's "N more"."""
    (alert,) = w.mde.alerts
    texts = [str(c["comment"]) for c in alert.get("comments", [])]
    return 1 + sum(int(m.group(1)) for t in texts for m in [re.match(r"Noxys: (\d+) more", t)] if m)


def lead(w: World) -> Outcome:
    out = w.delivery.handle(message(w, 1, policy="p"), queue=QUEUE)
    assert out.kind == Kind.CREATED
    return out


def test_a_follower_costs_two_inserts_and_no_group_write() -> None:
    w = ready()
    lead(w)
    w.delivery.handle(message(w, 2, policy="p"), queue=QUEUE)  # the first follower arranges the note,
    (note, delay) = w.requeued(QUEUE)[-1]  # an interval after the alert (which says the first event)
    assert json.loads(note)["kind"] == "note" and delay == w.settings.coalesce_note_interval_seconds
    ledger, groups = w.tables["Ledger"], w.tables["Groups"]
    before = (ledger.requests, groups.requests)
    out = w.delivery.handle(message(w, 3, policy="p"), queue=QUEUE)
    assert (ledger.requests - before[0], groups.requests - before[1]) == (1, 1)  # its ledger row, its member row
    assert out.kind == Kind.COALESCED and state(w, 3) == "coalesced"
    assert w.ledger_row(event_id(3))["lease_owner"] == ""  # written once, final, without a lease
    run_queue(w)
    assert noted(w) == 3


def test_a_follower_delivered_twice_is_counted_once() -> None:
    w = ready()
    lead(w)
    text = message(w, 2, policy="p")
    assert w.delivery.handle(text, queue=QUEUE).kind == Kind.COALESCED
    assert w.delivery.handle(text, queue=QUEUE).kind == Kind.DUPLICATE
    run_queue(w)
    assert noted(w) == 2 and len(w.mde.alerts) == 1


FOLLOWER_STEPS: list[tuple[str, Callable[[World], Any]]] = [
    ("join", lambda w: w.deps.groups),
    ("mark_coalesced", lambda w: w.deps.ledger),
    ("arrange_note", lambda w: w.delivery.followups),
]


@pytest.mark.parametrize(("method", "owner"), FOLLOWER_STEPS, ids=[m for m, _ in FOLLOWER_STEPS])
def test_a_follower_killed_after_each_step_is_counted_exactly_once(method: str, owner: Callable[[World], Any]) -> None:
    w = ready()
    lead(w)
    w.delivery.handle(message(w, 2, policy="p"), queue=QUEUE)
    w.clock.advance(400)  # the first note has gone out: the chain is idle
    run_queue(w)
    crash_after(owner(w), method)
    w.sender.sent.append((QUEUE, message(w, 3, policy="p"), 0))
    seen = run_queue(w)
    assert f"killed after {method}" in seen
    assert state(w, 3) == "coalesced" and len(w.mde.alerts) == 1
    assert noted(w) == 3  # the leader, event 2 and event 3: each once


def test_a_copy_of_a_follower_meeting_a_leased_copy_waits_for_it() -> None:
    w = ready()
    lead(w)
    text = message(w, 2, policy="p")
    held = w.ledger.claim(event_id(2), "interaction.policy_violated", w.clock.now().timestamp(), 300)
    out = w.delivery.handle(text, queue=QUEUE)
    assert out.kind == Kind.RETRY_AFTER and "holds this event" in out.detail
    assert held.lease.lease_until > w.clock.now().timestamp() and state(w, 2) == "received"


def test_the_storm_joins_while_its_leader_waits_for_a_hunting_slot() -> None:
    w = ready()
    w.mde.fail("run_hunting_query", Fault(429, "TooManyRequests", retry_after=60))
    first = w.delivery.handle(message(w, 1, policy="p"), queue=QUEUE)
    assert first.kind == Kind.RETRY_AFTER
    outs = [w.delivery.handle(message(w, i, policy="p"), queue=QUEUE) for i in range(2, 7)]
    assert {o.kind for o in outs} == {Kind.COALESCED}  # no hunting call of their own, no waiting
    assert w.mde.calls.count("run_hunting_query") == 1
    run_queue(w)
    assert state(w, 1) == "alert_created" and noted(w) == 6


def test_a_leader_without_anchor_settles_its_members_and_spares_the_rest_a_search() -> None:
    w = ready()
    w.mde.network_events.clear()  # the device never reached the platform
    w.mde.fail("run_hunting_query", Fault(429, "TooManyRequests", retry_after=60))
    w.delivery.handle(message(w, 1, policy="p"), queue=QUEUE)
    joined = [w.delivery.handle(message(w, i, policy="p"), queue=QUEUE).kind for i in (2, 3)]
    assert joined == [Kind.COALESCED, Kind.COALESCED]
    run_queue(w)  # the leader searches, finds nothing; the note settles its members
    later = w.delivery.handle(message(w, 4, policy="p"), queue=QUEUE)
    assert later.kind == Kind.NO_ANCHOR and "searched once" in later.detail
    assert [state(w, i) for i in (1, 2, 3, 4)] == ["no_anchor"] * 4
    assert "searched once" in str(w.ledger_row(event_id(2))["reason"])
    assert w.mde.calls.count("run_hunting_query") == 2 and w.mde.alerts == []  # the 429, then one search


def test_the_leader_anchors_on_a_connection_anywhere_in_its_groups_window() -> None:
    """The leader's event at 18:00; the device reached chatgpt.com at 18:12 (outside ±10 min of it,
    inside the group's window 18:00 to 18:15 ± 10 min): the group's alert is anchored there."""
    w = ready()
    w.mde.network_events.clear()
    w.mde.add_connection(MACHINE, "chatgpt.com", SAMPLE_DAY + timedelta(minutes=12), 777)
    out = w.delivery.handle(message(w, 1, policy="p", at=SAMPLE_DAY), queue=QUEUE)
    assert out.kind == Kind.CREATED and w.mde.alerts[0]["reportId"] == "777"


def test_without_coalescing_the_anchor_window_is_the_events_own() -> None:
    w = ready({"COALESCE_WINDOW_MINUTES": "0"})
    w.mde.network_events.clear()
    w.mde.add_connection(MACHINE, "chatgpt.com", SAMPLE_DAY + timedelta(minutes=12), 777)
    out = w.delivery.handle(message(w, 1, policy="p", at=SAMPLE_DAY), queue=QUEUE)
    assert out.kind == Kind.NO_ANCHOR and "±10 min of the interaction" in out.detail


def test_notes_add_up_to_the_storm_and_the_chain_ends() -> None:
    w = ready()
    lead(w)
    for i in range(2, 42):
        w.delivery.handle(message(w, i, policy="p"), queue=QUEUE)
        if i % 10 == 0:
            run_queue(w)  # notes go out between the bursts
            w.clock.advance(120)
    run_queue(w)
    assert noted(w) == 41
    group = w.deps.groups.get(str(w.ledger_row(event_id(2))["group_key"]))
    assert group is not None and not group.note_scheduled and group.noted == 41
    assert json.loads(w.sender.sent[-1][1])["kind"] == "note"


def test_a_dead_lettered_leaders_members_are_noted_on_the_next_leaders_alert() -> None:
    w = ready()
    w.mde.fail("run_hunting_query", Fault(429, "TooManyRequests", retry_after=60))
    w.mde.fail("create_alert_by_reference", Fault(403, "Forbidden"))
    assert w.delivery.handle(message(w, 1, policy="p"), queue=QUEUE).kind == Kind.RETRY_AFTER
    assert w.delivery.handle(message(w, 2, policy="p"), queue=QUEUE).kind == Kind.COALESCED
    run_queue(w)  # the leader is refused for good: dead letter, the group failed, the note chain stops
    assert state(w, 1) == "dead_lettered" and w.mde.alerts == []
    w.sender.sent.append((QUEUE, message(w, 3, policy="p"), 0))
    run_queue(w)  # a later event of the window takes the group over and makes the alert
    assert state(w, 3) == "alert_created"
    assert noted(w) == 2  # its own event and event 2, which joined the failed leader


class CountingWindows:
    """A ``PatternsPort`` that counts the window reads (the store itself is tested on Azurite)."""

    def __init__(self) -> None:
        self.reads = 0

    def record(self, o: Any) -> None:
        pass

    def read(self, o: Any, *, recorded: bool = True) -> Any:
        from shared.risk import Patterns

        self.reads += 1
        return Patterns(device_seen=(o.at,), user_seen=(o.at,))


def test_a_leader_queued_again_for_its_slot_keeps_the_windows_it_read() -> None:
    w = ready({"RISK_PATTERNS": "true"})
    windows = CountingWindows()
    w.deps.patterns = windows
    w.mde.fail("create_alert_by_reference", Fault(429, "TooManyRequests", retry_after=30))
    run_queue(w)
    w.sender.sent.append((QUEUE, message(w, 1, policy="p"), 0))
    seen = run_queue(w)
    assert [o.kind for o in seen if isinstance(o, Outcome)] == [Kind.RETRY_AFTER, Kind.CREATED]
    assert windows.reads == 1


class Incidents:
    """The incident API's slice the tags use, counting reads."""

    def __init__(self) -> None:
        self.tags: dict[str, list[str]] = {}
        self.reads = 0

    def get_incident(self, incident_id: str) -> dict[str, Any]:
        self.reads += 1
        return {"incidentId": incident_id, "tags": list(self.tags.get(incident_id, []))}

    def set_incident_tags(self, incident_id: str, tags: list[str]) -> None:
        self.tags[incident_id] = tags


def test_an_incident_this_instance_tagged_is_not_read_again() -> None:
    w = ready({"INCIDENT_TAGGING": "graph"})
    incidents = Incidents()
    w.deps.incidents = incidents
    for i in range(3):
        w.delivery.followups.tag("1001", event_id(i))
    assert incidents.tags == {"1001": ["Noxys", "AI Firewall"]} and incidents.reads == 1
