"""Noxys event → Defender alert draft (pure).

What the SOC analyst sees in the Defender portal is decided here, so the rules are written out:

* **Severity** (Defender accepts only Low | Medium | High): Noxys critical and high alerts → High.
  Interactions: from the risk score (≥ 0.8 High, ≥ 0.5 Medium, else Low), raised to at least
  Medium when the policy *blocked* the prompt or the data was classified Restricted.
* **Category**: there is no "AI" category; an outbound interaction carrying PII is data leaving
  the organisation (``Exfiltration``); everything else is ``SuspiciousActivity``.
* **Title** names what happened and where, and is stable for a given policy/platform, because
  Defender merges an open alert with the same title on the same device (that is the point: a
  storm becomes one alert).
* **Description** lists Platform, Risk Score, PII *types* in words (never values), User, Device,
  Policy and action, Timestamp and the Noxys ids, so the analyst can pivot back to Noxys.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Literal

from shared import pii, platforms
from shared.events import Envelope

Severity = Literal["Low", "Medium", "High"]
RANK: dict[Severity, int] = {"Low": 0, "Medium": 1, "High": 2}
MAX_TITLE = 200
MAX_DESCRIPTION = 4000

ACTION_WORDS = {
    "block": "the prompt was blocked",
    "coach": "the user was warned and chose to continue",
    "log": "the prompt was allowed and logged",
}


@dataclass(frozen=True)
class AlertDraft:
    """Everything CreateAlertByReference needs except the anchor (machine, report, time)."""

    title: str
    severity: Severity
    category: str
    description: str
    recommended_action: str
    platform: platforms.Platform


def severity_from_risk(score: float | None) -> Severity:
    if score is None:
        return "Medium"
    if score >= 0.8:
        return "High"
    if score >= 0.5:
        return "Medium"
    return "Low"


def at_least(sev: Severity, floor: Severity) -> Severity:
    return sev if RANK[sev] >= RANK[floor] else floor


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _fit(lines: list[str], keep: int) -> str:
    """The description within Defender's limit, its last ``keep`` lines always whole: they carry
    the ``Noxys event id:`` a later attempt searches for after a lost answer, so a long Noxys
    summary is clipped instead of the id."""
    tail = "\n".join(lines[-keep:])
    return _clip("\n".join(lines[:-keep]), MAX_DESCRIPTION - len(tail) - 1) + "\n" + tail


def _iso(event: Envelope) -> str:
    return event.occurred_at.strftime("%Y-%m-%dT%H:%M:%SZ")


def draft_alert(event: Envelope, extra_domains: Mapping[str, Sequence[str]] | None = None) -> AlertDraft:
    """Map a validated event to an alert draft (``extra_domains``: the operator's
    ``PLATFORM_DOMAINS``). Raises ValueError for a type it cannot map."""
    if event.kind == "alert":
        return _draft_for_alert(event, extra_domains)
    if event.kind == "interaction":
        return _draft_for_interaction(event, extra_domains)
    raise ValueError(f"event type {event.type} carries neither an interaction nor an alert")


def _draft_for_interaction(event: Envelope, extra: Mapping[str, Sequence[str]] | None) -> AlertDraft:
    it = event.data.interaction
    assert it is not None
    policy = event.data.policy
    platform = platforms.resolve(it.platform_id, it.platform_name, extra)
    action = (policy.action or "").lower() if policy else ""

    severity = severity_from_risk(it.risk_score)
    if action == "block" or (it.classification_level or "").lower() == "restricted":
        severity = at_least(severity, "Medium")

    if event.type == "interaction.policy_violated":
        title = f"Policy violation - {policy.name if policy and policy.name else 'Noxys policy'}"
        if platform.name.lower() not in title.lower():
            title += f" on {platform.name}"
        headline = f"Noxys AI Firewall: a prompt to {platform.name} violated a policy"
    else:
        title = f"High-risk AI interaction detected - {platform.name}"
        headline = f"Noxys AI Firewall: a high-risk interaction with {platform.name}"
    outbound_pii = bool(it.classifications) and (it.direction or "outbound") == "outbound"
    recommended = (
        f"Review the {platform.name} interaction in Noxys (event {event.id}). Confirm with the user "
        "whether the data shared was authorised; if not, ask for the conversation to be deleted on "
        "the platform, rotate any exposed credential, and review the user's other AI activity with "
        "the NoxysInteractions hunting table."
    )
    return AlertDraft(
        title=_clip(title, MAX_TITLE),
        severity=severity,
        category="Exfiltration" if outbound_pii else "SuspiciousActivity",
        description=_fit(_interaction_lines(event, headline, platform, action), keep=3),
        recommended_action=recommended,
        platform=platform,
    )


def _interaction_lines(event: Envelope, headline: str, platform: platforms.Platform, action: str) -> list[str]:
    """The alert description, one fact a line, as an analyst reads it in the Defender portal."""
    it, policy = event.data.interaction, event.data.policy
    assert it is not None
    metadata = it.content_metadata
    pii_lines = pii.summarise(it.classifications)
    lines = [
        headline + ".",
        "",
        f"Platform: {platform.name} ({', '.join(platform.domains) or 'domain unknown'})",
        f"Risk Score: {_score(it.risk_score)}",
        f"PII types: {'; '.join(pii_lines) if pii_lines else 'none detected'}",
        f"Classification level: {it.classification_level or 'not given'}",
        f"User: {it.user_email or it.user_id or 'unknown'}",
        f"Device: {it.device.display_name if it.device else 'not given by Noxys'}",
    ]
    if policy:
        words = ACTION_WORDS.get(action, f"action {action}" if action else "no action given")
        lines.append(f"Policy: {policy.name or policy.id or 'unnamed'} (action: {action or 'n/a'} - {words})")
    return [
        *lines,
        f"Interaction: {it.interaction_type or 'prompt'}, {it.direction or 'outbound'}, "
        f"via {it.source or 'unknown source'}" + (f", model {metadata.model}" if metadata and metadata.model else ""),
        f"Timestamp: {_iso(event)}",
        f"Noxys event id: {event.id}",
        f"Noxys interaction id: {it.id or 'n/a'}",
    ]


def _draft_for_alert(event: Envelope, extra: Mapping[str, Sequence[str]] | None) -> AlertDraft:
    al = event.data.alert
    assert al is not None
    platform = platforms.resolve(al.platform_id, None, extra)
    critical = (al.severity or "").lower() == "critical" or event.type == "alert.severity_critical"
    label = "Critical" if critical else "High"
    title = f"Noxys {label.lower()} alert - {al.title or 'AI firewall alert'}"
    lines = [
        f"Noxys AI Firewall raised a {label.lower()} severity alert.",
        "",
        f"Summary: {al.description or 'no description given'}",
        f"Platform: {platform.name} ({', '.join(platform.domains) or 'domain unknown'})",
        f"Risk Score: {_score(al.risk_score)}",
        f"User: {al.user_email or 'unknown'}",
        f"Device: {al.device.display_name if al.device else 'not given by Noxys'}",
        f"Noxys severity: {label}",
        f"Related interactions: {len(al.interaction_ids)}"
        + (f" ({', '.join(al.interaction_ids[:10])})" if al.interaction_ids else ""),
        f"Timestamp: {_iso(event)}",
        f"Noxys event id: {event.id}",
        f"Noxys alert id: {al.id or 'n/a'}",
    ]
    recommended = (
        f"Open the Noxys alert {al.id or ''} and its related interactions; contact the user; if data "
        "was exfiltrated, start your data-leak procedure and consider blocking the platform with a "
        "Defender indicator."
    ).replace("  ", " ")
    return AlertDraft(
        title=_clip(title, MAX_TITLE),
        severity="High",
        category="SuspiciousActivity",
        description=_fit(lines, keep=3),
        recommended_action=recommended,
        platform=platform,
    )


def with_assessment(draft: AlertDraft, line: str, severity: Severity) -> AlertDraft:
    """The draft with the combined-risk line under its headline and the severity it gives. The
    description's last lines carry the event id an interrupted delivery searches for, so the line
    goes in only where it fits whole (clipping would cut that id off)."""
    head, _, rest = draft.description.partition("\n")
    described = f"{head}\n{line}\n{rest}"
    description = described if len(described) <= MAX_DESCRIPTION else draft.description
    return replace(draft, severity=at_least(severity, draft.severity), description=description)


def _score(score: float | None) -> str:
    if score is None:
        return "not given"
    return f"{score:.2f} ({severity_from_risk(score)})"


def is_critical(event: Envelope) -> bool:
    """Criticals jump the queue (priority queue in the delivery core)."""
    return event.type == "alert.severity_critical"
