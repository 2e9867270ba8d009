"""The delivery core, through the real webhook, Azurite queues/tables and the emulator, on
simulated time: exactly one alert per event, paced to Defender's quota, nothing lost."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta
from typing import Any

import pytest

from shared import wiring
from shared.clock import ManualClock
from tests.support import DEVICES, Env, critical, ledger_states, send_raw, violation
from tools.emulator.server import EmulatorServer
from tools.simulation import Arrival, Simulation

pytestmark = pytest.mark.integration

ALICE = "ce860c412c3cebc4af806281c2881c3c937a1d58"
GINA = "76000e420d9dceac9bd20a575b4b3676fedaf160"


# ------------------------------------------------------------------------------ idempotency
def test_same_message_delivered_three_times_makes_one_alert(
    sim: Simulation, env: Env, emulator: EmulatorServer
) -> None:
    sim.post([violation(1)])
    (text,) = env.queued_texts()
    send_raw(env, env.queue, text)
    send_raw(env, env.queue, text)
    sim.run([])
    assert len(emulator.state.alerts) == 1
    assert ledger_states(env) == {"evt_sim_00001": "alert_created"}
    assert [c["path"] for c in emulator.state.calls].count("/api/alerts/CreateAlertByReference") == 1


def test_noxys_retrying_the_same_post_makes_one_alert(sim: Simulation, env: Env, emulator: EmulatorServer) -> None:
    event = violation(2)
    for _ in range(3):
        sim.post([event])
    sim.run([])
    assert len(emulator.state.alerts) == 1


def test_crash_between_defender_call_and_ledger_write_makes_one_alert(
    sim: Simulation, env: Env, emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shared.delivery.ledger import Ledger

    real_mark = Ledger.mark_created
    crashes: list[str] = []

    def crash_once(self: Ledger, entry: Any, *args: Any, **kw: Any) -> None:
        if not crashes:
            crashes.append(entry.event_id)
            raise RuntimeError("worker killed after CreateAlertByReference")
        real_mark(self, entry, *args, **kw)

    monkeypatch.setattr(Ledger, "mark_created", crash_once)
    sim.post([violation(3)])
    sim.run([])
    assert crashes == ["evt_sim_00003"]
    assert len(emulator.state.alerts) == 1
    entry = env.table("Ledger").get_entity("evt_sim_00003", "event")
    assert entry["state"] == "alert_created" and entry["alert_id"] == emulator.state.alerts[0]["id"]
    # the recovery looked the alert up instead of creating a second one
    paths = [c["path"] for c in emulator.state.calls]
    assert paths.count("/api/alerts/CreateAlertByReference") == 1
    assert any(p.startswith("/api/alerts?") for p in paths)


# ------------------------------------------------------------------------------ pacing & priority
def test_events_paced_without_a_single_429_none_lost_criticals_first(
    sim: Simulation, env: Env, emulator: EmulatorServer, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COALESCE_WINDOW_MINUTES", "0")  # every event needs its own alert here
    wiring.reset()
    wiring.use(clock=clock, sender=sim.sender)
    # 45 events are three minutes of the 15-a-minute quota: long enough for criticals arriving at
    # 60 and 90 s to overtake a backlog, small enough to run in seconds.
    start = clock.now()
    normal = [violation(i, at=start) for i in range(45)]
    crits = [critical(i, start + timedelta(seconds=60 + 30 * i)) for i in range(2)]
    arrivals = [Arrival(0, normal[k : k + 15]) for k in range(0, 45, 15)]
    arrivals += [Arrival(60 + 30 * i, [c]) for i, c in enumerate(crits)]
    sim.run(arrivals)

    state = emulator.state.snapshot()
    assert state["throttled"] == {}, "the connector caused 429s"
    assert len(state["alerts"]) == 47
    assert set(ledger_states(env).values()) == {"alert_created"} and len(ledger_states(env)) == 47
    created = {a["title"]: datetime.fromisoformat(a["alertCreationTime"][:26] + "+00:00") for a in state["alerts"]}
    crit_waits = [
        (created[f"Noxys critical alert - Critical exfiltration {i}"] - sim.arrived_at[f"evt_crit_{i:03d}"])
        for i in range(2)
    ]
    last_normal = max(t for title, t in created.items() if title.startswith("Policy violation"))
    assert max(crit_waits) <= timedelta(seconds=60), crit_waits
    assert all(sim.arrived_at[f"evt_crit_{i:03d}"] + w < last_normal for i, w in enumerate(crit_waits))
    # and the quota really was the ceiling: never more than 15 creations in any 60 s
    times = sorted(created.values())
    assert max(sum(1 for u in times if t <= u < t + timedelta(seconds=60)) for t in times) <= 15


def test_defender_429_is_waited_out_never_poisoned(sim: Simulation, env: Env, emulator: EmulatorServer) -> None:
    emulator.state.faults.burst_429 = 3
    emulator.state.faults.burst_retry_after = 40
    sim.post([violation(4)])
    sim.run([])
    assert len(emulator.state.alerts) == 1
    assert emulator.state.faults.injected == {"429": 3}
    assert env.queued_texts(f"{env.queue}-poison") == []


def test_server_errors_back_off_then_succeed(
    sim: Simulation, env: Env, emulator: EmulatorServer, clock: ManualClock
) -> None:
    start = clock.now()
    emulator.state.faults.fail_next = 3
    sim.post([violation(5)])
    sim.run([])
    assert len(emulator.state.alerts) == 1
    entry = env.table("Ledger").get_entity("evt_sim_00005", "event")
    assert entry["state"] == "alert_created" and entry["attempts"] == 4
    # 30 s, 60 s, 120 s (±20 % jitter) of backoff went by on the simulated clock
    assert timedelta(seconds=160) <= clock.now() - start <= timedelta(seconds=260)


def test_gives_up_after_the_maximum_age_with_the_reason(
    sim: Simulation, env: Env, emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch, clock: ManualClock
) -> None:
    monkeypatch.setenv("MAX_EVENT_AGE_HOURS", "2")
    wiring.reset()
    wiring.use(clock=clock, sender=sim.sender)
    emulator.state.faults.error_rate = 1.0
    sim.post([violation(6)])
    sim.run([])
    assert emulator.state.alerts == []
    (letter,) = env.table("DeadLetters").list_entities()
    assert letter["event_id"] == "evt_sim_00006" and "gave up after 2 h" in letter["reason"]
    assert "503" in letter["reason"]
    assert ledger_states(env) == {"evt_sim_00006": "dead_lettered"}


# ------------------------------------------------------------------------------ coalescing
def test_storm_of_200_events_on_5_devices_is_5_alerts_with_exact_counts(
    sim: Simulation, env: Env, emulator: EmulatorServer, clock: ManualClock
) -> None:
    start = clock.now()
    hosts = list(DEVICES)
    events = [violation(i, host=hosts[i % 5], policy="storm", at=start + timedelta(seconds=i // 2)) for i in range(200)]
    sim.run([Arrival(i // 2, [e]) for i, e in enumerate(events)])

    alerts = emulator.state.alerts
    assert len(alerts) == 5
    noted: dict[str, int] = {}
    for alert in alerts:
        for c in alert["comments"]:
            m = re.match(r"Noxys: (\d+) more violations? since .*\((\d+) in total", c["comment"])
            assert m, c["comment"]
            noted[alert["id"]] = noted.get(alert["id"], 0) + int(m.group(1))
    assert sorted(noted.values()) == [39] * 5  # every event beyond each alert's own is counted once
    assert len(emulator.state.calls_of("/api/alerts/CreateAlertByReference")) == 5
    states = ledger_states(env)
    assert list(states.values()).count("alert_created") == 5 and list(states.values()).count("coalesced") == 195


# ------------------------------------------------------------------------------ device resolution
def test_each_hard_device_case_ends_in_its_documented_state(
    sim: Simulation, env: Env, emulator: EmulatorServer
) -> None:
    cases = [
        violation(10, device={"hostname": "ZED-PC"}),  # unknown to Defender
        violation(11, device={"ip_address": "10.1.99.1"}),  # two kiosks behind one NAT address
        violation(12, device={"ip_address": "10.1.8.8"}),  # only the IP: one machine
        violation(13, host="DAVE-MBP", platform="mistral"),  # device known, never reached Mistral
        violation(14, device={"hostname": "bob-ws-0042.ACME.local"}, platform="deepseek"),  # FQDN, odd case, 2 records
        violation(15, device={}),  # a device object with nothing in it
    ]
    sim.run([Arrival(0, cases)])
    states = {k: v for k, v in ledger_states(env).items()}
    assert states == {
        "evt_sim_00010": "no_device",
        "evt_sim_00011": "no_device",
        "evt_sim_00012": "alert_created",
        "evt_sim_00013": "no_anchor",
        "evt_sim_00014": "alert_created",
        "evt_sim_00015": "no_device",
    }
    ledger = {e["event_id"]: e for e in env.table("Ledger").list_entities()}
    assert "ambiguous: 2 machines used 10.1.99.1" in ledger["evt_sim_00011"]["reason"]
    assert ledger["evt_sim_00012"]["resolved_by"] == "ip" and ledger["evt_sim_00012"]["machine_id"] == GINA
    assert ledger["evt_sim_00014"]["machine_id"] == "f07bc4f4807706075293a1cbe006c71233cae764"  # the active one
    assert "no connection to chat.mistral.ai" in ledger["evt_sim_00013"]["reason"]
    assert env.queued_texts() == [] and env.queued_texts(f"{env.queue}-poison") == []


def test_device_lookups_are_cached_across_events(sim: Simulation, env: Env, emulator: EmulatorServer) -> None:
    sim.run([Arrival(0, [violation(i, policy=str(i)) for i in range(20, 30)])])
    machine_calls = [c for c in emulator.state.calls if c["path"].startswith("/api/machines")]
    assert len(machine_calls) == 1  # aadDeviceId is absent: hostname lookup once, then the cache
    unknown = [violation(40 + i, device={"hostname": "ZED-PC"}, policy=str(i)) for i in range(5)]
    sim.run([Arrival(0, unknown)])
    assert len([c for c in emulator.state.calls if "zed-pc" in c["path"]]) == 1  # "not found" is cached too


def test_graph_fallback_raises_the_alert_without_an_anchor(
    sim: Simulation, env: Env, emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch, clock: ManualClock
) -> None:
    monkeypatch.setenv("ALERT_FALLBACK", "graph")
    wiring.reset()
    wiring.use(clock=clock, sender=sim.sender)
    sim.run([Arrival(0, [violation(50, host="DAVE-MBP", platform="mistral")])])
    (alert,) = emulator.state.graph_alerts  # the emulator refuses a non-MITRE category or no entity
    assert alert["severity"] == "high" and alert["title"].startswith("Policy violation")
    assert alert["category"] == "Exfiltration"
    assert {
        "entityType": "device",
        "entityIdentifier": "deviceId",
        "identifierValue": "7db3249bb0cbe007e5cf472545cf46a86387c809",
        "role": "impacted",
    } in alert["entityDefinitions"]
    assert ledger_states(env) == {"evt_sim_00050": "alert_created"}


# ------------------------------------------------------------------------------ incidents & audit
@pytest.mark.parametrize("mode", ["graph", "legacy"])
def test_incident_is_tagged(
    mode: str, sim: Simulation, env: Env, emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch, clock: ManualClock
) -> None:
    monkeypatch.setenv("INCIDENT_TAGGING", mode)
    wiring.reset()
    wiring.use(clock=clock, sender=sim.sender)
    sim.run([Arrival(0, [violation(60), violation(61, host="BOB-WS-0042")])])
    assert len(emulator.state.incidents) == 2
    assert all(i["tags"] == ["Noxys", "AI Firewall"] for i in emulator.state.incidents.values())


def test_an_incident_that_comes_later_is_tagged_later(
    sim: Simulation, env: Env, emulator: EmulatorServer, clock: ManualClock
) -> None:
    """CreateAlertByReference answered without an incident id: the alert is read again, paced and
    with backoff, until Defender has correlated it, and then the incident is tagged."""
    emulator.state.incident_delay = 200
    start = clock.now()
    sim.run([Arrival(0, [violation(62)])])
    (alert,) = emulator.state.alerts
    (incident,) = emulator.state.incidents.values()
    assert alert["incidentId"] == incident["incidentId"] and incident["tags"] == ["Noxys", "AI Firewall"]
    lookups = [c for c in emulator.state.calls if c["method"] == "GET" and c["path"] == f"/api/alerts/{alert['id']}"]
    assert len(lookups) == 3  # at 60 s and 120 s later (none yet), then 240 s later (found)
    assert clock.now() - start < timedelta(minutes=10)


def test_incident_tagging_gives_up_after_a_bounded_number_of_lookups(
    sim: Simulation, env: Env, emulator: EmulatorServer, caplog: pytest.LogCaptureFixture
) -> None:
    emulator.state.incident_delay = 10 * 86400  # never within the lookups
    sim.run([Arrival(0, [violation(63)])])
    lookups = [c for c in emulator.state.calls if c["method"] == "GET" and c["path"].startswith("/api/alerts/da")]
    assert len(lookups) == 8 and emulator.state.incidents == {}
    assert "no incident after 8 lookups" in caplog.text


def test_tagging_waits_out_a_throttled_graph(sim: Simulation, env: Env, emulator: EmulatorServer) -> None:
    sim.post([violation(62)])
    # the alert call succeeds; the incident read right after it is throttled once
    original = emulator.state.create_alert

    def create_then_throttle(body: Any) -> dict[str, Any]:
        alert = original(body)
        emulator.state.faults.burst_429 = 1
        return alert

    emulator.state.create_alert = create_then_throttle  # type: ignore[method-assign]
    sim.run([])
    (incident,) = emulator.state.incidents.values()
    assert incident["tags"] == ["Noxys", "AI Firewall"]


def test_every_call_is_audited_without_secrets(sim: Simulation, env: Env, emulator: EmulatorServer) -> None:
    sim.run([Arrival(0, [violation(70)])])
    rows = list(env.table("Audit").list_entities())
    paths = [r["path"] for r in rows]
    assert any(p.startswith("/api/machines") for p in paths)
    assert "/api/advancedqueries/run" in paths and "/api/alerts/CreateAlertByReference" in paths
    create = next(r for r in rows if r["path"] == "/api/alerts/CreateAlertByReference")
    assert create["status"] == 200 and create["event_id"] == "evt_sim_00070" and create["method"] == "POST"
    assert create["latency_ms"] >= 0 and create["service"] == "mde"
    text = json.dumps([dict(r) for r in rows])
    assert "emulator-client-secret" not in text and "eyJ" not in text  # no secret, no JWT
    assert "Please summarise" not in text


def test_paced_events_keep_their_order_and_do_not_stampede(
    sim: Simulation, env: Env, emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch, clock: ManualClock
) -> None:
    monkeypatch.setenv("COALESCE_WINDOW_MINUTES", "0")
    wiring.reset()
    wiring.use(clock=clock, sender=sim.sender)
    sim.run([Arrival(0, [violation(100 + i, policy=f"p{i}") for i in range(40)])])
    assert len(emulator.state.alerts) == 40
    made = [a["description"].split("Noxys event id: ")[1].split()[0] for a in emulator.state.alerts]
    assert made == [f"evt_sim_{100 + i:05d}" for i in range(40)]  # alerts made in the order of arrival
    # each deferred event came back about once, at its slot, rather than over and over
    assert sim.sender.sent_delayed <= 2 * 40


def test_token_outage_is_retried_not_dead_lettered(
    sim: Simulation, env: Env, emulator: EmulatorServer, clock: ManualClock
) -> None:
    emulator.state.faults.token_outage = True
    sim.run([Arrival(0, [violation(80)])], horizon=timedelta(minutes=10))
    entry = env.table("Ledger").get_entity("evt_sim_00080", "event")
    assert entry["state"] == "received" and "TokenError" in entry["last_problem"]
    assert sim.sender.pending == 1  # kept, waiting for its next try
    # The outage ends. (MSAL itself refuses to re-ask for a few real seconds after a 5xx, which
    # simulated time compresses away; a fresh worker stands for those seconds passing.)
    emulator.state.faults.token_outage = False
    wiring.reset()
    wiring.use(clock=clock, sender=sim.sender)
    sim.run([])
    assert emulator.state.faults.injected["token_outage"] >= 1
    assert ledger_states(env) == {"evt_sim_00080": "alert_created"}


def test_timeout_after_defender_created_the_alert_still_makes_one_alert(
    sim: Simulation, env: Env, emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch, clock: ManualClock
) -> None:
    monkeypatch.setenv("HTTP_TIMEOUT_SECONDS", "0.5")
    wiring.reset()
    wiring.use(clock=clock, sender=sim.sender)
    emulator.state.faults.latency, emulator.state.faults.latency_path = 1.0, "CreateAlertByReference"

    def fix_latency(now: datetime) -> None:
        if emulator.state.faults.injected.get("latency"):
            emulator.state.faults.latency = 0.0

    sim.on_step = fix_latency
    sim.run([Arrival(0, [violation(81)])])
    assert len(emulator.state.alerts) == 1  # created during the timed-out call, found, not repeated
    assert len(emulator.state.calls_of("/api/alerts/CreateAlertByReference")) == 1
    entry = env.table("Ledger").get_entity("evt_sim_00081", "event")
    assert entry["state"] == "alert_created" and entry["alert_id"] == emulator.state.alerts[0]["id"]
