"""REVIEW_SCHEDULE (pure): the most recent scheduled moment, whatever the day and hour now."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from shared.suppress import last_due, parse_schedule


@pytest.mark.parametrize(
    ("now", "due"),
    [
        (datetime(2026, 3, 27, 16, 0, tzinfo=UTC), datetime(2026, 3, 23, 6, 0, tzinfo=UTC)),  # Friday → last Monday
        (datetime(2026, 3, 23, 6, 0, tzinfo=UTC), datetime(2026, 3, 23, 6, 0, tzinfo=UTC)),  # the moment itself
        (datetime(2026, 3, 23, 5, 59, tzinfo=UTC), datetime(2026, 3, 16, 6, 0, tzinfo=UTC)),  # a minute early
    ],
)
def test_the_last_due_moment(now: datetime, due: datetime) -> None:
    assert last_due("Mon 06:00", now) == due


@pytest.mark.parametrize("bad", ["Monday", "Xyz 06:00", "Mon 24:00", "Mon 6h"])
def test_a_bad_schedule_is_named(bad: str) -> None:
    with pytest.raises(ValueError, match="REVIEW_SCHEDULE"):
        parse_schedule(bad)
