"""Every outcome of ``Delivery.handle``, against fakes of its ports (tests/fakes.py): the use case
that matters most, tested in milliseconds, as gidgethub tests its core against a fake ``_request``.
The adapters themselves (Azurite, the emulator) are covered in tests/integration."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from azure.core.exceptions import ServiceRequestError

from shared.defender.errors import Paced
from shared.events import parse_events
from shared.outcome import Kind
from shared.tasks import EventBundle, QueuedEvent, parse_task
from tests.fakes import Fault, World, world
from tests.support import SAMPLE_DAY, violation

MACHINE = "0f" * 20
OTHER = "1e" * 20
QUEUE = "noxys-events"
START = SAMPLE_DAY + timedelta(minutes=1)


def ready(env: dict[str, str] | None = None) -> World:
    """A world where ALICE-LAPTOP is a machine that reached chatgpt.com a minute before the samples."""
    w = world(env, start=START)
    w.mde.add_machine(MACHINE, "alice-laptop")
    w.mde.add_connection(MACHINE, "chatgpt.com", SAMPLE_DAY - timedelta(minutes=1), 4242)
    return w


def message(w: World, i: int, *, age: timedelta = timedelta(0), **kw: Any) -> str:
    (event,) = parse_events(json.dumps(violation(i, **kw)).encode())
    return QueuedEvent.new(event, w.clock.now() - age).to_text()


def event_id(i: int) -> str:
    return f"evt_sim_{i:05d}"


def state(w: World, i: int) -> str:
    return str(w.ledger_row(event_id(i))["state"])


def test_created_sends_the_anchor_and_records_the_alert() -> None:
    w = ready()
    out = w.delivery.handle(message(w, 1), queue=QUEUE)
    assert out.kind == Kind.CREATED and out.machine_id == MACHINE
    (alert,) = w.mde.alerts
    assert out.alert_id == alert["id"] and (alert["machineId"], alert["reportId"]) == (MACHINE, "4242")
    assert f"Noxys event id: {event_id(1)}" in alert["description"]
    row = w.ledger_row(event_id(1))
    assert (row["state"], row["alert_id"], row["lease_until"]) == ("alert_created", alert["id"], 0.0)


def test_a_second_event_of_the_storm_is_coalesced_with_no_defender_call() -> None:
    w = ready()
    first = w.delivery.handle(message(w, 1, policy="p"), queue=QUEUE)
    calls = len(w.mde.calls)
    out = w.delivery.handle(message(w, 2, policy="p"), queue=QUEUE)
    assert out.kind == Kind.COALESCED and out.alert_id == first.alert_id
    assert len(w.mde.calls) == calls and len(w.mde.alerts) == 1  # the device came from the cache
    assert state(w, 2) == "coalesced"
    assert [json.loads(t)["kind"] for t, _ in w.requeued(w.settings.events_queue_name)] == ["note"]


def test_the_same_message_again_is_a_duplicate() -> None:
    w = ready()
    text = message(w, 1)
    first = w.delivery.handle(text, queue=QUEUE)
    calls = len(w.mde.calls)
    again = w.delivery.handle(text, queue=QUEUE)
    assert again.kind == Kind.DUPLICATE and again.alert_id == first.alert_id
    assert len(w.mde.calls) == calls


def test_an_unknown_device_is_no_device() -> None:
    w = ready()
    out = w.delivery.handle(message(w, 1, host="NOBODY-PC"), queue=QUEUE)
    assert out.kind == Kind.NO_DEVICE and "no machine matches" in out.detail
    assert state(w, 1) == "no_device" and "create_alert_by_reference" not in w.mde.calls


def test_no_connection_to_the_platform_is_no_anchor() -> None:
    w = ready()
    w.mde.network_events.clear()
    out = w.delivery.handle(message(w, 1), queue=QUEUE)
    assert out.kind == Kind.NO_ANCHOR and "chatgpt.com" in out.detail
    assert state(w, 1) == "no_anchor" and w.mde.alerts == []


def test_a_connection_outside_the_window_is_no_anchor() -> None:
    w = world(start=START)
    w.mde.add_machine(MACHINE, "alice-laptop")
    w.mde.add_connection(MACHINE, "chatgpt.com", SAMPLE_DAY - timedelta(hours=2), 4242)
    assert w.delivery.handle(message(w, 1), queue=QUEUE).kind == Kind.NO_ANCHOR


def test_our_pacing_budget_retries_at_the_reserved_slot_and_keeps_the_ticket() -> None:
    w = ready()
    slot = START + timedelta(seconds=40)
    w.mde.fail("create_alert_by_reference", Paced("alerts", 40, slot))
    out = w.delivery.handle(message(w, 1), queue=QUEUE)
    assert out.kind == Kind.RETRY_AFTER and out.slot == slot and out.api == "alerts"
    ((text, delay),) = w.requeued(QUEUE)
    task = parse_task(text)
    assert isinstance(task, QueuedEvent) and task.tickets == {"alerts": slot} and task.attempt == 1
    assert 40 <= delay < 41
    row = w.ledger_row(event_id(1))
    assert row["state"] == "received" and row["lease_until"] == 0.0 and w.mde.alerts == []


def test_defender_429_retries_after_its_retry_after_and_then_creates_once() -> None:
    w = ready()
    w.mde.fail("create_alert_by_reference", Fault(429, "TooManyRequests", retry_after=30))
    out = w.delivery.handle(message(w, 1), queue=QUEUE)
    assert out.kind == Kind.RETRY_AFTER and out.retry_after == 30 and not out.transient_failure
    assert state(w, 1) == "received"  # a 429 proves nothing was made: no search next time
    ((text, delay),) = w.requeued(QUEUE)
    assert 30 <= delay <= 31
    w.clock.advance(delay)
    assert w.delivery.handle(text, queue=QUEUE).kind == Kind.CREATED
    assert len(w.mde.alerts) == 1 and w.mde.calls.count("list_alerts") == 0


def test_a_5xx_before_the_create_backs_off() -> None:
    w = ready()
    w.mde.fail("run_hunting_query", Fault(503, "ServiceUnavailable"))
    out = w.delivery.handle(message(w, 1), queue=QUEUE)
    assert out.kind == Kind.RETRY_AFTER and out.transient_failure and out.retry_after is None
    ((text, delay),) = w.requeued(QUEUE)
    assert 0.8 * w.settings.retry_base_seconds <= delay <= 1.2 * w.settings.retry_base_seconds
    assert parse_task(text).failures == 1 and state(w, 1) == "received"


def test_an_event_another_attempt_holds_waits_for_its_lease() -> None:
    w = ready()
    text = message(w, 1)
    w.deps.ledger.claim(event_id(1), "interaction.policy_violated", START.timestamp(), 300)
    w.clock.advance(100)
    out = w.delivery.handle(text, queue=QUEUE)
    assert out.kind == Kind.RETRY_AFTER and out.retry_after == 200
    assert len(w.requeued(QUEUE)) == 1 and w.mde.calls == []


def test_a_refusal_is_dead_lettered_at_once_with_defender_s_code() -> None:
    w = ready()
    w.mde.fail("create_alert_by_reference", Fault(403, "Forbidden"))
    out = w.delivery.handle(message(w, 1), queue=QUEUE)
    assert out.kind == Kind.DEAD_LETTER and out.error_code == "Forbidden"
    (letter,) = w.dead.all()
    assert letter.event_id == event_id(1) and letter.error_code == "Forbidden"
    assert "tickets" not in json.loads(letter.message) or json.loads(letter.message)["tickets"] == {}
    assert state(w, 1) == "dead_lettered" and w.requeued(QUEUE) == []


def test_an_event_older_than_the_maximum_age_is_dead_lettered() -> None:
    w = ready()
    out = w.delivery.handle(message(w, 1, age=timedelta(hours=25)), queue=QUEUE)
    assert out.kind == Kind.DEAD_LETTER and "gave up after 24 h" in out.detail
    assert state(w, 1) == "dead_lettered" and w.mde.calls == []


def test_unexpected_errors_are_retried_then_dead_lettered_after_the_limit() -> None:
    w = ready({"MAX_DELIVERY_ERRORS": "3"})
    w.mde.fail("list_machines", *(RuntimeError("glitch") for _ in range(3)))
    text, kinds = message(w, 1), []
    for _ in range(3):
        out = w.delivery.handle(text, queue=QUEUE)
        kinds.append(out.kind)
        if out.kind == Kind.RETRY_AFTER:
            text, delay = w.requeued(QUEUE)[-1]
            w.clock.advance(delay)
    assert kinds == [Kind.RETRY_AFTER, Kind.RETRY_AFTER, Kind.DEAD_LETTER]
    assert out.error_code == "UnexpectedError" and "after 3 tries" in out.detail
    assert state(w, 1) == "dead_lettered" and w.ledger_row(event_id(1))["errors"] == 3


def test_our_own_storage_failing_frees_the_lease_and_raises_for_the_host() -> None:
    w = ready()
    w.tables["Groups"].fail("create_entity", ServiceRequestError("storage unreachable"))  # after the claim
    text = message(w, 1)
    try:
        w.delivery.handle(text, queue=QUEUE)
        raised = False
    except ServiceRequestError:
        raised = True
    assert raised and w.ledger_row(event_id(1))["lease_until"] == 0.0
    assert w.delivery.handle(text, queue=QUEUE).kind == Kind.CREATED  # at once: no lease to wait out


def test_switched_off_the_event_is_held_without_a_defender_call() -> None:
    w = ready({"INTEGRATION_ENABLED": "false"})
    out = w.delivery.handle(message(w, 1), queue=QUEUE)
    assert out.kind == Kind.HELD and w.mde.calls == []
    assert w.held.count() == 1


def test_a_bundle_delivers_each_event_in_order() -> None:
    w = ready()
    texts = [message(w, i, policy="p") for i in (1, 2)] + [message(w, 3, host="NOBODY-PC")]
    out = w.delivery.handle(EventBundle.pack(texts, w.clock.now()), queue=QUEUE)
    assert out.kind == Kind.BUNDLE
    assert [p.kind for p in out.parts] == [Kind.CREATED, Kind.COALESCED, Kind.NO_DEVICE]
    assert len(w.mde.alerts) == 1


def test_a_bundle_queues_the_event_that_raised_and_the_rest_one_message_each() -> None:
    w = ready()
    texts = [message(w, i, host=h) for i, h in ((1, "ALICE-LAPTOP"), (2, "NOBODY-PC"), (3, "ALICE-LAPTOP"))]
    w.tables["Groups"].fail("create_entity", ServiceRequestError("storage unreachable"))  # after the claim
    out = w.delivery.handle(EventBundle.pack(texts, w.clock.now()), queue=QUEUE)
    assert out.kind == Kind.BUNDLE and out.parts == () and "3 queued one message each" in out.detail
    assert [json.loads(t)["event"]["id"] for t, _ in w.requeued(QUEUE)] == [event_id(i) for i in (1, 2, 3)]
