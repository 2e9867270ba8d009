"""Which failed calls prove that nothing was done (so a create may simply be sent again)."""

from __future__ import annotations

import pytest

from shared.defender.errors import DefenderError, Paced


@pytest.mark.parametrize("status", [400, 401, 403, 404, 429])
def test_a_refusal_of_the_request_proves_nothing_was_done(status: int) -> None:
    assert DefenderError(status, "X", "refused").nothing_done


@pytest.mark.parametrize("status", [408, 409, 500, 502, 503, 504])
def test_any_other_answer_may_hide_a_call_that_worked(status: int) -> None:
    assert not DefenderError(status, "X", "failed").nothing_done


@pytest.mark.parametrize(
    ("code", "done"),
    [
        ("Unreachable", True),
        ("TokenError", True),
        ("SecretUnavailable", True),
        ("Timeout", False),
        ("ConnectionLost", False),
        ("Anything", False),
    ],
)
def test_without_an_answer_only_a_call_never_sent_proves_nothing(code: str, done: bool) -> None:
    assert DefenderError(0, code, "no answer").nothing_done is done


def test_our_own_pacing_made_no_call() -> None:
    from datetime import UTC, datetime

    assert Paced("alerts.create", 5.0, datetime.now(UTC)).nothing_done
