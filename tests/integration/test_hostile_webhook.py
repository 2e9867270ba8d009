"""Hostile but correctly signed requests, through the dev host into real Azurite: each gets a 4xx
naming the field and queues nothing; an event that fails in delivery ends as a dead letter."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest

from shared import wiring
from shared.clock import ManualClock
from shared.events import parse_events
from shared.tasks import QueuedEvent
from tests.support import Env, ledger_states, post, sample, send_raw, signed_headers, violation
from tools.emulator.server import EmulatorServer
from tools.simulation import Simulation

pytestmark = pytest.mark.integration


def _with(mutate: Callable[[dict[str, Any]], None]) -> bytes:
    doc: dict[str, Any] = json.loads(sample("policy_violated"))
    mutate(doc)
    return json.dumps(doc).encode()


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(doc: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = doc
        for key in parents:
            node = node[key]
        node[last] = value

    return mutate


HOSTILE: dict[str, tuple[bytes, str]] = {
    "deep-nesting": (b'{"id": "evt_1", "x": ' + b"[" * 50_000 + b"]" * 50_000 + b"}", "body"),
    "huge-number": (b'{"id": "evt_1", "n": ' + b"7" * 5000 + b"}", "body"),
    "utc-overflow": (_with(_set("created_at", "0001-01-01T00:00:00+14:00")), "created_at"),
    "lone-surrogate": (_with(_set("data.policy.name", "x\ud800")), "data.policy.name"),
    "policy-name-50k": (_with(_set("data.policy.name", "P" * 50_000)), "data.policy.name"),
    "year-9999": (_with(_set("data.interaction.occurred_at", "9999-12-31T23:59:59Z")), "data.interaction.occurred_at"),
    "forged-log-line": (
        _with(_set("data.interaction.device.hostname", "PC\n2026-03-20 CRITICAL forged")),
        "data.interaction.device.hostname",
    ),
    "id-over-200": (_with(_set("id", "e" * 201)), "id"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_body_is_400_naming_the_field_and_queues_nothing(host: Any, env: Env, case: str) -> None:
    body, field = HOSTILE[case]
    resp = post(host, body, signed_headers(body))
    assert resp.status_code == 400, resp.text
    assert field in [e["field"] for e in resp.json()["errors"]]
    assert env.queued_texts() == [] and env.queued_texts(env.priority_queue) == []


def test_a_batch_is_judged_whole_before_anything_is_queued(host: Any, env: Env) -> None:
    good = json.loads(sample("high_risk"))
    bad = json.loads(_with(_set("data.policy.name", "P" * 50_000)))
    bad["id"] = "evt_bad"
    body = json.dumps([good, bad, json.loads(sample("alert_critical"))]).encode()
    resp = post(host, body, signed_headers(body))
    assert resp.status_code == 400 and [e["field"] for e in resp.json()["errors"]] == ["[1].data.policy.name"]
    assert env.queued_texts() == [] and env.queued_texts(env.priority_queue) == []


def test_an_unqueueable_event_is_413_not_503(host: Any, env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """The safety net behind the field limits: a message over the queue limit is refused as a whole."""
    from shared import intake

    monkeypatch.setattr(intake, "MAX_MESSAGE_BYTES", 600)
    body = json.dumps([json.loads(sample("high_risk")), json.loads(sample("policy_violated"))]).encode()
    resp = post(host, body, signed_headers(body))
    assert resp.status_code == 413 and resp.json()["error"] == "event_too_large"
    assert {e["field"] for e in resp.json()["errors"]} == {"[0]", "[1]"}
    assert env.queued_texts() == []


def test_unknown_event_types_count_under_one_name(host: Any, env: Env) -> None:
    events = []
    for i in range(6):
        doc = json.loads(sample("high_risk"))
        doc["id"], doc["type"] = f"evt_fuzz_{i}", f"interaction.fuzz_{i}"
        events.append(doc)
    events.append(json.loads(sample("created_not_forwarded")))
    body = json.dumps(events).encode()
    assert post(host, body, signed_headers(body)).status_code == 202
    totals = wiring.counters().totals(wiring.clock().now())
    ignored = {k: v for k, v in totals.items() if k.startswith("ingest.ignored.")}
    assert ignored == {"ingest.ignored.unknown": 6, "ingest.ignored.interaction.created": 1}


def test_an_event_that_fails_in_delivery_ends_as_a_dead_letter_not_a_loop(
    sim: Simulation, env: Env, emulator: EmulatorServer, clock: ManualClock
) -> None:
    """A message queued before the date window existed: delivery raises on date arithmetic.
    Each failure frees the lease and is counted in the ledger; the fifth is a dead letter."""
    doc = violation(1)
    doc["data"]["interaction"]["occurred_at"] = "9999-12-31T23:59:00Z"
    (event,) = parse_events(json.dumps(doc).encode())  # no window: as an old connector parsed it
    env.queue_client().create_queue()
    send_raw(env, env.queue, QueuedEvent.new(event, clock.now()).to_text())
    sim.run([])
    assert ledger_states(env) == {"evt_sim_00001": "dead_lettered"}
    (letter,) = env.table("DeadLetters").list_entities()
    # the date arithmetic that raises first: the group's window (ValueError) or an older step's (OverflowError)
    assert (
        re.match(r"unexpected (ValueError|OverflowError): ", letter["reason"]) and "after 5 tries" in letter["reason"]
    )
    entry = env.table("Ledger").get_entity("evt_sim_00001", "event")
    assert entry["errors"] == 5 and entry["lease_until"] == 0
    assert env.queued_texts(f"{env.queue}-poison") == [] and emulator.state.alerts == []
    assert sim.steps < 50 and clock.now() < datetime(2026, 3, 21, tzinfo=clock.now().tzinfo)
