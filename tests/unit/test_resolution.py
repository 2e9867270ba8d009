"""Device lookups, machine choice and the anchor query (pure parts)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from shared import anchor, devices
from shared.delivery.devicecache import identity
from shared.events import Device

A = "a" * 40
B = "b" * 40
C = "c" * 40


def test_lookups_go_from_most_to_least_specific() -> None:
    d = Device(
        hostname="ALICE-LAPTOP", fqdn="Alice-Laptop.acme.local", aad_device_id="5B1C3A9E-0D7F-4C1B-9A8E-2F6D4E3C2B1A"
    )
    assert [(lk.by, lk.odata_filter) for lk in devices.lookups(d)] == [
        ("aadDeviceId", "aadDeviceId eq '5b1c3a9e-0d7f-4c1b-9a8e-2f6d4e3c2b1a'"),
        ("fqdn", "computerDnsName eq 'alice-laptop.acme.local'"),
        ("hostname", "startswith(computerDnsName,'alice-laptop')"),
    ]


def test_malformed_identifiers_are_not_sent() -> None:
    d = Device(hostname="x' or 1 eq 1 or 'y", fqdn="bad name.local", aad_device_id="not-a-guid")
    assert devices.lookups(d) == []


def test_hostname_lookup_keeps_exact_short_names_only() -> None:
    (lk,) = devices.lookups(Device(hostname="BOB-WS-0042"))
    assert lk.keep({"computerDnsName": "bob-ws-0042.acme.local"})
    assert lk.keep({"computerDnsName": "bob-ws-0042"})
    assert not lk.keep({"computerDnsName": "bob-ws-00421.acme.local"})


def test_choice_prefers_aad_match_then_active_then_latest() -> None:
    old_active = {"id": A, "healthStatus": "Active", "lastSeen": "2026-01-01T00:00:00Z", "aadDeviceId": None}
    new_inactive = {"id": B, "healthStatus": "Inactive", "lastSeen": "2026-03-01T00:00:00Z", "aadDeviceId": None}
    newest_active = {"id": C, "healthStatus": "Active", "lastSeen": "2026-03-02T00:00:00Z", "aadDeviceId": "x"}
    assert devices.choose([old_active, new_inactive], Device(hostname="h"))["id"] == A  # type: ignore[index]
    assert devices.choose([old_active, new_inactive, newest_active], Device(hostname="h"))["id"] == C  # type: ignore[index]
    assert devices.choose([old_active, new_inactive], Device(aad_device_id="zzz"))["id"] == A  # type: ignore[index]
    inactive_aad = dict(new_inactive, aadDeviceId="the-aad")
    assert devices.choose([old_active, inactive_aad], Device(aad_device_id="THE-AAD"))["id"] == B  # type: ignore[index]
    assert devices.choose([{"id": "not-a-machine-id"}], Device(hostname="h")) is None


AROUND = datetime(2026, 3, 20, 14, 32, tzinfo=UTC)


def test_hunting_query_shape() -> None:
    q = anchor.hunting_query(A, ("chatgpt.com", "openai.com"), AROUND, timedelta(minutes=10))
    assert q.splitlines()[0] == "DeviceNetworkEvents"
    assert "between (datetime(2026-03-20T14:22:00Z) .. datetime(2026-03-20T14:42:00Z))" in q
    assert f'DeviceId == "{A}"' in q and 'has_any ("chatgpt.com", "openai.com")' in q


@pytest.mark.parametrize(("machine", "domains"), [("x" * 40, ("a.com",)), (A, ('a.com") | evil',)), (A, ())])
def test_hunting_query_refuses_unsafe_input(machine: str, domains: tuple[str, ...]) -> None:
    with pytest.raises(ValueError, match="must be"):
        anchor.hunting_query(machine, domains, AROUND, timedelta(minutes=10))


def test_pick_nearest_matching_row() -> None:
    rows = [
        {"Timestamp": "2026-03-20T14:25:00.1234567Z", "ReportId": 1, "DeviceId": A, "RemoteUrl": "chatgpt.com"},
        {
            "Timestamp": "2026-03-20T14:31:30.1234567Z",
            "ReportId": 2,
            "DeviceId": A,
            "RemoteUrl": "https://chatgpt.com/c/1",
        },
        {"Timestamp": "2026-03-20T14:32:01Z", "ReportId": 3, "DeviceId": B, "RemoteUrl": "chatgpt.com"},
        {"Timestamp": "2026-03-20T14:32:02Z", "ReportId": 4, "DeviceId": A, "RemoteUrl": "notchatgpt.com"},
    ]
    found = anchor.pick(rows, A, ("chatgpt.com",), AROUND)
    assert found == anchor.Anchor(A, "2", "2026-03-20T14:31:30.1234567Z", "https://chatgpt.com/c/1")
    assert anchor.pick(rows[2:], A, ("chatgpt.com",), AROUND) is None


def test_identifiers_are_trimmed_case_folded_and_validated_once() -> None:
    padded = Device(
        hostname=" GINA-PC ",
        fqdn="Gina-PC.Branch.Acme.Local. ",
        aad_device_id=" 5B1C3A9E-0D7F-4C1B-9A8E-2F6D4E3C2B1A ",
        ip_address=" 10.1.8.8 ",
    )
    assert devices.ids_of(padded) == devices.Ids(
        "5b1c3a9e-0d7f-4c1b-9a8e-2f6d4e3c2b1a", "gina-pc.branch.acme.local", "gina-pc", "10.1.8.8"
    )
    assert devices.ids_of(Device(hostname="bad;name", fqdn="nodot", aad_device_id="zzz", ip_address="1.2")) == (
        devices.Ids()
    )
    # the cache key and the lookups see one device, however it is padded or cased
    assert identity(Device(hostname="GINA-PC ")) == identity(Device(hostname="gina-pc"))
    filters = [
        lk.odata_filter for lk in devices.lookups(Device(hostname=" GINA-PC", fqdn=" gina-pc.branch.acme.local"))
    ]
    assert filters == [
        lk.odata_filter for lk in devices.lookups(Device(hostname="gina-pc", fqdn="gina-pc.branch.acme.local"))
    ]
