"""Timer: is Defender reachable with our credentials? (token + one cheap call, logged)."""

from __future__ import annotations

import logging
import time

import azure.functions as func

log = logging.getLogger(__name__)
bp = func.Blueprint()


def check_connectivity() -> bool:
    from shared.config import ConfigError
    from shared.defender.client import DefenderError
    from shared.wiring import defender_client

    started = time.monotonic()
    try:
        defender_client().list_machines(top=1)
    except ConfigError as exc:
        log.error("health: Defender not configured: %s", exc)
        return False
    except DefenderError as exc:
        log.error("health: Defender connectivity FAILED: %s", exc)
        return False
    log.info("health: Defender connectivity OK (%.0f ms)", (time.monotonic() - started) * 1000)
    return True


def purge_audit() -> int:
    """Apply AUDIT_RETENTION_DAYS to the audit trail (whole days at a time)."""
    from shared.config import get_settings
    from shared.wiring import audit, clock

    try:
        removed = audit().purge(clock().now(), get_settings().audit_retention_days)
    except Exception as exc:  # housekeeping must never fail the health check
        log.warning("health: audit retention not applied: %s", exc.__class__.__name__)
        return 0
    if removed:
        log.info("health: removed %d audit row(s) older than the retention", removed)
    return removed


@bp.timer_trigger(arg_name="timer", schedule="%HEALTH_SCHEDULE%", run_on_startup=False)
def health_check(timer: func.TimerRequest) -> None:
    if timer.past_due:
        log.info("health: timer is past due; running now")
    check_connectivity()
    purge_audit()
