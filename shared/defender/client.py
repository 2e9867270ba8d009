"""Clients for Defender for Endpoint, Microsoft Graph and the Defender XDR incidents API.

Every outbound call goes through :meth:`ApiClient._request`. That single choke point is
deliberate: it is where errors become typed (status, the service's error code, correlation id,
Retry-After), where the shared pacing budget is taken before the call and told about a 429
after it, and where each call is reported to observers (the audit trail). Callers just call
``create_alert_by_reference(...)``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from shared import __version__, telemetry
from shared.defender.auth import TokenProvider
from shared.defender.budget import Budget, BudgetSpent, api_of
from shared.defender.context import current
from shared.defender.errors import CallRecord, DefenderError, Paced
from shared.secrets import VaultUnavailable

if TYPE_CHECKING:
    import requests

log = logging.getLogger(__name__)
USER_AGENT = f"noxys-defender-connector/{__version__}"


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def http_session() -> requests.Session:
    """A session that reads the environment once: with ``trust_env`` requests scans every proxy
    variable on every request. The CA bundle (``REQUESTS_CA_BUNDLE``, a corporate proxy's or the
    emulator's) and the proxies are taken when the client is built, as requests would take them."""
    import os
    import urllib.request

    import requests

    session = requests.Session()
    session.trust_env = False
    session.proxies.update({k: v for k, v in urllib.request.getproxies().items() if k in ("http", "https")})
    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    if bundle:
        session.verify = bundle
    return session


class ApiClient:
    service = "api"

    def __init__(
        self,
        api_url: str,
        tokens: TokenProvider,
        *,
        session: requests.Session | None = None,
        timeout: float = 30.0,
        observers: list[Callable[[CallRecord], None]] | None = None,
        pacer: Budget | None = None,
    ) -> None:

        self.api_url = api_url.rstrip("/")
        self._tokens = tokens
        self._session = session or http_session()
        self._timeout = timeout
        self.observers = observers if observers is not None else []
        self.pacer = pacer

    def _request(self, method: str, path: str, *, params: dict[str, str] | None = None, json: Any = None) -> Any:
        """One call: take the budget, send (once more with a fresh token on 401), type the error,
        tell the observers — whatever happens."""
        ctx = current()
        api = api_of(method, path)
        if self.pacer:
            try:
                self.pacer.acquire(api, priority=ctx.priority, ticketed=api in ctx.tickets)
            except BudgetSpent as spent:
                telemetry.quota_wait(api, spent.wait)
                raise Paced(api, spent.wait, spent.slot) from None
        started, wall = time.monotonic(), time.time()
        status, code, target = 0, None, None
        try:
            with telemetry.span(f"defender {api}", "client", api=api) as span:  # a child of the delivery's
                resp = self._send(method, path, params, json)
                telemetry.mark(span, status=resp.status_code)
            status = resp.status_code
            if status >= 400:
                error = self._error(api, resp)
                code, target = error.code, error.target
                raise error
            return None if status == 204 or not resp.content else resp.json()
        except DefenderError as exc:
            code = code or exc.code
            raise
        finally:
            self._observe(method, path, status, started, wall, target, code)

    def _send(self, method: str, path: str, params: dict[str, str] | None, json: Any) -> requests.Response:
        import requests

        for fresh_token in (False, True):
            if fresh_token:  # 401: the cached token is stale or revoked; one retry with a new one
                self._tokens.invalidate()
            headers = {
                "Authorization": f"Bearer {self._token()}",
                "Accept": "application/json",
                "User-Agent": USER_AGENT,
            }
            try:
                resp = self._session.request(
                    method, self.api_url + path, params=params, json=json, timeout=self._timeout, headers=headers
                )
            except requests.RequestException as exc:
                raise _unanswered(exc, self.api_url, self._timeout) from None
            if resp.status_code != 401:
                break
        return resp

    def _error(self, api: str, resp: requests.Response) -> DefenderError:
        err = _error_body(resp)
        wait = _retry_after(resp.headers.get("Retry-After"))
        if resp.status_code == 429 and self.pacer:
            self.pacer.block(api, wait or 60.0)  # every instance waits, not only this one
        return DefenderError(
            resp.status_code,
            str(err.get("code") or resp.reason or "Error"),
            str(err.get("message") or resp.reason or ""),
            target=err.get("target"),
            retry_after=wait,
        )

    def _observe(
        self, method: str, path: str, status: int, started: float, wall: float, target: str | None, code: str | None
    ) -> None:
        ctx = current()
        telemetry.defender_call(api_of(method, path), status)
        record = CallRecord(
            time=wall,
            service=self.service,
            method=method,
            path=path,
            status=status,
            latency_ms=round((time.monotonic() - started) * 1000, 1),
            correlation_id=target,
            error_code=code,
            event_id=ctx.event_id,
            attempt=ctx.attempt,
        )
        for observe in self.observers:
            try:
                observe(record)
            except Exception as exc:  # the audit must never break delivery
                log.warning("call observer failed: %s", exc.__class__.__name__)

    def _token(self) -> str:
        from azure.core.exceptions import ClientAuthenticationError

        try:
            return self._tokens.token()
        except ClientAuthenticationError as exc:
            raise DefenderError(0, "TokenError", _aad_reason(str(exc.message or exc))) from None
        except VaultUnavailable as exc:  # transient for delivery: the event waits for the vault
            raise DefenderError(0, "SecretUnavailable", str(exc)) from None


class DefenderClient(ApiClient):
    """Defender for Endpoint API: one method per call the connector makes."""

    service = "mde"

    def list_machines(self, odata_filter: str | None = None, top: int | None = None) -> list[dict[str, Any]]:
        params: dict[str, str] = {}
        if odata_filter:
            params["$filter"] = odata_filter
        if top is not None:
            params["$top"] = str(top)
        body = self._request("GET", "/api/machines", params=params)
        return list(body.get("value", [])) if isinstance(body, dict) else []

    def get_machine(self, machine_id: str) -> dict[str, Any] | None:
        try:
            body = self._request("GET", f"/api/machines/{quote(machine_id, safe='')}")
        except DefenderError as exc:
            if exc.status == 404:
                return None
            raise
        return body if isinstance(body, dict) else None

    def find_machines_by_ip(self, ip: str, when: datetime) -> list[dict[str, Any]]:
        """Machines seen with ``ip`` within ±15 minutes of ``when`` (ip validated by the caller)."""
        stamp = when.strftime("%Y-%m-%dT%H:%M:%SZ")
        body = self._request("GET", f"/api/machines/findbyip(ip='{ip}',timestamp={stamp})")
        return list(body.get("value", [])) if isinstance(body, dict) else []

    def run_hunting_query(self, query: str) -> list[dict[str, Any]]:
        body = self._request("POST", "/api/advancedqueries/run", json={"Query": query})
        return list(body.get("Results", [])) if isinstance(body, dict) else []

    def create_alert_by_reference(self, alert: dict[str, Any]) -> dict[str, Any]:
        body = self._request("POST", "/api/alerts/CreateAlertByReference", json=alert)
        if not isinstance(body, dict) or "id" not in body:
            raise DefenderError(502, "BadResponse", "CreateAlertByReference answered without an alert id")
        return body

    def list_alerts(self, odata_filter: str, top: int = 1000) -> list[dict[str, Any]]:
        body = self._request("GET", "/api/alerts", params={"$filter": odata_filter, "$top": str(top)})
        return list(body.get("value", [])) if isinstance(body, dict) else []

    def get_alert(self, alert_id: str) -> dict[str, Any]:
        body = self._request("GET", f"/api/alerts/{quote(alert_id, safe='')}")
        return body if isinstance(body, dict) else {}

    def machine_alerts(self, machine_id: str) -> list[dict[str, Any]]:
        """``GET /api/machines/{id}/alerts``: Defender's alerts on one device (the timeline)."""
        body = self._request("GET", f"/api/machines/{quote(machine_id, safe='')}/alerts")
        return list(body.get("value", [])) if isinstance(body, dict) else []

    def comment_alert(self, alert_id: str, comment: str) -> dict[str, Any]:
        body = self._request("PATCH", f"/api/alerts/{quote(alert_id, safe='')}", json={"comment": comment})
        return body if isinstance(body, dict) else {}

    # ---- response (docs/reference/defender-api.md §8 and §9) ----
    def machine_action(self, machine_id: str, segment: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST /api/machines/{id}/isolate (or restrictCodeExecution, runAntiVirusScan, …): a MachineAction."""
        found = self._request("POST", f"/api/machines/{quote(machine_id, safe='')}/{segment}", json=body)
        if not isinstance(found, dict) or "id" not in found:
            raise DefenderError(502, "BadResponse", f"{segment} answered without a machine action id")
        return found

    def list_machine_actions(self, odata_filter: str) -> list[dict[str, Any]]:
        body = self._request("GET", "/api/machineactions", params={"$filter": odata_filter})
        return list(body.get("value", [])) if isinstance(body, dict) else []

    def get_machine_action(self, action_id: str) -> dict[str, Any]:
        body = self._request("GET", f"/api/machineactions/{quote(action_id, safe='')}")
        return body if isinstance(body, dict) else {}

    def tag_machine(self, machine_id: str, tag: str, action: str = "Add") -> dict[str, Any]:
        """Add (or with ``action="Remove"``, remove) a device tag."""
        body = self._request(
            "POST", f"/api/machines/{quote(machine_id, safe='')}/tags", json={"Value": tag, "Action": action}
        )
        return body if isinstance(body, dict) else {}

    def add_indicator(self, indicator: dict[str, Any]) -> dict[str, Any]:
        body = self._request("POST", "/api/indicators", json=indicator)
        return body if isinstance(body, dict) else {}

    def delete_indicator(self, indicator_id: str) -> bool:
        """True when deleted, False when it was not there (already deleted, or expired)."""
        try:
            self._request("DELETE", f"/api/indicators/{quote(indicator_id, safe='')}")
        except DefenderError as exc:
            if exc.status == 404:
                return False
            raise
        return True


class GraphClient(ApiClient):
    """Microsoft Graph security: incident tags and the beta createAlert fallback."""

    service = "graph"

    def get_incident(self, incident_id: str) -> dict[str, Any]:
        body = self._request("GET", f"/v1.0/security/incidents/{quote(incident_id, safe='')}")
        return body if isinstance(body, dict) else {}

    def set_incident_tags(self, incident_id: str, tags: list[str]) -> None:
        self._request("PATCH", f"/v1.0/security/incidents/{quote(incident_id, safe='')}", json={"customTags": tags})

    def password_credentials(self, app_id: str) -> list[dict[str, Any]]:
        """The app registration's secrets (ids, hints, end dates — never values); needs Application.Read.All."""
        body = self._request(
            "GET", f"/v1.0/applications(appId='{quote(app_id, safe='')}')", params={"$select": "passwordCredentials"}
        )
        return list(body.get("passwordCredentials", [])) if isinstance(body, dict) else []

    def create_alert(self, alert_input: dict[str, Any]) -> dict[str, Any]:
        body = self._request("POST", "/beta/security/alerts_v2/createAlert", json={"createAlertInput": alert_input})
        if not isinstance(body, dict) or "id" not in body:
            raise DefenderError(502, "BadResponse", "createAlert answered without an alert id")
        return body


class IncidentsClient(ApiClient):
    """The legacy Defender XDR incidents API (``api.security.microsoft.com``)."""

    service = "incidents"

    def get_incident(self, incident_id: str) -> dict[str, Any]:
        body = self._request("GET", f"/api/incidents/{quote(incident_id, safe='')}")
        return body if isinstance(body, dict) else {}

    def set_incident_tags(self, incident_id: str, tags: list[str]) -> None:
        self._request("PATCH", f"/api/incidents/{quote(incident_id, safe='')}", json={"tags": tags})


def _unanswered(exc: Exception, api_url: str, timeout: float) -> DefenderError:
    """A call without an HTTP answer, typed by whether the request can have reached the service:
    only a connection that was never made proves nothing happened (``Unreachable``); a read timeout
    (``Timeout``) or a connection broken after sending (``ConnectionLost``) may hide a call that
    worked. requests wraps urllib3's connect failures in ``MaxRetryError``; a failure while reading
    the answer is raised bare (urllib3 never retries a POST's read)."""
    import requests
    from urllib3.exceptions import ConnectTimeoutError, MaxRetryError, NewConnectionError

    name = exc.__class__.__name__
    if isinstance(exc, requests.ConnectTimeout | requests.exceptions.ProxyError) or _certificate_refused(exc):
        return DefenderError(0, "Unreachable", f"cannot reach {api_url}: {name}")
    if isinstance(exc, requests.Timeout):
        return DefenderError(0, "Timeout", f"no answer from {api_url} within {timeout:.0f}s")
    cause = exc.args[0] if exc.args else None
    if isinstance(cause, MaxRetryError) and isinstance(cause.reason, NewConnectionError | ConnectTimeoutError):
        return DefenderError(0, "Unreachable", f"cannot reach {api_url}: {name}")
    return DefenderError(0, "ConnectionLost", f"connection to {api_url} lost before the answer: {name}")


def _certificate_refused(exc: BaseException) -> bool:
    """A TLS error proves nothing was sent only when the handshake refused the server's certificate;
    a TLS session broken later (after the request went out) looks the same to requests, so any other
    SSLError counts as a connection lost."""
    import ssl

    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        e = todo.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, ssl.SSLCertVerificationError):
            return True
        linked = (*e.args, getattr(e, "reason", None), e.__cause__, e.__context__)
        todo += [a for a in linked if isinstance(a, BaseException)]
    return False


def _error_body(resp: requests.Response) -> dict[str, Any]:
    try:
        body = resp.json()
    except ValueError:
        return {}
    err = body.get("error") if isinstance(body, dict) else None
    if not isinstance(err, dict):
        return {}
    inner = err.get("innerError") or err.get("innererror")
    if not err.get("target") and isinstance(inner, dict):  # Graph puts its correlation id here
        err = {**err, "target": inner.get("request-id") or inner.get("client-request-id")}
    return err


def _aad_reason(text: str) -> str:
    """Keep the AADSTS code and first sentence; never anything that could quote a secret."""
    first = text.strip().splitlines()[0] if text.strip() else "token request failed"
    return first[:300]
