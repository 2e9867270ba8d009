"""The pure parts of compliance: the facts kept per event, correlation figures and hints, the
report and its renderers, and matching a stored message to a data subject."""

from __future__ import annotations

import dataclasses
import json
import shlex
from datetime import UTC, datetime, timedelta

import pytest

from ops import report
from ops.cli_compliance import moment
from ops.subject import Findings, Subject, hunting_query, is_subject, purge_request
from shared import correlation
from shared.delivery.ledger import Entry, KeptFacts, LedgerState
from shared.events import parse_events
from shared.facts import facts, method
from shared.tasks import QueuedEvent
from tests.support import sample

T0 = datetime(2026, 3, 20, 9, 0, tzinfo=UTC)
FACTS = [f.name for f in dataclasses.fields(KeptFacts)]


def entry(i: int, state: LedgerState, **kw: object) -> Entry:
    base: dict[str, object] = {"received_at": T0.timestamp() + i, "updated_at": T0.timestamp() + i}
    kept = KeptFacts(**{k: kw.pop(k) for k in FACTS if k in kw})  # type: ignore[arg-type]
    return Entry(f"evt_{i}", state, "interaction.policy_violated", **(base | kw), facts=kept)  # type: ignore[arg-type]


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
    assert "PLATFORM_DOMAINS" in correlation.platform_hint("Foo", "no known domain for Foo (an in-house platform?)")


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
    assert is_subject(text, Subject.of("email", "ALICE@acme.fr"))
    assert is_subject(text, Subject.of("user_id", "00000000-0000-0000-0000-000000000010"))
    assert not is_subject(text, Subject.of("email", "bob@acme.fr"))
    assert not is_subject("not json", Subject.of("email", "alice@acme.fr"))


def test_email_and_user_id_are_separate_namespaces() -> None:
    """An event whose Noxys user id is alice@acme.fr but whose e-mail is Bob's is Bob's."""
    doc = json.loads(sample("policy_violated"))
    doc["data"]["interaction"].update(user_id="alice@acme.fr", user_email="bob@acme.fr")
    (event,) = parse_events(json.dumps(doc).encode())
    text = QueuedEvent.new(event, T0).to_text()
    assert not is_subject(text, Subject.of("email", "alice@acme.fr"))
    assert is_subject(text, Subject.of("email", "Bob@ACME.fr"))
    assert is_subject(text, Subject.of("user_id", "alice@acme.fr"))
    kept = facts(event)
    assert (kept.email, kept.user_id) == ("bob@acme.fr", "alice@acme.fr")


def test_a_look_alike_is_refused_and_never_folds_into_another_person() -> None:
    """``Kate@acme.fr`` with U+212A KELVIN SIGN: ``.lower()`` made it kate@acme.fr's rows."""
    with pytest.raises(ValueError, match="U\\+212A"):
        Subject.of("email", "\u212aate@acme.fr")
    assert Subject.of("email", "KATE@acme.fr").value == "kate@acme.fr"
    # two mailboxes, not one (casefold would make straße@ strasse@ and erase both)
    assert Subject.of("email", "STRASSE@acme.fr").value == "strasse@acme.fr"
    assert not Subject.of("email", "strasse@acme.fr").names("straße@acme.fr", None)


def _found(kind: str, who: str, ids: tuple[str, ...] = ()) -> Findings:
    found = Findings(Subject.of("email" if kind == "email" else "user_id", who))
    found.rows["Ledger"] = [{"event_id": i} for i in ids]
    return found


def test_the_purge_request_is_a_shell_command_that_keeps_the_quote() -> None:
    """An operator pastes it into a shell: it must parse there, and the body must name the user
    with their apostrophe (o'neil), not cut at it."""
    words = shlex.split(purge_request(_found("email", "o'neil@acme.fr")))
    assert words[:4] == ["az", "rest", "--method", "post"] and words[-2] == "--body"
    body = json.loads(words[-1])
    assert body["filters"] == [{"column": "UserPrincipalName", "operator": "==", "value": "o'neil@acme.fr"}]


def test_the_hunting_query_quotes_the_user() -> None:
    assert 'UserPrincipalName =~ "alice@acme.fr"' in hunting_query(_found("email", "alice@acme.fr"))


def test_a_request_by_user_id_finds_hunting_rows_by_event_id() -> None:
    """The hunting table names people by e-mail only: by user id, the events found are the key."""
    found = _found("user_id", "u-1", ("evt_1", "evt_2"))
    assert 'EventId in ("evt_1", "evt_2")' in hunting_query(found)
    body = json.loads(shlex.split(purge_request(found))[-1])
    assert body["filters"] == [{"column": "EventId", "operator": "in", "value": ["evt_1", "evt_2"]}]


def test_periods_are_relative_or_iso() -> None:
    assert moment("7d", T0) == T0 - timedelta(days=7)
    assert moment("24h", T0) == T0 - timedelta(hours=24)
    assert moment("2026-03-19T00:00:00", T0) == datetime(2026, 3, 19, tzinfo=UTC)
    with pytest.raises(ValueError, match="isoformat"):
        moment("last tuesday", T0)


def test_a_blank_user_is_refused_before_any_table_is_read() -> None:
    import argparse

    from ops.cli_compliance import subject_email

    assert subject_email("  alice@acme.fr ").typed == "alice@acme.fr"
    with pytest.raises(argparse.ArgumentTypeError, match="needs a user"):
        subject_email("   ")
    with pytest.raises(argparse.ArgumentTypeError, match="U\\+212A"):
        subject_email("\u212aate@acme.fr")


# ---------------------------------------------------------------------- exports that could attack their reader
HOSTILE_NAMES = (
    '<img src=x onerror="alert(1)">@acme.fr',
    "[click](javascript:alert(1))",
    "<script>alert(1)</script>",
    "ali\u202ecod.exe\u200b@acme.fr",
)


def test_the_markdown_report_renders_hostile_names_as_text() -> None:
    """Through a real CommonMark renderer: no tag, no link, no invisible character comes out."""
    from markdown_it import MarkdownIt

    r = _report(users=HOSTILE_NAMES[:2])
    r.devices[0].name, r.platforms[0].name = HOSTILE_NAMES[2], HOSTILE_NAMES[3]
    rendered = MarkdownIt("commonmark").enable("table").render(report.render_markdown(r))
    assert "<img" not in rendered and "<script" not in rendered and "<a " not in rendered
    assert "&lt;img src=x onerror=" in rendered and "[click](javascript:alert(1))" in rendered
    assert "\u202e" not in rendered and "\u200b" not in rendered and "alicod.exe@acme.fr" in rendered


def test_the_html_report_removes_invisible_characters_from_names() -> None:
    r = _report(users=(HOSTILE_NAMES[3], "bob@acme.fr"))
    page = report.render_html(r)
    assert "\u202e" not in page and "\u200b" not in page and "alicod.exe@acme.fr" in page


@pytest.mark.parametrize("cell", ['=HYPERLINK("https://x.example","open")', "+1+2", "-2+3", "@SUM(A1)", "\tx", "\rx"])
def test_a_csv_audit_export_never_starts_a_cell_with_a_formula(cell: str) -> None:
    import csv
    import io

    from shared.audit import FIELDS, export

    row = dict.fromkeys(FIELDS, "") | {"event_id": cell, "path": "/api/alerts", "status": 200}
    lines = list(export(iter([row]), "csv"))
    (read,) = list(csv.DictReader(io.StringIO("\n".join(lines), newline="")))
    assert read["event_id"] == "'" + cell and read["path"] == "/api/alerts"
    (kept,) = list(export(iter([row]), "jsonl"))
    assert json.loads(kept)["event_id"] == cell  # JSON is data, not a spreadsheet: kept as it is
