"""POST /api/noxys/events: the webhook. The use case is ``shared.intake``; this only maps its
Accepted | Refused value to an HTTP response.

Like every blueprint, it imports the app's machinery (settings, models, clients) inside the
function, not at module level: the host imports ``function_app`` to *index* the functions, and
that import is cold-start time paid before the first request can even be routed. Indexing then
costs little more than ``azure.functions``; the first invocation loads what it needs (bench: cold
import).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

import azure.functions as func

from shared.functions.http import json_response

bp = func.Blueprint()


def handle(body: bytes, headers: Mapping[str, str], *, now: datetime | None = None) -> func.HttpResponse:
    """The whole webhook, callable without the Functions runtime (tests, dev host, CLI)."""
    from shared import intake, telemetry, wiring
    from shared.config import ConfigError

    try:
        use_case = wiring.intake()
    except ConfigError as exc:  # a body that is refused anyway is still told why first
        intake.log.error("webhook refused: %s", exc)
        refused = intake.precheck(body, headers) or intake.Refused(503, "not_configured", str(exc), setting=exc.setting)
        return json_response(refused.status, refused.body())
    route = "POST /api/noxys/events"
    with telemetry.span(route, "server", route=route) as span:  # its context travels in the messages
        result = use_case.receive(body, headers, now=now or wiring.clock().now())
        telemetry.mark(span, outcome="accepted" if result.status < 300 else "refused", status=result.status)
    return json_response(result.status, result.body())


@bp.route(route="noxys/events", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
def noxys_events(req: func.HttpRequest) -> func.HttpResponse:
    return handle(req.get_body(), dict(req.headers))
