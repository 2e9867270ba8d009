"""Timer: ship queued hunting rows to NoxysInteractions_CL (see shared.delivery.hunting_sink)."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import TYPE_CHECKING

import azure.functions as func

if TYPE_CHECKING:
    from shared.delivery.hunting_sink import ShipReport

log = logging.getLogger(__name__)
bp = func.Blueprint()


def ship_rows(*, retry_in: int = 60) -> ShipReport:
    """One drain of the hunting queue (nothing at all when hunting is not configured).

    ``retry_in``: seconds before a row that waits for its delivery, or was refused, is tried again.
    """
    from shared.config import get_settings
    from shared.delivery.hunting_sink import ShipReport, ship
    from shared.delivery.ledger import Ledger
    from shared.storage import queue_client
    from shared.wiring import clock, logs_client, table

    s = get_settings()
    if not s.hunting_configured:
        return ShipReport()
    report = ship(
        queue_client(s, s.hunting_queue_name),
        Ledger(table("Ledger")),
        logs_client(),
        rule_id=str(s.hunting_dcr_immutable_id),
        stream=s.hunting_stream_name,
        now=clock().now(),
        enrich_wait=timedelta(minutes=s.hunting_enrich_wait_minutes),
        forwarded=frozenset(s.forward_event_types),
        retry_in=retry_in,
    )
    if report.sent or report.failed:
        log.info(
            "hunting: %d row(s) sent, %d kept for a retry, %d waiting for delivery",
            report.sent,
            report.failed,
            report.deferred,
        )
    return report


@bp.timer_trigger(arg_name="timer", schedule="%HUNTING_SCHEDULE%", run_on_startup=False)
def ship_hunting_rows(timer: func.TimerRequest) -> None:
    from azure.core.exceptions import AzureError

    try:
        ship_rows()
    except AzureError as exc:  # the queue or the endpoint is down: rows stay queued for the next run
        log.warning("hunting: run skipped: %s", exc.__class__.__name__)
