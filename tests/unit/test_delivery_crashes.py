"""Every crash point of a delivery: the process dies right after each ledger or group write and
right after each Defender call, or Defender's answer is lost; the host then delivers the message
again (after the visibility timeout, so after the lease). Whatever the point, the event ends with
exactly one alert, made by one create (Defender's merge of a same-title alert would hide a second
create: it is counted apart), and the ledger says so."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest

from shared.outcome import Kind, Outcome
from tests.fakes import Crash, Fault, World
from tests.unit.test_delivery_outcomes import QUEUE, START, event_id, message, ready, state

FINAL = {Kind.CREATED, Kind.COALESCED, Kind.DUPLICATE, Kind.NO_DEVICE, Kind.NO_ANCHOR, Kind.DEAD_LETTER}


def crash_after(obj: Any, method: str) -> None:
    """The next call of ``obj.method`` does its work, then the process dies (once)."""
    real = getattr(obj, method)

    def then_die(*args: Any, **kwargs: Any) -> Any:
        real(*args, **kwargs)
        delattr(obj, method)  # the next process runs the real method
        raise Crash(f"killed after {method}")

    setattr(obj, method, then_die)


def deliver_until_final(w: World, text: str, *, limit: int = 10) -> list[Outcome | str]:
    """Deliver ``text`` as the host would: a crash makes it visible again after the lease (the
    same message); a retry is the re-enqueued copy after its delay."""
    seen: list[Outcome | str] = []
    for _ in range(limit):
        try:
            out = w.delivery.handle(text, queue=QUEUE)
        except Crash as died:
            seen.append(str(died))
            w.clock.advance(w.settings.delivery_lease_seconds + 1)
            continue
        seen.append(out)
        if out.kind in FINAL:
            return seen
        text, delay = w.requeued(QUEUE)[-1]
        w.clock.advance(delay)
    raise AssertionError(f"not final after {limit} deliveries: {seen}")


def exactly_one_alert(w: World, i: int = 1) -> None:
    creates = w.mde.calls.count("create_alert_by_reference")
    assert len(w.mde.alerts) == 1 and w.mde.merged == 0, (creates, w.mde.alerts, w.mde.merged)
    row = w.ledger_row(event_id(i))
    assert (row["state"], row["alert_id"], row["lease_until"]) == ("alert_created", w.mde.alerts[0]["id"], 0.0)


LEDGER_WRITES = ["claim", "mark_leader", "checkpoint_anchor", "mark_creating", "mark_created"]
GROUP_WRITES = ["lead_or_join", "update_if_leader"]
DEFENDER_CALLS = ["list_machines", "run_hunting_query", "create_alert_by_reference"]


@pytest.mark.parametrize("method", LEDGER_WRITES)
def test_a_crash_after_each_ledger_write(method: str) -> None:
    w = ready()
    crash_after(w.deps.ledger, method)
    seen = deliver_until_final(w, message(w, 1))
    assert seen[0] == f"killed after {method}"
    exactly_one_alert(w)


@pytest.mark.parametrize("method", GROUP_WRITES)
def test_a_crash_after_each_group_write(method: str) -> None:
    w = ready()
    crash_after(w.deps.groups, method)
    seen = deliver_until_final(w, message(w, 1))
    assert seen[0] == f"killed after {method}"
    exactly_one_alert(w)
    assert w.deps.groups.get(str(w.ledger_row(event_id(1))["group_key"])) is not None


@pytest.mark.parametrize("method", DEFENDER_CALLS)
def test_a_crash_after_each_defender_call(method: str) -> None:
    w = ready()
    w.mde.crash_after.add(method)
    seen = deliver_until_final(w, message(w, 1))
    assert seen[0] == f"process killed after {method}"
    exactly_one_alert(w)


def test_a_crash_after_the_create_finds_the_alert_instead_of_creating_again() -> None:
    w = ready()
    w.mde.crash_after.add("create_alert_by_reference")
    seen = deliver_until_final(w, message(w, 1))
    last = seen[-1]
    assert isinstance(last, Outcome) and last.kind == Kind.CREATED and "interrupted" in last.detail
    assert w.mde.calls.count("create_alert_by_reference") == 1


@pytest.mark.parametrize(
    "fault",
    [
        Fault(500, after=True),
        Fault(502, "BadGateway", after=True),
        Fault(0, "Timeout", after=True),
        Fault(0, "ConnectionLost", after=True),
    ],
    ids=["500", "502", "timeout", "connection-lost"],
)
def test_a_lost_answer_is_adopted_not_repeated(fault: Fault) -> None:
    w = ready()
    w.mde.fail("create_alert_by_reference", fault)
    seen = deliver_until_final(w, message(w, 1))
    first, last = seen[0], seen[-1]
    assert isinstance(first, Outcome) and first.kind == Kind.RETRY_AFTER
    assert isinstance(last, Outcome) and "ambiguous answer" in last.detail
    exactly_one_alert(w)
    assert w.mde.calls.count("create_alert_by_reference") == 1


def test_a_5xx_that_made_nothing_waits_the_search_grace_then_creates_once() -> None:
    w = ready()
    w.mde.fail("create_alert_by_reference", Fault(503, "ServiceUnavailable"))
    seen = deliver_until_final(w, message(w, 1))
    waits = [s for s in seen if isinstance(s, Outcome) and "not listed yet" in s.detail]
    assert waits
    exactly_one_alert(w)
    made = datetime.fromisoformat(w.mde.alerts[0]["alertCreationTime"].replace("Z", "+00:00"))
    assert made >= START + timedelta(seconds=w.settings.alert_search_grace_seconds)
    assert w.mde.calls.count("create_alert_by_reference") == 2


def crash_follower(method: str) -> Callable[[World], None]:
    def arm(w: World) -> None:
        crash_after(w.deps.ledger, method)

    return arm


@pytest.mark.parametrize("method", ["claim", "mark_coalesced"])
def test_a_follower_crashing_after_its_ledger_write_ends_coalesced_once(method: str) -> None:
    w = ready()
    assert w.delivery.handle(message(w, 1, policy="p"), queue=QUEUE).kind == Kind.CREATED
    crash_follower(method)(w)
    seen = deliver_until_final(w, message(w, 2, policy="p"))
    last = seen[-1]
    assert isinstance(last, Outcome) and last.kind in (Kind.COALESCED, Kind.DUPLICATE)
    assert w.ledger_row(event_id(2))["state"] == "coalesced" and len(w.mde.alerts) == 1


@pytest.mark.parametrize(
    ("method", "fault"),
    [("mark_unanswered", Fault(502, "BadGateway", after=True)), ("release", Fault(429, "TooManyRequests"))],
    ids=["after-a-lost-answer", "after-a-429"],
)
def test_a_crash_after_the_ledger_notes_a_failed_create(method: str, fault: Fault) -> None:
    w = ready()
    w.mde.fail("create_alert_by_reference", fault)
    crash_after(w.deps.ledger, method)
    seen = deliver_until_final(w, message(w, 1))
    assert f"killed after {method}" in seen
    exactly_one_alert(w)


def test_a_crash_after_no_device_is_recorded_ends_no_device_without_a_second_lookup() -> None:
    w = ready()
    crash_after(w.deps.ledger, "mark_no_alert")
    seen = deliver_until_final(w, message(w, 1, host="NOBODY-PC"))
    last = seen[-1]
    assert seen[0] == "killed after mark_no_alert" and isinstance(last, Outcome) and last.kind == Kind.DUPLICATE
    assert w.ledger_row(event_id(1))["state"] == "no_device" and w.mde.calls.count("list_machines") == 1


def test_a_crash_after_the_dead_letter_is_recorded_keeps_one_letter() -> None:
    w = ready()
    w.mde.fail("create_alert_by_reference", Fault(403, "Forbidden"))
    crash_after(w.deps.ledger, "mark_dead")
    seen = deliver_until_final(w, message(w, 1))
    assert seen[0] == "killed after mark_dead" and w.ledger_row(event_id(1))["state"] == "dead_lettered"
    assert [d.event_id for d in w.dead.all()] == [event_id(1)] and w.mde.alerts == []


def test_a_replay_after_a_lost_answer_searches_before_creating() -> None:
    """The answer is lost (502 after acting), the search is then refused for good (403: dead
    letter); an operator fixes it and replays: the alert is found, not created a second time."""
    w = ready()
    w.mde.fail("create_alert_by_reference", Fault(502, "BadGateway", after=True))
    w.mde.fail("list_alerts", Fault(403, "Forbidden"))
    seen = deliver_until_final(w, message(w, 1))
    assert isinstance(seen[-1], Outcome) and seen[-1].kind == Kind.DEAD_LETTER
    assert w.ledger.reopen(event_id(1))
    assert state(w, 1) == "creating"  # the replay keeps what it knows: an alert may exist
    replayed = deliver_until_final(w, message(w, 1))
    assert isinstance(replayed[-1], Outcome) and "ambiguous answer" in replayed[-1].detail
    exactly_one_alert(w)
    assert w.mde.calls.count("create_alert_by_reference") == 1
