"""Timer: ship the hunting outbox's rows to NoxysInteractions_CL (the work is ``shared.jobs.ship_rows``)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import azure.functions as func

if TYPE_CHECKING:
    from shared.delivery.hunting_sink import ShipReport

log = logging.getLogger(__name__)
bp = func.Blueprint()


def ship_rows() -> ShipReport:
    """One run of the shipper, built from the wiring (nothing when hunting is not configured)."""
    from shared import jobs, telemetry, wiring
    from shared.delivery.hunting_sink import ShipReport

    s = wiring.settings()
    if not s.hunting_configured:
        return ShipReport()
    now = wiring.clock().now()
    report = jobs.ship_rows(
        s,
        wiring.hunting_outbox(),
        wiring.ledger(),
        wiring.logs_client(),
        now,
        legacy=wiring.queue(s.hunting_queue_name),
        pool=wiring.io_pool(),
    )
    telemetry.rows_shipped(report.sent)
    return report


@bp.timer_trigger(arg_name="timer", schedule="%HUNTING_SCHEDULE%", run_on_startup=False)
def ship_hunting_rows(timer: func.TimerRequest) -> None:
    from shared.storage import is_storage_error

    try:
        ship_rows()
    except Exception as exc:  # the storage or the endpoint is down: rows stay for the next run
        if not is_storage_error(exc):
            raise
        log.warning("hunting: run skipped: %s", exc.__class__.__name__)
