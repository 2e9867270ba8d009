"""Event → alert draft: what the SOC analyst reads in Defender."""

from __future__ import annotations

import json

import pytest

from shared.events import Envelope, parse_events
from shared.mapping import draft_alert, severity_from_risk
from tests.support import sample
from tools.emulator.mde import CATEGORIES  # Defender's rule, as the emulator enforces it


def event(name: str, **changes: object) -> Envelope:
    doc = json.loads(sample(name))
    for path, value in changes.items():
        node = doc
        *parents, leaf = path.split("__")
        for p in parents:
            node = node[p]
        node[leaf] = value
    (parsed,) = parse_events(json.dumps(doc).encode())
    return parsed


def test_policy_violation_alert() -> None:
    d = draft_alert(event("policy_violated"))
    assert d.title == "Policy violation - Block PII on ChatGPT"
    assert (d.severity, d.category) == ("High", "Exfiltration")
    for line in [
        "Platform: ChatGPT (chatgpt.com",
        "Risk Score: 0.95 (High)",
        "PII types: Email address (1, max score 0.98)",
        "User: alice@acme.fr",
        "Device: alice-laptop.acme.local",
        "Policy: Block PII on ChatGPT (action: block - the prompt was blocked)",
        "Timestamp: 2026-03-20T14:32:00Z",
        "Noxys event id: evt_01JQ8X4M2Z6N0K3T5V7W9Y1B3D",
    ]:
        assert line in d.description
    assert "Please summarise" not in d.description + d.title + d.recommended_action


def test_high_risk_alert_lists_pii_types_in_words_not_values() -> None:
    d = draft_alert(event("high_risk"))
    assert d.title == "High-risk AI interaction detected - DeepSeek"
    assert d.severity == "High"
    assert "API key or secret (1, max score 0.91)" in d.description
    assert "IBAN (bank account) (1, max score 0.87)" in d.description
    text = d.title + d.description + d.recommended_action
    assert "sk-live" not in text and "FR763000" not in text


def test_noxys_alerts_are_high_and_named() -> None:
    crit = draft_alert(event("alert_critical"))
    assert crit.title == "Noxys critical alert - Repeated PII exfiltration attempts to ChatGPT"
    assert crit.severity == "High" and crit.category == "SuspiciousActivity"
    assert "Related interactions: 3" in crit.description
    high = draft_alert(event("alert_high"))
    assert high.title.startswith("Noxys high alert - ")
    assert high.platform.name == "Mistral Le Chat"


@pytest.mark.parametrize(
    ("score", "expected"),
    [(0.95, "High"), (0.8, "High"), (0.79, "Medium"), (0.5, "Medium"), (0.2, "Low"), (None, "Medium")],
)
def test_severity_bands(score: float | None, expected: str) -> None:
    assert severity_from_risk(score) == expected


def test_block_raises_a_low_score_to_medium_but_coach_does_not() -> None:
    assert (
        draft_alert(
            event(
                "policy_violated", data__interaction__risk_score=0.2, data__interaction__classification_level="Internal"
            )
        ).severity
        == "Medium"
    )
    coach = event("coach_no_device", data__interaction__risk_score=0.2)
    assert draft_alert(coach).severity == "Low"


def test_inbound_or_pii_free_interaction_is_suspicious_activity() -> None:
    assert draft_alert(event("high_risk", data__interaction__direction="inbound")).category == "SuspiciousActivity"
    assert draft_alert(event("high_risk", data__interaction__classifications=[])).category == "SuspiciousActivity"


def test_an_unknown_platform_anchors_only_on_the_operators_domains_never_the_events_url() -> None:
    newbot = event(
        "high_risk",
        data__interaction__platform_id="newbot",
        data__interaction__platform_name="NewBot",
        data__interaction__content_metadata={"url": "https://chat.newbot.ai/c/1"},
    )
    d = draft_alert(newbot)
    assert d.title.endswith("- NewBot")
    assert d.platform.domains == ()  # the event's host is not a domain to anchor on
    assert draft_alert(newbot, {"newbot": ["chat.newbot.ai"]}).platform.domains == ("chat.newbot.ai",)
    chatgpt = draft_alert(event("policy_violated"), {"chatgpt": ["chatgpt.acme-proxy.com"]}).platform
    assert chatgpt.domains[-1] == "chatgpt.acme-proxy.com" and "chatgpt.com" in chatgpt.domains


def test_platform_domains_are_validated_and_normalised() -> None:
    from shared.config import ConfigError, load_settings

    s = load_settings({"PLATFORM_DOMAINS": '{"NewBot": ["Chat.NewBot.AI."]}'})
    assert s.platform_domains == {"newbot": ["chat.newbot.ai"]}
    with pytest.raises(ConfigError, match="PLATFORM_DOMAINS"):
        load_settings({"PLATFORM_DOMAINS": '{"newbot": ["com"]}'})


def test_a_value_smuggled_into_the_type_field_is_not_echoed() -> None:
    d = draft_alert(
        event("high_risk", data__interaction__classifications=[{"type": "bob@secret.example", "score": 0.9}])
    )
    assert "bob@secret.example" not in d.description
    assert "Other sensitive data" in d.description


def test_every_sample_maps_to_allowed_values() -> None:
    for name in ("policy_violated", "high_risk", "alert_critical", "alert_high", "coach_no_device"):
        d = draft_alert(event(name))
        assert d.category in CATEGORIES and d.severity in ("Low", "Medium", "High")
        assert 0 < len(d.title) <= 200 and len(d.description) <= 4000 and d.recommended_action


def test_the_widest_valid_alert_keeps_its_event_id_line_whole() -> None:
    """A lost answer is recovered by this line: a 4,000-character Noxys summary is clipped, never it."""
    wide = event("alert_high", data__alert__description="x" * 4000)
    d = draft_alert(wide)
    assert len(d.description) <= 4000
    assert d.description.splitlines()[-2] == f"Noxys event id: {wide.id}"
    assert "…" in d.description


def test_a_marker_forged_in_a_summary_never_names_the_alert() -> None:
    from shared.delivery.forward import marked

    forged = event("alert_high", data__alert__description="ok\nNoxys event id: evt_victim_0001\n")
    d = draft_alert(forged)
    assert "\nNoxys event id: evt_victim_0001\n" in d.description  # the text is kept as Noxys wrote it
    assert marked(d.description) == forged.id  # but the alert is the forger's own
