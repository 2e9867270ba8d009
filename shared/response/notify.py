"""The ``notify_user`` action's mail (pure): what the person is told, from a template.

The mail says what happened (platform, policy, time in UTC, the PII *types* in words), what to do
and whom to contact — never a PII value or the prompt text: the situation a rule judges carries
only type codes (:mod:`shared.response.situation`), so there is nothing else to leak.

The text is a template with a safe default, overridable by ``NOTIFY_TEMPLATE_FILE`` (a strict
JSON file, :mod:`shared.configfile`, with ``subject`` and ``html``). Placeholders are
``${name}`` (:class:`string.Template`, not ``str.format``: a template can name a value, never
reach an attribute of it) and are checked when the file loads — an unknown name, a stray ``$``
or a missing field refuses the file with the field named, so a typo is found by ``rules check``
and not by the first person who should have been told. Every inserted value is HTML-escaped; the
subject is plain text and its values are stripped of line breaks.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from string import Template
from typing import Any

from shared import pii
from shared.config import ConfigError
from shared.configfile import FileProblem, read_strict
from shared.response.rules import Situation

PLACEHOLDERS = frozenset({"platform", "policy", "time", "pii_types", "contact", "user"})
MAX_TEMPLATE_CHARS = 20_000
DEFAULT_CONTACT = "your security team"

DEFAULT_SUBJECT = "Security notice: your use of ${platform} was flagged"
DEFAULT_HTML = (
    "<p>Hello,</p>"
    "<p>On ${time} (UTC) something you sent to <strong>${platform}</strong> was flagged by the "
    "company policy <strong>${policy}</strong>. It appeared to contain: ${pii_types}.</p>"
    "<p>What to do: do not send personal or confidential data to AI services the company has not "
    "approved, and remove anything you shared there if you can.</p>"
    "<p>Questions, or do you think this is a mistake? Contact ${contact}.</p>"
    "<p>This message was sent automatically; nothing you wrote is included in it.</p>"
)


class TemplateError(ConfigError):
    def __init__(self, problem: str) -> None:
        super().__init__("NOTIFY_TEMPLATE_FILE", problem)


@dataclass(frozen=True)
class MailTemplate:
    subject: str = DEFAULT_SUBJECT
    html: str = DEFAULT_HTML


@dataclass(frozen=True)
class Mail:
    """One rendered mail, exactly as Graph's ``sendMail`` receives it (see :meth:`graph_body`)."""

    to: str
    subject: str
    html: str

    def graph_body(self) -> dict[str, Any]:
        return {
            "message": {
                "subject": self.subject,
                "body": {"contentType": "HTML", "content": self.html},
                "toRecipients": [{"emailAddress": {"address": self.to}}],
            },
            "saveToSentItems": False,
        }

    def preview(self) -> str:
        """The mail as a dry run records it: the exact subject and body that would be sent."""
        return f"To: {self.to}\nSubject: {self.subject}\n\n{self.html}"


def _check(field: str, text: Any) -> str:
    if not isinstance(text, str) or not text.strip():
        raise TemplateError(f"{field}: a non-empty string is required")
    if len(text) > MAX_TEMPLATE_CHARS:
        raise TemplateError(f"{field}: {len(text)} characters (at most {MAX_TEMPLATE_CHARS})")
    t = Template(text)
    if not t.is_valid():
        raise TemplateError(f"{field}: a '$' that is not a placeholder (write $$ for a dollar sign)")
    unknown = sorted(set(t.get_identifiers()) - PLACEHOLDERS)
    if unknown:
        raise TemplateError(
            f"{field}: unknown placeholder ${{{unknown[0]}}} (known: {', '.join(sorted(PLACEHOLDERS))})"
        )
    return text


def parse_template(doc: Any, source: str = "template") -> MailTemplate:
    if not isinstance(doc, dict):
        raise TemplateError(f"{source}: a JSON object with 'subject' and 'html' is required")
    extra = sorted(set(doc) - {"subject", "html"})
    if extra:
        raise TemplateError(f"{source}: {extra[0]}: unknown field (only 'subject' and 'html')")
    return MailTemplate(_check(f"{source}: subject", doc.get("subject")), _check(f"{source}: html", doc.get("html")))


def load_template(path: str | None) -> MailTemplate:
    """The default template when no file is set; :class:`TemplateError` naming the file and field."""
    if not path:
        return MailTemplate()
    try:
        return parse_template(read_strict(path), path)
    except FileProblem as exc:
        raise TemplateError(str(exc)) from None


def pii_words(codes: tuple[str, ...] | list[str]) -> str:
    """``("EMAIL", "IBAN")`` → "Email address, IBAN (bank account)"; never a value."""
    return ", ".join(pii.label(c) for c in codes) or "information the policy protects"


def _plain(value: str) -> str:
    return " ".join(value.split())  # no header injection through a line break in a subject


def render(template: MailTemplate, to: str, s: Situation, contact: str = "") -> Mail:
    """The mail for one situation; every value escaped for HTML (a policy named ``<script>``
    arrives as text)."""
    values = {
        "platform": s.platform_name or s.platform_id or "an AI service",
        "policy": s.policy_name or "(unnamed policy)",
        "time": s.occurred_at.replace("T", " ").removesuffix("Z") or "(time unknown)",
        "pii_types": pii_words(s.pii_types),
        "contact": contact or DEFAULT_CONTACT,
        "user": to,
    }
    subject = Template(template.subject).substitute({k: _plain(v) for k, v in values.items()})
    body = Template(template.html).substitute({k: html.escape(v, quote=True) for k, v in values.items()})
    return Mail(to, _plain(subject)[:255], body)


def recipient(user: str) -> str | None:
    """The address to write to: the event's e-mail (a Noxys user id is not an address)."""
    user = user.strip()
    local, at, domain = user.partition("@")
    return user if at and local and "." in domain and not any(c.isspace() for c in user) else None
