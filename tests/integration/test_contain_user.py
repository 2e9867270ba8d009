"""``contain_user`` through the real webhook, Azurite and the emulator's Graph: a storm on one user
(on two devices) contains the user once, revokes their sessions once, and the hourly timer releases
them after ``for_hours`` of simulated time; a protected identity (nested in ``PROTECTED_GROUP_ID``)
is never contained; an analyst's FalsePositive releases containment and isolation together;
``response undo`` releases it once; the emulator refuses what Graph refuses."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from azure.functions.timer import TimerRequest

from ops.cli import main
from shared import wiring
from shared.functions.health import health_check
from tests.integration.test_emulator import provider, trust_emulator
from tests.integration.test_notify_user import connection_without
from tests.support import LIMITED_CLIENT, Env, strong_device, violation
from tools.emulator.persist import StateFile
from tools.emulator.server import EmulatorServer
from tools.emulator.state import DefenderState
from tools.simulation import Arrival, Simulation

pytestmark = pytest.mark.integration
__all__ = ["trust_emulator"]
hourly_timer = health_check.build().get_user_function()
CONTAIN = "6c1d2e3f-0000-4000-8000-00000000c0a1"
PROTECTED = "6c1d2e3f-0000-4000-8000-00000000b0a1"
ALICE_ID = "0b7f2c1e-4a3d-4e5f-8a9b-1c2d3e4f5a01"
BREAKGLASS_ID = "0b7f2c1e-4a3d-4e5f-8a9b-1c2d3e4f5a03"
RULE: dict[str, Any] = {
    "name": "Contain users with repeated violations",
    "when": {
        "event_types": ["interaction.policy_violated"],
        "repeat": {"count": 2, "within_minutes": 60, "per": "user"},
    },
    "then": [{"action": "contain_user", "for_hours": 2, "revoke_sessions": True}],
    "dry_run": False,
}


def _use(
    sim: Simulation, emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, *rules: dict[str, Any]
) -> None:
    path = tmp_path / "rules.json"
    path.write_text(json.dumps({"rules": list(rules)}))
    monkeypatch.setenv("RESPONSE_RULES_FILE", str(path))
    monkeypatch.setenv("CONTAIN_GROUP_ID", CONTAIN)
    monkeypatch.setenv("PROTECTED_GROUP_ID", PROTECTED)
    wiring.reset()
    wiring.use(clock=sim.clock, sender=sim.sender)


def _event(i: int, host: str, user: str = "alice@acme.fr") -> dict[str, Any]:
    doc = violation(i, host=host, policy="pii", device=strong_device(host))
    doc["data"]["interaction"]["user_email"] = user
    return doc


def _storm(n: int, user: str = "alice@acme.fr") -> list[Arrival]:
    hosts = ("ALICE-LAPTOP", "DAVE-MBP")
    return [Arrival(i * 60.0, [_event(1 + i, hosts[i % 2], user)]) for i in range(n)]


def _members(emulator: EmulatorServer) -> list[str]:
    return list(emulator.state.identity.groups[CONTAIN]["members"])


def _rows(env: Env) -> list[dict[str, Any]]:
    return [dict(e) for e in env.table("Responses").list_entities() if e.get("action") == "contain_user"]


def _posts(emulator: EmulatorServer) -> list[dict[str, Any]]:
    return [c for c in emulator.state.calls if c["method"] == "POST" and c["path"].endswith("/members/$ref")]


def test_a_storm_contains_the_user_once_and_the_timer_releases_them_after_for_hours(
    sim: Simulation, env: Env, emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _use(sim, emulator, monkeypatch, tmp_path, RULE)
    sim.run(_storm(8))
    assert _members(emulator) == [ALICE_ID] and len(_posts(emulator)) == 1
    assert [r["user"] for r in emulator.state.identity.revoked] == [ALICE_ID]
    rows = _rows(env)
    assert [r["state"] for r in rows].count("done") == 1
    skipped = [r["detail"] for r in rows if r["state"] == "skipped"]
    assert any(d.startswith("the user is already contained (until ") for d in skipped)
    checks = [c for c in emulator.state.calls if c["path"].endswith("/checkMemberGroups")]
    assert len(checks) >= 2  # fresh before every containment, never cached
    sim.clock.set(sim.clock.now() + timedelta(hours=1))
    hourly_timer(TimerRequest(past_due=False))
    assert _members(emulator) == [ALICE_ID]  # 1 h of 2
    sim.clock.set(sim.clock.now() + timedelta(hours=1, minutes=30))
    hourly_timer(TimerRequest(past_due=False))  # a clock moved forward releases it
    assert _members(emulator) == []
    assert wiring.releaser().sweep() == []  # idempotent: released once
    deletes = [c for c in emulator.state.calls if c["method"] == "DELETE" and c["path"].endswith("/$ref")]
    assert [c["status"] for c in deletes] == [204]
    undone = [dict(e) for e in env.table("Audit").list_entities() if e["method"] == "UNDO_CONTAIN_USER"]
    assert len(undone) == 1 and "release_after_hours" in str(undone[0]["path"])
    assert not any("alice@acme.fr" in str(e.get("path")) for e in env.table("Audit").list_entities())
    assert env.queued_texts(f"{env.queue}-poison") == []


def test_a_protected_identity_is_never_contained(
    sim: Simulation, env: Env, emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _use(sim, emulator, monkeypatch, tmp_path, RULE)
    sim.run(_storm(4, user="breakglass@acme.fr"))
    assert BREAKGLASS_ID not in _members(emulator) and _posts(emulator) == [] and emulator.state.identity.revoked == []
    skipped = {r["detail"] for r in _rows(env) if r["state"] == "skipped"}
    assert "protected identity: a member of PROTECTED_GROUP_ID (checked now with checkMemberGroups)" in skipped
    assert emulator.state.alerts  # the alerts are raised as always


def test_without_a_protected_group_nobody_is_contained(
    sim: Simulation, env: Env, emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _use(sim, emulator, monkeypatch, tmp_path, RULE)
    monkeypatch.delenv("PROTECTED_GROUP_ID")
    wiring.reset()
    wiring.use(clock=sim.clock, sender=sim.sender)
    sim.run(_storm(3))
    assert _members(emulator) == [] and _posts(emulator) == []
    assert any("PROTECTED_GROUP_ID is not set" in r["detail"] for r in _rows(env))


def test_an_analysts_false_positive_releases_containment_and_isolation(
    sim: Simulation, env: Env, emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    both = RULE | {"then": [{"action": "contain_user", "for_hours": 24}, {"action": "isolate"}]}
    _use(sim, emulator, monkeypatch, tmp_path, both)
    sim.run([Arrival(0, [_event(1, "ALICE-LAPTOP")]), Arrival(60, [_event(2, "ALICE-LAPTOP")])])
    assert _members(emulator) == [ALICE_ID]
    isolations = [a for a in emulator.state.response.actions if a["type"] == "Isolate"]
    assert len(isolations) == 1
    alert = next(
        a for a in emulator.state.alerts if a["id"] in {r["alert_id"] for r in _rows(env) if r["state"] == "done"}
    )
    emulator.state.update_alert(alert["id"], {"status": "Resolved", "classification": "FalsePositive"})
    hourly_timer(TimerRequest(past_due=False))  # the health timer reads the verdict back
    assert _members(emulator) == []
    assert [a["type"] for a in emulator.state.response.actions].count("Unisolate") == 1
    said = [c["comment"] for c in alert["comments"] if "classified FalsePositive" in c["comment"]]
    assert any("contain_user" in c and "removed from the contain group" in c for c in said)


def test_response_undo_releases_containment_once(
    sim: Simulation, env: Env, emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    _use(sim, emulator, monkeypatch, tmp_path, RULE)
    sim.run(_storm(2))
    (done,) = [r for r in _rows(env) if r["state"] == "done"]
    assert main(["response", "undo", "--action", done["action_id"]]) == 0
    assert "removed from the contain group" in capsys.readouterr().out and _members(emulator) == []
    assert main(["response", "undo", "--action", done["action_id"]]) == 0
    assert "already released" in capsys.readouterr().out


def _graph(emulator: EmulatorServer, **kw: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {provider(emulator, scope='https://graph.microsoft.com/.default', **kw).token()}"}


def test_the_emulator_refuses_what_graph_refuses_for_groups_and_sessions(emulator: EmulatorServer) -> None:
    h, base = _graph(emulator), f"{emulator.url}/v1.0"
    ref = {"@odata.id": f"https://graph.microsoft.com/v1.0/directoryObjects/{ALICE_ID}"}
    assert requests.post(f"{base}/groups/{CONTAIN}/members/$ref", json=ref, headers=h, timeout=10).status_code == 204
    again = requests.post(f"{base}/groups/{CONTAIN}/members/$ref", json=ref, headers=h, timeout=10)
    assert again.status_code == 400 and "One or more added object references already exist" in again.text
    assert requests.post(f"{base}/groups/{CONTAIN}/members/$ref", json={}, headers=h, timeout=10).status_code == 400
    url = f"{base}/groups/{CONTAIN}/members/{ALICE_ID}/$ref"
    assert [requests.delete(url, headers=h, timeout=10).status_code for _ in range(2)] == [204, 404]
    revoked = requests.post(f"{base}/users/{ALICE_ID}/revokeSignInSessions", headers=h, timeout=10)
    assert revoked.status_code == 200 and revoked.json() == {"value": True}
    checked = requests.post(
        f"{base}/users/breakglass@acme.fr/checkMemberGroups", json={"groupIds": [PROTECTED, CONTAIN]}, headers=h,
        timeout=10,
    )  # fmt: skip
    assert checked.json() == {"value": [PROTECTED]}  # transitively, through the nested admins group
    assert requests.get(f"{base}/users/nobody@acme.fr", headers=h, timeout=10).status_code == 404
    limited = _graph(emulator, client=LIMITED_CLIENT[0], secret=LIMITED_CLIENT[1])
    refused = requests.post(f"{base}/groups/{CONTAIN}/members/$ref", json=ref, headers=limited, timeout=10)
    assert refused.status_code == 403 and "GroupMember.ReadWrite.All" in refused.text


def test_test_connection_names_a_missing_containment_permission(
    sim: Simulation, env: Env, emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    _use(sim, emulator, monkeypatch, tmp_path, RULE)
    out = connection_without(emulator, env, "User.RevokeSessions.All", capsys)
    assert "User.RevokeSessions.All" in out and "Contain users with repeated violations" in out


def test_done_when_a_storm_on_one_user_sends_one_mail_contains_once_and_releases_after_for_hours(
    sim: Simulation, env: Env, emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    both = RULE | {"then": [{"action": "notify_user"}, {"action": "contain_user", "for_hours": 3}]}
    monkeypatch.setenv("NOTIFY_SENDER", "noxys-alerts@acme.fr")
    _use(sim, emulator, monkeypatch, tmp_path, both)
    sim.run(_storm(10))
    assert len(emulator.state.identity.mails) == 1 and _members(emulator) == [ALICE_ID] and len(_posts(emulator)) == 1
    sim.clock.set(sim.clock.now() + timedelta(hours=3, minutes=1))
    hourly_timer(TimerRequest(past_due=False))
    assert _members(emulator) == [] and len(emulator.state.identity.mails) == 1
    assert env.queued_texts(f"{env.queue}-poison") == []


def test_the_emulator_keeps_a_containment_and_the_mails_across_a_restart(
    emulator: EmulatorServer, tmp_path: Path
) -> None:
    saved = StateFile(tmp_path / "emulator-state.json", emulator.state)
    emulator.state.add_member(CONTAIN, {"@odata.id": f"https://graph.microsoft.com/v1.0/directoryObjects/{ALICE_ID}"})
    emulator.state.identity.mails.append({"from": "noxys-alerts@acme.fr", "message": {}, "at": "x"})
    saved.save()
    again = DefenderState(clock=emulator.state.clock)  # command 1 started again
    assert StateFile(tmp_path / "emulator-state.json", again).load()
    assert again.identity.groups[CONTAIN]["members"] == [ALICE_ID] and len(again.identity.mails) == 1
