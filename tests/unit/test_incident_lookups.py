"""The incident lookups' documented span is what the constants add up to."""

from __future__ import annotations

from shared.delivery.followups import INCIDENT_LOOKUP_FIRST_DELAY, INCIDENT_LOOKUPS


def test_the_incident_lookups_span_about_90_minutes() -> None:
    waits = [min(INCIDENT_LOOKUP_FIRST_DELAY * 2**attempt, 1800.0) for attempt in range(INCIDENT_LOOKUPS - 1)]
    total_minutes = (INCIDENT_LOOKUP_FIRST_DELAY + sum(waits)) / 60
    assert 85 <= total_minutes <= 95  # docs/lifecycle.md: "about 90 min"
