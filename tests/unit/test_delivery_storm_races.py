"""Races and crashes of the storm path that an adversarial review of it found (each failed on the
first version of member rows and note chains): a note killed after its comment, its answer lost,
two copies of it at once, a note task that never reached the queue, a leader killed after its
dead letter, a dead-lettered leader replayed after another took its group over, members of a
failed leader, and a chain that ends once the window is over. Each test states the guarantee."""

from __future__ import annotations

import contextlib
import dataclasses
import json
from typing import Any

import pytest

from ops.replay import _fresh
from shared.delivery.coalesce import Groups
from shared.delivery.forward import Delivery
from shared.outcome import Kind
from tests.fakes import Crash, Fault, World
from tests.unit.test_delivery_crashes import crash_after
from tests.unit.test_delivery_outcomes import QUEUE, event_id, message, ready, state
from tests.unit.test_delivery_storm import lead, noted, run_queue


def other_instance(w: World) -> Delivery:
    """A second instance: same tables, queue and clock; its own in-memory group copies."""
    return Delivery(dataclasses.replace(w.deps, groups=Groups(w.tables["Groups"])))


def leader_dead_lettered_on_b(w: World) -> tuple[Delivery, Delivery]:
    """Instances A and B: leader 1 waits for a hunting slot on A (A's copy of the group stays
    'creating'), then its retry runs on B and is refused for good (403): the group is 'failed'."""
    a, b = w.delivery, other_instance(w)
    w.mde.fail("run_hunting_query", Fault(429, "TooManyRequests", retry_after=60))
    assert a.handle(message(w, 1, policy="p"), queue=QUEUE).kind == Kind.RETRY_AFTER  # A: creating
    (retry, delay) = w.requeued(QUEUE)[-1]
    w.clock.advance(delay)
    w.mde.fail("create_alert_by_reference", Fault(403, "Forbidden"))
    assert b.handle(retry, queue=QUEUE).kind == Kind.DEAD_LETTER  # B marks the group failed
    return a, b


def group_key_of(w: World, i: int) -> str:
    return str(w.ledger_row(event_id(i))["group_key"])


def notes(w: World) -> list[str]:
    (alert,) = w.mde.alerts
    return [str(c["comment"]) for c in alert.get("comments", [])]


# ---------------------------------------------------------------------------------- notes


def test_a_note_killed_after_its_comment_is_not_posted_twice() -> None:
    """Process killed right after comment_alert (before the group records ``noted``): the host
    redelivers the note, which posts the same "N more" again."""
    w = ready()
    lead(w)
    w.delivery.handle(message(w, 2, policy="p"), queue=QUEUE)
    w.mde.crash_after.add("comment_alert")
    seen = run_queue(w)
    assert "process killed after comment_alert" in seen
    assert noted(w) == 2, notes(w)


def test_a_lost_answer_to_a_note_is_not_posted_twice() -> None:
    """Defender made the comment but the answer was lost (502): the note is retried, posts again."""
    w = ready()
    lead(w)
    w.delivery.handle(message(w, 2, policy="p"), queue=QUEUE)
    w.mde.fail("comment_alert", Fault(502, "BadGateway", after=True))
    run_queue(w)
    assert noted(w) == 2, notes(w)


def note_with_a_second_copy_during_its_comment(w: World, *, hang: float = 0.0) -> None:
    """Deliver the group's first note; while its ``comment_alert`` is in flight (for ``hang``
    seconds of the clock), a second copy of the same message runs on another instance — as
    at-least-once delivery does when a visibility timeout expires on a slow call."""
    w.delivery.handle(message(w, 2, policy="p"), queue=QUEUE)
    ((note_text, delay),) = [(t, d) for t, d in w.requeued(QUEUE) if json.loads(t)["kind"] == "note"]
    w.clock.advance(delay)
    real = w.mde.comment_alert
    seen: dict[str, Any] = {"nested": False}

    def slow_comment(alert_id: str, comment: str) -> dict[str, Any]:
        if not seen["nested"]:
            seen["nested"] = True
            w.clock.advance(hang)
            other_instance(w).handle(note_text, queue=QUEUE)  # the duplicate copy, elsewhere
        return real(alert_id, comment)

    w.mde.comment_alert = slow_comment  # type: ignore[method-assign]
    w.delivery.handle(note_text, queue=QUEUE)
    w.mde.comment_alert = real  # type: ignore[method-assign]
    run_queue(w)


def test_two_copies_of_one_note_at_once_post_once() -> None:
    """At-least-once queue: a second copy of the note message runs while the first is inside
    comment_alert (e.g. visibility expired on a slow call): the claim lets one post."""
    w = ready()
    lead(w)
    note_with_a_second_copy_during_its_comment(w)
    assert noted(w) == 2, notes(w)


# ---------------------------------------------------------------------------------- failed leaders


def test_replaying_a_dead_lettered_leader_after_a_new_leader_made_the_alert_makes_no_second_alert() -> None:
    """Leader 1 is dead-lettered (403 on create; group 'failed'); event 2 takes the group over and
    makes the alert; the operator fixes the permission and replays the dead letters. Event 1's
    entry still says group_role=leader, so ``_group`` skips lead_or_join and it creates a second
    alert for the same storm group (and overwrites the group's alert_id)."""
    w = ready()
    w.mde.fail("create_alert_by_reference", Fault(403, "Forbidden"))
    assert w.delivery.handle(message(w, 1, policy="p"), queue=QUEUE).kind == Kind.DEAD_LETTER
    assert w.delivery.handle(message(w, 2, policy="p"), queue=QUEUE).kind == Kind.CREATED
    (letter,) = list(w.dead.all())
    assert w.ledger.reopen(letter.event_id)
    out = w.delivery.handle(_fresh(letter.message, w.clock.now()), queue=QUEUE)
    run_queue(w)
    creates = w.mde.calls.count("create_alert_by_reference")  # the 403, event 2's, and ... the replay's?
    assert len(w.mde.alerts) == 1 and w.mde.merged == 0, (out.detail, creates, w.mde.merged)


def test_members_of_a_failed_leader_are_counted_on_the_next_leaders_alert() -> None:
    """Module docstring: 'a member of a group whose leader later failed is counted on the group's
    next leader's alert'. Event 2 joins; leader 1 is dead-lettered; the pending note runs, sees
    'failed' and ends the chain; event 3 takes over and makes the alert; nothing else joins.
    Event 2 is never counted on that alert (and stays 'coalesced into event 1', a dead letter)."""
    w = ready()
    w.mde.fail("run_hunting_query", Fault(429, "TooManyRequests", retry_after=60))
    w.delivery.handle(message(w, 1, policy="p"), queue=QUEUE)  # leads, waits for a hunting slot
    assert w.delivery.handle(message(w, 2, policy="p"), queue=QUEUE).kind == Kind.COALESCED
    w.mde.fail("create_alert_by_reference", Fault(403, "Forbidden"))
    run_queue(w)  # leader 1 dead-lettered; the note sees 'failed' and stops
    assert state(w, 1) == "dead_lettered"
    assert w.delivery.handle(message(w, 3, policy="p"), queue=QUEUE).kind == Kind.CREATED
    run_queue(w)
    assert noted(w) == 2, (notes(w), w.ledger_row(event_id(2))["coalesced_into"])


def test_a_follower_killed_after_joining_is_counted_once_on_the_group_s_next_alert() -> None:
    """Event 2 (fast path) is recorded coalesced, writes its member row and is killed; meanwhile
    leader 1 is dead-lettered. Event 2's redelivery is a duplicate (its member row is written
    again: nothing changes); event 3 takes the failed group over and makes the alert; its notes
    count event 2 once, and event 4."""
    w = ready()
    w.mde.fail("run_hunting_query", Fault(429, "TooManyRequests", retry_after=60))
    w.delivery.handle(message(w, 1, policy="p"), queue=QUEUE)  # leads, waits for a hunting slot
    crash_after(w.deps.groups, "join")
    text = message(w, 2, policy="p")
    with pytest.raises(Crash, match="killed after join"):
        w.delivery.handle(text, queue=QUEUE)
    w.mde.fail("create_alert_by_reference", Fault(403, "Forbidden"))
    run_queue(w)
    assert state(w, 1) == "dead_lettered"
    w.clock.advance(w.settings.delivery_lease_seconds)
    assert w.delivery.handle(text, queue=QUEUE).kind == Kind.DUPLICATE
    assert w.delivery.handle(message(w, 3, policy="p"), queue=QUEUE).kind == Kind.CREATED  # takes over
    w.delivery.handle(message(w, 4, policy="p"), queue=QUEUE)  # a real follower
    run_queue(w)
    assert noted(w) == 3, notes(w)  # events 3 (the alert), 2 and 4


def test_a_follower_killed_between_scheduling_its_note_and_sending_it_loses_no_member() -> None:
    """``FollowUps.arrange_note`` writes the group (note_scheduled=True, note_due=D) *before* it
    sends the task (``_again`` does the opposite, on purpose). Killed in between: the group expects
    a note that does not exist. The redelivered follower (after the lease, so at about D) and
    every later joiner only bump ``touched``: no note is ever sent again for the group."""
    w = ready()
    lead(w)
    crash_after(w.deps.groups, "arrange_note")
    w.sender.sent.append((QUEUE, message(w, 2, policy="p"), 0))
    seen = run_queue(w)
    assert "killed after arrange_note" in seen
    for i in (3, 4):
        w.delivery.handle(message(w, i, policy="p"), queue=QUEUE)
    run_queue(w)
    group = w.deps.groups.get(group_key_of(w, 2))
    assert noted(w) == 4, (notes(w), group)


def test_a_note_that_gives_up_while_a_joiner_touches_the_group_leaves_no_orphan_chain() -> None:
    """A note meets a refusal retrying cannot fix (400) and calls stop_notes, ignoring its result;
    a joiner touched the group meanwhile, so the stop is refused: the group keeps
    note_scheduled=True (due in the past) with no task — later joiners only bump ``touched`` and
    retention never purges the row."""
    w = ready()
    lead(w)
    w.delivery.handle(message(w, 2, policy="p"), queue=QUEUE)
    real = w.mde.comment_alert

    def refused(alert_id: str, comment: str) -> dict[str, Any]:
        other_instance(w).handle(message(w, 3, policy="p"), queue=QUEUE)  # joins, sees the note due: touches
        from shared.defender.errors import DefenderError

        raise DefenderError(400, "BadRequest", "refused")

    w.mde.comment_alert = refused  # type: ignore[method-assign]
    run_queue(w)
    w.mde.comment_alert = real  # type: ignore[method-assign]
    group = w.deps.groups.get(group_key_of(w, 2))
    assert group is not None
    pending = [t for _q, t, _d in w.sender.sent if json.loads(t)["kind"] == "note"]
    assert not group.note_scheduled, (group, len(pending))


def test_a_leader_killed_after_its_dead_letter_does_not_swallow_the_rest_of_the_storm() -> None:
    """``_settle`` writes the ledger's dead letter first and marks the group 'failed' after it.
    Killed in between: the redelivery is a duplicate (final entry) and never marks the group, so
    it stays 'creating' with a dead leader: every later event of the window joins it, no one
    takes it over, and the storm gets no alert at all (without the kill, event 2 leads)."""
    w = ready()
    w.mde.fail("create_alert_by_reference", Fault(403, "Forbidden"))
    crash_after(w.deps.ledger, "mark_dead")
    w.sender.sent.append((QUEUE, message(w, 1, policy="p"), 0))
    seen = run_queue(w)
    assert "killed after mark_dead" in seen and state(w, 1) == "dead_lettered"
    outs = [w.delivery.handle(message(w, i, policy="p"), queue=QUEUE).kind for i in (2, 3, 4)]
    run_queue(w, limit=2000)
    assert len(w.mde.alerts) == 1, (outs, [state(w, i) for i in (2, 3, 4)])


def test_members_of_a_failed_leader_are_settled_when_the_next_leader_finds_no_anchor() -> None:
    """Event 2 joins leader 1, which is dead-lettered; event 3 takes over and finds no anchor.
    ``settle_no_anchor`` only settles members coalesced into 'event 3', so event 2 stays
    'coalesced' into a dead letter (no alert anywhere counts it)."""
    w = ready()
    w.mde.fail("run_hunting_query", Fault(429, "TooManyRequests", retry_after=60))
    w.delivery.handle(message(w, 1, policy="p"), queue=QUEUE)
    assert w.delivery.handle(message(w, 2, policy="p"), queue=QUEUE).kind == Kind.COALESCED
    w.mde.fail("create_alert_by_reference", Fault(403, "Forbidden"))
    w.clock.advance(61)
    run_queue(w)
    assert state(w, 1) == "dead_lettered"
    w.mde.network_events.clear()
    assert w.delivery.handle(message(w, 3, policy="p"), queue=QUEUE).kind == Kind.NO_ANCHOR
    w.delivery.handle(message(w, 4, policy="p"), queue=QUEUE)
    run_queue(w)
    assert state(w, 2) == "no_anchor", w.ledger_row(event_id(2))["coalesced_into"]


def test_a_duplicate_event_on_two_instances_is_not_counted_as_its_own_follower() -> None:
    """No crash: Noxys posts event 3 twice. Leader 1 was dead-lettered on instance B, so B's copy
    of event 3 takes the group over and makes the alert. Instance A still holds a 'creating' copy
    of the group: its copy of event 3 takes the fast path, writes the member row m-evt_3, then
    finds the ledger row final (a duplicate) — before writing any member row, so the notes never
    count event 3, the alert's own event, once more."""
    w = ready()
    a, b = leader_dead_lettered_on_b(w)
    text = message(w, 3, policy="p")
    assert b.handle(text, queue=QUEUE).kind == Kind.CREATED  # B: takes over
    assert a.handle(text, queue=QUEUE).kind == Kind.DUPLICATE  # A: fast path, member row, duplicate
    b.handle(message(w, 4, policy="p"), queue=QUEUE)  # a real follower
    run_queue(w)
    assert noted(w) == 2, notes(w)  # events 3 (the alert) and 4


def test_after_the_groups_window_the_chain_ends_right_after_noting() -> None:
    """docs/lifecycle.md: the chain 'stops after a run that finds nothing new (or right after
    noting, once the group's window is over)'; Group.until: 'later, a note may end the chain'.
    ``until`` is written but never read: a note after the window still schedules another."""
    w = ready()
    lead(w)
    w.delivery.handle(message(w, 2, policy="p"), queue=QUEUE)
    w.clock.advance(20 * 60)  # the window (18:00-18:15 of event time) is over
    before = len(w.sender.sent)
    run_queue(w)
    kinds = [json.loads(t)["kind"] for _q, t, _d in w.sender.sent[before:]]
    assert noted(w) == 2 and kinds == [], kinds


def test_a_follower_whose_note_could_not_be_queued_is_noted_after_the_hosts_retry() -> None:
    """No kill: the queue refuses the note task once (storage blip). The group already says a
    note is due in 300 s, so the host's retry of the follower (30 s later, host.json) is a
    duplicate that *relies* on that note (due > now + NOTE_MARGIN) — which does not exist."""
    from azure.core.exceptions import ServiceRequestError

    w = ready()
    lead(w)
    text = message(w, 2, policy="p")
    w.sender.down = ServiceRequestError("queue unreachable")
    with contextlib.suppress(ServiceRequestError):  # the function fails; the host retries 30 s later
        w.delivery.handle(text, queue=QUEUE)
    w.sender.down = None
    w.clock.advance(30)
    assert w.delivery.handle(text, queue=QUEUE).kind == Kind.DUPLICATE
    run_queue(w)
    assert noted(w) == 2, (notes(w), w.deps.groups.get(group_key_of(w, 2)))
