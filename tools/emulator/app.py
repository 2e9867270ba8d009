"""The emulator's HTTP surface (WSGI, served over TLS by :mod:`tools.emulator.server`).

Routes follow the real services: Entra v2.0 discovery and token endpoints under
``/{tenant}/...``, Defender for Endpoint under ``/api/...``, and a read-only
``GET /emulator/state`` for tests and for people curious about what arrived.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import time
import uuid
from typing import Any, cast

from werkzeug.exceptions import HTTPException, NotFound
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from tools.emulator import hunting, insights, logs, response, vault
from tools.emulator.state import GRAPH_AUDIENCE, MDE_AUDIENCES, ApiError, DefenderState, TokenError

FINDBYIP = re.compile(r"^findbyip\(ip='([0-9a-fA-F.:]+)',timestamp=([0-9T:.\-Z+]+)\)$")
XDR_AUDIENCE = "https://api.security.microsoft.com"
# what a gateway in front of Defender answers when it lost the service's answer
GATEWAY_ERRORS = {
    "500": "InternalServerError",
    "502": "BadGateway",
    "503": "ServiceUnavailable",
    "504": "GatewayTimeout",
}

URLS = Map(
    [
        Rule("/<tenant>/v2.0/.well-known/openid-configuration", endpoint="openid", methods=["GET"]),
        Rule("/<tenant>/oauth2/v2.0/token", endpoint="token", methods=["POST"]),
        Rule("/api/machines", endpoint="machines", methods=["GET"]),
        Rule("/api/machines/<key>", endpoint="machine", methods=["GET"]),
        Rule("/api/machines/<machine_id>/tags", endpoint="machine_tags", methods=["POST"]),
        Rule("/api/machines/<machine_id>/alerts", endpoint="machine_alerts", methods=["GET"]),
        Rule("/api/machines/<machine_id>/<segment>", endpoint="machine_action", methods=["POST"]),
        Rule("/api/machineactions", endpoint="machine_actions", methods=["GET"]),
        Rule("/api/machineactions/<action_id>", endpoint="machine_action_status", methods=["GET"]),
        Rule("/api/indicators", endpoint="indicators", methods=["GET", "POST"]),
        Rule("/api/indicators/<indicator_id>", endpoint="indicator", methods=["DELETE"]),
        Rule("/tickets", endpoint="tickets", methods=["POST"]),
        Rule("/api/advancedqueries/run", endpoint="hunting", methods=["POST"]),
        Rule("/api/alerts/CreateAlertByReference", endpoint="create_alert", methods=["POST"]),
        Rule("/api/alerts", endpoint="alerts", methods=["GET"]),
        Rule("/api/alerts/<alert_id>", endpoint="alert", methods=["GET", "PATCH"]),
        Rule("/api/incidents/<incident_id>", endpoint="legacy_incident", methods=["GET", "PATCH"]),
        Rule("/v1.0/security/incidents/<incident_id>", endpoint="graph_incident", methods=["GET", "PATCH"]),
        Rule("/beta/security/alerts_v2/createAlert", endpoint="graph_create_alert", methods=["POST"]),
        Rule("/msi/token", endpoint="msi", methods=["GET"]),
        Rule("/secrets/<name>", endpoint="secret", methods=["GET"]),
        Rule("/secrets/<name>/versions", endpoint="secret_versions", methods=["GET"]),
        Rule("/secrets/<name>/<version>", endpoint="secret", methods=["GET"]),
        Rule("/applications(appId='<app_id>')", endpoint="graph_application", methods=["GET"]),
        Rule("/v1.0/applications(appId='<app_id>')", endpoint="graph_application", methods=["GET"]),
        Rule("/dataCollectionRules/<dcr>/streams/<stream>", endpoint="logs_ingest", methods=["POST"]),
        Rule("/v2.1/track", endpoint="track", methods=["POST"]),
        Rule("/v1.0/users", endpoint="graph_users", methods=["GET"]),
        Rule("/v1.0/users/<user>", endpoint="graph_user", methods=["GET"]),
        Rule("/v1.0/users/<user>/sendMail", endpoint="graph_send_mail", methods=["POST"]),
        Rule("/v1.0/users/<user>/revokeSignInSessions", endpoint="graph_revoke", methods=["POST"]),
        Rule("/v1.0/users/<user>/checkMemberGroups", endpoint="graph_check_groups", methods=["POST"]),
        Rule("/v1.0/groups/<group>/members/$ref", endpoint="graph_add_member", methods=["POST"]),
        Rule("/v1.0/groups/<group>/members/<member>/$ref", endpoint="graph_remove_member", methods=["DELETE"]),
        Rule("/emulator/state", endpoint="state", methods=["GET"]),
        Rule("/emulator/faults", endpoint="faults", methods=["POST"]),
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
            headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after is not None else {}
            headers.update(exc.headers)
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
        if self.state.on_change and request.method != "GET" and response.status_code < 300:
            self.state.on_change()  # what Defender would remember survives a restart
        if request.path.startswith(("/api/", "/v1.0/", "/beta/")):
            with self.state.lock:
                self.state.record(request.method, request.full_path.rstrip("?"), response.status_code)
            self.state.slow_down(request.path)
        lose = request.environ.get("emulator.lose")
        if lose == "timeout":
            time.sleep(self.state.faults.lost_answer_delay)  # answers after the client gave up
        elif lose == "reset":  # closed without an answer (the client sees the connection drop)
            with contextlib.suppress(OSError):
                request.environ["werkzeug.socket"].shutdown(socket.SHUT_RDWR)
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
    def _auth(
        self, request: Request, role: tuple[str, ...], quota: str | None, audiences: set[str] = MDE_AUDIENCES
    ) -> dict[str, Any]:
        claims = self.state.authorize(request.headers.get("Authorization"), audiences, role)
        self.state.inject(request.path)
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
        found = FINDBYIP.match(key)
        if found:
            return _json(200, {"value": self.state.find_by_ip(found.group(1), found.group(2))})
        if key.startswith("findbyip"):
            raise ApiError(400, "InvalidInput", "findbyip needs ip='...' and timestamp=... .")
        return _json(200, self.state.get_machine(key))

    # ---- response: machine actions, tags, indicators (docs/reference/defender-api.md §8 and §9) ----
    def on_machine_action(self, request: Request, machine_id: str, segment: str) -> Response:
        if segment not in response.ACTIONS:
            raise NotFound()
        claims = self._auth(request, (response.ACTIONS[segment][1],), "actions")
        body = request.get_json(silent=True)
        return _json(201, self.state.machine_action(machine_id, segment, body, str(claims.get("appid"))))

    def on_machine_actions(self, request: Request) -> Response:
        self._auth(request, ("Machine.Read.All", "Machine.ReadWrite.All"), "actions")
        return _json(200, {"value": self.state.list_machine_actions(request.args.get("$filter"))})

    def on_machine_action_status(self, request: Request, action_id: str) -> Response:
        self._auth(request, ("Machine.Read.All", "Machine.ReadWrite.All"), "actions")
        return _json(200, self.state.get_machine_action(action_id))

    def on_machine_alerts(self, request: Request, machine_id: str) -> Response:
        self._auth(request, ("Alert.Read.All", "Alert.ReadWrite.All"), "alerts")
        return _json(200, {"value": self.state.machine_alerts(machine_id)})

    def on_machine_tags(self, request: Request, machine_id: str) -> Response:
        self._auth(request, ("Machine.ReadWrite.All",), "machines")
        return _json(200, self.state.tag_machine(machine_id, request.get_json(silent=True)))

    def on_indicators(self, request: Request) -> Response:
        if request.method == "GET":
            self._auth(request, ("Ti.ReadWrite.All", "Ti.Read.All"), "indicators")
            return _json(200, {"value": list(self.state.response.indicators)})
        claims = self._auth(request, ("Ti.ReadWrite.All",), "indicators")
        return _json(200, self.state.add_indicator(request.get_json(silent=True), str(claims.get("appid"))))

    def on_indicator(self, request: Request, indicator_id: str) -> Response:
        self._auth(request, ("Ti.ReadWrite.All",), "indicators")
        self.state.delete_indicator(indicator_id)
        return Response(status=204)

    def on_tickets(self, request: Request) -> Response:
        return _json(201, self.state.receive_ticket(dict(request.headers.items()), request.get_data()))

    def on_alerts(self, request: Request) -> Response:
        self._auth(request, ("Alert.Read.All", "Alert.ReadWrite.All"), "alerts")
        top = request.args.get("$top")
        if top is not None and not top.isdigit():
            raise ApiError(400, "InvalidInput", "$top must be an integer.")
        return _json(200, {"value": self.state.list_alerts(request.args.get("$filter"), int(top) if top else None)})

    def on_alert(self, request: Request, alert_id: str) -> Response:
        if request.method == "GET":
            self._auth(request, ("Alert.Read.All", "Alert.ReadWrite.All"), "alerts")
            found = self.state.list_alerts(f"id eq '{alert_id}'", None)
            if not found:
                raise ApiError(404, "ResourceNotFound", f"Alert {alert_id} was not found.")
            return _json(200, found[0])
        self._auth(request, ("Alert.ReadWrite.All",), "alerts")
        return _json(200, self.state.update_alert(alert_id, request.get_json(silent=True)))

    def on_legacy_incident(self, request: Request, incident_id: str) -> Response:
        write = request.method == "PATCH"
        role = ("Incident.ReadWrite.All",) if write else ("Incident.Read.All", "Incident.ReadWrite.All")
        self._auth(request, role, "incidents", {XDR_AUDIENCE})
        if write:
            body = request.get_json(silent=True)
            if not isinstance(body, dict) or "tags" not in body:
                raise ApiError(400, "InvalidRequestBody", "Expected a JSON object with 'tags'.")
            self.state.set_tags(incident_id, body["tags"])
        i = self.state.incident(incident_id)
        return _json(200, {"incidentId": i["incidentId"], "status": i["status"], "tags": i["tags"]})

    def on_graph_incident(self, request: Request, incident_id: str) -> Response:
        write = request.method == "PATCH"
        role = (
            ("SecurityIncident.ReadWrite.All",)
            if write
            else ("SecurityIncident.Read.All", "SecurityIncident.ReadWrite.All")
        )
        self._auth(request, role, None, {GRAPH_AUDIENCE})
        if write:
            body = request.get_json(silent=True)
            if not isinstance(body, dict) or "customTags" not in body:
                raise ApiError(400, "BadRequest", "Expected a JSON object with 'customTags'.")
            self.state.set_tags(incident_id, body["customTags"])
        return _json(200, self.state.graph_incident(incident_id))

    def on_graph_create_alert(self, request: Request) -> Response:
        self._auth(request, ("SecurityAlert.Create.All",), None, {GRAPH_AUDIENCE})
        return _json(201, self.state.graph_create_alert(request.get_json(silent=True)))

    # ---- Graph: the identity side (docs/reference/defender-api.md §12; tools.emulator.identity) ----
    def _graph(self, request: Request, role: tuple[str, ...]) -> None:
        claims = self._auth(request, role, None, {GRAPH_AUDIENCE})
        self.state.identity_quota(claims)

    def on_graph_user(self, request: Request, user: str) -> Response:
        self._graph(request, ("User.Read.All", "User.ReadWrite.All", "Directory.Read.All"))
        u = self.state.user(user)
        return _json(200, {k: u.get(k) for k in ("id", "userPrincipalName", "accountEnabled", "mail")})

    def on_graph_users(self, request: Request) -> Response:
        self._graph(request, ("User.Read.All", "User.ReadWrite.All", "Directory.Read.All"))
        found = self.state.find_users(request.args.get("$filter") or "")
        return _json(
            200,
            {"value": [{k: u.get(k) for k in ("id", "userPrincipalName", "accountEnabled", "mail")} for u in found]},
        )

    def on_graph_send_mail(self, request: Request, user: str) -> Response:
        self._graph(request, ("Mail.Send",))
        self.state.send_mail(user, request.get_json(silent=True))
        return Response(status=202)

    def on_graph_revoke(self, request: Request, user: str) -> Response:
        self._graph(request, ("User.RevokeSessions.All", "User.ReadWrite.All", "Directory.ReadWrite.All"))
        return _json(200, self.state.revoke_sessions(user))

    def on_graph_check_groups(self, request: Request, user: str) -> Response:
        self._graph(request, ("GroupMember.Read.All", "User.Read.All", "Directory.Read.All"))
        return _json(200, self.state.check_member_groups(user, request.get_json(silent=True)))

    def on_graph_add_member(self, request: Request, group: str) -> Response:
        self._graph(request, ("GroupMember.ReadWrite.All", "Group.ReadWrite.All", "Directory.ReadWrite.All"))
        self.state.add_member(group, request.get_json(silent=True))
        return Response(status=204)

    def on_graph_remove_member(self, request: Request, group: str, member: str) -> Response:
        self._graph(request, ("GroupMember.ReadWrite.All", "Group.ReadWrite.All", "Directory.ReadWrite.All"))
        self.state.remove_member(group, member)
        return Response(status=204)

    def on_faults(self, request: Request) -> Response:
        body = request.get_json(silent=True) or {}
        for key, value in body.items():
            if key == "injected" or not hasattr(self.state.faults, key):
                raise ApiError(400, "InvalidInput", f"unknown fault '{key}'")
            setattr(self.state.faults, key, value)
        return _json(200, {"faults": dict(vars(self.state.faults))})

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
        alert = self.state.create_alert(body)
        self._lose_answer(request)  # the alert exists whatever the client hears
        return _json(200, alert)

    def _lose_answer(self, request: Request) -> None:
        """The ``lose_answer`` fault: the work is done, the answer does not arrive intact."""
        f = self.state.faults
        if f.lose_answer <= 0:
            return
        f.lose_answer -= 1
        modes = f.lose_answer_as.split(",")  # several: each lost answer takes the next one
        mode = modes[sum(n for k, n in f.injected.items() if k.startswith("lost answer")) % len(modes)]
        f.count(f"lost answer {mode}")
        if mode in GATEWAY_ERRORS:
            raise ApiError(int(mode), GATEWAY_ERRORS[mode], "The upstream service did not answer in time.")
        request.environ["emulator.lose"] = mode  # acted on in dispatch, outside the state lock

    # ---- managed identity + Key Vault ----
    def on_msi(self, request: Request) -> Response:
        args = {k: v for k, v in request.args.items()}
        return _json(
            200,
            vault.managed_identity_token(self.state, self.state.vault, args, request.headers.get("X-IDENTITY-HEADER")),
        )

    def _vault(self, request: Request) -> str:
        base = request.host_url.rstrip("/")
        vault.authorize(self.state, self.state.vault, request.headers.get("Authorization"), base)
        if not request.args.get("api-version"):
            raise ApiError(400, "BadParameter", "The request URI contains an invalid or missing api-version.")
        return base

    def on_secret(self, request: Request, name: str, version: str | None = None) -> Response:
        base = self._vault(request)
        return _json(200, vault.get_secret(self.state.vault, base, name, version))

    def on_secret_versions(self, request: Request, name: str) -> Response:
        base = self._vault(request)
        return _json(200, vault.list_versions(self.state.vault, base, name))

    # ---- Graph: the app's own secret expiry ----
    def on_graph_application(self, request: Request, app_id: str) -> Response:
        claims = self.state.authorize(
            request.headers.get("Authorization"),
            {GRAPH_AUDIENCE},
            ("Application.Read.All", "Application.ReadWrite.OwnedBy"),
        )
        app = next(
            (c for c in self.state.clients.values() if c.client_id == app_id and c.tenant_id == claims.get("tid")), None
        )
        if app is None:
            raise ApiError(404, "Request_ResourceNotFound", f"Resource '{app_id}' does not exist.")
        creds = [
            {
                "keyId": str(uuid.uuid5(uuid.NAMESPACE_OID, app.secret)),
                "displayName": "noxys-connector",
                "hint": app.secret[:3],
                "endDateTime": app.secret_expires.isoformat().replace("+00:00", "Z") if app.secret_expires else None,
            }
        ]
        return _json(200, {"appId": app_id, "passwordCredentials": creds})

    # ---- Logs Ingestion API ----
    def on_logs_ingest(self, request: Request, dcr: str, stream: str) -> Response:
        logs.ingest(
            self.state,
            self.state.logs,
            dcr,
            stream,
            dict(request.headers),
            request.get_data(),
            request.args.get("api-version"),
        )
        return Response(status=204)

    def on_track(self, request: Request) -> Response:
        status, body = insights.track(self.state, self.state.insights, dict(request.headers), request.get_data())
        return _json(status, body)

    # ---- inspection (read-only) ----
    def on_state(self, request: Request) -> Response:
        return _json(200, self.state.snapshot())
