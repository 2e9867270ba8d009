"""The emulator enforces what docs/reference/defender-api.md documents, through the real client libraries."""

from __future__ import annotations

import base64
from datetime import timedelta
from typing import Any

import jwt
import pytest
import requests

from shared.config import load_settings
from shared.defender.auth import CredentialTokenProvider, build_credential
from shared.defender.client import DefenderClient
from shared.defender.errors import DefenderError
from tests.support import EMULATOR_CLIENT, EMULATOR_SECRET, EMULATOR_TENANT, EXPIRED_CLIENT, LIMITED_CLIENT
from tools.emulator.server import EmulatorServer
from tools.emulator.state import ManualClock

pytestmark = pytest.mark.integration
ALICE = "ce860c412c3cebc4af806281c2881c3c937a1d58"


@pytest.fixture(autouse=True)
def trust_emulator(monkeypatch: pytest.MonkeyPatch, emulator: EmulatorServer) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(emulator.ca_file))


def provider(
    emulator: EmulatorServer,
    client: str = EMULATOR_CLIENT,
    secret: str = EMULATOR_SECRET,
    tenant: str = EMULATOR_TENANT,
    scope: str = "https://api.securitycenter.microsoft.com/.default",
) -> CredentialTokenProvider:
    s = load_settings(
        {
            "DEFENDER_TENANT_ID": tenant,
            "DEFENDER_CLIENT_ID": client,
            "DEFENDER_CLIENT_SECRET": secret,
            "DEFENDER_AUTHORITY_HOST": emulator.url,
        }
    )
    return CredentialTokenProvider(build_credential(s), scope)


def client(emulator: EmulatorServer, **kw: Any) -> DefenderClient:
    return DefenderClient(emulator.url, provider(emulator, **kw))


# ---------------------------------------------------------------- Entra ID
def test_token_carries_the_apps_roles(emulator: EmulatorServer) -> None:
    claims = jwt.decode(provider(emulator).token(), options={"verify_signature": False})
    assert claims["aud"] == "https://api.securitycenter.microsoft.com"
    assert set(claims["roles"]) == {
        "Alert.ReadWrite.All", "Machine.Read.All", "AdvancedQuery.Read.All",
        "Machine.Isolate", "Machine.RestrictExecution", "Machine.Scan", "Machine.CollectForensics",
        "Machine.ReadWrite.All", "Ti.ReadWrite.All",
    }  # fmt: skip  # the MDE roles only: the Graph ones go in a Graph token
    limited = jwt.decode(
        provider(emulator, client=LIMITED_CLIENT[0], secret=LIMITED_CLIENT[1]).token(),
        options={"verify_signature": False},
    )
    assert limited["roles"] == ["Machine.Read.All"]


@pytest.mark.parametrize(
    ("kw", "words"),
    [
        ({"secret": "wrong"}, "AADSTS7000215"),
        ({"client": "00000000-0000-0000-0000-000000000001"}, "AADSTS700016"),
        ({"client": EXPIRED_CLIENT[0], "secret": EXPIRED_CLIENT[1]}, "AADSTS7000222"),
        ({"tenant": "11111111-1111-1111-1111-111111111111"}, "authority"),
        ({"scope": "https://nowhere.example/.default"}, "AADSTS500011"),
    ],
    ids=["wrong-secret", "unknown-client", "expired-secret", "unknown-tenant", "unknown-resource"],
)
def test_token_failures_are_typed_and_named(emulator: EmulatorServer, kw: dict[str, str], words: str) -> None:
    with pytest.raises(DefenderError) as err:
        DefenderClient(emulator.url, provider(emulator, **kw)).list_machines(top=1)
    assert err.value.code == "TokenError" and words in err.value.message
    assert "wrong" not in err.value.message  # the secret itself is never quoted


def test_wrong_audience_is_403(emulator: EmulatorServer) -> None:
    graph = provider(emulator, scope="https://graph.microsoft.com/.default")
    with pytest.raises(DefenderError) as err:
        DefenderClient(emulator.url, graph).list_machines(top=1)
    assert err.value.status == 403 and "audience" in err.value.message


def test_missing_role_is_403_naming_it(emulator: EmulatorServer) -> None:
    c = client(emulator, client=LIMITED_CLIENT[0], secret=LIMITED_CLIENT[1])
    assert c.list_machines(top=1)
    with pytest.raises(DefenderError) as err:
        c.run_hunting_query("DeviceNetworkEvents")
    assert err.value.status == 403 and "AdvancedQuery.Read.All" in err.value.message and err.value.target


def test_no_or_forged_token_is_401(emulator: EmulatorServer) -> None:
    url = f"{emulator.url}/api/machines"
    assert requests.get(url, timeout=10).status_code == 401
    forged = jwt.encode(
        {"aud": "https://api.securitycenter.microsoft.com", "roles": ["Machine.Read.All"], "exp": 4102444800}, "k" * 32
    )
    resp = requests.get(url, headers={"Authorization": f"Bearer {forged}"}, timeout=10)
    assert resp.status_code == 401 and resp.json()["error"]["code"] == "Unauthorized"


# ---------------------------------------------------------------- machines
def test_machine_filters(emulator: EmulatorServer) -> None:
    c = client(emulator)
    assert [m["id"] for m in c.list_machines("computerDnsName eq 'alice-laptop.acme.local'")] == [ALICE]
    assert len(c.list_machines("startswith(computerDnsName,'bob-ws-0042')")) == 2
    assert [m["id"] for m in c.list_machines("aadDeviceId eq '5b1c3a9e-0d7f-4c1b-9a8e-2f6d4e3c2b1a'")] == [ALICE]
    assert c.list_machines("computerDnsName eq 'ALICE-LAPTOP.acme.local'") == []
    assert len(c.list_machines(top=2)) == 2
    with pytest.raises(DefenderError) as err:
        c.list_machines("contains(computerDnsName,'alice')")
    assert err.value.status == 400 and err.value.code == "InvalidInput"
    with pytest.raises(DefenderError):
        c.list_machines("secretField eq 'x'")


def test_machine_by_id_or_name_and_404(emulator: EmulatorServer) -> None:
    c = client(emulator)
    assert c.get_machine(ALICE)["computerDnsName"] == "alice-laptop.acme.local"  # type: ignore[index]
    assert c.get_machine("alice-laptop.acme.local")["id"] == ALICE  # type: ignore[index]
    assert c.get_machine("f" * 40) is None


# ---------------------------------------------------------------- hunting
QUERY = """DeviceNetworkEvents
| where Timestamp between (datetime(2026-03-20T14:22:00Z) .. datetime(2026-03-20T14:42:00Z))
| where DeviceId == "{dev}"
| where RemoteUrl has_any ("chatgpt.com")
| extend Distance = abs(datetime_diff('second', Timestamp, datetime(2026-03-20T14:32:00Z)))
| top 5 by Distance asc
| project Timestamp, ReportId, DeviceId, RemoteUrl"""


def test_hunting_returns_nearest_connections_first(emulator: EmulatorServer) -> None:
    rows = client(emulator).run_hunting_query(QUERY.format(dev=ALICE))
    assert 1 <= len(rows) <= 5 and all(r["RemoteUrl"] == "chatgpt.com" for r in rows)
    from tools.emulator.state import parse_time

    gaps = [abs((parse_time(r["Timestamp"]) - parse_time("2026-03-20T14:32:00Z")).total_seconds()) for r in rows]
    assert gaps == sorted(gaps) and gaps[0] <= 90  # traffic every 180 s


def test_hunting_keeps_only_30_days(emulator: EmulatorServer, clock: ManualClock) -> None:
    clock.advance(timedelta(days=31).total_seconds())
    c = client(emulator)
    assert c.run_hunting_query(QUERY.format(dev=ALICE)) == []


def test_hunting_refuses_unknown_query_shapes(emulator: EmulatorServer) -> None:
    with pytest.raises(DefenderError) as err:
        client(emulator).run_hunting_query("DeviceProcessEvents | take 10")
    assert err.value.status == 400


# ---------------------------------------------------------------- CreateAlertByReference
def anchor_body(emulator: EmulatorServer, **changes: Any) -> dict[str, Any]:
    row = client(emulator).run_hunting_query(QUERY.format(dev=ALICE))[0]
    body = {
        "machineId": ALICE,
        "reportId": str(row["ReportId"]),
        "eventTime": row["Timestamp"],
        "severity": "High",
        "title": "Policy violation - test",
        "description": "d",
        "recommendedAction": "r",
        "category": "Exfiltration",
    }
    body.update(changes)
    return {k: v for k, v in body.items() if v is not None}


@pytest.mark.parametrize(
    ("changes", "status", "code", "words"),
    [
        ({"recommendedAction": None}, 400, "MissingRequiredParameter", "recommendedAction"),
        ({"title": None, "Title": "x"}, 400, "MissingRequiredParameter", "case-sensitive"),
        ({"severity": "Critical"}, 400, "InvalidInput", "severity"),
        ({"severity": "high"}, 400, "InvalidInput", "severity"),
        ({"category": "AIFirewall"}, 400, "InvalidInput", "category"),
        ({"machineId": "f" * 40}, 404, "ResourceNotFound", "Machine"),
        ({"reportId": "1"}, 404, "ResourceNotFound", "No event"),
        ({"eventTime": "2026-03-20T14:32:00Z"}, 404, "ResourceNotFound", "No event"),
    ],
    ids=[
        "missing-field",
        "wrong-case",
        "bad-severity",
        "severity-case",
        "bad-category",
        "unknown-machine",
        "unknown-report",
        "wrong-time",
    ],
)
def test_create_alert_rules(
    emulator: EmulatorServer, changes: dict[str, Any], status: int, code: str, words: str
) -> None:
    with pytest.raises(DefenderError) as err:
        client(emulator).create_alert_by_reference(anchor_body(emulator, **changes))
    assert (err.value.status, err.value.code) == (status, code) and words in err.value.message
    assert emulator.state.alerts == []


def test_open_alert_with_same_title_on_same_device_is_merged(emulator: EmulatorServer) -> None:
    c = client(emulator)
    first = c.create_alert_by_reference(anchor_body(emulator))
    again = c.create_alert_by_reference(anchor_body(emulator, severity="Low"))
    other = c.create_alert_by_reference(anchor_body(emulator, title="Another title"))
    assert again["id"] == first["id"] and other["id"] != first["id"]
    assert other["incidentId"] == first["incidentId"]
    assert len(emulator.state.alerts) == 2 and emulator.state.merged == {first["id"]: 1}


def test_fifteen_alert_calls_per_minute_then_429_with_retry_after(emulator: EmulatorServer, clock: ManualClock) -> None:
    c = client(emulator)
    for i in range(15):
        c.create_alert_by_reference(anchor_body(emulator, title=f"t{i}"))
        clock.advance(2)
    with pytest.raises(DefenderError) as err:
        c.create_alert_by_reference(anchor_body(emulator, title="t15"))
    assert err.value.status == 429 and err.value.code == "TooManyRequests"
    assert err.value.retry_after == 30  # the first call (t=0) leaves the window at t=60; now is t=30
    clock.advance(err.value.retry_after)
    assert c.create_alert_by_reference(anchor_body(emulator, title="t15"))["title"] == "t15"
    assert emulator.state.throttled == {"alerts.create": 1}


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"category": "General"}, "not a MITRE ATT&CK tactic"),
        ({"category": None}, "category is required"),
        ({"entityDefinitions": []}, "at least one entity"),
        ({"entityDefinitions": [{"entityType": "device"}]}, "entityDefinitions[0].entityIdentifier is required"),
    ],
)
def test_graph_create_alert_enforces_its_documented_required_fields(
    emulator: EmulatorServer, change: dict[str, Any], words: str
) -> None:
    from tools.emulator.common import ApiError

    good = {
        "title": "t",
        "severity": "high",
        "description": "d",
        "category": "Exfiltration",
        "entityDefinitions": [
            {"entityType": "device", "entityIdentifier": "deviceId", "identifierValue": "m1", "role": "impacted"}
        ],
    }
    assert emulator.state.graph_create_alert({"createAlertInput": good})["id"]
    with pytest.raises(ApiError) as err:
        emulator.state.graph_create_alert({"createAlertInput": {**good, **change}})
    assert err.value.status == 400 and words in err.value.message


# ---------------------------------------------------------------- response (reference §8 and §9)
def test_a_machine_action_progresses_and_cannot_be_repeated_while_it_runs(emulator: EmulatorServer) -> None:
    api = client(emulator)  # the connector's app holds the response permissions
    action = api.machine_action(ALICE, "isolate", {"Comment": "test", "IsolationType": "Selective"})
    assert (action["type"], action["status"]) == ("Isolate", "Pending")
    with pytest.raises(DefenderError) as running:
        api.machine_action(ALICE, "isolate", {"Comment": "again", "IsolationType": "Selective"})
    assert (running.value.status, running.value.code) == (400, "ActiveRequestAlreadyExists")
    emulator.state.clock.advance(15)  # type: ignore[attr-defined]
    assert api.get_machine_action(action["id"])["status"] == "InProgress"
    emulator.state.clock.advance(60)  # type: ignore[attr-defined]
    assert api.get_machine_action(action["id"])["status"] == "Succeeded"
    assert api.machine_action(ALICE, "isolate", {"Comment": "now", "IsolationType": "Full"})["status"] == "Pending"
    with pytest.raises(DefenderError, match="ScanType must be one of"):
        api.machine_action(ALICE, "runAntiVirusScan", {"Comment": "x", "IsolationType": "Full"})
    with pytest.raises(DefenderError) as unknown:
        api.machine_action("0" * 40, "isolate", {"Comment": "x", "IsolationType": "Full"})
    assert unknown.value.status == 404


def test_each_action_needs_its_own_permission(emulator: EmulatorServer) -> None:
    limited = client(emulator, client=LIMITED_CLIENT[0], secret=LIMITED_CLIENT[1])
    with pytest.raises(DefenderError) as refused:
        limited.machine_action(ALICE, "isolate", {"Comment": "x", "IsolationType": "Full"})
    assert refused.value.status == 403 and "Machine.Isolate" in refused.value.message
    with pytest.raises(DefenderError, match=r"Ti\.ReadWrite\.All"):
        limited.add_indicator({"indicatorValue": "chatgpt.com", "indicatorType": "DomainName"})


def test_indicators_are_validated_and_capped(emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch) -> None:
    from tools.emulator import response

    api = client(emulator)  # the connector's app holds the response permissions
    good = {"indicatorValue": "chat.deepseek.com", "indicatorType": "DomainName", "action": "Block",
            "title": "t", "description": "d"}  # fmt: skip
    with pytest.raises(DefenderError, match="indicatorType must be one of"):
        api.add_indicator(good | {"indicatorType": "Domain"})
    with pytest.raises(DefenderError, match="expirationTime must be in the future"):
        api.add_indicator(good | {"expirationTime": "2001-01-01T00:00:00Z"})
    assert api.add_indicator(good)["id"] == "1"
    assert api.add_indicator(good | {"action": "Warn"})["id"] == "1"  # same value and type: updated
    monkeypatch.setattr(response, "MAX_INDICATORS", 1)
    with pytest.raises(DefenderError, match=r"maximum number of indicators \(1\)"):
        api.add_indicator(good | {"indicatorValue": "gemini.google.com"})


def test_the_ticket_receiver_verifies_the_signature(emulator: EmulatorServer) -> None:
    from shared.response.ticket import HttpTickets

    secret = "whsec_" + base64.b64encode(b"relay-secret-for-the-emulator-01").decode()
    emulator.state.response.ticket_secret = secret
    assert (
        HttpTickets(f"{emulator.url}/tickets", lambda: secret, emulator.state.clock.now).open("t-1", {"a": 1})
        == "ticket INC0000001"
    )
    assert (
        HttpTickets(f"{emulator.url}/tickets", lambda: secret, emulator.state.clock.now)
        .open("t-1", {"a": 1})
        .startswith("ticket accepted")
    )
    wrong = "whsec_" + base64.b64encode(b"not-the-relay-secret-at-all-0001").decode()
    with pytest.raises(DefenderError) as refused:
        HttpTickets(f"{emulator.url}/tickets", lambda: wrong, emulator.state.clock.now).open("t-2", {"a": 1})
    assert refused.value.status == 401 and len(emulator.state.response.tickets) == 1
