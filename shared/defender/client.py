"""The Defender for Endpoint API client: every outbound call goes through ``_request``.

That single choke point is deliberate: it is where errors become typed (status, Defender's
error code, correlation id, Retry-After), where each call is reported to observers (the audit
trail), and where pacing and fault injection attach, without any caller knowing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import requests

from shared.defender.auth import TokenProvider

log = logging.getLogger(__name__)
USER_AGENT = "noxys-defender-connector/0.1"


class DefenderError(Exception):
    """A failed Defender call. ``status`` 0 means no HTTP answer (network, timeout, token)."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        target: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}" + (f" (correlation id {target})" if target else ""))
        self.status = status
        self.code = code
        self.message = message
        self.target = target
        self.retry_after = retry_after

    @property
    def transient(self) -> bool:
        """Worth retrying later: throttling, server errors, timeouts, network trouble."""
        return self.status in (0, 408, 429) or self.status >= 500


@dataclass(frozen=True)
class CallRecord:
    """What the audit trail keeps of one call: no token, no body, no query values beyond the path."""

    method: str
    path: str
    status: int
    latency_ms: float
    correlation_id: str | None
    error_code: str | None


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


class DefenderClient:
    def __init__(
        self,
        api_url: str,
        tokens: TokenProvider,
        *,
        session: requests.Session | None = None,
        timeout: float = 30.0,
        observers: list[Callable[[CallRecord], None]] | None = None,
    ) -> None:
        self.api_url = api_url.rstrip("/")
        self._tokens = tokens
        self._session = session or requests.Session()
        self._timeout = timeout
        self.observers = observers if observers is not None else []

    # ---- the one place that talks HTTP ----
    def _request(self, method: str, path: str, *, params: dict[str, str] | None = None, json: Any = None) -> Any:
        started = time.monotonic()
        status, code, target = 0, None, None
        try:
            token = self._token()
            try:
                resp = self._session.request(
                    method,
                    self.api_url + path,
                    params=params,
                    json=json,
                    timeout=self._timeout,
                    headers={
                        "Authorization": f"Bearer {token}",
                        "Accept": "application/json",
                        "User-Agent": USER_AGENT,
                    },
                )
            except requests.Timeout:
                code = "Timeout"
                raise DefenderError(0, code, f"no answer from {self.api_url} within {self._timeout:.0f}s") from None
            except requests.RequestException as exc:
                code = "Unreachable"
                raise DefenderError(0, code, f"cannot reach {self.api_url}: {exc.__class__.__name__}") from None
            status = resp.status_code
            if status >= 400:
                err = _error_body(resp)
                code, target = err.get("code") or resp.reason or "Error", err.get("target")
                raise DefenderError(
                    status,
                    str(code),
                    str(err.get("message") or resp.reason or ""),
                    target=target,
                    retry_after=_retry_after(resp.headers.get("Retry-After")),
                )
            if status == 204 or not resp.content:
                return None
            return resp.json()
        finally:
            record = CallRecord(
                method=method,
                path=path,
                status=status,
                latency_ms=round((time.monotonic() - started) * 1000, 1),
                correlation_id=target,
                error_code=code,
            )
            for observe in self.observers:
                observe(record)

    def _token(self) -> str:
        from azure.core.exceptions import ClientAuthenticationError

        try:
            return self._tokens.token()
        except ClientAuthenticationError as exc:
            raise DefenderError(0, "TokenError", _aad_reason(str(exc.message or exc))) from None

    # ---- one method per API call ----
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

    def run_hunting_query(self, query: str) -> list[dict[str, Any]]:
        body = self._request("POST", "/api/advancedqueries/run", json={"Query": query})
        return list(body.get("Results", [])) if isinstance(body, dict) else []

    def create_alert_by_reference(self, alert: dict[str, Any]) -> dict[str, Any]:
        body = self._request("POST", "/api/alerts/CreateAlertByReference", json=alert)
        if not isinstance(body, dict) or "id" not in body:
            raise DefenderError(502, "BadResponse", "CreateAlertByReference answered without an alert id")
        return body


def _error_body(resp: requests.Response) -> dict[str, Any]:
    try:
        body = resp.json()
    except ValueError:
        return {}
    err = body.get("error") if isinstance(body, dict) else None
    return err if isinstance(err, dict) else {}


def _aad_reason(text: str) -> str:
    """Keep the AADSTS code and first sentence; never anything that could quote a secret."""
    first = text.strip().splitlines()[0] if text.strip() else "token request failed"
    return first[:300]
