"""The pure parts of compliance: the facts kept per event, correlation figures and hints, the
report and its renderers, and matching a stored message to a data subject."""

from __future__ import annotations

import json
import shlex
from datetime import UTC, datetime, timedelta

import pytest

from shared import correlation, report
from shared.cli_compliance import moment
from shared.delivery.ledger import Entry, LedgerState
from shared.delivery.message import QueuedEvent
from shared.events import parse_events
from shared.facts import facts, method
from shared.subject import hunting_query, is_subject, purge_request
from tests.support import sample

T0 = datetime(2026, 3, 20, 9, 0, tzinfo=UTC)


def entry(i: int, state: LedgerState, **kw: object) -> Entry:
    base: dict[str, object] = {"received_at": T0.timestamp() + i, "updated_at": T0.timestamp() + i}
    return Entry(f"evt_{i}", state, "interaction.policy_violated", **(base | kw))  # type: ignore[arg-type]


# ---------------------------------------------------------------------- facts
def test_facts_keep_the_person_platform_device_and_pii_types_never_a_value() -> None:
    doc = json.loads(sample("policy_violated"))
    doc["data"]["interaction"]["classifications"][0]["value"] = "CANARY-4111-1111"
    (event,) = parse_events(json.dumps(doc).encode())
    kept = facts(event)
    assert (kept.user, kept.platform, kept.policy_action) == ("alice@acme.fr", "ChatGPT", "block")
    assert kept.pii_types == "EMAIL" and kept.device_keys == "aadDeviceId,fqdn,hostname,ip"
    assert kept.device_name == "alice-laptop.acme.local"
    assert "CANARY" not in repr(kept)


def test_method_is_the_lookup_that_found_the_machine_cached_or_not() -> None:
    assert method("hostname (cached)") == "hostname"
    assert method("ip") == "ip"
    assert method("device ZED-PC: no machine matches") == ""
    assert method(None) == ""


# ---------------------------------------------------------------------- correlation
def test_correlation_shares_methods_delay_and_the_names_that_failed() -> None:
    entries = [
        entry(
            1,
            LedgerState.ALERT_CREATED,
            machine_id="m1",
            resolved_by="hostname",
            anchor_report_id="r",
            accepted_at=T0.timestamp(),
            alert_at=T0.timestamp() + 4,
        ),
        entry(
            2,
            LedgerState.ALERT_CREATED,
            machine_id="m2",
            resolved_by="fqdn (cached)",
            anchor_report_id="r",
            accepted_at=T0.timestamp(),
            alert_at=T0.timestamp() + 10,
        ),
        entry(3, LedgerState.COALESCED, machine_id="m1", resolved_by="hostname (cached)"),
        entry(
            4,
            LedgerState.NO_ANCHOR,
            machine_id="m3",
            resolved_by="ip",
            platform="Mistral",
            reason="no connection to chat.mistral.ai within ±10 min of the interaction",
        ),
        entry(
            5,
            LedgerState.NO_DEVICE,
            device_name="ZED-PC",
            device_keys="hostname",
            reason="device ZED-PC: no machine matches",
        ),
        entry(6, LedgerState.NO_DEVICE, device_name="ZED-PC", device_keys="hostname", reason="x"),
        entry(7, LedgerState.RECEIVED),  # still in delivery: not counted yet
        entry(8, LedgerState.DEAD_LETTERED),  # failed for another reason: not a correlation figure
    ]
    c = correlation.summarize(entries)
    assert (c.events, c.resolved, c.anchored, c.unanchored) == (6, 4, 3, 1)
    assert c.by_method == {"fqdn": 1, "hostname": 2, "ip": 1}
    assert c.resolved_share == pytest.approx(4 / 6) and c.anchored_share == pytest.approx(3 / 4)
    assert c.median_delay_seconds == 7.0
    (zed,) = c.unresolved_devices
    assert (zed.name, zed.events) == ("ZED-PC", 2)
    assert "Noxys sends `ZED-PC`" in zed.hint and "starting with the host name" in zed.hint and "`zed-pc`" in zed.hint
    (mistral,) = c.unanchored_platforms
    assert mistral.name == "Mistral" and "DeviceNetworkEvents" in mistral.hint
    text = "\n".join(correlation.render(c, "today"))
    assert "resolved to a device: 66.7 %" in text and "anchored on the device's connection: 75.0 %" in text


def test_hints_name_what_to_fix() -> None:
    assert "sent no device" in correlation.device_hint("", "", "the event names no device")
    assert "unambiguous" in correlation.device_hint("10.1.99.1", "ip", "ambiguous: 2 machines used 10.1.99.1")
    assert "content_metadata.url" in correlation.platform_hint("Foo", "platform domain unknown")


def test_no_events_gives_no_shares_rather_than_a_division_error() -> None:
    c = correlation.summarize([])
    assert c.resolved_share is None and c.anchored_share is None
    assert "n/a" in "\n".join(correlation.render(c, "today"))


# ---------------------------------------------------------------------- report
def _report(users: tuple[str, ...] = ("alice@acme.fr", "bob@acme.fr")) -> report.Report:
    entries = [
        entry(
            1,
            LedgerState.ALERT_CREATED,
            alert_id="da1",
            alert_at=T0.timestamp(),
            user=users[0],
            platform="ChatGPT",
            device_name="alice-laptop",
            pii_types="EMAIL,IBAN",
        ),
        entry(
            2,
            LedgerState.COALESCED,
            alert_id="da1",
            user=users[0],
            platform="ChatGPT",
            device_name="alice-laptop",
            pii_types="EMAIL",
        ),
        entry(3, LedgerState.NO_DEVICE, user=users[1], platform="DeepSeek", device_name="ZED-PC"),
        entry(4, LedgerState.RECEIVED, user=users[1], platform="DeepSeek"),
    ]
    defender = {"da1": {"id": "da1", "status": "InProgress", "classification": "TruePositive", "incidentId": 1001}}
    return report.build(entries, defender, since=T0, until=T0 + timedelta(days=1), now=T0 + timedelta(days=1))


def test_report_counts_per_platform_user_and_device_with_defender_view() -> None:
    r = _report()
    assert (r.totals.events, r.totals.forwarded, r.totals.outcomes["pending"]) == (4, 2, 1)
    chatgpt = next(p for p in r.platforms if p.name == "ChatGPT")
    assert chatgpt.alert_ids == ["da1"] and chatgpt.pii_types == {"EMAIL": 2, "IBAN": 1}
    assert [u.name for u in r.users] == ["alice@acme.fr", "bob@acme.fr"]
    assert {d.name for d in r.devices} == {"alice-laptop", "ZED-PC", "(not reported)"}
    (alert,) = r.alerts
    assert alert.events == 2 and alert.defender == {
        "status": "InProgress",
        "classification": "TruePositive",
        "incidentId": 1001,
    }


def test_response_actions_are_counted_per_line_and_listed() -> None:
    entries = [
        entry(1, LedgerState.ALERT_CREATED, alert_id="da1", user="alice@acme.fr", platform="ChatGPT",
              device_name="alice-laptop"),
        entry(2, LedgerState.COALESCED, alert_id="da1", user="alice@acme.fr", platform="ChatGPT",
              device_name="alice-laptop"),
    ]  # fmt: skip
    at = T0.timestamp()
    rows = [
        {"event_id": "evt_2", "rule": "r", "action": "isolate", "state": "Succeeded", "at": at, "dry_run": False},
        {"event_id": "evt_2", "rule": "r", "action": "ticket", "state": "done", "at": at, "dry_run": False},
        {"event_id": "evt_1", "rule": "d", "action": "isolate", "state": "dry_run", "at": at, "dry_run": True},
        {"event_id": "evt_2", "rule": "r", "action": "tag_device", "state": "skipped", "at": at, "dry_run": False},
    ]
    r = report.build(entries, {}, since=T0, until=T0 + timedelta(days=1), now=T0, actions=rows)
    assert r.totals.actions == 2 and r.devices[0].actions == 2
    assert r.response_actions == "2 action(s) taken on devices, 1 recorded as dry runs, 1 skipped by a guardrail"
    assert ("isolate", "Succeeded", "alice-laptop") in {(a.action, a.state, a.device) for a in r.actions}
    assert '<table id="actions">' in report.render_html(r) and "## Response actions" in report.render_markdown(r)
    plain = report.build(entries, {}, since=T0, until=T0, now=T0)
    assert plain.response_actions.startswith("automated response is not configured")


def test_html_is_self_contained_and_escapes_what_senders_control() -> None:
    page = report.render_html(_report(users=("<script>alert(1)</script>", "bob@acme.fr")))
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "default-src 'none'" in page  # nothing can be loaded, even by a crafted value
    assert "http://" not in page and "https://" not in page
    assert 'id="by-platform"' in page and 'id="by-user"' in page and 'id="by-device"' in page and "<svg" in page


def test_markdown_and_json_carry_the_same_figures() -> None:
    r = _report(users=("a|b@acme.fr", "bob@acme.fr"))
    md = report.render_markdown(r)
    assert "a\\|b@acme.fr" in md and "| ChatGPT | 2 | 2 | 1 | 1 |" in md
    doc = json.loads(report.render_json(r))
    assert doc["totals"]["events"] == 4 and doc["alerts"][0]["defender"]["status"] == "InProgress"


# ---------------------------------------------------------------------- subject requests and periods
def test_a_stored_message_is_matched_by_email_any_case_or_by_user_id() -> None:
    (event,) = parse_events(sample("policy_violated"))
    text = QueuedEvent.new(event, T0).to_text()
    assert is_subject(text, "ALICE@acme.fr") and is_subject(text, "00000000-0000-0000-0000-000000000010")
    assert not is_subject(text, "bob@acme.fr") and not is_subject("not json", "alice@acme.fr")


def test_the_purge_request_is_a_shell_command_that_keeps_the_quote() -> None:
    """An operator pastes it into a shell: it must parse there, and the body must name the user
    with their apostrophe (o'neil), not cut at it."""
    words = shlex.split(purge_request("o'neil@acme.fr"))
    assert words[:4] == ["az", "rest", "--method", "post"] and words[-2] == "--body"
    body = json.loads(words[-1])
    assert body["filters"] == [{"column": "UserPrincipalName", "operator": "==", "value": "o'neil@acme.fr"}]


def test_the_hunting_query_quotes_the_user() -> None:
    assert 'UserPrincipalName =~ "alice@acme.fr"' in hunting_query("alice@acme.fr")


def test_periods_are_relative_or_iso() -> None:
    assert moment("7d", T0) == T0 - timedelta(days=7)
    assert moment("24h", T0) == T0 - timedelta(hours=24)
    assert moment("2026-03-19T00:00:00", T0) == datetime(2026, 3, 19, tzinfo=UTC)
    with pytest.raises(ValueError, match="isoformat"):
        moment("last tuesday", T0)


def test_a_blank_user_is_refused_before_any_table_is_read() -> None:
    import argparse

    from shared.cli_compliance import subject_user
    from shared.subject import SubjectRequests

    assert subject_user("  alice@acme.fr ") == "alice@acme.fr"
    with pytest.raises(argparse.ArgumentTypeError, match="must name a user"):
        subject_user("   ")

    def no_table(name: str) -> object:
        raise AssertionError(f"read {name}")

    with pytest.raises(ValueError, match="needs a user"):
        SubjectRequests(no_table).find(" ")  # type: ignore[arg-type]
