"""``timeline`` through the real webhook, Azurite and the emulator: the Noxys events of a device, the
anchor connection, Defender's other alert on the device and its network and process events from
advanced hunting, merged in time order, as text and JSON, by alert or by device and moment."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from ops.cli import main
from tests.integration.test_report_accessibility import axe_violations
from tests.integration.test_response import ALICE
from tests.support import SAMPLE_DAY, Env, violation
from tools.emulator.common import format_time
from tools.emulator.server import EmulatorServer
from tools.simulation import Arrival, Simulation

pytestmark = pytest.mark.integration


def _seed(sim: Simulation, emulator: EmulatorServer) -> dict[str, Any]:
    """Two violations on Alice's laptop five minutes apart; a PowerShell alert of Defender's own
    and two process rows in between. Our alert."""
    device = {"hostname": "ALICE-LAPTOP", "fqdn": "alice-laptop.acme.local"}
    docs = [violation(600 + i, device=device, at=SAMPLE_DAY + timedelta(minutes=5 * i), policy="pii") for i in (0, 1)]
    sim.run([Arrival(0, [docs[0]]), Arrival(300, [docs[1]])])
    at = SAMPLE_DAY + timedelta(minutes=2)
    emulator.state.alerts.append(
        {"id": "da_powershell", "machineId": ALICE, "title": "Suspicious PowerShell command line", "severity": "Medium",
         "status": "New", "alertCreationTime": format_time(at), "lastUpdateTime": format_time(at), "comments": []}
    )  # fmt: skip
    emulator.state.process_events += [
        {"Timestamp": format_time(at - timedelta(seconds=30)), "DeviceId": ALICE, "FileName": "powershell.exe",
         "InitiatingProcessFileName": "outlook.exe", "ActionType": "ProcessCreated",
         "ProcessCommandLine": "powershell -enc SECRET-TOKEN"},
        {"Timestamp": format_time(SAMPLE_DAY + timedelta(hours=3)), "DeviceId": ALICE, "FileName": "late.exe",
         "InitiatingProcessFileName": "explorer.exe", "ActionType": "ProcessCreated"},
    ]  # fmt: skip
    return next(a for a in emulator.state.alerts if a["machineId"] == ALICE and a["id"] != "da_powershell")


def test_the_timeline_merges_the_four_sources_in_time_order(
    sim: Simulation, env: Env, emulator: EmulatorServer, capsys: pytest.CaptureFixture[str]
) -> None:
    ours = _seed(sim, emulator)
    around = format_time(SAMPLE_DAY + timedelta(minutes=2))
    assert main(["timeline", "--device", "alice-laptop.acme.local", "--around", around, "--format", "json"]) == 0
    said = capsys.readouterr()
    assert "not shown" not in said.err, said.err
    items = json.loads(said.out)
    assert [i["time"] for i in items] == sorted(i["time"] for i in items)
    assert all(i["time"].endswith("Z") and len(i["time"]) == 20 for i in items)
    kinds = {(i["source"], i["kind"]) for i in items}
    assert {("noxys", "event"), ("defender", "anchor"), ("defender", "alert"), ("hunting", "network"),
            ("hunting", "process")} <= kinds  # fmt: skip
    events = [i for i in items if i["kind"] == "event"]
    assert len(events) == 2 and all(f"alert {ours['id']}" in i["summary"] for i in events)
    (other,) = [i for i in items if i["kind"] == "alert"]
    assert "da_powershell" in other["summary"] and ours["id"] not in other["summary"]  # ours are the events
    (proc,) = [i for i in items if i["kind"] == "process"]
    assert proc["summary"] == "ProcessCreated powershell.exe (from outlook.exe)"  # the late one is outside
    assert "SECRET-TOKEN" not in json.dumps(items)  # never a command line
    first_event = items.index(events[0])
    assert any(i["kind"] == "network" for i in items[:first_event])  # connections before the event are in order
    hunted = [c for c in emulator.state.calls if c["path"] == "/api/advancedqueries/run"]
    assert hunted and all(c["status"] == 200 for c in hunted)


def test_by_alert_as_text(
    sim: Simulation, env: Env, emulator: EmulatorServer, capsys: pytest.CaptureFixture[str]
) -> None:
    ours = _seed(sim, emulator)
    assert main(["timeline", "--alert", ours["id"], "--minutes", "10"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"Timeline of alert {ours['id']}") and f"machine {ALICE}" in out
    lines = out.splitlines()[1:]
    assert lines == sorted(lines) and any(" noxys " in line for line in lines)
    assert main(["timeline", "--device", "alice-laptop.acme.local"]) == 2  # --around is needed
    assert "--around" in capsys.readouterr().err


def test_the_report_has_a_timeline_section_per_alert_and_stays_accessible(
    sim: Simulation, env: Env, emulator: EmulatorServer, tmp_path: Path
) -> None:
    ours = _seed(sim, emulator)
    page = tmp_path / "report.html"
    since, until = (SAMPLE_DAY - timedelta(hours=1)).isoformat(), (SAMPLE_DAY + timedelta(hours=1)).isoformat()
    assert main(["report", "--since", since, "--until", until, "--timeline", "--output", str(page)]) == 0
    text = page.read_text()
    section = text[text.index(f"<h3>Alert {ours['id']}</h3>") :]
    assert "ProcessCreated powershell.exe (from outlook.exe)" in section and "da_powershell" in section
    assert section.index("<td>noxys</td><td>event</td>") > section.index("<td>hunting</td><td>network</td>")
    assert [v["id"] for v in axe_violations(page, tmp_path)["violations"]] == []
