"""Automated response attacked: signed events that are authentic but hostile (a leaked signing
secret, a compromised Noxys tenant, a bad record), and configuration files that are missing,
broken or hostile — through the real webhook, Azurite queues and tables, and the Defender
emulator. Each test names the item of issue 19 it closes; together they answer "what is the
worst one event can make this do to my tenant?" with the limits of docs/risk-and-response.md."""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from azure.functions.timer import TimerRequest

from ops.cli import main
from shared import wiring
from shared.delivery.devicecache import DeviceCache
from shared.events import Device
from shared.functions.health import health_check
from shared.response.executor import Responder, ResponseDeps
from shared.response.rules import Situation, parse_rules
from shared.response.store import ResponseStore
from shared.tasks import ResponseTask
from tests.integration.test_response import ALICE, DAVE, _machine, _response_rows, _use
from tests.support import DEVICE_IPS, Env, ledger_states, strong_device, violation
from tools.emulator.server import EmulatorServer
from tools.simulation import Arrival, Simulation

pytestmark = pytest.mark.integration
hourly_timer = health_check.build().get_user_function()
ERIN = "9ad94d52f0b59be1125d148951f4601c1a8c39ae"
GINA = "76000e420d9dceac9bd20a575b4b3676fedaf160"
FQDN = {
    "ALICE-LAPTOP": "alice-laptop.acme.local",
    "DAVE-MBP": "dave-mbp.acme.local",
    "ERIN-LAPTOP": "erin-laptop.acme.local",
    "GINA-PC": "gina-pc.branch.acme.local",
}
MACHINE = {"ALICE-LAPTOP": ALICE, "DAVE-MBP": DAVE, "ERIN-LAPTOP": ERIN, "GINA-PC": GINA}
DELIVERED = {"alert_created", "coalesced"}


def _strong(host: str) -> dict[str, str]:
    """Host name and IP address: two identifiers that agree, enough for a destructive action."""
    return strong_device(host)


def _event(
    i: int, host: str, *, platform: str | None = None, url: str | None = None, device: dict[str, Any] | None = None,
    sim: Simulation | None = None,
) -> dict[str, Any]:  # fmt: skip
    doc = violation(i, host=host, device=device or _strong(host), policy=f"adv{i}", platform=platform)
    if sim:  # a later run: the event happens now, where the device's traffic is
        doc["created_at"] = doc["data"]["interaction"]["occurred_at"] = sim.clock.now().strftime("%Y-%m-%dT%H:%M:%SZ")
    if url:
        doc["data"]["interaction"]["content_metadata"] = {"url": url}
    return doc


def _rules(tmp_path: Path, then: list[dict[str, Any]], **extra: Any) -> Path:
    when = extra.pop("when", {"exclude_device_tags": ["NoAutoResponse"]})
    rule = {"name": "adversarial", "when": when, "then": then, "dry_run": False}
    rule |= extra.pop("rule", {})
    path = tmp_path / "rules.json"
    path.write_text(json.dumps({"rules": [rule], **extra}))
    return path


def _kinds(emulator: EmulatorServer, machine: str | None = None) -> list[str]:
    return [a["type"] for a in emulator.state.response.actions if machine in (None, a["machineId"])]


def _skipped(env: Env) -> list[str]:
    return [str(r["detail"]) for r in _response_rows(env) if r["state"] == "skipped"]


def _all_delivered(env: Env, n: int) -> None:
    states = ledger_states(env)
    assert len(states) == n and set(states.values()) <= DELIVERED, states
    assert env.queued_texts(f"{env.queue}-poison") == []


# ---------------------------------------------------------------------- item 1: block_domain
def test_one_event_cannot_block_a_domain_it_names(
    sim: Simulation, env: Env, emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    rules = _rules(tmp_path, [{"action": "block_domain", "expires_after_hours": 8760}])
    _use(sim, env, emulator, monkeypatch, rules)
    # an unknown platform "on google.com" (Erin's device does reach gemini.google.com) and ChatGPT
    # reported with a google.com URL
    sim.run([
        Arrival(0, [_event(1, "ERIN-LAPTOP", platform="newbot", url="https://google.com/")]),
        Arrival(60, [_event(2, "ALICE-LAPTOP", platform="chatgpt", url="https://google.com/")]),
    ])  # fmt: skip
    blocked = [i["indicatorValue"] for i in emulator.state.response.indicators]
    assert blocked == ["chatgpt.com"]  # the catalogue's domain, never the event's host
    assert ledger_states(env)["evt_sim_00002"] == "alert_created"
    # the unknown platform has no domain but the one the event chose: nothing to anchor on, nothing to act on
    entry = env.table("Ledger").get_entity("evt_sim_00001", "event")
    assert entry["state"] == "no_anchor" and "PLATFORM_DOMAINS" in entry["reason"]


def test_an_operator_listed_domain_may_be_blocked_for_an_unknown_platform(
    sim: Simulation, env: Env, emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The operator names the in-house platform's domain (PLATFORM_DOMAINS, for anchoring) and allows
    blocking it (allowed_block_domains): then, and only then, it is blocked."""
    rules = _rules(tmp_path, [{"action": "block_domain"}], allowed_block_domains=["Google.com"])
    monkeypatch.setenv("PLATFORM_DOMAINS", json.dumps({"NewBot": ["Gemini.Google.com"]}))
    _use(sim, env, emulator, monkeypatch, rules)
    sim.run([Arrival(0, [_event(1, "ERIN-LAPTOP", platform="newbot", url="https://evil.example/app")])])
    assert [i["indicatorValue"] for i in emulator.state.response.indicators] == ["gemini.google.com"]


# ---------------------------------------------------------------------- item 2: anchoring
def test_the_url_host_never_widens_a_catalogued_platforms_anchor(
    sim: Simulation, env: Env, emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _use(sim, env, emulator, monkeypatch, _rules(tmp_path, [{"action": "ticket"}]))
    # Erin's device only reaches gemini.google.com: a violation "on ChatGPT" is not anchored on it
    # because the event says google.com; and https://com/ is no domain at all
    sim.run([
        Arrival(0, [_event(1, "ERIN-LAPTOP", platform="chatgpt", url="https://google.com/")]),
        Arrival(60, [_event(2, "ALICE-LAPTOP", platform="newbot", url="https://com/")]),
    ])  # fmt: skip
    assert ledger_states(env) == {"evt_sim_00001": "no_anchor", "evt_sim_00002": "no_anchor"}
    assert emulator.state.alerts == [] and emulator.state.response.tickets == []
    hunted = [c["path"] for c in emulator.state.calls if "advancedqueries" in c["path"]]
    assert len(hunted) == 1  # Erin's ChatGPT connections were looked for; "com" never became a domain


# ---------------------------------------------------------------------- item 3: targets and caps
def test_a_device_named_by_host_name_alone_is_tagged_but_never_isolated(
    sim: Simulation, env: Env, emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    rules = _rules(tmp_path, [{"action": "isolate"}, {"action": "tag_device", "tag": "NoxysRisk"}])
    _use(sim, env, emulator, monkeypatch, rules)
    sim.run([Arrival(0, [_event(1, "DAVE-MBP", device={"hostname": "DAVE-MBP"})])])
    _all_delivered(env, 1)
    assert _kinds(emulator) == [] and "NoxysRisk" in _machine(emulator, DAVE)["machineTags"]
    (why,) = _skipped(env)
    assert why.startswith("device identified by its name only: a destructive action needs the Entra device id")


def test_one_request_on_many_devices_stops_at_the_hourly_caps_and_alerts_still_flow(
    sim: Simulation, env: Env, emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    every = [
        {"action": "isolate"},
        {"action": "restrict_app_execution"},
        {"action": "av_scan"},
        {"action": "collect_investigation_package"},
        {"action": "tag_device", "tag": "NoxysRisk"},
    ]
    limits = {"max_per_hour": {"isolate": 1}, "max_devices_per_hour": 2}
    _use(sim, env, emulator, monkeypatch, _rules(tmp_path, every, limits=limits))
    sim.run([Arrival(0, [_event(i, host) for i, host in enumerate(FQDN, 1)])])  # four devices, one request
    _all_delivered(env, 4)
    tagged = {m["id"] for m in emulator.state.machines if "NoxysRisk" in (m.get("machineTags") or [])}
    touched = {a["machineId"] for a in emulator.state.response.actions} | tagged
    assert len(touched) == 2  # max_devices_per_hour, whatever the number of events
    assert _kinds(emulator).count("Isolate") == 1  # max_per_hour.isolate
    skipped = _skipped(env)
    assert "response circuit open: hourly cap on isolate reached (1, max_per_hour.isolate)" in skipped
    assert any("2 distinct device(s) acted on in the last hour" in s for s in skipped)
    assert main(["status"]) == 0  # live, before any health check
    out = capsys.readouterr().out
    assert "    ! response circuit open: hourly cap on isolate reached" in out
    assert "[configuration and automated response] response circuit open" in out
    assert main(["status", "--check"]) == 0
    record = json.loads(next(iter(env.table("Health").list_entities()))["record"])
    assert any(p.startswith("response circuit open") for p in record["problems"]) and record["ok"] is False


def test_caps_hold_across_instances(env: Env, emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch) -> None:
    from azure.data.tables import TableClient

    monkeypatch.setenv("RESPONSE_RULES_FILE", "")
    wiring.reset()
    doc = {
        "rules": [{"name": "isolate", "then": [{"action": "isolate"}], "dry_run": False}],
        "limits": {"max_per_hour": {"isolate": 2}, "max_devices_per_hour": 3, "device_cooldown_minutes": 0},
    }
    rules, name = parse_rules(json.dumps(doc)), wiring.table("Responses").table_name

    def instance() -> Responder:  # its own storage client, sharing only the table (and Defender)
        table = TableClient.from_connection_string(env.azurite.connection_string, name)
        deps = ResponseDeps(rules, wiring.defender_client(), ResponseStore(table), emulator.state.clock.now,
                            lambda text, delay: None, wiring.audit().record, lambda event: None)  # fmt: skip
        return Responder(deps)

    instances = [instance() for _ in range(3)]

    def task(i: int) -> ResponseTask:
        host = list(FQDN)[i % 4]
        found = Situation("interaction.policy_violated", "High", 0.9, "chatgpt", "ChatGPT", "block",
                          device_ids={"hostname": host.lower(), "ip": DEVICE_IPS[host]})  # fmt: skip
        return ResponseTask(event_id=f"evt_inst_{i}", machine_id=MACHINE[host], situation=asdict(found),
                            first_received_at=emulator.state.clock.now())  # fmt: skip

    with ThreadPoolExecutor(6) as pool:
        list(pool.map(lambda i: instances[i % 3].handle(task(i)), range(12)))
    isolations = [a for a in emulator.state.response.actions if a["type"] == "Isolate"]
    assert 1 <= len(isolations) <= 2  # twelve events, three instances at once, one cap (a refusal under
    # contention errs on the safe side: fewer, never more)
    assert len({a["machineId"] for a in isolations}) == len(isolations)
    assert any(d.startswith("response circuit open: hourly cap on isolate reached (2") for d in _skipped(env))


# ---------------------------------------------------------------------- item 4: fresh protection
def test_exclusions_and_protected_devices_are_read_fresh_before_a_destructive_action(
    sim: Simulation, env: Env, emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    when = {"repeat": {"count": 3, "within_minutes": 60, "per": "device"}, "exclude_device_tags": ["NoAutoResponse"]}
    _use(sim, env, emulator, monkeypatch, _rules(tmp_path, [{"action": "isolate"}], when=when))
    hosts = ("ALICE-LAPTOP", "DAVE-MBP", "ERIN-LAPTOP")
    sim.run([Arrival(i * 10, [_event(10 * n + i, host)]) for n, host in enumerate(hosts) for i in range(2)])
    assert DeviceCache(wiring.table("Devices")).get(Device(**_strong("ALICE-LAPTOP")), sim.clock.now().timestamp())
    # meanwhile, in Defender: Alice tagged NoAutoResponse, Dave marked high value, Erin is a server
    _machine(emulator, ALICE)["machineTags"] = ["NoAutoResponse"]
    emulator.state.set_machine(DAVE, device_value="High")
    emulator.state.set_machine(ERIN, os_platform="WindowsServer2022")
    sim.run(
        [Arrival(i * 10, [_event(10 * n + 5 + i, host, sim=sim)]) for n, host in enumerate(hosts) for i in range(2)]
    )
    _all_delivered(env, 12)
    assert _kinds(emulator) == []  # the device cache still said: no tag, normal value, a workstation
    audit = [str(e["path"]) for e in env.table("Audit").list_entities() if e["service"] == "response"]
    assert any("device tag NoAutoResponse" in p for p in audit)
    skipped = _skipped(env)
    assert "the device is marked high value in Defender (deviceValue High)" in skipped
    assert "the device is a server (WindowsServer2022)" in skipped


# ---------------------------------------------------------------------- item 5: the device cache
def test_a_padded_name_cannot_poison_the_device_cache(
    sim: Simulation, env: Env, emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _use(sim, env, emulator, monkeypatch, _rules(tmp_path, [{"action": "ticket"}]))
    padded = {"hostname": "GINA-PC ", "fqdn": " gina-pc.branch.acme.local."}
    sim.run([Arrival(0, [_event(1, "GINA-PC", device=padded)]), Arrival(60, [_event(2, "GINA-PC")])])
    _all_delivered(env, 2)
    rows = [e for e in env.table("Devices").list_entities()]
    assert {r["machine_id"] for r in rows} == {GINA}  # one identity, found; no "no machine" stored


def test_a_back_dated_event_never_caches_not_found_for_the_present(env: Env) -> None:
    cache, now = DeviceCache(wiring.table("Devices")), 1_774_000_000.0
    ghost = Device(ip_address="10.9.9.9")
    cache.put(ghost, None, "no machine matches", now, 900, observed_at=now - 6 * 3600)
    assert DeviceCache(wiring.table("Devices")).get(ghost, now) is None  # nothing stands for the present
    cache.put(ghost, None, "no machine matches", now, 900, observed_at=now - 30)
    assert DeviceCache(wiring.table("Devices")).get(ghost, now + 1) is not None  # a present answer is kept


# ---------------------------------------------------------------------- items 6 and 7: configuration
HOSTILE = {
    "missing": None,
    "broken": '{"rules": [{"name": "x", "then": [',
    "hostile": '{"rules": [{"name": "x", "then": [{"action": "isolate"}], "dry_run": "false"}],'
    ' "limits": {"max_devices_per_hour": NaN}}',
    "deep": "[" * 50_000 + "]" * 50_000,
    "not utf-8": b'{"rules": [{"name": "caf\xe9", "then": [{"action": "isolate"}]}]}',
}


@pytest.mark.parametrize("kind", list(HOSTILE))
def test_a_missing_broken_or_hostile_rules_file_leaves_every_alert_delivered(
    sim: Simulation, env: Env, emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
    capsys: pytest.CaptureFixture[str], kind: str,
) -> None:  # fmt: skip
    path, content = tmp_path / "rules.json", HOSTILE[kind]
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    _use(sim, env, emulator, monkeypatch, path)
    sim.run([Arrival(i * 30, [_event(i, host)]) for i, host in enumerate(["ALICE-LAPTOP", "DAVE-MBP"] * 3, 1)])
    _all_delivered(env, 6)  # 100 % delivered, 0 in poison
    assert emulator.state.response.actions == [] and emulator.state.response.tickets == []
    assert main(["status", "--check"]) == 0
    out = capsys.readouterr().out
    lead = out.splitlines()[1]
    assert lead.startswith(f"  ! CONFIGURATION: RESPONSE_RULES_FILE: {path}") and "automated response is OFF" in lead
    assert "[configuration and automated response] RESPONSE_RULES_FILE" in out
    (record,) = [json.loads(e["record"]) for e in env.table("Health").list_entities()]
    assert record["ok"] is False and record["problems"][0].startswith(f"RESPONSE_RULES_FILE: {path}")
    assert main(["test-connection"]) == 0  # the alert path works; the file is a warning
    assert f"⚠ RESPONSE_RULES_FILE: {path}" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("setting", "value"), [("TICKET_URL", "http://tickets.acme.local/"), ("RELEASE_ON_FALSE_POSITIVE", "ture")]
)
def test_a_mistyped_response_setting_turns_response_off_never_the_alerts(
    sim: Simulation, env: Env, emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
    capsys: pytest.CaptureFixture[str], setting: str, value: str,
) -> None:  # fmt: skip
    """A setting only response reads used to make every setting unreadable: the webhook answered
    503 not_configured to every event."""
    _use(sim, env, emulator, monkeypatch, _rules(tmp_path, [{"action": "tag_device", "tag": "NoxysRisk"}]))
    monkeypatch.setenv(setting, value)
    wiring.reset()
    wiring.use(clock=sim.clock, sender=sim.sender)
    sim.run([Arrival(i * 30, [_event(i, host)]) for i, host in enumerate(["ALICE-LAPTOP", "DAVE-MBP"], 1)])
    _all_delivered(env, 2)
    assert emulator.state.response.actions == [] and not _machine(emulator, ALICE)["machineTags"]
    assert main(["status"]) == 0
    lead = capsys.readouterr().out.splitlines()[1]
    assert lead.startswith(f"  ! CONFIGURATION: {setting}: ") and "automated response is OFF" in lead


def test_a_hostile_risk_file_scores_with_the_defaults_and_says_so(
    sim: Simulation, env: Env, emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    risk = tmp_path / "risk.json"
    risk.write_text('{"new_platform_for_user": -Infinity, "defender_risk": {"High": 1e308}}')
    monkeypatch.setenv("RISK_CONFIG_FILE", str(risk))
    _use(sim, env, emulator, monkeypatch, _rules(tmp_path, [{"action": "ticket"}], rule={"dry_run": True}))
    sim.run([Arrival(i * 30, [_event(i, "ALICE-LAPTOP")]) for i in range(1, 4)])
    _all_delivered(env, 3)
    lines = [a["description"].splitlines()[1] for a in emulator.state.alerts]
    assert lines and all(re.match(r"Combined risk (0\.\d\d|1\.00) = Noxys", line) for line in lines)
    assert main(["status"]) == 0
    assert "RISK_CONFIG_FILE" in capsys.readouterr().out.splitlines()[1]
    one = tmp_path / "event.json"
    one.write_text(json.dumps(_event(9, "ALICE-LAPTOP", sim=sim)))
    assert main(["explain", str(one)]) == 0  # judged with the defaults, and says why
    assert "note: RISK_CONFIG_FILE: " in capsys.readouterr().out


# ---------------------------------------------------------------------- item 8: tickets
@pytest.mark.parametrize("status", [302, 307, 308])
def test_a_ticket_relay_redirect_is_a_failure_never_followed(
    sim: Simulation, env: Env, emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
    status: int,
) -> None:  # fmt: skip
    _use(sim, env, emulator, monkeypatch, _rules(tmp_path, [{"action": "ticket"}]))
    emulator.state.response.ticket_redirect = (status, f"{emulator.url}/api/followed")
    sim.run([Arrival(0, [_event(1, "ALICE-LAPTOP")])])
    _all_delivered(env, 1)
    (row,) = [r for r in _response_rows(env) if r["action"] == "ticket"]
    assert (row["state"], row["detail"]) == ("error", f"{status} TicketRedirected")
    assert [c for c in emulator.state.calls if "followed" in c["path"]] == []


def test_rules_check_warns_about_every_missing_setting_and_permission(
    env: Env, emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    monkeypatch.delenv("TICKET_URL", raising=False)
    app = emulator.state.clients[(next(iter(emulator.state.tenants)), env.values["DEFENDER_CLIENT_ID"])]
    app.roles = [r for r in app.roles if r not in ("Machine.Isolate", "Ti.ReadWrite.All")]
    wiring.reset()
    then = [
        {"action": "isolate"},
        {"action": "block_domain"},
        {"action": "tag_device", "tag": "T"},
        {"action": "ticket"},
    ]
    assert main(["rules", "check", str(_rules(tmp_path, then, rule={"dry_run": True}))]) == 0
    warned = [line for line in capsys.readouterr().out.splitlines() if "⚠" in line]
    assert warned == [
        "  ⚠ rule 'adversarial': ticket, but TICKET_URL is not set (it would fail: TicketNotConfigured)",
        "  ⚠ rule 'adversarial': block_domain acts only on catalogued platforms' domains here; "
        "list others in allowed_block_domains",
        "  ⚠ rule 'adversarial' (dry run): isolate needs Machine.Isolate, which the app is not granted",
        "  ⚠ rule 'adversarial' (dry run): block_domain needs Ti.ReadWrite.All, which the app is not granted",
    ]


# ---------------------------------------------------------------------- item 9: comments
def test_a_storm_writes_one_comment_per_verdict_change_with_iso_times(
    sim: Simulation, env: Env, emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _use(sim, env, emulator, monkeypatch, _rules(tmp_path, [{"action": "tag_device", "tag": "NoxysRisk"}]))
    storm = [violation(i, host="ALICE-LAPTOP", device=_strong("ALICE-LAPTOP"), policy="storm") for i in range(1, 11)]
    sim.run([Arrival(i * 60, [e]) for i, e in enumerate(storm)])
    _all_delivered(env, 10)
    (alert,) = emulator.state.alerts
    said = [c["comment"] for c in alert["comments"] if c["comment"].startswith("Noxys response")]
    assert len(said) == 1 and "tag the device NoxysRisk: done" in said[0]  # the next nine: cooldown, counted
    rows = [dict(e) for e in env.table("Responses").list_entities() if str(e["RowKey"]).startswith("comment-")]
    assert [r["skipped"] for r in rows] == [9]
    assert not any(re.search(r"\b1\d{9}\b", c["comment"]) for c in alert["comments"])  # no raw epoch times


# ---------------------------------------------------------------------- undo and releases
def test_undo_by_action_and_by_device_is_paced_audited_and_idempotent(
    sim: Simulation, env: Env, emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    then = [{"action": "isolate"}, {"action": "tag_device", "tag": "NoxysRisk"}, {"action": "block_domain"}]
    _use(sim, env, emulator, monkeypatch, _rules(tmp_path, then))
    sim.run([Arrival(0, [_event(1, "ALICE-LAPTOP")])])
    (isolation,) = [a for a in emulator.state.response.actions if a["type"] == "Isolate"]
    assert main(["status"]) == 0  # where the operator finds the id
    assert f"in force (`response undo --action ID`): isolate on machine {ALICE}: action {isolation['id']}" in (
        capsys.readouterr().out
    )
    assert main(["response", "undo", "--action", isolation["id"]]) == 0
    assert "released (action" in capsys.readouterr().out
    assert main(["response", "undo", "--action", isolation["id"]]) == 0
    assert "already released" in capsys.readouterr().out
    assert _kinds(emulator, ALICE).count("Unisolate") == 1  # idempotent
    assert main(["response", "undo", "--device", "alice-laptop.acme.local"]) == 0
    out = capsys.readouterr().out
    assert "tag NoxysRisk removed" in out and "deleted" in out
    assert "NoxysRisk" not in _machine(emulator, ALICE)["machineTags"] and emulator.state.response.indicators == []
    audit = {str(e["method"]) for e in env.table("Audit").list_entities() if e["service"] == "response"}
    assert {"UNDO_ISOLATE", "UNDO_TAG_DEVICE", "UNDO_BLOCK_DOMAIN"} <= audit
    assert main(["response", "undo", "--action", "not-an-action"]) == 1


def test_a_false_positive_and_release_after_hours_are_released_by_the_hourly_sweep(
    sim: Simulation, env: Env, emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    then: list[dict[str, Any]] = [{"action": "isolate", "release_after_hours": 2}, {"action": "restrict_app_execution"}]
    _use(sim, env, emulator, monkeypatch, _rules(tmp_path, then))
    sim.run([Arrival(0, [_event(1, "ALICE-LAPTOP")]), Arrival(30, [_event(2, "DAVE-MBP")])])
    assert wiring.releaser().sweep() == []  # nothing due, no analyst verdict yet
    dave_alert = next(a for a in emulator.state.alerts if a["machineId"] == DAVE)
    emulator.state.update_alert(dave_alert["id"], {"status": "Resolved", "classification": "FalsePositive"})
    hourly_timer(TimerRequest(past_due=False))  # the health timer reads the verdict back
    assert _kinds(emulator, DAVE)[-2:] == ["Unisolate", "UnrestrictCodeExecution"]
    undone = [e for e in env.table("Audit").list_entities() if str(e["method"]).startswith("UNDO_")]
    assert len(undone) == 2 and all("classified FalsePositive" in str(e["path"]) for e in undone)
    assert any("classified FalsePositive" in c["comment"] for c in dave_alert["comments"])
    sim.clock.set(sim.clock.now() + timedelta(hours=3))
    assert len(wiring.releaser().sweep()) == 1  # Alice's isolation, after its 2 h; her restriction stays
    assert "Unisolate" in _kinds(emulator, ALICE) and "UnrestrictCodeExecution" not in _kinds(emulator, ALICE)
    assert wiring.releaser().sweep() == []  # released once


def test_a_full_cap_row_fits_one_table_entity(env: Env) -> None:
    store, now = ResponseStore(wiring.table("Responses")), 1_774_000_000.0
    holder = "evt_" + "x" * 200  # the longest event ids, each with its action row's key
    assert all(store.take_slot("ticket", f"{holder}{i}/r00a00", now + i, 300) for i in range(300))
    assert not store.take_slot("ticket", "one more", now + 301, 300)  # refused by the cap, not by storage
    assert store.take_slot("ticket", "one more", now + 3600, 300)  # an hour on, the first place is free
