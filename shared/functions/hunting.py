"""Timer: ship queued hunting rows to NoxysInteractions_CL (the work is ``shared.jobs.ship_rows``)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import azure.functions as func

if TYPE_CHECKING:
    from shared.delivery.hunting_sink import ShipReport

log = logging.getLogger(__name__)
bp = func.Blueprint()


def ship_rows(*, retry_in: int = 60) -> ShipReport:
    """One drain of the hunting queue, built from the wiring (nothing when hunting is not configured)."""
    from shared import jobs, wiring
    from shared.delivery.hunting_sink import ShipReport

    s = wiring.settings()
    if not s.hunting_configured:
        return ShipReport()
    queue = wiring.queue(s.hunting_queue_name)
    now = wiring.clock().now()
    return jobs.ship_rows(
        s, queue, wiring.ledger(), wiring.logs_client(), now, retry_in=retry_in, pool=wiring.io_pool()
    )


@bp.timer_trigger(arg_name="timer", schedule="%HUNTING_SCHEDULE%", run_on_startup=False)
def ship_hunting_rows(timer: func.TimerRequest) -> None:
    from shared.storage import is_storage_error

    try:
        ship_rows()
    except Exception as exc:  # the queue or the endpoint is down: rows stay queued for the next run
        if not is_storage_error(exc):
            raise
        log.warning("hunting: run skipped: %s", exc.__class__.__name__)
