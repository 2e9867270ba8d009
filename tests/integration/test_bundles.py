"""A large webhook request travels as a few bundles; each event is still delivered exactly once,
counted as itself, and one that fails (with those after it) gets a message of its own."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from azure.core.exceptions import ServiceRequestError

from shared import wiring
from shared.delivery import forward
from tests.support import Env, ledger_states, violation
from tools.emulator.server import EmulatorServer
from tools.simulation import Arrival, Simulation

pytestmark = pytest.mark.integration


@pytest.fixture
def warned(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.WARNING)
    return caplog


def _storm(n: int) -> list[dict[str, Any]]:
    return [violation(i, policy="storm") for i in range(n)]


def test_a_large_batch_is_delivered_from_bundles_each_event_once(
    sim: Simulation, env: Env, emulator: EmulatorServer
) -> None:
    sim.run([Arrival(0, _storm(30))])
    states = ledger_states(env)
    assert len(states) == 30 and sorted(set(states.values())) == ["alert_created", "coalesced"]
    assert list(states.values()).count("alert_created") == 1 and len(emulator.state.alerts) == 1
    totals = wiring.counters().totals(wiring.clock().now())
    assert totals.get("outcome.coalesced") == 29 and totals.get("outcome.created") == 1
    assert not any(k == "outcome.bundle" for k in totals)  # a bundle counts as its events


def test_an_event_that_fails_is_queued_alone_with_the_ones_after_it(
    sim: Simulation, env: Env, emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch, warned: Any
) -> None:
    original = forward.Delivery._event
    failed: list[str] = []

    def flaky(self: forward.Delivery, task: Any, queue: str, priority: bool) -> Any:
        if task.event.id == "evt_sim_00006" and not failed:
            failed.append(task.event.id)
            raise ServiceRequestError("storage glitch")
        return original(self, task, queue, priority)

    monkeypatch.setattr(forward.Delivery, "_event", flaky)
    sim.run([Arrival(0, _storm(10))])
    assert "bundle: ServiceRequestError on event evt_sim_00006; 4 event(s) queued one message each" in warned.text
    states = ledger_states(env)
    assert failed == ["evt_sim_00006"] and len(states) == 10  # delivered all the same, from its own message
    assert sorted(states.values()) == ["alert_created"] + ["coalesced"] * 9 and len(emulator.state.alerts) == 1


def test_a_bundle_past_its_time_budget_queues_the_rest_alone(
    sim: Simulation, env: Env, emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch, warned: Any
) -> None:
    monkeypatch.setattr(forward, "BUNDLE_BUDGET_SECONDS", -1.0)  # spent before the first event
    sim.run([Arrival(0, _storm(8))])
    assert "bundle: time budget spent; 8 event(s) queued one message each" in warned.text
    assert len(ledger_states(env)) == 8 and len(emulator.state.alerts) == 1
