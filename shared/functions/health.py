"""Health: the hourly check, the release of held events, GET /api/health and the connection test.

The timer does the slow checks once an hour and writes the health record; /api/health reads it
plus live counters (cheap). The connection test is behind the admin (master) key because it
spends Defender quota and reveals configuration. The work itself is in ``shared.status`` and
``shared.jobs``; these functions only build it from ``shared.wiring`` and answer (importing them
on first use: see ``shared.functions.ingest``).
"""

from __future__ import annotations

import json
import logging

import azure.functions as func

from shared.functions.http import json_response

log = logging.getLogger(__name__)
bp = func.Blueprint()


def release_held() -> int:
    """Switched back on: put every kept event back on its queue, oldest first."""
    from shared import jobs, wiring

    return jobs.release_held(wiring.settings(), wiring.held(), wiring.enqueue, wiring.clock().now())


@bp.timer_trigger(arg_name="timer", schedule="%HEALTH_SCHEDULE%", run_on_startup=False)
def health_check(timer: func.TimerRequest) -> None:
    from shared import jobs, status, telemetry, wiring
    from shared.config import ConfigError

    if timer.past_due:
        log.info("health: timer is past due; running now")
    try:
        telemetry.health(status.run_health_check(wiring.status_deps()), wiring.clock().now())
    except ConfigError as exc:
        log.error("health: %s", exc)
    try:
        now = wiring.clock().now()
        jobs.purge_audit(wiring.audit(), now, wiring.settings().audit_retention_days)
        jobs.purge_state(wiring.settings(), wiring.table, now)
    except ConfigError as exc:  # housekeeping never fails the timer
        log.error("health: retention not applied: %s", exc)
    try:  # release_after_hours and FalsePositive releases (paced; the next hour picks up the rest)
        if wiring.settings().response_rules_file:
            wiring.releaser().sweep_logged()
    except ConfigError as exc:
        log.error("health: response releases not done: %s", exc)
    try:  # the weekly review when REVIEW_SCHEDULE says it is due (and suppression, when configured)
        from shared import review_job

        review_job.scheduled(
            wiring.settings(),
            wiring.suppressions(),
            review_job.Sources.of(wiring.ledger(), wiring.defender_client(), wiring.table),
            wiring.clock().now(),
        )
    except Exception as exc:  # the review never fails the health timer; the next hour tries again
        log.error("health: review not done, tried again next hour: %s", exc.__class__.__name__)


@bp.timer_trigger(arg_name="timer", schedule="0 * * * * *", run_on_startup=False)
def release_held_events(timer: func.TimerRequest) -> None:
    release_held()


@bp.route(route="health", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def health(req: func.HttpRequest) -> func.HttpResponse:
    from shared import status, wiring
    from shared.config import ConfigError

    try:
        snap = status.snapshot(wiring.status_deps())
    except ConfigError as exc:
        return json_response(503, {"error": "not_configured", "setting": exc.setting, "message": str(exc)})
    if req.params.get("format") == "text":
        return func.HttpResponse(status.render(snap), mimetype="text/plain", charset="utf-8")
    return func.HttpResponse(json.dumps(snap, default=str), mimetype="application/json", charset="utf-8")


@bp.route(route="connector/test-connection", methods=["GET", "POST"], auth_level=func.AuthLevel.ADMIN)
def test_connection_endpoint(req: func.HttpRequest) -> func.HttpResponse:
    from shared import wiring
    from shared.config import ConfigError
    from shared.health import connection_test

    try:
        report = connection_test(wiring.settings(), wiring.credential())
    except ConfigError as exc:
        return json_response(503, {"ok": False, "problems": [{"code": "not_configured", "message": str(exc)}]})
    return json_response(200 if report.ok else 502, report.as_dict())
