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


@bp.timer_trigger(arg_name="timer", schedule="%HEALTH_SCHEDULE%", run_on_startup=False)
def health_check(timer: func.TimerRequest) -> None:
    if timer.past_due:
        log.info("health: timer is past due; running now")
    check_connectivity()
