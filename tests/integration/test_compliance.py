"""Compliance on the dev stack: the report of a seeded day (read back from Defender, opened in
headless Chromium), data-subject export and erasure checked table by table, and correlation
quality naming the device that did not resolve. Real Azurite, the real delivery, the emulator."""

from __future__ import annotations

import json
import shutil
import subprocess
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from ops.cli import main
from shared import wiring
from shared.delivery.patterns import partition
from shared.tasks import QueuedEvent
from tests.support import SAMPLE_DAY, Env, ledger_states, observed, violation
from tools.emulator.server import EmulatorServer
from tools.simulation import Arrival, Simulation

pytestmark = pytest.mark.integration
SINCE, UNTIL = (SAMPLE_DAY - timedelta(hours=1)).isoformat(), (SAMPLE_DAY + timedelta(days=1)).isoformat()
FULL_ROLES = ["Alert.ReadWrite.All", "Machine.Read.All", "AdvancedQuery.Read.All", "SecurityIncident.ReadWrite.All"]


def _as(doc: dict[str, Any], user: str) -> dict[str, Any]:
    doc["data"]["interaction"]["user_email"] = user
    doc["data"]["interaction"]["user_id"] = f"uid-{user.split('@')[0]}"
    return doc


def _restart(sim: Simulation) -> None:
    wiring.reset()  # fresh settings and a fresh token (which carries the roles of now)
    wiring.use(clock=sim.clock, sender=sim.sender)


@pytest.fixture
def day(sim: Simulation, env: Env, emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch) -> Simulation:
    """A seeded day: alerts, a coalesced storm, an unknown device, a platform never reached, one
    event dead-lettered by a missing permission and one held while the integration is off."""
    sim.run(
        [
            Arrival(0, [_as(violation(1 + i, policy="storm"), "alice@acme.fr") for i in range(3)]),
            Arrival(
                5,
                [_as(violation(10, device={"hostname": "bob-ws-0042.ACME.local"}, platform="deepseek"), "bob@acme.fr")],
            ),
            Arrival(6, [_as(violation(11, device={"hostname": "ZED-PC"}), "carol@acme.fr")]),
            Arrival(7, [_as(violation(12, host="DAVE-MBP", platform="mistral"), "dave@acme.fr")]),
        ]
    )
    app = emulator.state.clients[(next(iter(emulator.state.tenants)), env.values["DEFENDER_CLIENT_ID"])]
    app.roles = ["Machine.Read.All"]
    _restart(sim)
    sim.run([Arrival(0, [_as(violation(13, policy="later"), "Alice@Acme.fr")])])  # 403 on hunting: dead letter
    app.roles = FULL_ROLES
    monkeypatch.setenv("INTEGRATION_ENABLED", "false")
    _restart(sim)
    sim.run([Arrival(0, [_as(violation(14, policy="held"), "alice@acme.fr")])])
    monkeypatch.setenv("INTEGRATION_ENABLED", "true")
    _restart(sim)
    states = ledger_states(env)
    storm = sorted(states.pop(f"evt_sim_0000{i}") for i in (1, 2, 3))
    assert storm == ["alert_created", "coalesced", "coalesced"]  # whichever led, one alert
    assert states == {
        "evt_sim_00010": "alert_created",
        "evt_sim_00011": "no_device",
        "evt_sim_00012": "no_anchor",
        "evt_sim_00013": "dead_lettered",
    }
    return sim


# ---------------------------------------------------------------------- the report
def test_report_of_a_seeded_day_with_defender_view(
    day: Simulation, env: Env, emulator: EmulatorServer, tmp_path: Path
) -> None:
    alice_alert = next(a for a in emulator.state.alerts if "ALICE" in str(a.get("computerDnsName", "")).upper())
    alice_alert.update(status="InProgress", classification="TruePositive", determination="SensitiveDataLeak")
    out = tmp_path / "report.json"
    assert main(["report", "--since", SINCE, "--until", UNTIL, "--format", "json", "--output", str(out)]) == 0
    doc = json.loads(out.read_text())
    t = doc["totals"]["outcomes"]
    assert (doc["totals"]["events"], t["alert_created"], t["coalesced"]) == (7, 2, 2)
    assert (t["no_device"], t["no_anchor"], t["dead_lettered"]) == (1, 1, 1)
    users = {u["name"]: u for u in doc["users"]}
    assert users["alice@acme.fr"]["events"] == 4 and users["alice@acme.fr"]["pii_types"] == {"EMAIL": 4}
    assert users["carol@acme.fr"]["outcomes"]["no_device"] == 1
    platforms = {p["name"]: p["events"] for p in doc["platforms"]}
    assert platforms == {"ChatGPT": 5, "DeepSeek": 1, "Mistral Le Chat": 1}
    seen = {a["alert_id"]: a for a in doc["alerts"]}
    assert set(seen) == {a["id"] for a in emulator.state.alerts}
    assert seen[alice_alert["id"]]["events"] == 3  # its own event and the two coalesced into it
    assert seen[alice_alert["id"]]["defender"]["classification"] == "TruePositive"
    assert seen[alice_alert["id"]]["defender"]["status"] == "InProgress"


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    assert found, "chromium is missing: scripts/bootstrap.sh --infra installs it"
    return found


def test_the_html_report_opens_in_headless_chromium_and_shows_its_tables(day: Simulation, tmp_path: Path) -> None:
    from PIL import Image

    page = tmp_path / "report.html"
    assert main(["report", "--since", SINCE, "--until", UNTIL, "--output", str(page)]) == 0
    flags = [
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,1400",
    ]  # fmt: skip
    dom = subprocess.run(
        [_chromium(), *flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120, check=True
    ).stdout
    for table in ("by-platform", "by-user", "by-device", "alerts"):
        assert f'<table id="{table}">' in dom
    assert "<td>ChatGPT</td>" in dom and "<td>carol@acme.fr</td>" in dom and "<td>ZED-PC</td>" in dom
    shot = tmp_path / "report.png"
    subprocess.run(
        [_chromium(), *flags, f"--screenshot={shot}", page.as_uri()], capture_output=True, timeout=120, check=True
    )
    image = Image.open(shot).convert("RGB")
    assert image.size == (1280, 1400)
    colours = colour_counts(image)
    assert colours[(0xD0, 0xD7, 0xDE)] > 2000  # the tables' borders are drawn
    assert colours[(0x09, 0x69, 0xDA)] > 500  # the charts' bars are drawn
    assert colours[(0xF3, 0xF5, 0xF7)] > 2000  # the header rows' shading


def colour_counts(image: Any) -> dict[tuple[int, int, int], int]:
    return {colour: n for n, colour in image.getcolors(maxcolors=1 << 20)}


# ---------------------------------------------------------------------- data-subject requests
def _rows(env: Env, table: str, keep: Any) -> list[Any]:
    """A table's rows that ``keep`` selects; none when the table was never created."""
    from azure.core.exceptions import ResourceNotFoundError

    try:
        return [e for e in env.table(table).list_entities() if keep(e)]
    except ResourceNotFoundError:
        return []


def _rows_about(env: Env, user: str) -> dict[str, int]:
    """Every row that concerns ``user``, found by reading every table directly (not the product's search)."""
    ledger = [e for e in env.table("Ledger").list_entities() if str(e.get("user", "")).lower() == user]
    ids = {str(e["event_id"]) for e in ledger}

    def about(e: Any) -> bool:
        message = QueuedEvent.model_validate_json(e["message"])
        return (message.event.user_email or "").lower() == user

    held = [e for e in env.table("Held").list_entities() if about(e)]
    dead = [e for e in env.table("DeadLetters").list_entities() if about(e)]
    ids |= {str(e["event_id"]) for e in held + dead}
    groups = [  # the groups her events led, and her events' member rows in anyone's group
        e
        for e in env.table("Groups").list_entities()
        if str(e.get("leader" if e["RowKey"] == "group" else "event_id")) in ids
    ]
    audit = [e for e in env.table("Audit").list_entities() if str(e.get("event_id")) in ids]
    own = partition("u", user)  # her observations wherever packed, and her window's platforms row
    patterns: list[Any] = [o for o in observed(env) if o[1] in ids]
    patterns += [
        e for e in env.table("Patterns").list_entities() if e["PartitionKey"] == own and e["RowKey"] == "platforms"
    ]
    counts = {
        "Ledger": ledger,
        "Held": held,
        "DeadLetters": dead,
        "HuntingOutbox": _rows(env, "HuntingOutbox", lambda e: e.get("user") == user),
        "Groups": groups,
        "Patterns": patterns,
        "Responses": _rows(env, "Responses", lambda e: e.get("event_id") in ids),
        "Audit": audit,
    }
    return {name: len(rows) for name, rows in counts.items()}


def test_export_returns_every_row_and_erase_leaves_none(
    day: Simulation, env: Env, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = _rows_about(env, "alice@acme.fr")
    assert before["Ledger"] == 4 and before["Held"] == 1 and before["DeadLetters"] == 1
    assert before["Groups"] >= 1 and before["Audit"] >= 3
    assert before["Patterns"] == 4 + 1 + 4  # her 4 delivered events, her platforms row, their device rows
    bob_before = _rows_about(env, "bob@acme.fr")

    out = tmp_path / "alice.json"
    assert main(["subject", "export", "--user", "ALICE@acme.fr", "--output", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["counts"] == before
    assert doc["defender_alert_ids"] and all(i.startswith("da") for i in doc["defender_alert_ids"])
    assert 'UserPrincipalName =~ "ALICE@acme.fr"' in doc["hunting_query"]
    capsys.readouterr()

    assert main(["subject", "erase", "--user", "alice@acme.fr", "--dry-run"]) == 0
    assert "nothing was deleted" in capsys.readouterr().out and _rows_about(env, "alice@acme.fr") == before
    assert main(["subject", "erase", "--user", "alice@acme.fr"]) == 2  # no terminal, no --yes: refused
    assert main(["subject", "erase", "--user", "alice@acme.fr", "--yes"]) == 0
    said = capsys.readouterr().out
    assert f"erased {sum(before.values())} row(s)" in said and "/purge?api-version=" in said

    assert _rows_about(env, "alice@acme.fr") == dict.fromkeys(before, 0)  # table by table: none left
    assert _rows_about(env, "bob@acme.fr") == bob_before  # nobody else's rows were touched
    erasures = [e for e in env.table("Audit").list_entities() if e["method"] == "ERASE"]
    assert len(erasures) == 1 and "alice" not in json.dumps(dict(erasures[0]), default=str).lower()
    assert main(["subject", "erase", "--user", "alice@acme.fr", "--yes"]) == 0  # again: nothing left to do
    nothing = "found: Ledger 0, Held 0, DeadLetters 0, HuntingOutbox 0, Groups 0, Patterns 0, Responses 0, Audit 0"
    assert nothing in capsys.readouterr().out


# ---------------------------------------------------------------------- correlation quality
def test_correlation_names_the_unresolved_device_with_a_hint(
    day: Simulation, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["correlation", "--since", SINCE, "--until", UNTIL]) == 0
    out = capsys.readouterr().out
    assert "6 event(s) decided" in out
    assert "resolved to a device: 83.3 % (5; by" in out and "hostname" in out
    assert "ZED-PC (1): Noxys sends `ZED-PC`" in out and "Search Defender's device inventory for `zed-pc`" in out
    assert "Mistral Le Chat (1):" in out
    assert main(["correlation", "--since", SINCE, "--until", UNTIL, "--json"]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures["unresolved_devices"][0]["name"] == "ZED-PC" and figures["anchored"] == 4


def test_status_shows_correlation_after_a_health_check(day: Simulation, capsys: pytest.CaptureFixture[str]) -> None:
    day.clock.advance(3600)
    assert main(["status", "--check"]) in (0, 1)
    out = capsys.readouterr().out
    assert "Correlation quality, last 7 days" in out and "ZED-PC" in out
