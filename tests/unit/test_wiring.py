"""The composition root as an object: each adapter built once, even when first asked for at once,
and the module accessors over the current wiring (simulated time swaps it, a reset starts afresh)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

from shared import wiring
from shared.clock import ManualClock
from shared.wiring import Wiring


def test_an_adapter_asked_for_at_once_is_built_once() -> None:
    w = Wiring(clock=ManualClock(datetime(2026, 3, 20, tzinfo=UTC)))
    built: list[object] = []
    gate = threading.Barrier(8)

    def build() -> object:
        built.append(object())
        return built[-1]

    def ask(_: int) -> object:
        gate.wait()
        return w._once("thing", build)

    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(ask, range(8)))
    assert len(built) == 1 and all(g is built[0] for g in got)


def test_use_puts_the_app_on_a_clock_and_reset_takes_it_back() -> None:
    clock = ManualClock(datetime(2026, 3, 20, tzinfo=UTC))
    pool = wiring.io_pool()
    wiring.use(clock=clock)
    try:
        assert wiring.clock() is clock and wiring.current().clock is clock and wiring.io_pool() is pool
    finally:
        wiring.reset()
    assert wiring.clock() is not clock and wiring.io_pool() is pool
