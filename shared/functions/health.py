"""Health: the hourly check, the release of held events, GET /api/health and the connection test.

The timer does the slow checks once an hour and writes the health record; /api/health reads it
plus live counters (cheap). The connection test is behind the admin (master) key because it
spends Defender quota and reveals configuration.
"""

from __future__ import annotations

import json
import logging

import azure.functions as func

from shared.functions.http import json_response

log = logging.getLogger(__name__)
bp = func.Blueprint()


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


def release_held() -> int:
    """Switched back on: put every kept event back on its queue, oldest first."""
    from shared.config import get_settings
    from shared.storage import enqueue
    from shared.wiring import clock, held

    settings = get_settings()
    if not settings.integration_enabled:
        return 0
    released = held().release(lambda queue, text: enqueue(settings, queue, text), clock().now())
    if released:
        log.info("integration on: released %d kept event(s), oldest first", released)
    return released


@bp.timer_trigger(arg_name="timer", schedule="%HEALTH_SCHEDULE%", run_on_startup=False)
def health_check(timer: func.TimerRequest) -> None:
    from shared.config import ConfigError
    from shared.status import run_health_check

    if timer.past_due:
        log.info("health: timer is past due; running now")
    try:
        run_health_check()
    except ConfigError as exc:
        log.error("health: %s", exc)
    purge_audit()


@bp.timer_trigger(arg_name="timer", schedule="0 * * * * *", run_on_startup=False)
def release_held_events(timer: func.TimerRequest) -> None:
    release_held()


@bp.route(route="health", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def health(req: func.HttpRequest) -> func.HttpResponse:
    from shared.config import ConfigError
    from shared.status import render, snapshot

    try:
        snap = snapshot()
    except ConfigError as exc:
        return json_response(503, {"error": "not_configured", "setting": exc.setting, "message": str(exc)})
    if req.params.get("format") == "text":
        return func.HttpResponse(render(snap), mimetype="text/plain", charset="utf-8")
    return func.HttpResponse(json.dumps(snap, default=str), mimetype="application/json", charset="utf-8")


@bp.route(route="connector/test-connection", methods=["GET", "POST"], auth_level=func.AuthLevel.ADMIN)
def test_connection_endpoint(req: func.HttpRequest) -> func.HttpResponse:
    from shared.config import ConfigError, get_settings
    from shared.health import connection_test
    from shared.wiring import credential

    try:
        report = connection_test(get_settings(), credential())
    except ConfigError as exc:
        return json_response(503, {"ok": False, "problems": [{"code": "not_configured", "message": str(exc)}]})
    return json_response(200 if report.ok else 502, report.as_dict())
