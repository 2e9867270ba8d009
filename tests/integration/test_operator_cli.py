"""replay and export-audit, against Azurite, as an operator runs them."""

from __future__ import annotations

import base64
import csv
import io
import json
from datetime import timedelta
from pathlib import Path

import pytest

from ops.cli import main
from shared import wiring
from shared.clock import ManualClock
from tests.support import Env, ledger_states, violation
from tools.emulator.server import EmulatorServer
from tools.simulation import Arrival, Simulation

pytestmark = pytest.mark.integration


@pytest.fixture
def refused(sim: Simulation, env: Env, emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch) -> Simulation:
    """Two events dead-lettered by a 403 (a missing permission), then the permission 'granted'."""
    monkeypatch.setattr(
        emulator.state.clients[(next(iter(emulator.state.tenants)), env.values["DEFENDER_CLIENT_ID"])],
        "roles",
        ["Machine.Read.All"],
    )
    sim.run([Arrival(0, [violation(1), violation(2, host="BOB-WS-0042")])])
    assert set(ledger_states(env).values()) == {"dead_lettered"}
    emulator.state.clients[(next(iter(emulator.state.tenants)), env.values["DEFENDER_CLIENT_ID"])].roles = [
        "Alert.ReadWrite.All",
        "Machine.Read.All",
        "AdvancedQuery.Read.All",
        "SecurityIncident.ReadWrite.All",
    ]
    wiring.reset()  # a fresh credential asks for a fresh token, which carries the new roles
    wiring.use(clock=sim.clock, sender=sim.sender)
    return sim


def test_replay_dry_run_moves_nothing(refused: Simulation, env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["replay", "--all", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "2 event(s) would be replayed" in out and "Forbidden" in out
    assert len(list(env.table("DeadLetters").list_entities())) == 2


def test_replay_by_id_then_the_alert_is_made(
    refused: Simulation, env: Env, emulator: EmulatorServer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["replay", "--id", "evt_sim_00001", "--quiet"]) == 0
    assert "1 replayed" in capsys.readouterr().out
    refused.run([])
    assert ledger_states(env) == {"evt_sim_00001": "alert_created", "evt_sim_00002": "dead_lettered"}
    assert [e["event_id"] for e in env.table("DeadLetters").list_entities()] == ["evt_sim_00002"]
    # replaying something already delivered never makes a second alert
    assert main(["replay", "--reason", "forbidden", "--quiet"]) == 0
    refused.run([])
    assert len(emulator.state.alerts) == 2


def test_replay_needs_a_selection() -> None:
    assert main(["replay"]) == 2


def test_replay_moves_poison_messages_back(
    sim: Simulation, env: Env, emulator: EmulatorServer, capsys: pytest.CaptureFixture[str]
) -> None:
    from azure.storage.queue import QueueClient

    sim.post([violation(9)])
    (text,) = env.queued_texts()
    env.queue_client().clear_messages()
    poison = QueueClient.from_connection_string(env.azurite.connection_string, f"{env.queue}-poison")
    poison.create_queue()
    poison.send_message(base64.b64encode(text.encode()).decode())
    assert main(["replay", "--reason", "poison", "--dry-run"]) == 0
    assert "1 event(s) would be replayed" in capsys.readouterr().out
    assert main(["replay", "--reason", "poison", "--quiet"]) == 0  # the dry run hid nothing
    assert "1 replayed" in capsys.readouterr().out
    sim.run([])
    assert ledger_states(env) == {"evt_sim_00009": "alert_created"}
    assert env.queued_texts(f"{env.queue}-poison") == []


def test_export_audit_jsonl_and_csv(
    sim: Simulation, env: Env, clock: ManualClock, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import time

    sim.run([Arrival(0, [violation(20)])])
    since = time.strftime("%Y-%m-%dT00:00:00Z", time.gmtime(time.time() - 86400))
    assert main(["export-audit", "--since", since, "--format", "jsonl"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {r["path"] for r in rows} >= {"/api/advancedqueries/run", "/api/alerts/CreateAlertByReference"}
    assert all(
        set(r)
        == {
            "time",
            "service",
            "method",
            "path",
            "status",
            "latency_ms",
            "event_id",
            "correlation_id",
            "attempt",
            "error_code",
        }
        for r in rows
    )
    out = tmp_path / "audit.csv"
    assert main(["export-audit", "--since", since, "--format", "csv", "--output", str(out)]) == 0
    table = list(csv.DictReader(io.StringIO(out.read_text())))
    assert len(table) == len(rows) and table[0].keys() >= {"time", "status", "event_id"}
    assert main(["export-audit", "--since", "yesterday"]) == 2


def test_audit_retention_deletes_old_days(env: Env) -> None:
    from datetime import UTC, datetime

    from shared.audit import AuditTrail
    from shared.defender.errors import CallRecord

    trail = AuditTrail(wiring.table("Audit"))
    now = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
    for age in (0, 89, 91, 200):
        t = (now - timedelta(days=age)).timestamp()
        trail.record(CallRecord(t, "mde", "GET", "/api/machines", 200, 1.0, None, None, "evt", 0))
    assert trail.purge(now, 90) == 2
    left = sorted(e["PartitionKey"] for e in env.table("Audit").list_entities())
    assert left == ["2026-08-30", "2026-11-27"]
