"""The ``notify_user`` mail (pure): the template is checked when it loads, every value is escaped,
PII types are words and never values, and a rules file accepts the action with its limits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shared.response.notify import (
    DEFAULT_HTML,
    MailTemplate,
    TemplateError,
    load_template,
    parse_template,
    recipient,
    render,
)
from shared.response.rules import Situation, parse_rules, setting_warnings

SITUATION = Situation(
    "interaction.policy_violated",
    "High",
    0.9,
    "chatgpt",
    "ChatGPT",
    "block",
    policy_name="Block PII on ChatGPT",
    pii_types=("EMAIL", "IBAN"),
    occurred_at="2026-03-20T14:32:00Z",
)


def test_the_default_mail_says_what_when_and_which_types_in_words_as_graph_expects_it() -> None:
    mail = render(MailTemplate(), "alice@acme.fr", SITUATION, "the SOC (soc@acme.fr)")
    assert mail.subject == "Security notice: your use of ChatGPT was flagged"
    assert "2026-03-20 14:32:00 (UTC)" in mail.html and "Block PII on ChatGPT" in mail.html
    assert "Email address, IBAN (bank account)" in mail.html and "EMAIL" not in mail.html
    assert "Contact the SOC (soc@acme.fr)." in mail.html
    body = mail.graph_body()
    assert body["message"]["toRecipients"] == [{"emailAddress": {"address": "alice@acme.fr"}}]
    assert body["message"]["body"]["contentType"] == "HTML" and body["saveToSentItems"] is False
    assert mail.preview().startswith("To: alice@acme.fr\nSubject: Security notice")


def test_every_inserted_value_is_escaped_and_a_subject_cannot_gain_a_header() -> None:
    hostile = Situation(
        "interaction.policy_violated", "High", 0.9, "x", "Chat\r\nBcc: all@acme.fr", "block",
        policy_name='<script>alert("x")</script>',
    )  # fmt: skip
    mail = render(MailTemplate(), "alice@acme.fr", hostile)
    assert "<script>" not in mail.html and "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in mail.html
    assert "\n" not in mail.subject and "\r" not in mail.subject
    assert "information the policy protects" in mail.html  # no PII type: said in words, not left blank


@pytest.mark.parametrize(
    ("doc", "words"),
    [
        ({"subject": "Hi ${name}", "html": "<p>x</p>"}, "subject: unknown placeholder ${name}"),
        ({"subject": "Hi", "html": "<p>costs 5$</p>"}, "html: a '$' that is not a placeholder"),
        ({"subject": "Hi"}, "html: a non-empty string is required"),
        ({"subject": "Hi", "html": "x", "bcc": "all@acme.fr"}, "bcc: unknown field"),
        ({"subject": "Hi ${platform.__class__}", "html": "x"}, "subject: a '$' that is not a placeholder"),
        (["not", "an", "object"], "a JSON object with 'subject' and 'html' is required"),
    ],
)
def test_a_template_file_is_checked_when_it_loads(doc: object, words: str) -> None:
    with pytest.raises(TemplateError, match="NOTIFY_TEMPLATE_FILE") as refused:
        parse_template(doc, "mail.json")
    assert words in str(refused.value)


def test_a_template_file_overrides_the_default_and_a_broken_file_is_named(tmp_path: Path) -> None:
    assert load_template(None).html == DEFAULT_HTML
    good = tmp_path / "mail.json"
    good.write_text(
        json.dumps({"subject": "AI policy: ${policy}", "html": "<p>${platform} at ${time}: ${pii_types}</p>"})
    )
    mail = render(load_template(str(good)), "alice@acme.fr", SITUATION)
    assert mail.subject == "AI policy: Block PII on ChatGPT"
    assert mail.html == "<p>ChatGPT at 2026-03-20 14:32:00: Email address, IBAN (bank account)</p>"
    bad = tmp_path / "bad.json"
    bad.write_text('{"subject": "a", "subject": "b", "html": "x"}')
    with pytest.raises(TemplateError, match="duplicate key 'subject'"):
        load_template(str(bad))


@pytest.mark.parametrize(
    ("user", "address"),
    [("alice@acme.fr", "alice@acme.fr"), ("00000000-0000-0000-0000-000000000010", None), ("a b@acme.fr", None),
     ("alice@localhost", None)],
)  # fmt: skip
def test_only_an_e_mail_address_is_written_to(user: str, address: str | None) -> None:
    assert recipient(user) == address


def test_a_rules_file_takes_notify_user_with_its_cap_and_cooldown() -> None:
    rules = parse_rules(
        json.dumps({"rules": [{"name": "tell", "then": [{"action": "notify_user"}], "dry_run": False}]})
    )
    assert rules.limits.cap("notify_user") == 30 and rules.limits.notify_cooldown_minutes == 60
    assert rules.permissions() == {"Mail.Send": ["tell"]}
    with pytest.raises(Exception, match="notify_cooldown_minutes"):
        parse_rules(json.dumps({"rules": [], "limits": {"notify_cooldown_minutes": 0}}))


def test_contain_user_needs_its_graph_permissions_and_both_groups() -> None:
    rules = parse_rules(
        json.dumps(
            {"rules": [{"name": "contain", "dry_run": False,
                        "then": [{"action": "contain_user", "for_hours": 4, "revoke_sessions": True}]}]}
        )
    )  # fmt: skip
    assert rules.permissions() == {
        "GroupMember.ReadWrite.All": ["contain"], "User.Read.All": ["contain"], "User.RevokeSessions.All": ["contain"]
    }  # fmt: skip
    assert rules.limits.cap("contain_user") == 10
    warned = setting_warnings(rules, {"CONTAIN_GROUP_ID": "6c1d2e3f-0000-4000-8000-00000000c0a1"})
    assert warned == [
        "rule 'contain': contain_user, but CONTAIN_GROUP_ID and PROTECTED_GROUP_ID are not both set "
        "(it would be skipped: ContainNotConfigured)"
    ]
    with pytest.raises(Exception, match="for_hours"):
        parse_rules(json.dumps({"rules": [{"name": "c", "then": [{"action": "contain_user", "for_hours": 0}]}]}))
