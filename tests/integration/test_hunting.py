"""NoxysInteractions rows: through the webhook, Azurite and the real LogsIngestionClient into the
emulated Logs Ingestion endpoint (which checks rows against the DCR's declared columns)."""

from __future__ import annotations

import gzip
import json
from datetime import timedelta
from typing import Any

import pytest
import requests

from shared import wiring
from shared.clock import ManualClock
from shared.events import parse_events
from shared.functions.hunting import ship_rows
from shared.hunting import COLUMNS
from shared.tasks import QueuedEvent
from tests.support import Env, ledger_states, post, sample, signed_headers, violation
from tools.emulator.server import EmulatorServer
from tools.simulation import Arrival, Simulation

pytestmark = pytest.mark.integration
MI = "5d2e6b1a-7c4f-4e39-8a1d-0b9c8d7e6f50"
ALICE = "ce860c412c3cebc4af806281c2881c3c937a1d58"
CANARY = "canary-pii-9b1d@private.example"


@pytest.fixture
def hunting(env: Env, emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch, sim: Simulation) -> Simulation:
    monkeypatch.setenv("IDENTITY_ENDPOINT", f"{emulator.url}/msi/token")
    monkeypatch.setenv("IDENTITY_HEADER", emulator.state.vault.identity_header)
    monkeypatch.setenv("AZURE_CLIENT_ID", MI)
    monkeypatch.setenv("HUNTING_INGESTION_ENDPOINT", emulator.url)
    monkeypatch.setenv("HUNTING_DCR_IMMUTABLE_ID", emulator.state.logs.dcr_id)
    monkeypatch.setenv(
        "HUNTING_EVENT_TYPES",
        "interaction.policy_violated,interaction.high_risk,interaction.created,"
        "alert.severity_critical,alert.severity_high",
    )
    monkeypatch.setenv("HUNTING_QUEUE_NAME", f"{env.queue}-hunting")
    emulator.state.logs.retry_after = 0
    wiring.reset()
    wiring.use(clock=sim.clock, sender=sim.sender)
    return sim


def test_rows_have_the_declared_columns_and_no_pii(hunting: Simulation, env: Env, emulator: EmulatorServer) -> None:
    doc = json.loads(sample("policy_violated"))
    doc["data"]["interaction"]["classifications"][0]["value"] = CANARY
    events = [doc, json.loads(sample("created_not_forwarded")), json.loads(sample("alert_critical"))]
    hunting.run([Arrival(0, events)])
    assert ship_rows().sent == 3
    rows = {r["EventId"]: r for r in emulator.state.logs.rows}
    assert all(list(r) == [name for name, _ in COLUMNS] for r in rows.values())
    pv = rows["evt_01JQ8X4M2Z6N0K3T5V7W9Y1B3D"]
    assert pv["DeviceId"] == ALICE and pv["DefenderAlertId"] == emulator.state.alerts[0]["id"]
    assert (pv["Platform"], pv["PlatformDomain"], pv["RiskScore"]) == ("ChatGPT", "chatgpt.com", 0.95)
    assert (pv["PiiTypes"], pv["PiiCount"], pv["PolicyAction"]) == (["EMAIL"], 1, "block")
    assert pv["UserPrincipalName"] == "alice@acme.fr" and pv["AadDeviceId"] == "5b1c3a9e-0d7f-4c1b-9a8e-2f6d4e3c2b1a"
    assert (pv["Correlation"], pv["ResolvedBy"]) == ("alert_created", "aadDeviceId") and pv["AlertDelaySeconds"] >= 0
    assert pv["CombinedRiskScore"] == 1.0  # Noxys 0.95 + restricted + block + Defender exposure Medium, capped
    assert {f["factor"] for f in pv["RiskFactors"]} == {"classification", "policy_action", "defender_exposure"}
    created = rows["evt_01JQ900000CREATED00000001"]  # kept for hunting, never forwarded
    assert created["EventType"] == "interaction.created" and created["DefenderAlertId"] == ""
    crit = rows["evt_01JQ8Z1111CRIT0000000001"]
    assert (crit["NoxysAlertId"], crit["NoxysAlertSeverity"]) == ("alt_5d5d5d", "critical")
    text = json.dumps(emulator.state.logs.rows)
    assert CANARY not in text and "Please summarise" not in text
    assert wiring.hunting_outbox().count() == 0  # shipped rows are deleted


def test_rows_wait_for_delivery_to_learn_the_ids_but_not_for_ever(
    hunting: Simulation, env: Env, emulator: EmulatorServer, clock: ManualClock
) -> None:
    hunting.post([violation(1)])  # queued, not delivered yet
    assert ship_rows().deferred == 1 and emulator.state.logs.rows == []
    clock.advance(16 * 60)  # delivery still has not happened: ship without the ids
    assert ship_rows().sent == 1
    assert emulator.state.logs.rows[0]["DeviceId"] == "" and emulator.state.logs.rows[0]["EventId"] == "evt_sim_00001"


def test_more_than_one_megabyte_is_split(hunting: Simulation, env: Env, emulator: EmulatorServer) -> None:
    rows: list[tuple[QueuedEvent, str]] = []
    long_name = "Block confidential data " * 40  # with the other long fields, ~1.6 KB per row
    for i in range(700):
        doc = violation(i, policy=str(i))
        doc["data"]["policy"]["name"] = f"{long_name}{i}"
        doc["data"]["interaction"]["id"] = f"int_{i:05d}_" + "x" * 190
        doc["data"]["interaction"]["user_email"] = "u" * 250 + "@acme.example"
        (event,) = parse_events(json.dumps(doc).encode())
        task = QueuedEvent.new(event, hunting.clock.now() - timedelta(hours=1))
        rows.append((task, task.to_text()))
    wiring.hunting_outbox().put(rows)
    assert ship_rows().sent == 700
    calls = emulator.state.logs.calls
    # split into several calls, each body within the 1 MB limit (the emulator answers 413 beyond)
    assert len(calls) >= 2 and all(c["bytes"] <= 1024 * 1024 for c in calls)
    assert sum(c["raw_bytes"] for c in calls) > 1024 * 1024
    assert sorted(r["EventId"] for r in emulator.state.logs.rows) == sorted(f"evt_sim_{i:05d}" for i in range(700))


def test_endpoint_rejects_bodies_over_one_megabyte(emulator: EmulatorServer, hunting: Simulation) -> None:
    token = wiring.identity_credential().get_token("https://monitor.azure.com//.default").token
    body = gzip.compress(b"x" * 10) + b"\0" * (1024 * 1024)
    url = f"{emulator.url}/dataCollectionRules/{emulator.state.logs.dcr_id}/streams/Custom-NoxysInteractions"
    resp = requests.post(
        url,
        params={"api-version": "2023-01-01"},
        data=body,
        timeout=30,
        headers={"Authorization": f"Bearer {token}", "Content-Encoding": "gzip"},
    )
    assert resp.status_code == 413


def test_undeclared_column_is_refused(emulator: EmulatorServer, hunting: Simulation) -> None:
    token = wiring.identity_credential().get_token("https://monitor.azure.com//.default").token
    url = f"{emulator.url}/dataCollectionRules/{emulator.state.logs.dcr_id}/streams/Custom-NoxysInteractions"
    resp = requests.post(
        url,
        params={"api-version": "2023-01-01"},
        json=[{"EventId": "x", "PromptText": "no"}],
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    assert resp.status_code == 400 and "PromptText" in resp.text


def test_outage_loses_nothing_and_delays_no_alert(
    hunting: Simulation, env: Env, emulator: EmulatorServer, clock: ManualClock
) -> None:
    emulator.state.logs.outage = True
    hunting.run([Arrival(0, [violation(i, policy=str(i)) for i in range(5)])])
    assert len(emulator.state.alerts) == 5  # alerts do not wait for the hunting table
    assert set(ledger_states(env).values()) == {"alert_created"}
    report = ship_rows()
    assert (report.sent, report.failed) == (0, 5) and emulator.state.logs.rows == []
    emulator.state.logs.outage = False
    emulator.state.logs.burst_429 = 1  # and a throttled first try, retried by the SDK after Retry-After
    assert ship_rows().sent == 5
    assert sorted(r["EventId"] for r in emulator.state.logs.rows) == [f"evt_sim_{i:05d}" for i in range(5)]


def test_not_configured_means_nothing_is_attempted(env: Env, host: Any, capsys: pytest.CaptureFixture[str]) -> None:
    from ops.cli import main

    body = sample("policy_violated")
    assert post(host, body, signed_headers(body)).status_code == 202
    assert ship_rows().sent == 0
    assert env.queued_texts("noxys-hunting") == []
    assert main(["status"]) == 0
    assert "hunting table NoxysInteractions_CL: not configured" in capsys.readouterr().out


def test_status_counts_rows_waiting(hunting: Simulation, capsys: pytest.CaptureFixture[str]) -> None:
    from ops.cli import main

    hunting.post([violation(1), violation(2, host="BOB-WS-0042")])
    assert main(["status"]) == 0
    assert "hunting table NoxysInteractions_CL: on, 2 row(s) waiting to ship" in capsys.readouterr().out


def test_rows_an_earlier_version_queued_are_moved_and_shipped(
    hunting: Simulation, env: Env, emulator: EmulatorServer
) -> None:
    from shared.config import get_settings
    from shared.wiring import enqueue

    for i in range(40):  # more than one page of the old queue (32 messages)
        (event,) = parse_events(json.dumps(violation(i, policy=str(i))).encode())
        old = QueuedEvent.new(event, hunting.clock.now() - timedelta(hours=1))  # past waiting for delivery
        enqueue(get_settings().hunting_queue_name, old.to_text())
    report = ship_rows()
    assert (report.migrated, report.sent) == (40, 40)
    assert sorted(r["EventId"] for r in emulator.state.logs.rows) == [f"evt_sim_{i:05d}" for i in range(40)]
    assert env.queued_texts(f"{env.queue}-hunting") == [] and wiring.hunting_outbox().count() == 0


def test_outbox_transactions_order_and_a_row_erased_meanwhile(hunting: Simulation, env: Env) -> None:
    from shared.delivery.hunting_outbox import partition_of

    outbox = wiring.hunting_outbox()
    now = hunting.clock.now()
    rows = []
    for i in range(250):  # three transactions in one partition, one row in an older minute
        (event,) = parse_events(json.dumps(violation(i, policy=str(i))).encode())
        task = QueuedEvent.new(event, now - timedelta(minutes=5) if i == 249 else now)
        rows.append((task, task.to_text()))
    outbox.put(rows[:249], partition_of(now))
    outbox.put(rows[249:])
    raw = list(env.table("HuntingOutbox").list_entities())
    assert len(raw) == 250 and {e["PartitionKey"] for e in raw} == {
        partition_of(now),
        partition_of(rows[249][0].received_at),
    }
    assert all("@" in e["user"] and CANARY not in json.dumps(dict(e)) for e in raw)
    waiting = list(outbox.read())
    assert waiting[0].task.event.id == "evt_sim_00249"  # the oldest minute first
    assert sorted(w.task.event.id for w in waiting) == sorted(f"evt_sim_{i:05d}" for i in range(250))
    env.table("HuntingOutbox").delete_entity(waiting[10].partition, waiting[10].row)  # erased meanwhile
    outbox.remove(waiting)  # (Azurite, unlike Azure, accepts a missing row in a transaction: see the unit test)
    assert outbox.count() == 0


def test_a_data_subject_request_finds_and_erases_rows_not_yet_shipped(hunting: Simulation, env: Env) -> None:
    from ops.subject import Subject, SubjectRequests

    bob = violation(2, host="BOB-WS-0042")
    bob["data"]["interaction"]["user_email"] = "bob@acme.fr"
    hunting.post([violation(1), bob])
    requests_ = SubjectRequests(wiring.table)
    found = requests_.find(Subject.of("email", "Alice@Acme.fr"))
    assert [r["event_id"] for r in found.rows["HuntingOutbox"]] == ["evt_sim_00001"]
    requests_.erase(found)
    assert [e["event_id"] for e in env.table("HuntingOutbox").list_entities()] == ["evt_sim_00002"]
    assert requests_.find(Subject.of("email", "alice@acme.fr")).counts()["HuntingOutbox"] == 0
