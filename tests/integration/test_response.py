"""Automated response through the real Azurite queue against the emulator: a repeat-violation
storm isolates its device once, tags it, opens one ticket, respects the cooldown and the hourly
cap; a dry run sends nothing and says what it would have done; an excluded device is never
touched; a duplicate task or a worker dying after the Defender call never repeats an action; a
bad rules file is refused with the field named; the combined score explains itself on the alert."""

from __future__ import annotations

import base64
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from ops.cli import main
from shared import wiring
from tests.support import Env, ledger_states, observed, strong_device, violation
from tools.emulator.server import EmulatorServer
from tools.simulation import Arrival, Simulation

pytestmark = pytest.mark.integration
ALICE = "ce860c412c3cebc4af806281c2881c3c937a1d58"
DAVE = "7db3249bb0cbe007e5cf472545cf46a86387c809"
TICKET_SECRET = "whsec_" + base64.b64encode(b"ticket-relay-shared-secret-0001").decode()
STORM_RULE: dict[str, Any] = {
    "name": "Auto-isolate devices with repeated violations",
    "when": {
        "event_types": ["interaction.policy_violated"],
        "repeat": {"count": 3, "within_minutes": 60, "per": "device"},
        "exclude_device_tags": ["finance"],
    },
    "then": [
        {"action": "isolate", "isolation_type": "Selective"},
        {"action": "tag_device", "tag": "NoxysRisk"},
        {"action": "ticket"},
    ],
    "dry_run": False,
}


def _use(sim: Simulation, env: Env, emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch, rules: Path) -> None:
    monkeypatch.setenv("RESPONSE_RULES_FILE", str(rules))
    monkeypatch.setenv("TICKET_URL", f"{emulator.url}/tickets")
    monkeypatch.setenv("TICKET_SIGNING_SECRET", TICKET_SECRET)
    emulator.state.response.ticket_secret = TICKET_SECRET
    wiring.reset()
    wiring.use(clock=sim.clock, sender=sim.sender)


def _rules(tmp_path: Path, *rules: dict[str, Any], isolations: int = 5, cooldown: int = 60) -> Path:
    path = tmp_path / "rules.json"
    limits = {"max_isolations_per_hour": isolations, "device_cooldown_minutes": cooldown}
    path.write_text(json.dumps({"rules": list(rules), "limits": limits}))
    return path


def _storm(
    first: int, n: int, host: str, every: float = 60.0, start: float = 0.0, *, strong: bool = False
) -> list[Arrival]:
    """Events naming the device by host name; ``strong``: by host name and IP address, the two
    identifiers a destructive action needs (a name alone is not enough to isolate it)."""
    device = strong_device(host) if strong else {"hostname": host}
    return [
        Arrival(start + i * every, [violation(first + i, host=host, device=device, policy="storm")]) for i in range(n)
    ]


def _actions(emulator: EmulatorServer, machine: str, kind: str = "Isolate") -> list[dict[str, Any]]:
    return [a for a in emulator.state.response.actions if a["machineId"] == machine and a["type"] == kind]


def _machine(emulator: EmulatorServer, machine_id: str) -> dict[str, Any]:
    return next(m for m in emulator.state.machines if m["id"] == machine_id)


def _response_rows(env: Env) -> list[dict[str, Any]]:
    return [dict(e) for e in env.table("Responses").list_entities() if e["PartitionKey"] != "guard"]


def test_a_storm_isolates_once_tags_and_opens_one_ticket_then_cooldown_and_hourly_cap_hold(
    sim: Simulation, env: Env, emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    _use(sim, env, emulator, monkeypatch, _rules(tmp_path, STORM_RULE, isolations=1))
    sim.run(_storm(1, 8, "ALICE-LAPTOP", strong=True) + _storm(20, 4, "DAVE-MBP", start=30, strong=True))

    (isolation,) = _actions(emulator, ALICE)
    assert isolation["scope"] == "Selective" and isolation["status"] == "Succeeded"  # followed to its end
    assert "NoxysRisk" in _machine(emulator, ALICE)["machineTags"]
    assert [t["body"]["device"]["defender_machine_id"] for t in emulator.state.response.tickets].count(ALICE) == 1
    # Dave's storm meets the rule within the hour, but the hour's single isolation is taken
    assert _actions(emulator, DAVE) == [] and "NoxysRisk" in _machine(emulator, DAVE)["machineTags"]
    rows = _response_rows(env)
    skipped = [r["detail"] for r in rows if r["state"] == "skipped"]
    assert "response circuit open: hourly cap on isolate reached (1, max_per_hour.isolate)" in skipped
    assert sum(1 for d in skipped if d.startswith("device cooldown until")) >= 3 * 5  # Alice's later events
    done = {(r["machine_id"], r["action"]): r["state"] for r in rows if r["state"] not in ("skipped",)}
    assert done[(ALICE, "isolate")] == "Succeeded" and done[(ALICE, "ticket")] == "done"
    alert = next(a for a in emulator.state.alerts if a["machineId"] == ALICE)
    comments = [c["comment"] for c in alert["comments"]]
    assert any(
        "Noxys response, rule 'Auto-isolate" in c and "isolate the device (Selective): sent" in c for c in comments
    )
    assert any("isolate on the device Succeeded" in c for c in comments)
    audit = [dict(e) for e in env.table("Audit").list_entities() if e["service"] == "response"]
    assert any(a["method"] == "ISOLATE" and a["path"].startswith("Succeeded") for a in audit)
    assert env.queued_texts(f"{env.queue}-poison") == []
    assert main(["status"]) == 0
    said = capsys.readouterr().out
    assert "automated response: 1 rule(s), 1 live (Auto-isolate devices with repeated violations)" in said
    assert "isolate Succeeded 1" in said and "isolate skipped" in said
    out = tmp_path / "report.json"
    since, until = (sim.clock.now() - timedelta(days=1)).isoformat(), (sim.clock.now() + timedelta(hours=1)).isoformat()
    assert main(["report", "--since", since, "--until", until, "--format", "json", "--output", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["response_actions"].startswith("5 action(s) taken on devices")  # Alice 3; Dave: tag and ticket
    assert ("isolate", "Succeeded") in {(a["action"], a["state"]) for a in doc["actions"]}
    assert next(d for d in doc["devices"] if d["name"].lower() == "alice-laptop")["actions"] == 3


def test_a_dry_run_sends_nothing_and_says_what_it_would_have_done(
    sim: Simulation, env: Env, emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _use(sim, env, emulator, monkeypatch, _rules(tmp_path, STORM_RULE | {"dry_run": True}))
    sim.run(_storm(1, 4, "ALICE-LAPTOP"))
    assert emulator.state.response.actions == [] and emulator.state.response.tickets == []
    assert "NoxysRisk" not in (_machine(emulator, ALICE).get("machineTags") or [])
    assert not [c for c in emulator.state.calls if c["method"] == "POST" and "/api/machines/" in c["path"]]
    comments = [c["comment"] for a in emulator.state.alerts for c in a["comments"]]
    said = [c for c in comments if c.startswith("Noxys response (dry run: nothing was sent)")]
    assert said and "would isolate the device (Selective)" in said[0] and "would open a ticket" in said[0]
    assert {r["state"] for r in _response_rows(env) if r["action"] != "comment"} == {"dry_run"}


def test_an_excluded_device_is_never_touched(
    sim: Simulation, env: Env, emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _use(sim, env, emulator, monkeypatch, _rules(tmp_path, STORM_RULE))
    bob = {"hostname": "bob-ws-0042.ACME.local"}  # the active record carries the tag "finance"
    sim.run([Arrival(i * 60, [violation(1 + i, device=bob, platform="deepseek", policy="s")]) for i in range(5)])
    assert set(ledger_states(env).values()) == {"alert_created", "coalesced"}
    assert emulator.state.response.actions == [] and emulator.state.response.tickets == []
    assert not [c for c in emulator.state.calls if c["method"] == "POST" and "/tags" in c["path"]]
    excluded = [dict(e) for e in env.table("Audit").list_entities() if e["service"] == "response"]
    assert excluded and all("device tag finance" in e["path"] for e in excluded)


def test_duplicate_tasks_and_a_worker_dying_after_the_call_never_repeat_an_action(
    sim: Simulation, env: Env, emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from shared.response.store import ResponseStore

    _use(sim, env, emulator, monkeypatch, _rules(tmp_path, STORM_RULE, cooldown=0))
    real_send, real_save, died = sim.sender.send, ResponseStore.save, list[str]()

    def twice(queue: str, text: str, delay: float) -> None:  # at-least-once: every response task twice
        real_send(queue, text, delay)
        if '"kind":"response"' in text:
            real_send(queue, text, delay)

    def die_once(self: ResponseStore, row: Any) -> None:
        if row.state == "sent" and not died:
            died.append(row.event_id)
            raise RuntimeError("worker killed after the Defender call, before recording it")
        real_save(self, row)

    monkeypatch.setattr(sim.sender, "send", twice)
    monkeypatch.setattr(ResponseStore, "save", die_once)
    sim.run(_storm(1, 5, "ALICE-LAPTOP", strong=True))
    assert died  # the crash happened
    events = [a["requestorComment"].rsplit("(event ", 1)[1] for a in _actions(emulator, ALICE)]
    assert events and len(events) == len(set(events))  # one isolation per event: no duplicate, no retry resent
    tickets = [t["webhook_id"] for t in emulator.state.response.tickets]
    assert tickets and len(tickets) == len(set(tickets))
    (row,) = [r for r in _response_rows(env) if r["event_id"] == died[0] and r["action"] == "isolate"]
    assert row["state"] == "Succeeded"  # adopted after the crash, then followed to its end
    paths = [str(e.get("path")) for e in env.table("Audit").list_entities() if e["event_id"] == died[0]]
    # the crashed attempt recorded nothing after its call: the action's "sent" row is the adoption's
    assert any(p.startswith("sent: rule") for p in paths if "found after" in p or "action" in p), paths


def test_a_bad_rules_file_is_named_and_switches_response_off_never_the_alerts(
    sim: Simulation, env: Env, emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    bad = _rules(tmp_path, STORM_RULE | {"then": [{"action": "isolate", "isolation_type": "Total"}]})
    assert main(["rules", "check", str(bad)]) == 1
    assert "rules[0].then[0].isolation_type: Input should be 'Full' or 'Selective'" in capsys.readouterr().err
    _use(sim, env, emulator, monkeypatch, bad)
    sim.run(_storm(1, 4, "ALICE-LAPTOP"))
    assert set(ledger_states(env).values()) == {"alert_created", "coalesced"} and emulator.state.alerts
    assert env.queued_texts(f"{env.queue}-poison") == [] and emulator.state.response.actions == []
    assert main(["status"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[1].startswith("  ! CONFIGURATION: RESPONSE_RULES_FILE: ")  # status leads with it
    assert "isolation_type: Input should be 'Full' or 'Selective'" in out.splitlines()[1]
    assert "automated response: OFF" in out and "alerts are delivered as usual" in out


def test_the_combined_score_explains_itself_on_the_alert(
    sim: Simulation, env: Env, emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _use(sim, env, emulator, monkeypatch, _rules(tmp_path, STORM_RULE | {"dry_run": True}))
    sim.run(_storm(1, 1, "ALICE-LAPTOP"))
    (alert,) = emulator.state.alerts
    line = alert["description"].splitlines()[1]
    assert line.startswith("Combined risk ") and "Defender exposure Medium (+0.01)" in line
    (entry,) = [dict(e) for e in env.table("Ledger").list_entities()]
    assert entry["combined_risk"] >= 0.95 and "defender_exposure" in entry["risk_factors"]


def test_explain_and_rules_try_judge_an_event_against_the_windows_as_they_stand(
    sim: Simulation, env: Env, emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    rules = _rules(tmp_path, STORM_RULE | {"dry_run": True})
    _use(sim, env, emulator, monkeypatch, rules)
    sim.run(_storm(1, 4, "ALICE-LAPTOP"))
    calls = len(emulator.state.calls)
    nxt = tmp_path / "next.json"
    doc = violation(9, policy="storm")
    doc["created_at"] = doc["data"]["interaction"]["occurred_at"] = sim.clock.now().strftime("%Y-%m-%dT%H:%M:%SZ")
    nxt.write_text(json.dumps(doc))
    assert main(["explain", str(nxt)]) == 0
    out = capsys.readouterr().out
    assert "5 violations on this device in 1 h (+0.08)" in out and "Defender exposure Medium (+0.01)" in out
    assert main(["rules", "try", str(rules), str(nxt)]) == 0
    out = capsys.readouterr().out
    assert "✓ Auto-isolate devices with repeated violations (dry run" in out and "nothing was sent" in out
    posted = [c for c in emulator.state.calls[calls:] if c["method"] != "GET" and "advancedqueries" not in c["path"]]
    assert posted == []  # judged, not acted on
    wiring.flush()  # anything the commands had recorded would be written now
    assert [o for o in observed(env) if o[1] == "evt_sim_00009"] == []  # and not counted
    assert observed(env)  # (while the storm's events were)


def test_test_connection_names_the_permission_a_live_rule_lacks(
    sim: Simulation, env: Env, emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    _use(sim, env, emulator, monkeypatch, _rules(tmp_path, STORM_RULE))
    app = emulator.state.clients[(next(iter(emulator.state.tenants)), env.values["DEFENDER_CLIENT_ID"])]
    app.roles = [r for r in app.roles if r != "Machine.Isolate"]
    wiring.reset()
    assert main(["test-connection"]) == 0  # the alert path works; the rule's loss is a warning
    out = capsys.readouterr().out
    assert "Machine.Isolate" in out and "Auto-isolate devices with repeated violations" in out
    assert main(["test-connection", "--strict"]) == 1
