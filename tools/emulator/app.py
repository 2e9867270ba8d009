"""The emulator's HTTP surface (WSGI, served over TLS by :mod:`tools.emulator.server`).

Routes follow the real services: Entra v2.0 discovery and token endpoints under
``/{tenant}/...``, Defender for Endpoint under ``/api/...``, and a read-only
``GET /emulator/state`` for tests and for people curious about what arrived.
"""

from __future__ import annotations

import json
import uuid
from typing import Any, cast

from werkzeug.exceptions import HTTPException, NotFound
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from tools.emulator import hunting
from tools.emulator.state import MDE_AUDIENCES, ApiError, DefenderState, TokenError

URLS = Map(
    [
        Rule("/<tenant>/v2.0/.well-known/openid-configuration", endpoint="openid", methods=["GET"]),
        Rule("/<tenant>/oauth2/v2.0/token", endpoint="token", methods=["POST"]),
        Rule("/api/machines", endpoint="machines", methods=["GET"]),
        Rule("/api/machines/<key>", endpoint="machine", methods=["GET"]),
        Rule("/api/advancedqueries/run", endpoint="hunting", methods=["POST"]),
        Rule("/api/alerts/CreateAlertByReference", endpoint="create_alert", methods=["POST"]),
        Rule("/emulator/state", endpoint="state", methods=["GET"]),
    ],
    strict_slashes=False,
)


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(body), status=status, mimetype="application/json", headers=headers or {})


class EmulatorApp:
    def __init__(self, state: DefenderState) -> None:
        self.state = state

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        response = self.dispatch(request)
        return response(environ, start_response)

    def dispatch(self, request: Request) -> Response:
        adapter = URLS.bind_to_environ(request.environ)
        correlation = str(uuid.uuid4())
        try:
            endpoint, args = adapter.match()
            with self.state.lock:
                response = cast(Response, getattr(self, f"on_{endpoint}")(request, **args))
        except ApiError as exc:
            headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after else {}
            response = _json(
                exc.status, {"error": {"code": exc.code, "message": exc.message, "target": correlation}}, headers
            )
        except TokenError as exc:
            response = _json(
                exc.status,
                {
                    "error": exc.error,
                    "error_description": exc.description,
                    "error_codes": [],
                    "correlation_id": correlation,
                },
            )
        except NotFound:
            response = _json(
                404,
                {"error": {"code": "ResourceNotFound", "message": f"No route {request.path}", "target": correlation}},
            )
        except HTTPException as exc:
            response = _json(
                exc.code or 400, {"error": {"code": "BadRequest", "message": exc.description, "target": correlation}}
            )
        if request.path.startswith("/api/"):
            with self.state.lock:
                self.state.record(request.method, request.full_path.rstrip("?"), response.status_code)
        return response

    # ---- Entra ID ----
    def on_openid(self, request: Request, tenant: str) -> Response:
        return _json(200, self.state.openid_configuration(tenant, request.host_url.rstrip("/")))

    def on_token(self, request: Request, tenant: str) -> Response:
        form = {k: v for k, v in request.form.items()}
        if request.authorization and request.authorization.type == "basic":
            form.setdefault("client_id", request.authorization.username or "")
            form.setdefault("client_secret", request.authorization.password or "")
        return _json(200, self.state.issue_token(tenant, form))

    # ---- Defender for Endpoint ----
    def _auth(self, request: Request, role: tuple[str, ...], quota: str | None) -> dict[str, Any]:
        claims = self.state.authorize(request.headers.get("Authorization"), MDE_AUDIENCES, role)
        if quota:
            self.state.take_quota(claims, quota)
        return claims

    def on_machines(self, request: Request) -> Response:
        self._auth(request, ("Machine.Read.All", "Machine.ReadWrite.All"), "machines")
        top = request.args.get("$top")
        try:
            top_n = int(top) if top is not None else None
        except ValueError:
            raise ApiError(400, "InvalidInput", "$top must be an integer.") from None
        return _json(
            200,
            {
                "@odata.context": "https://api.securitycenter.microsoft.com/api/$metadata#Machines",
                "value": self.state.find_machines(request.args.get("$filter"), top_n),
            },
        )

    def on_machine(self, request: Request, key: str) -> Response:
        self._auth(request, ("Machine.Read.All", "Machine.ReadWrite.All"), "machines")
        return _json(200, self.state.get_machine(key))

    def on_hunting(self, request: Request) -> Response:
        self._auth(request, ("AdvancedQuery.Read.All",), "hunting")
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            raise ApiError(400, "InvalidRequestBody", "Request body must be a JSON object with 'Query'.")
        return _json(200, hunting.run(self.state, body.get("Query", "")))

    def on_create_alert(self, request: Request) -> Response:
        self._auth(request, ("Alert.ReadWrite.All",), "alerts.create")
        body = request.get_json(silent=True)
        if body is None:
            raise ApiError(400, "InvalidRequestBody", "Request body is not valid JSON.")
        return _json(200, self.state.create_alert(body))

    # ---- inspection (read-only) ----
    def on_state(self, request: Request) -> Response:
        return _json(200, self.state.snapshot())
