"""What a second adversarial review of the storm path found, after note tokens, claims and early
chain ends: a claim confirmed after members joined, a new leader's retry on another instance, a
leader killed between its ledger row and its group write, a stale "failed" copy of another
leader, a throttled look at the alert, a comment of another window's group on a merged alert, a
replayed leader whose create may have worked, a comment call still in flight, and the documented
limit of a dead leader's late joiners with its remedy (a replay). Each failed before its fix."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from ops.replay import _fresh
from shared.defender.errors import DefenderError
from shared.outcome import Kind
from tests.fakes import Fault, World
from tests.support import SAMPLE_DAY
from tests.unit.test_delivery_outcomes import MACHINE, QUEUE, event_id, message, ready, state
from tests.unit.test_delivery_storm import lead, noted, run_queue
from tests.unit.test_delivery_storm_races import (
    group_key_of,
    leader_dead_lettered_on_b,
    note_with_a_second_copy_during_its_comment,
    other_instance,
)


def comments(w: World) -> list[str]:
    (alert,) = w.mde.alerts
    return [str(c["comment"]) for c in alert.get("comments", [])]


# ------------------------------------------------------------------------------ the claim's lookup


def test_a_claim_is_not_confirmed_by_another_groups_comment_on_the_merged_alert() -> None:
    """A storm that runs past its 15-min window: the next window's group (same device, policy,
    title) creates again and Defender merges it into the open alert (mapping.py: that is the
    point). Both groups then note on ONE alert with totals counted from 1. Group B claims
    "(2 in total …)", its comment gets a 502 that did NOT act; the next run's ``_posted`` finds
    group A's old "(2 in total coalesced into this alert)" and confirms a comment never posted:
    event 4 is never noted."""
    w = ready()
    w.mde.add_connection(MACHINE, "chatgpt.com", SAMPLE_DAY + timedelta(minutes=16), 4343)
    lead(w)
    w.delivery.handle(message(w, 2, policy="p"), queue=QUEUE)
    run_queue(w)  # group A: "1 more … (2 in total coalesced into this alert)"
    assert len(comments(w)) == 1
    later = SAMPLE_DAY + timedelta(minutes=16)  # the next window of the same storm
    w.clock.advance(20 * 60)
    assert w.delivery.handle(message(w, 3, policy="p", at=later), queue=QUEUE).kind == Kind.CREATED
    assert len(w.mde.alerts) == 1 and w.mde.merged == 1  # Defender merged it into the open alert
    assert w.delivery.handle(message(w, 4, policy="p", at=later), queue=QUEUE).kind == Kind.COALESCED
    w.mde.fail("comment_alert", Fault(502, "BadGateway"))  # before acting: nothing was posted
    run_queue(w)
    assert len(comments(w)) == 2, comments(w)  # group B's note for event 4


# ------------------------------------------------------------------------------ the lookup failing


def test_a_throttled_lookup_of_a_claim_does_not_escape_the_note() -> None:
    """A claim left by a lost answer (502 after acting) makes the next run read the alert
    (``_posted``: get_alert). That call is paced and throttled like any other — our own budget
    (``Paced``, a 429) in the very storm the note is about — but it is not caught: the note task
    raises, the host retries it 5 times within ~2.5 min and poisons it, and the group keeps
    expecting it; with no later joiner (NOTE_LOST needs one) the members are never noted."""
    w = ready()
    lead(w)
    w.delivery.handle(message(w, 2, policy="p"), queue=QUEUE)
    w.delivery.handle(message(w, 3, policy="p"), queue=QUEUE)
    w.mde.fail("comment_alert", Fault(502, "BadGateway", after=True))
    w.mde.fail("get_alert", *[Fault(429, "TooManyRequests", retry_after=30)] * 5)
    try:
        run_queue(w)
    except DefenderError as exc:  # the host's five tries, then poison
        pytest.fail(f"the note task raised {exc.status} {exc.code}: {exc}")
    assert noted(w) == 3, comments(w)


# ------------------------------------------------------------------------------ replays


def test_replaying_a_leader_whose_create_was_unanswered_after_a_takeover_makes_no_second_create() -> None:
    """Leader 1's create gets a 502 that did not act (entry: creating, unanswered); it then runs
    out of time and is dead-lettered; the group is 'failed'; event 2 takes it over and makes the
    alert. The operator replays: ``reopen`` keeps ``group_role=leader`` (maybe_made), so the replay
    skips the group, finds no alert of its own, and creates again — Defender merges it into
    event 2's alert. Event 1 ends 'alert_created' on an alert whose notes never count it (nor is
    it a member), and the create budget paid for it; had event 2's alert been resolved, a second
    alert for the storm group."""
    w = ready()
    age = timedelta(hours=w.settings.max_event_age_hours) - timedelta(minutes=10)
    text = message(w, 1, policy="p", age=age)
    w.mde.fail("create_alert_by_reference", Fault(502, "BadGateway"))
    assert w.delivery.handle(text, queue=QUEUE).kind == Kind.RETRY_AFTER
    (retry, _d) = w.requeued(QUEUE)[-1]
    w.clock.advance(15 * 60)  # past the maximum age
    assert w.delivery.handle(retry, queue=QUEUE).kind == Kind.DEAD_LETTER
    assert w.delivery.handle(message(w, 2, policy="p"), queue=QUEUE).kind == Kind.CREATED  # takes over
    (letter,) = list(w.dead.all())
    assert w.ledger.reopen(letter.event_id)
    w.clock.advance(w.settings.alert_search_grace_seconds + 1)
    out = w.delivery.handle(_fresh(letter.message, w.clock.now()), queue=QUEUE)
    run_queue(w)
    creates = w.mde.calls.count("create_alert_by_reference")
    assert w.mde.merged == 0 and creates == 2, (out.kind, out.detail, creates, state(w, 1))


# ------------------------------------------------------------------------------ kills


def test_a_leader_killed_between_its_ledger_row_and_its_group_write_leaves_its_members_noted() -> None:
    """``_created`` writes the ledger (alert_created, final) and only then tells the group
    (``after_created``: open, alert_id). Killed in between: the redelivery is a duplicate
    (``_duplicate`` repairs COALESCED and DEAD_LETTERED entries, not ALERT_CREATED), so the group
    stays 'creating' without an alert for good: the note chain loops "alert not created yet"
    until it is abandoned at the maximum age, and every follower of the window (joined before
    or after the kill) is recorded coalesced but never noted."""
    from tests.unit.test_delivery_crashes import crash_after

    w = ready()
    w.mde.fail("run_hunting_query", Fault(429, "TooManyRequests", retry_after=60))
    assert w.delivery.handle(message(w, 1, policy="p"), queue=QUEUE).kind == Kind.RETRY_AFTER
    assert w.delivery.handle(message(w, 2, policy="p"), queue=QUEUE).kind == Kind.COALESCED
    crash_after(w.deps.ledger, "mark_created")
    seen = run_queue(w, limit=1000)
    assert "killed after mark_created" in seen and state(w, 1) == "alert_created"
    group = w.deps.groups.get(group_key_of(w, 2))
    last = [getattr(o, "detail", o) for o in seen[-3:]]
    assert noted(w) == 2, (comments(w), group and (group.state, group.alert_id), last)


# ------------------------------------------------------------------------------ the claim's age


def test_a_claim_outlives_a_comment_call_that_is_still_in_flight() -> None:
    """A claim 120 s old was taken as "surely done", but one comment_alert may run up to
    HTTP_TIMEOUT_SECONDS (allowed up to 230 s), twice with a 401 token refresh, inside a function
    allowed 5 min. A second copy of the note arriving 130 s into a slow call finds the claim
    "old", looks at the alert (nothing yet), claims again and posts; then the slow call lands."""
    w = ready({"HTTP_TIMEOUT_SECONDS": "200"})
    lead(w)
    note_with_a_second_copy_during_its_comment(w, hang=130)  # the call hangs, within its own timeout
    assert noted(w) == 2, comments(w)


# ------------------------------------------------------------------------------ stale copies


def test_the_events_that_joined_a_dead_leader_get_their_alert_when_it_is_replayed() -> None:
    """The documented limit and its remedy. Leader 1 waits for a hunting slot on instance A (A's
    copy: 'creating'); its retry runs on B and is dead-lettered (403): the group is 'failed'.
    Event 3, the storm's last, reaches A: the fast path trusts A's copy and records it coalesced
    into event 1 — a dead letter, so no alert yet (reading the group for every follower of a
    'creating' group would cost a read each while leaders wait for their slots). The dead letter
    is what status and the alert rules show; replaying it makes the alert, and its notes count
    event 3."""
    w = ready()
    a, _ = leader_dead_lettered_on_b(w)
    assert a.handle(message(w, 3, policy="p"), queue=QUEUE).kind == Kind.COALESCED
    run_queue(w)
    assert w.mde.alerts == [] and state(w, 1) == "dead_lettered"
    assert w.ledger.reopen(event_id(1))  # python -m shared replay --id …, once the refusal is fixed
    w.sender.sent.append((QUEUE, message(w, 1, policy="p"), 0))
    run_queue(w)
    assert state(w, 1) == "alert_created" and noted(w) == 2


def test_a_redelivered_dead_leader_is_not_skipped_for_a_stale_failed_copy_of_its_predecessor() -> None:
    """``_duplicate`` skips ``_leader_failed`` when this instance's copy already says 'failed' —
    without checking whose failure it was. Leader 1 is dead-lettered on A (A's copy: failed,
    leader 1). On B, event 3 takes the group over, is refused too, and B is killed after the
    dead letter (the group: 'creating', leader 3). The redelivery of event 3 lands on A, whose
    copy says 'failed' (of event 1): nothing is marked. Every later event joins dead leader 3:
    the storm gets no alert."""
    from tests.fakes import Crash
    from tests.unit.test_delivery_crashes import crash_after

    w = ready()
    a, b = w.delivery, other_instance(w)
    w.mde.fail("create_alert_by_reference", Fault(403, "Forbidden"), Fault(403, "Forbidden"))
    assert a.handle(message(w, 1, policy="p"), queue=QUEUE).kind == Kind.DEAD_LETTER  # A's copy: failed
    text = message(w, 3, policy="p")
    crash_after(w.deps.ledger, "mark_dead")
    with pytest.raises(Crash):
        b.handle(text, queue=QUEUE)  # takes over, refused, killed after its dead letter
    w.clock.advance(w.settings.delivery_lease_seconds)
    assert a.handle(text, queue=QUEUE).kind == Kind.DUPLICATE  # the redelivery, on A
    outs = [inst.handle(message(w, i, policy="p"), queue=QUEUE).kind for i, inst in ((4, a), (5, b))]
    run_queue(w, limit=1000)
    group = w.deps.groups.get(group_key_of(w, 3))
    assert len(w.mde.alerts) == 1, (outs, group and (group.state, group.leader))


# ------------------------------------------------------------------------------ the chain ending early


def test_a_confirmed_claim_does_not_end_the_chain_over_members_that_joined_after_it() -> None:
    """The note claims "2 in total", its comment is posted but the answer lost (502). Event 3
    joins right after (the note due then is the retry's: it relies on it, or touches the row —
    either way before the next run reads it). The next run confirms the old claim on the alert
    and calls ``_noted(total=2)``: nobody joined for NOTE_QUIET seconds, and nobody touched the
    row since *this* read, so the chain ends with noted=2 while the partition holds 3 events.
    Event 3 is never noted."""
    w = ready()
    lead(w)
    w.delivery.handle(message(w, 2, policy="p"), queue=QUEUE)
    ((note_text, delay),) = [(t, d) for t, d in w.requeued(QUEUE) if json.loads(t)["kind"] == "note"]
    w.clock.advance(delay)
    w.mde.fail("comment_alert", Fault(502, "BadGateway", after=True))
    assert w.delivery.handle(note_text, queue=QUEUE).kind == Kind.RETRY_AFTER  # claim 2: posted, answer lost
    assert w.delivery.handle(message(w, 3, policy="p"), queue=QUEUE).kind == Kind.COALESCED
    seen = run_queue(w)
    group = w.deps.groups.get(group_key_of(w, 3))
    details = [getattr(o, "detail", o) for o in seen]
    assert noted(w) == 3, (comments(w), details, group and (group.noted, group.note_scheduled))


def test_a_new_leaders_retry_on_another_instance_opens_the_group() -> None:
    """No kill, no duplicate: ``update_if_leader`` takes this instance's copy first and, when the
    copy names another leader, writes nothing — it never reads the table. Leader 1 is
    dead-lettered on A (A's copy: leader 1). Event 3 takes the group over on B and waits for a
    hunting slot; its retry runs on A, makes the alert, and ``after_created`` is refused by A's
    copy: the group stays 'creating' without alert for good, its notes loop "alert not created
    yet" until abandoned and no follower is ever noted (likewise a 'no_anchor' not written)."""
    w = ready()
    a, b = w.delivery, other_instance(w)
    w.mde.fail("create_alert_by_reference", Fault(403, "Forbidden"))
    assert a.handle(message(w, 1, policy="p"), queue=QUEUE).kind == Kind.DEAD_LETTER  # A's copy: leader 1
    w.mde.fail("run_hunting_query", Fault(429, "TooManyRequests", retry_after=60))
    assert b.handle(message(w, 3, policy="p"), queue=QUEUE).kind == Kind.RETRY_AFTER  # B: takes over, waits
    assert b.handle(message(w, 4, policy="p"), queue=QUEUE).kind == Kind.COALESCED
    (retry, delay) = [(t, d) for t, d in w.requeued(QUEUE) if json.loads(t)["kind"] != "note"][-1]
    w.clock.advance(delay)
    assert a.handle(retry, queue=QUEUE).kind == Kind.CREATED  # the retry, on A
    run_queue(w, limit=1000)
    group = w.deps.groups.get(group_key_of(w, 3))
    assert noted(w) == 2, (comments(w), group and (group.state, group.leader, group.alert_id))


def test_the_function_timeout_written_here_is_host_json_s() -> None:
    from pathlib import Path

    from shared.delivery.followups import FUNCTION_TIMEOUT_SECONDS

    host = json.loads((Path(__file__).resolve().parents[2] / "host.json").read_text())
    h, m, sec = (int(x) for x in host["functionTimeout"].split(":"))
    assert h * 3600 + m * 60 + sec == FUNCTION_TIMEOUT_SECONDS
