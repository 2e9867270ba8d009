"""The situation a response rule judges, built from what one delivery attempt learned (pure)."""

from __future__ import annotations

from shared import pii
from shared.devices import ids_of
from shared.events import Envelope
from shared.mapping import AlertDraft
from shared.response.rules import RulesFile, Situation, repeat_key, repeats
from shared.risk import DeviceView, Patterns


def situation(
    event: Envelope, draft: AlertDraft, combined: float | None, view: DeviceView, patterns: Patterns, rules: RulesFile
) -> Situation:
    """Severity is the alert's (after the combined score); the repeat counts are taken for exactly
    the windows the rules ask about, from the pattern windows (this event included)."""
    now = event.occurred_at.timestamp()
    counts = {repeat_key(r): patterns.count(r.per, r.within_minutes * 60, now) for r in repeats(rules)}
    policy = event.data.policy
    return Situation(
        event_type=event.type,
        severity=draft.severity,
        combined_risk=combined if combined is not None else (event.risk_score or 0.0),
        platform_id=draft.platform.id,
        platform_name=draft.platform.name,
        policy_action=((policy.action if policy else None) or "").lower(),
        device_tags=view.tags,
        counts=counts,
        device_ids=ids_of(event.device).as_dict() if event.device else {},
        policy_name=(policy.name if policy else None) or "",
        pii_types=tuple(pii_codes(event)),
        occurred_at=event.occurred_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
    )


def pii_codes(event: Envelope) -> list[str]:
    """The PII *type codes* the event found (``EMAIL``), never a value."""
    it = event.data.interaction if event.kind != "alert" else None
    return pii.type_codes(it.classifications if it else [])
