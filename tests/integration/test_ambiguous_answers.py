"""Exactly once when Defender's answer is lost: a create answered 5xx, or not answered at all, may
have made the alert. Through the real webhook, Azurite queues and tables and the emulator, on
simulated time: such an event ends with one create call and one alert (found by the search and
adopted), while an answer that proves nothing was made (429, 503 before the service acted) is
retried as before and a create that made nothing is repeated once the search has had its grace."""

from __future__ import annotations

from typing import Any

import pytest

from shared import wiring
from shared.clock import ManualClock
from tests.support import Env, violation
from tools.emulator.server import EmulatorServer
from tools.simulation import Simulation

pytestmark = pytest.mark.integration

CREATE = "/api/alerts/CreateAlertByReference"
EVENT = "evt_sim_00001"


def _creates(emulator: EmulatorServer) -> list[dict[str, Any]]:
    return [c for c in emulator.state.calls if c["path"] == CREATE]


def _searches(emulator: EmulatorServer) -> list[dict[str, Any]]:
    return [c for c in emulator.state.calls if c["path"].startswith("/api/alerts?")]


def _audit(env: Env) -> list[str]:
    return [str(e["path"]) for e in env.table("Audit").list_entities() if e["service"] == "delivery"]


@pytest.mark.parametrize("lost_as", ["500", "502", "503", "504", "timeout", "reset"])
def test_an_alert_whose_answer_was_lost_is_found_and_adopted_never_created_twice(
    lost_as: str,
    sim: Simulation,
    env: Env,
    emulator: EmulatorServer,
    clock: ManualClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    faults = emulator.state.faults
    if lost_as == "timeout":  # the client gives up after 0.5 s; the emulator answers after 1.5 s
        monkeypatch.setenv("HTTP_TIMEOUT_SECONDS", "0.5")
        faults.lost_answer_delay = 1.5
        wiring.reset()
        wiring.use(clock=clock, sender=sim.sender)
    faults.lose_answer, faults.lose_answer_as = 1, lost_as
    faults.index_delay = 60  # and Defender lists the new alert only a minute later
    sim.post([violation(1)])
    sim.run([])

    assert faults.injected.get(f"lost answer {lost_as}") == 1
    (create,) = _creates(emulator)  # one create call, the one that made the alert
    assert create["status"] == (int(lost_as) if lost_as.isdigit() else 200)
    (alert,) = emulator.state.alerts
    assert emulator.state.merged == {}  # no second create merged into it either
    entry = env.table("Ledger").get_entity(EVENT, "event")
    assert entry["state"] == "alert_created" and entry["alert_id"] == alert["id"]
    # the first search came before Defender listed the alert; the delivery waited and looked again
    assert len(_searches(emulator)) == 2
    code = {"500": "500 InternalServerError", "502": "502 BadGateway", "503": "503 ServiceUnavailable"}
    code |= {"504": "504 GatewayTimeout", "timeout": "no answer Timeout", "reset": "no answer ConnectionLost"}
    assert _audit(env) == [f"alert {alert['id']} found after an ambiguous answer ({code[lost_as]})"]


def test_a_5xx_before_defender_acted_is_created_again_after_the_search_grace(
    sim: Simulation, env: Env, emulator: EmulatorServer, clock: ManualClock
) -> None:
    """A gateway 503 that never reached Defender looks the same: the search finds nothing, and the
    event is created once the grace (ALERT_SEARCH_GRACE_SECONDS, 300 s) has passed, not before."""
    emulator.state.faults.fail_next, emulator.state.faults.fail_path = 1, CREATE  # refused before acting
    sim.post([violation(1)])
    start = clock.now()
    sim.run([])

    creates = _creates(emulator)
    assert [c["status"] for c in creates] == [503, 200]
    assert len(emulator.state.alerts) == 1
    second = creates[1]["time"]
    first = creates[0]["time"]
    waited = (_ts(second) - _ts(first)).total_seconds()
    assert 300 <= waited <= 300 + 60, waited  # the grace, plus at most one retry's backoff
    assert len(_searches(emulator)) >= 1 and _audit(env) == []
    assert env.table("Ledger").get_entity(EVENT, "event")["state"] == "alert_created"
    assert clock.now() > start


def test_a_429_proves_nothing_was_made_and_is_retried_without_searching(
    sim: Simulation, emulator: EmulatorServer
) -> None:
    faults = emulator.state.faults
    faults.burst_429, faults.burst_retry_after, faults.fail_path = 1, 20, CREATE
    sim.post([violation(1)])
    sim.run([])
    assert [c["status"] for c in _creates(emulator)] == [429, 200]
    assert _searches(emulator) == []  # nothing to look for
    assert len(emulator.state.alerts) == 1


def _ts(text: str) -> Any:
    from datetime import datetime

    return datetime.fromisoformat(text[:26] + "+00:00")


def test_only_a_connection_never_made_proves_nothing_was_sent() -> None:
    """Real requests failures, typed the way the delivery needs: refused → nothing sent."""
    import requests

    from shared.defender.client import _unanswered
    from tools.azurite import free_port

    closed = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(requests.RequestException) as refused:
        requests.post(closed + "/api/alerts/CreateAlertByReference", json={}, timeout=5)
    error = _unanswered(refused.value, closed, 5)
    assert (error.code, error.nothing_done) == ("Unreachable", True)


def test_a_tls_error_proves_nothing_only_when_the_certificate_was_refused(emulator: EmulatorServer) -> None:
    """The handshake refusing the server's certificate comes before the request; a TLS session
    broken later (after the POST went out) raises the same SSLError class, so it is a lost answer."""
    import requests

    from shared.defender.client import _unanswered

    with pytest.raises(requests.exceptions.SSLError) as untrusted:  # the emulator's CA is not trusted here
        requests.post(emulator.url + CREATE, json={}, timeout=5, verify=True)
    refused = _unanswered(untrusted.value, emulator.url, 5)
    assert (refused.code, refused.nothing_done) == ("Unreachable", True)
    broken = _unanswered(requests.exceptions.SSLError("EOF occurred in violation of protocol"), emulator.url, 5)
    assert (broken.code, broken.nothing_done) == ("ConnectionLost", False)
