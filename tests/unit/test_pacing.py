"""The pacing policy (pure): sliding windows, FIFO slots, the priority reserve, Retry-After."""

from __future__ import annotations

import itertools

from shared.delivery.pacing import MARGIN_SECONDS, BudgetState, Quota, api_of, decide

Q15 = Quota(((60, 15),), reserved=2, queue=True)


def test_admits_up_to_the_lane_limit_in_a_window() -> None:
    s = BudgetState()
    admitted = [decide(s, 1000.0 + i, Q15).admitted for i in range(14)]
    assert admitted == [True] * 13 + [False]  # 15 minus the 2 kept for the priority lane


def test_priority_lane_uses_the_reserve_and_jumps_the_line() -> None:
    s = BudgetState()
    for i in range(13):
        assert decide(s, 1000.0 + i, Q15).admitted
    assert not decide(s, 1013.0, Q15).admitted  # a normal caller now waits in line
    assert decide(s, 1013.5, Q15, priority=True).admitted
    assert decide(s, 1013.6, Q15, priority=True).admitted
    refused = decide(s, 1013.7, Q15, priority=True)
    assert not refused.admitted and refused.wait == (1000.0 + 60 + MARGIN_SECONDS) - 1013.7


def test_refused_callers_get_distinct_slots_in_order() -> None:
    s = BudgetState()
    for _ in range(13):
        decide(s, 1000.0, Q15)
    slots = [decide(s, 1001.0, Q15).slot for _ in range(5)]
    assert slots == sorted(slots) and len(set(slots)) == 5
    gaps = {round(b - a, 6) for a, b in itertools.pairwise(slots)}
    assert gaps == {round((60 + MARGIN_SECONDS) / 13, 6)}


def test_ticket_holder_is_admitted_at_its_slot_and_fresh_callers_queue_behind() -> None:
    s = BudgetState()
    for _ in range(13):
        decide(s, 1000.0, Q15)
    first = decide(s, 1001.0, Q15)
    assert not decide(s, first.slot, Q15).admitted  # a newcomer does not jump the queue
    assert decide(s, first.slot, Q15, ticketed=True).admitted


def test_never_more_than_the_limit_in_any_window() -> None:
    s = BudgetState()
    granted: list[float] = []
    t = 0.0
    waiting: list[float] = []
    while len(granted) < 100:
        due = [w for w in waiting if w <= t]
        for w in due:
            waiting.remove(w)
            if decide(s, t, Q15, ticketed=True).admitted:
                granted.append(t)
        d = decide(s, t, Q15)
        if d.admitted:
            granted.append(t)
        else:
            waiting.append(d.slot)
        t += 0.5
    assert max(sum(1 for u in granted if g <= u < g + 60) for g in granted) <= 15


def test_retry_after_blocks_everyone_until_then() -> None:
    s = BudgetState(blocked_until=2000.0)
    assert not decide(s, 1990.0, Q15, priority=True).admitted
    assert decide(s, 2000.0, Q15).admitted


def test_hourly_rule_applies_too() -> None:
    q = Quota(((60, 100), (3600, 3)))
    s = BudgetState()
    assert [decide(s, 1000.0 + 100 * i, q).admitted for i in range(4)] == [True, True, True, False]


def test_api_of_paths() -> None:
    assert api_of("POST", "/api/alerts/CreateAlertByReference") == "alerts.create"
    assert api_of("PATCH", "/api/alerts/da1") == "alerts"
    assert api_of("GET", "/api/machines/findbyip(ip='1.2.3.4',timestamp=x)") == "machines"
    assert api_of("POST", "/api/advancedqueries/run") == "hunting"
    assert api_of("PATCH", "/v1.0/security/incidents/1") == "graph"
    assert api_of("PATCH", "/api/incidents/1") == "incidents"
