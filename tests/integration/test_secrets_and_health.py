"""Key Vault through the real managed-identity path, test-connection, health, status, the switch."""

from __future__ import annotations

import json
import logging
import os
from datetime import timedelta
from typing import Any

import pytest
import requests

from ops.cli import main
from shared import wiring
from shared.clock import ManualClock
from shared.health import OK_MESSAGE, connection_test, expiry_warning
from tests.support import (
    ALERTS_ONLY_CLIENT,
    EMULATOR_CLIENT,
    EMULATOR_SECRET,
    EXPIRED_CLIENT,
    LIMITED_CLIENT,
    SAMPLE_DAY,
    TEST_SECRET,
    Env,
    ledger_states,
    post,
    sample,
    signed_headers,
    violation,
)
from tools.emulator.server import EmulatorServer
from tools.simulation import Arrival, Simulation

pytestmark = pytest.mark.integration
MI = "5d2e6b1a-7c4f-4e39-8a1d-0b9c8d7e6f50"
OTHER_SECRET = "whsec_" + "bmV3LXNpZ25pbmcta2V5LWFmdGVyLXJvdGF0aW9uIQ=="


@pytest.fixture
def vault(env: Env, emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch, clock: ManualClock) -> Any:
    """Secrets in the (emulated) Key Vault, read by the app's managed identity; plain settings wrong."""
    v = emulator.state.vault
    v.set("defender-client-secret", EMULATOR_SECRET, now=clock.now(), expires=SAMPLE_DAY + timedelta(days=10))
    v.set("noxys-signing-secret", TEST_SECRET, now=clock.now())
    monkeypatch.setenv("KEY_VAULT_URL", emulator.url)
    monkeypatch.setenv("IDENTITY_ENDPOINT", f"{emulator.url}/msi/token")
    monkeypatch.setenv("IDENTITY_HEADER", v.identity_header)
    monkeypatch.setenv("AZURE_CLIENT_ID", MI)
    monkeypatch.setenv("DEFENDER_CLIENT_SECRET", "not-the-secret-key-vault-wins")
    monkeypatch.setenv("NOXYS_SIGNING_SECRET", OTHER_SECRET)
    wiring.reset()
    return v


def use(sim: Simulation) -> None:
    wiring.reset()
    wiring.use(clock=sim.clock, sender=sim.sender)


# ------------------------------------------------------------------------------ Key Vault
def test_key_vault_wins_over_plain_settings(vault: Any, sim: Simulation, env: Env, emulator: EmulatorServer) -> None:
    use(sim)
    body = sample("policy_violated")
    assert post(sim.host, body, signed_headers(body)).status_code == 202  # signed with the vault's secret
    assert (
        post(sim.host, body, signed_headers(body, secret=OTHER_SECRET)).status_code == 401
    )  # the setting's is ignored
    sim.run([])
    assert len(emulator.state.alerts) == 1  # the Defender secret came from the vault too


def test_every_enabled_signing_secret_version_is_accepted(
    vault: Any, sim: Simulation, emulator: EmulatorServer, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SECRET_CACHE_SECONDS", "0")
    use(sim)
    vault.set("noxys-signing-secret", OTHER_SECRET, now=clock.now())  # rotation: new version, old still enabled
    body = sample("high_risk")
    assert post(sim.host, body, signed_headers(body)).status_code == 202
    assert post(sim.host, body, signed_headers(body, secret=OTHER_SECRET)).status_code == 202
    vault.disable_all_but_latest("noxys-signing-secret")  # rotation finished
    assert post(sim.host, body, signed_headers(body)).status_code == 401
    assert post(sim.host, body, signed_headers(body, secret=OTHER_SECRET)).status_code == 202


def test_rotated_signing_secret_is_picked_up_without_a_restart(vault: Any, sim: Simulation, clock: ManualClock) -> None:
    use(sim)  # default cache: 300 s
    body = sample("high_risk")
    assert post(sim.host, body, signed_headers(body)).status_code == 202
    vault.set("noxys-signing-secret", OTHER_SECRET, now=clock.now())
    vault.disable_all_but_latest("noxys-signing-secret")
    # cached value no longer matches: one re-read of the vault, then it verifies
    assert post(sim.host, body, signed_headers(body, secret=OTHER_SECRET)).status_code == 202


def test_defender_secret_rotated_mid_run(
    vault: Any, sim: Simulation, env: Env, emulator: EmulatorServer, clock: ManualClock
) -> None:
    use(sim)
    sim.run([Arrival(0, [violation(1)])])
    assert len(emulator.state.alerts) == 1
    # Rotation: Entra now only knows the new secret, the vault holds it as a new version, and old
    # tokens are refused (so a new token — and the secret — is needed).
    client = emulator.state.clients[(next(iter(emulator.state.tenants)), EMULATOR_CLIENT)]
    client.secret = "rotated-client-secret"
    vault.set("defender-client-secret", "rotated-client-secret", now=clock.now())
    emulator.state.revoked_before = clock.now().timestamp() + 1
    clock.advance(2)
    sim.run([Arrival(0, [violation(2, host="BOB-WS-0042")])])
    assert len(emulator.state.alerts) == 2
    assert ledger_states(env)["evt_sim_00002"] == "alert_created"


def test_vault_unreachable_is_named_and_events_are_kept(
    env: Env,
    sim: Simulation,
    emulator: EmulatorServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from tools.azurite import free_port

    sim.post([violation(3)])  # queued while the vault was fine (plain settings)
    monkeypatch.setenv("KEY_VAULT_URL", f"https://127.0.0.1:{free_port()}")
    use(sim)
    body = sample("high_risk")
    resp = post(sim.host, body, signed_headers(body))
    assert resp.status_code == 503 and resp.json()["error"] == "secrets_unavailable"  # Noxys keeps it and retries
    assert "unreachable" in resp.json()["message"]
    sim.run([], horizon=timedelta(minutes=30))
    assert emulator.state.alerts == []
    entry = env.table("Ledger").get_entity("evt_sim_00003", "event")
    assert entry["state"] == "received" and "SecretUnavailable" in entry["last_problem"]
    assert sim.sender.pending == 1  # kept, retried later
    assert main(["test-connection"]) == 1
    assert "could not be read" in capsys.readouterr().out


def test_identity_without_access_gets_a_clear_error(vault: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AZURE_CLIENT_ID", "8f7e6d5c-4b3a-4291-8e7f-6a5b4c3d2e1f")
    wiring.reset()
    from shared.config import get_settings

    report = connection_test(get_settings(), wiring.credential())
    assert not report.ok and report.problems[0].code == "secret_unavailable"
    assert "Key Vault Secrets User" in report.problems[0].message


# ------------------------------------------------------------------------------ test-connection
def test_connection_ok_prints_the_promise(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["test-connection"]) == 0
    out = capsys.readouterr().out
    assert f"✓ {OK_MESSAGE}" in out
    assert "Alert.ReadWrite.All" in out and "AdvancedQuery.Read.All" in out and "Machine.Read.All" in out


@pytest.mark.parametrize(
    ("changes", "code", "words"),
    [
        (
            {"DEFENDER_CLIENT_ID": EXPIRED_CLIENT[0], "DEFENDER_CLIENT_SECRET": EXPIRED_CLIENT[1]},
            "expired_secret",
            "expired",
        ),
        ({"DEFENDER_CLIENT_SECRET": "not-the-secret-7f3a9c"}, "bad_secret", "secret is wrong"),
        ({"DEFENDER_CLIENT_ID": "00000000-0000-0000-0000-0000000000aa"}, "wrong_client_id", "DEFENDER_CLIENT_ID"),
        ({"DEFENDER_TENANT_ID": "11111111-2222-3333-4444-555555555555"}, "unknown_tenant", "DEFENDER_TENANT_ID"),
        ({"DEFENDER_SCOPE": "https://graph.microsoft.com/.default"}, "wrong_audience", "DEFENDER_SCOPE"),
        ({"DEFENDER_API_URL": "{url}/eu-region-typo"}, "wrong_api_url", "DEFENDER_API_URL"),
        ({"DEFENDER_API_URL": "https://127.0.0.1:{port}"}, "api_unreachable", "cannot reach"),
    ],
    ids=[
        "expired-secret",
        "bad-secret",
        "wrong-client-id",
        "unknown-tenant",
        "wrong-audience",
        "wrong-api-url",
        "unreachable",
    ],
)
def test_connection_names_the_problem(
    env: Env,
    emulator: EmulatorServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    changes: dict[str, str],
    code: str,
    words: str,
) -> None:
    from tools.azurite import free_port

    for k, v in changes.items():
        monkeypatch.setenv(k, v.format(url=emulator.url, port=free_port()))
    wiring.reset()
    assert main(["test-connection", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False and report["problems"][0]["code"] == code, report
    assert words in report["problems"][0]["message"]
    secret = os.environ["DEFENDER_CLIENT_SECRET"]  # the one in use, right or wrong: never echoed
    assert secret not in json.dumps(report)


def test_connection_names_each_missing_permission(
    env: Env, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DEFENDER_CLIENT_ID", LIMITED_CLIENT[0])
    monkeypatch.setenv("DEFENDER_CLIENT_SECRET", LIMITED_CLIENT[1])
    wiring.reset()
    assert main(["test-connection", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["missing"] == ["Alert.ReadWrite.All", "AdvancedQuery.Read.All", "SecurityIncident.ReadWrite.All"]
    assert report["granted"] == ["Machine.Read.All"]
    assert [p["code"] for p in report["problems"]] == ["missing_permission", "missing_permission"]
    (warning,) = report["warnings"]  # incident tagging is a feature: a warning, not the failure
    assert warning["code"] == "feature_permission" and "incident tagging is lost" in warning["message"]


def test_a_missing_feature_permission_warns_and_strict_fails(
    env: Env, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DEFENDER_CLIENT_ID", ALERTS_ONLY_CLIENT[0])
    monkeypatch.setenv("DEFENDER_CLIENT_SECRET", ALERTS_ONLY_CLIENT[1])
    wiring.reset()
    assert main(["test-connection"]) == 0
    out = capsys.readouterr().out
    assert "Successfully connected to Defender for Endpoint (with the warnings above)" in out
    assert "⚠ incident tagging is lost: permission SecurityIncident.ReadWrite.All" in out
    assert "or set INCIDENT_TAGGING=off" in out
    assert main(["test-connection", "--strict"]) == 1
    assert "--strict" in capsys.readouterr().out


def test_connection_endpoint_behind_the_admin_key(host: Any, env: Env) -> None:
    resp = requests.post(f"http://127.0.0.1:{host.http_port}/api/connector/test-connection", timeout=30)
    assert resp.status_code == 200 and resp.json()["ok"] is True


# ------------------------------------------------------------------------------ expiry & health
@pytest.mark.parametrize(
    ("days", "level"),
    [
        (31, None),
        (30, logging.INFO),
        (15, logging.INFO),
        (14, logging.WARNING),
        (7, logging.ERROR),
        (2, logging.ERROR),
        (1, logging.CRITICAL),
        (-3, logging.CRITICAL),
    ],
)
def test_expiry_warning_levels(days: int, level: int | None) -> None:
    warning = expiry_warning(SAMPLE_DAY + timedelta(days=days), SAMPLE_DAY, "the secret")
    assert (warning[0] if warning else None) == level
    if days < 0:
        assert warning and "EXPIRED" in warning[1]


def test_health_check_reads_both_expiries_and_writes_the_record(
    vault: Any, env: Env, emulator: EmulatorServer, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    from shared.status import read_record, run_health_check

    client = emulator.state.clients[(next(iter(emulator.state.tenants)), EMULATOR_CLIENT)]
    client.secret_expires = SAMPLE_DAY + timedelta(days=6, hours=12)  # Entra: 6 days left
    wiring.use(clock=clock)
    caplog.set_level(logging.INFO)
    record = run_health_check(wiring.status_deps())
    assert record["connection"]["ok"] is True
    levels = {w["message"].split(" expires")[0]: w["level"] for w in record["expiry"]}
    assert levels["the Defender client secret (Key Vault defender-client-secret)"] == logging.WARNING  # 10 days
    assert levels["the Entra app's client secret"] == logging.ERROR  # 6 days
    assert any(r.levelno == logging.ERROR and "expires in 6 day" in r.getMessage() for r in caplog.records)
    assert read_record(wiring.status_deps()) == json.loads(json.dumps(record))
    assert EMULATOR_SECRET not in caplog.text


# ------------------------------------------------------------------------------ status
def test_status_explains_why_alerts_are_missing(sim: Simulation, env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    events = [violation(10, device={"hostname": "ZED-PC"}), violation(11, host="DAVE-MBP", platform="mistral")]
    sim.run([Arrival(0, events)])
    body = sample("created_not_forwarded")
    post(sim.host, body, signed_headers(body))
    post(sim.host, body, signed_headers(body, secret=OTHER_SECRET))
    assert main(["status"]) == 0
    out = capsys.readouterr().out
    assert "[incidents not created] 1 event(s) matched no Defender device" in out
    assert "[correlation not working] 1 event(s) found no network connection" in out
    assert "event types not forwarded (FORWARD_EVENT_TYPES): 1 interaction.created" in out
    assert "1 webhook call(s) refused for their signature" in out
    resp = requests.get(f"http://127.0.0.1:{sim.host.http_port}/api/health", timeout=30)
    snap = resp.json()
    assert resp.status_code == 200 and snap["counters"]["outcome.no_device"] == 1
    assert snap["counters"]["ingest.accepted"] == 2
    text = requests.get(f"http://127.0.0.1:{sim.host.http_port}/api/health?format=text", timeout=30).text
    assert text.startswith("Noxys → Defender connector status")


# ------------------------------------------------------------------------------ the switch
def test_switched_off_keeps_50_events_then_delivers_each_once_oldest_first(
    sim: Simulation,
    env: Env,
    emulator: EmulatorServer,
    monkeypatch: pytest.MonkeyPatch,
    clock: ManualClock,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("INTEGRATION_ENABLED", "false")
    use(sim)
    arrivals = [Arrival(i * 10, [violation(100 + i, policy=f"p{i}")]) for i in range(50)]
    sim.run(arrivals)
    assert emulator.state.alerts == [] and emulator.state.calls == []  # no Defender call at all
    assert len(list(env.table("Held").list_entities())) == 50
    assert main(["status"]) == 0
    assert "switched off (INTEGRATION_ENABLED=false): 50 event(s) are kept" in capsys.readouterr().out

    monkeypatch.setenv("INTEGRATION_ENABLED", "true")
    use(sim)
    (release,) = [t for t in sim.host.timers if t.name == "release_held_events"]
    sim.host.fire_timer(release)
    sim.run([])
    alerts = emulator.state.alerts
    assert len(alerts) == 50 and len({a["title"] for a in alerts}) == 50
    assert set(ledger_states(env).values()) == {"alert_created"}
    assert list(env.table("Held").list_entities()) == []
    order = [int(a["title"].removeprefix("Policy violation - Policy p").split()[0]) for a in alerts]
    # released oldest first; workers take them 6 at a time (batchSize + newBatchThreshold), so no
    # alert lands further than that from its event's rank
    assert max(abs(position - rank) for position, rank in enumerate(order)) <= 6, " ".join(map(str, order))


def test_expiry_alert_of_its_own_once_a_day(
    env: Env, emulator: EmulatorServer, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shared.status import run_health_check

    monkeypatch.setenv("SECRET_EXPIRY_ALERT", "true")
    wiring.reset()
    wiring.use(clock=clock)
    client = emulator.state.clients[(next(iter(emulator.state.tenants)), EMULATOR_CLIENT)]
    client.secret_expires = SAMPLE_DAY + timedelta(days=3)
    run_health_check(wiring.status_deps())
    run_health_check(wiring.status_deps())
    (alert,) = emulator.state.graph_alerts
    assert alert["title"] == "Noxys connector: Defender client secret about to expire"
    assert alert["category"] == "Impact" and alert["entityDefinitions"][0]["identifierValue"] == EMULATOR_CLIENT
    assert "expires in 3 day(s)" in alert["description"]
