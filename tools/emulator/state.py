"""In-memory Entra ID + Defender for Endpoint state, with an injectable clock.

Everything the emulator enforces comes from ``shared/reference/defender-api.md``; the HTTP layer
(:mod:`tools.emulator.app`) only translates requests to calls on this object, so the rules are
in one place and readable.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from shared.clock import Clock, ManualClock, SystemClock

__all__ = ["ApiError", "Clock", "DefenderState", "ManualClock", "TokenError"]

DEFAULT_FIXTURE = Path(__file__).with_name("fixtures") / "default.json"

MDE_AUDIENCE = "https://api.securitycenter.microsoft.com"
MDE_AUDIENCES = {MDE_AUDIENCE, "fc780465-2017-40d4-a0c5-307022471b92"}  # WindowsDefenderATP app id
GRAPH_AUDIENCE = "https://graph.microsoft.com"
RESOURCES = {
    MDE_AUDIENCE,
    "https://api.security.microsoft.com",
    GRAPH_AUDIENCE,
    "https://vault.azure.net",
    "https://monitor.azure.com",
}
SEVERITIES = ("Low", "Medium", "High")
CATEGORIES = (
    "General",
    "CommandAndControl",
    "Collection",
    "CredentialAccess",
    "DefenseEvasion",
    "Discovery",
    "Exfiltration",
    "Exploit",
    "Execution",
    "InitialAccess",
    "LateralMovement",
    "Malware",
    "Persistence",
    "PrivilegeEscalation",
    "Ransomware",
    "SuspiciousActivity",
)
ALERT_FIELDS = (
    "machineId",
    "reportId",
    "eventTime",
    "severity",
    "title",
    "description",
    "recommendedAction",
    "category",
)
RETENTION = timedelta(days=30)

# Which API (token audience) each application permission belongs to: a token only carries the
# roles of its own resource, as Entra ID does.
PERMISSION_RESOURCE = {
    "Alert": MDE_AUDIENCE,
    "Machine": MDE_AUDIENCE,
    "AdvancedQuery": MDE_AUDIENCE,
    "Ti": MDE_AUDIENCE,
    "Vulnerability": MDE_AUDIENCE,
    "Incident": "https://api.security.microsoft.com",
    "SecurityIncident": GRAPH_AUDIENCE,
    "SecurityAlert": GRAPH_AUDIENCE,
    "ThreatHunting": GRAPH_AUDIENCE,
    "Application": GRAPH_AUDIENCE,
}


def roles_for(roles: list[str], resource: str) -> list[str]:
    return [r for r in roles if PERMISSION_RESOURCE.get(r.split(".")[0]) == resource]


# quota name -> [(window seconds, max calls)]
QUOTAS: dict[str, list[tuple[int, int]]] = {
    "alerts.create": [(60, 15)],
    "alerts": [(60, 100), (3600, 1500)],
    "machines": [(60, 100), (3600, 1500)],
    "hunting": [(60, 45), (3600, 1500)],
    "incidents": [(60, 50)],
    "actions": [(60, 100), (3600, 1500)],
}
ALERT_STATUSES = ("New", "InProgress", "Resolved")
CLASSIFICATIONS = ("TruePositive", "InformationalExpectedActivity", "FalsePositive")
DETERMINATIONS = (
    "MultiStagedAttack",
    "MaliciousUserActivity",
    "Malware",
    "Phishing",
    "UnwantedSoftware",
    "SecurityTesting",
    "LineOfBusinessApplication",
    "ConfirmedActivity",
    "NotMalicious",
    "Other",
)
GRAPH_SEVERITIES = ("informational", "low", "medium", "high")


@dataclass
class Faults:
    """Failure modes a test switches on (in process, or with POST /emulator/faults)."""

    burst_429: int = 0  # the next N API calls answer 429
    burst_retry_after: int = 30
    error_rate: float = 0.0  # this share of API calls answers 503
    fail_next: int = 0  # the next N API calls answer 503
    latency: float = 0.0  # seconds added to each API call (after it has been handled)
    latency_path: str = ""  # only calls whose path contains this
    token_outage: bool = False  # the token endpoint answers 503
    seed: int = 7
    injected: dict[str, int] = field(default_factory=dict)

    def count(self, kind: str) -> None:
        self.injected[kind] = self.injected.get(kind, 0) + 1


class ApiError(Exception):
    """An MDE-style error: ``{"error": {"code", "message", "target"}}`` with a status."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        retry_after: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.retry_after = status, code, message, retry_after
        self.headers = headers or {}


class TokenError(Exception):
    """An Entra-style OAuth error: ``{"error", "error_description"}``."""

    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(description)
        self.status, self.error, self.description = status, error, description


@dataclass
class Client:
    tenant_id: str
    client_id: str
    secret: str
    roles: list[str]
    secret_expires: datetime | None = None


@dataclass
class Limiter:
    calls: dict[tuple[str, str], deque[datetime]] = field(default_factory=dict)

    def take(self, key: tuple[str, str], now: datetime, rules: list[tuple[int, int]]) -> None:
        """Count one call or raise 429 with the seconds until the oldest call leaves the window."""
        q = self.calls.setdefault(key, deque())
        longest = max(w for w, _ in rules)
        while q and (now - q[0]).total_seconds() >= longest:
            q.popleft()
        wait = 0.0
        for window, limit in rules:
            inside = [t for t in q if (now - t).total_seconds() < window]
            if len(inside) >= limit:
                wait = max(wait, window - (now - inside[-limit]).total_seconds())
        if wait > 0:
            raise ApiError(429, "TooManyRequests", "Rate limit is exceeded.", retry_after=max(1, math.ceil(wait)))
        q.append(now)


def _public(machine: dict[str, Any]) -> dict[str, Any]:
    """A machine as the API returns it (without the fixture's IP history)."""
    return {k: v for k, v in machine.items() if k != "ip_history"}


def parse_time(text: str) -> datetime:
    """ISO 8601 with 'Z' and up to 7 fractional digits (as advanced hunting returns)."""
    t = text.strip().replace("Z", "+00:00")
    if "." in t:
        head, rest = t.split(".", 1)
        digits = "".join(ch for ch in rest if ch.isdigit())
        tz = rest[len(digits) :]
        t = f"{head}.{digits[:6].ljust(6, '0')}{tz}"
    value = datetime.fromisoformat(t)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def format_time(t: datetime) -> str:
    """Seven fractional digits, like Defender does."""
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "0Z"


class DefenderState:
    """Tenants, apps, machines, network events, alerts and quotas of one emulated tenant set."""

    def __init__(
        self, fixture: dict[str, Any] | None = None, clock: Clock | None = None, token_lifetime: float = 3600
    ) -> None:
        self.clock: Clock = clock or SystemClock()
        # Long simulations move the emulator's clock by hours while MSAL caches tokens by real
        # time; they raise the lifetime instead of letting the two clocks disagree.
        self.token_lifetime = token_lifetime
        self.revoked_before = 0.0  # tokens issued before this (emulator time) are refused
        self.lock = threading.RLock()
        self.signing_key = secrets.token_bytes(32)
        self.clients: dict[tuple[str, str], Client] = {}
        self.tenants: set[str] = set()
        self.machines: list[dict[str, Any]] = []
        self.traffic: dict[str, list[tuple[str, int]]] = {}  # machine id -> [(domain, every seconds)]
        self.network_events: list[dict[str, Any]] = []
        self.alerts: list[dict[str, Any]] = []
        self.incidents: dict[str, dict[str, Any]] = {}
        self.calls: list[dict[str, Any]] = []
        self.limiter = Limiter()
        self.throttled: dict[str, int] = {}
        self.merged: dict[str, int] = {}
        from tools.emulator.logs import LogsState, declared_columns
        from tools.emulator.vault import VaultState

        self.vault = VaultState()
        self.logs = LogsState(columns=declared_columns())
        self.faults = Faults()
        self._rng = random.Random(self.faults.seed)  # noqa: S311 - reproducible fault injection
        self.next_alert = 1
        self.graph_alerts: list[dict[str, Any]] = []
        self.on_change: Callable[[], None] | None = None  # persistence (tools.emulator.persist)
        self.load(fixture if fixture is not None else json.loads(DEFAULT_FIXTURE.read_text()))

    # ---------------------------------------------------------------- fixture
    def load(self, fixture: dict[str, Any]) -> None:
        for tenant in fixture.get("tenants", []):
            tid = tenant["id"]
            self.tenants.add(tid)
            for c in tenant.get("clients", []):
                expires = parse_time(c["secret_expires"]) if c.get("secret_expires") else None
                self.clients[(tid, c["client_id"])] = Client(
                    tid, c["client_id"], c["secret"], list(c.get("roles", [])), expires
                )
        for m in fixture.get("machines", []):
            machine = {k: v for k, v in m.items() if k != "traffic"}
            self.machines.append(machine)
            self.traffic[machine["id"]] = [(t["domain"], int(t["every_seconds"])) for t in m.get("traffic", [])]
        self.network_events.extend(fixture.get("network_events", []))
        for mi in fixture.get("managed_identities", []):
            self.vault.identities.add(mi["client_id"])
            if mi.get("key_vault_reader"):
                self.vault.readers.add(mi["client_id"])
            if mi.get("metrics_publisher"):
                self.logs.publishers.add(mi["client_id"])

    # ---------------------------------------------------------------- Entra ID
    def openid_configuration(self, tenant: str, base: str) -> dict[str, Any]:
        if tenant not in self.tenants:
            raise TokenError(
                400,
                "invalid_tenant",
                f"AADSTS90002: Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID "
                "and are signing into the correct cloud.",
            )
        return {
            "token_endpoint": f"{base}/{tenant}/oauth2/v2.0/token",
            "authorization_endpoint": f"{base}/{tenant}/oauth2/v2.0/authorize",
            "issuer": f"{base}/{tenant}/v2.0",
            "jwks_uri": f"{base}/{tenant}/discovery/v2.0/keys",
            "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "tenant_region_scope": "EU",
        }

    def issue_token(self, tenant: str, form: dict[str, str]) -> dict[str, Any]:
        import jwt

        if self.faults.token_outage:
            self.faults.count("token_outage")
            raise TokenError(
                503, "temporarily_unavailable", "AADSTS90033: A transient error has occurred. Please try again."
            )
        if tenant not in self.tenants:
            raise TokenError(400, "invalid_request", f"AADSTS90002: Tenant '{tenant}' not found.")
        if form.get("grant_type") != "client_credentials":
            raise TokenError(400, "unsupported_grant_type", "AADSTS70003: The app requested an unsupported grant type.")
        client_id, scope = form.get("client_id", ""), form.get("scope", "")
        client = self.clients.get((tenant, client_id))
        if client is None:
            raise TokenError(
                400,
                "unauthorized_client",
                f"AADSTS700016: Application with identifier '{client_id}' was not found in the directory '{tenant}'.",
            )
        if not secrets.compare_digest(form.get("client_secret", "").encode(), client.secret.encode()):
            raise TokenError(
                401,
                "invalid_client",
                "AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the request is "
                f"the client secret value, not the client secret ID, for a secret added to app '{client_id}'.",
            )
        now = self.clock.now()
        if client.secret_expires and now >= client.secret_expires:
            raise TokenError(
                401,
                "invalid_client",
                f"AADSTS7000222: The provided client secret keys for app '{client_id}' are expired.",
            )
        if not scope.endswith("/.default"):
            raise TokenError(
                400,
                "invalid_scope",
                "AADSTS1002012: The provided value for scope is not valid. Client credential flows must have "
                "a scope value with /.default suffixed to the resource identifier.",
            )
        resource = scope.removesuffix("/.default")
        if resource not in RESOURCES:
            raise TokenError(
                400,
                "invalid_resource",
                f"AADSTS500011: The resource principal named {resource} was not found in the tenant named {tenant}.",
            )
        claims = {
            "aud": resource,
            "iss": f"https://sts.windows.net/{tenant}/",
            "tid": tenant,
            "appid": client_id,
            "oid": hashlib.sha256(client_id.encode()).hexdigest()[:32],
            "roles": roles_for(client.roles, resource),
            "iat": int(now.timestamp()),
            "nbf": int(now.timestamp()),
            "exp": int((now + timedelta(seconds=self.token_lifetime)).timestamp()),
        }
        token = jwt.encode(claims, self.signing_key, algorithm="HS256")
        return {"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599, "access_token": token}

    def authorize(self, header: str | None, audiences: set[str], role: str | tuple[str, ...]) -> dict[str, Any]:
        """Validate a bearer token for an API; 401 for a bad token, 403 for audience or role."""
        import jwt

        if not header or not header.startswith("Bearer "):
            raise ApiError(401, "Unauthorized", "Authorization header is missing or is not a Bearer token.")
        try:
            claims = jwt.decode(
                header[7:],
                self.signing_key,
                algorithms=["HS256"],
                options={"verify_aud": False, "verify_exp": False, "verify_iat": False, "verify_nbf": False},
            )
        except jwt.PyJWTError:
            raise ApiError(401, "Unauthorized", "The access token is invalid.") from None
        if claims.get("exp", 0) <= self.clock.now().timestamp():
            raise ApiError(401, "Unauthorized", "The access token has expired.")
        if claims.get("iat", 0) < self.revoked_before:
            raise ApiError(401, "Unauthorized", "The access token has been revoked.")
        if claims.get("aud") not in audiences:
            raise ApiError(
                403, "Forbidden", "The application does not have permission to this API (token audience mismatch)."
            )
        wanted = (role,) if isinstance(role, str) else role
        if not set(wanted) & set(claims.get("roles", [])):
            raise ApiError(
                403,
                "Forbidden",
                "The application does not have any of the required application permissions "
                f"({', '.join(wanted)}) to access the resource.",
            )
        return dict(claims)

    def slow_down(self, path: str) -> None:
        """Latency after the work is done: a client timing out does not undo what happened."""
        f = self.faults
        if f.latency and f.latency_path in path:
            f.count("latency")
            time.sleep(f.latency)  # the emulator is slow, as a real service can be

    def inject(self) -> None:
        """Apply the switched-on failures to one API call (before quota and handler)."""
        f = self.faults
        if f.burst_429 > 0:
            f.burst_429 -= 1
            f.count("429")
            raise ApiError(429, "TooManyRequests", "Rate limit is exceeded.", retry_after=f.burst_retry_after)
        if f.fail_next > 0 or (f.error_rate and self._rng.random() < f.error_rate):
            f.fail_next = max(0, f.fail_next - 1)
            f.count("503")
            raise ApiError(503, "ServiceUnavailable", "The service is temporarily unavailable.")

    def take_quota(self, claims: dict[str, Any], name: str) -> None:
        key = (f"{claims.get('tid')}/{claims.get('appid')}", name)
        try:
            self.limiter.take(key, self.clock.now(), QUOTAS[name])
        except ApiError:
            self.throttled[name] = self.throttled.get(name, 0) + 1
            raise

    # ---------------------------------------------------------------- machines
    def find_machines(self, odata_filter: str | None, top: int | None) -> list[dict[str, Any]]:
        from tools.emulator.odata import compile_filter

        if top is not None and not 0 < top <= 10000:
            raise ApiError(400, "InvalidInput", "$top must be between 1 and 10000.")
        match = compile_filter(odata_filter) if odata_filter else (lambda m: True)
        found = [_public(m) for m in self.machines if match(m)]
        return found[:top] if top else found

    def get_machine(self, key: str) -> dict[str, Any]:
        for m in self.machines:
            if m["id"] == key.lower() or m.get("computerDnsName", "").lower() == key.lower():
                return _public(m)
        raise ApiError(404, "ResourceNotFound", f"Machine {key} was not found.")

    # ---------------------------------------------------------------- network events
    def device_network_events(self, device_id: str, start: datetime, end: datetime) -> list[dict[str, Any]]:
        """Fixture rows plus the periodic connections of each device's declared AI traffic,
        limited to the 30 days advanced hunting keeps and to what has already happened."""
        now = self.clock.now()
        start, end = max(start, now - RETENTION), min(end, now)
        rows = [
            e for e in self.network_events if e["DeviceId"] == device_id and start <= parse_time(e["Timestamp"]) <= end
        ]
        for domain, every in self.traffic.get(device_id, []):
            offset = int(hashlib.sha256(f"{device_id}/{domain}".encode()).hexdigest()[:6], 16) % every
            k = math.ceil((start.timestamp() - offset) / every)
            while (t := k * every + offset) <= end.timestamp():
                when = datetime.fromtimestamp(t, UTC) + timedelta(microseconds=123456)
                if when <= end:
                    rows.append(
                        {
                            "Timestamp": format_time(when),
                            "ReportId": int(hashlib.sha256(f"{device_id}/{domain}/{k}".encode()).hexdigest()[:8], 16),
                            "DeviceId": device_id,
                            "RemoteUrl": domain,
                            "ActionType": "ConnectionSuccess",
                        }
                    )
                k += 1
        return rows

    def event_exists(self, device_id: str, report_id: str, event_time: str) -> bool:
        try:
            when = parse_time(event_time)
        except ValueError:
            return False
        window = timedelta(seconds=1)
        return any(
            str(r["ReportId"]) == str(report_id) and parse_time(r["Timestamp"]) == when
            for r in self.device_network_events(device_id, when - window, when + window)
        )

    # ---------------------------------------------------------------- alerts
    def create_alert(self, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise ApiError(400, "InvalidRequestBody", "Request body must be a JSON object.")
        for name in ALERT_FIELDS:
            if name not in body or body[name] in (None, ""):
                hint = next((k for k in body if k.lower() == name.lower() and k != name), None)
                extra = f" (found '{hint}': parameter names are case-sensitive)" if hint else ""
                raise ApiError(400, "MissingRequiredParameter", f"Missing required parameter '{name}'{extra}.")
        if body["severity"] not in SEVERITIES:
            raise ApiError(
                400,
                "InvalidInput",
                f"Invalid value '{body['severity']}' for severity; allowed: {', '.join(SEVERITIES)}.",
            )
        if body["category"] not in CATEGORIES:
            raise ApiError(400, "InvalidInput", f"Invalid value '{body['category']}' for category.")
        machine_id = str(body["machineId"])
        machine = next((m for m in self.machines if m["id"] == machine_id), None)
        if machine is None:
            raise ApiError(404, "ResourceNotFound", f"Machine {machine_id} was not found.")
        if not self.event_exists(machine_id, str(body["reportId"]), str(body["eventTime"])):
            raise ApiError(
                404, "ResourceNotFound", "No event was found for the given machineId, reportId and eventTime."
            )
        for alert in self.alerts:
            if alert["machineId"] == machine_id and alert["title"] == body["title"] and alert["status"] != "Resolved":
                self.merged[alert["id"]] = self.merged.get(alert["id"], 0) + 1
                return dict(alert)
        now = self.clock.now()
        incident = next(
            (i for i in self.incidents.values() if i["machineId"] == machine_id and i["status"] == "Active"), None
        )
        if incident is None:
            incident = {
                "incidentId": 1000 + len(self.incidents) + 1,
                "machineId": machine_id,
                "status": "Active",
                "tags": [],
                "createdTime": format_time(now),
            }
            self.incidents[str(incident["incidentId"])] = incident
        alert = {
            "id": f"da{now:%Y%m%d}{self.next_alert:010d}_{secrets.randbelow(10**9):09d}",
            "incidentId": incident["incidentId"],
            "machineId": machine_id,
            "computerDnsName": machine.get("computerDnsName"),
            "severity": body["severity"],
            "status": "New",
            "title": body["title"],
            "description": body["description"],
            "recommendedAction": body["recommendedAction"],
            "category": body["category"],
            "detectionSource": "CustomTI",
            "reportId": str(body["reportId"]),
            "eventTime": body["eventTime"],
            "alertCreationTime": format_time(now),
            "lastUpdateTime": format_time(now),
            "comments": [],
        }
        self.next_alert += 1
        self.alerts.append(alert)
        return dict(alert)

    def list_alerts(self, odata_filter: str | None, top: int | None) -> list[dict[str, Any]]:
        from tools.emulator.odata import ALERT_FIELDS, compile_filter

        if top is not None and not 0 < top <= 10000:
            raise ApiError(400, "InvalidInput", "$top must be between 1 and 10000.")
        match = compile_filter(odata_filter, ALERT_FIELDS) if odata_filter else (lambda a: True)
        found = [dict(a) for a in self.alerts if match(a)]
        return found[:top] if top else found

    def update_alert(self, alert_id: str, body: Any) -> dict[str, Any]:
        alert = next((a for a in self.alerts if a["id"] == alert_id), None)
        if alert is None:
            raise ApiError(404, "ResourceNotFound", f"Alert {alert_id} was not found.")
        if not isinstance(body, dict) or not body:
            raise ApiError(400, "InvalidRequestBody", "Request body must be a JSON object.")
        allowed = {"status": ALERT_STATUSES, "classification": CLASSIFICATIONS, "determination": DETERMINATIONS}
        for key, value in body.items():
            if key not in ("status", "assignedTo", "classification", "determination", "comment"):
                raise ApiError(400, "InvalidInput", f"Property '{key}' cannot be updated.")
            if key in allowed and value not in allowed[key]:
                raise ApiError(400, "InvalidInput", f"Invalid value '{value}' for {key}.")
        now = format_time(self.clock.now())
        for key, value in body.items():
            if key == "comment":
                alert["comments"].append({"comment": str(value), "createdBy": "API", "createdTime": now})
            else:
                alert[key] = value
        alert["lastUpdateTime"] = now
        return dict(alert)

    def find_by_ip(self, ip: str, timestamp: str) -> list[dict[str, Any]]:
        try:
            when = parse_time(timestamp)
        except ValueError:
            raise ApiError(400, "InvalidInput", "Invalid timestamp.") from None
        if self.clock.now() - when > RETENTION:
            raise ApiError(400, "InvalidInput", "The timestamp must be within the last 30 days.")
        out = []
        for m in self.machines:
            for seen in m.get("ip_history", []):
                if seen["ip"] == ip and parse_time(seen["from"]) - timedelta(minutes=15) <= when <= parse_time(
                    seen["to"]
                ) + timedelta(minutes=15):
                    out.append(_public(m))
                    break
        return out

    def incident(self, incident_id: str) -> dict[str, Any]:
        found = self.incidents.get(str(incident_id))
        if found is None:
            raise ApiError(404, "ResourceNotFound", f"Incident {incident_id} was not found.")
        return found

    def graph_incident(self, incident_id: str) -> dict[str, Any]:
        i = self.incident(incident_id)
        return {
            "id": str(i["incidentId"]),
            "status": "active",
            "customTags": list(i["tags"]),
            "createdDateTime": i["createdTime"],
            "displayName": f"Incident on {i['machineId'][:8]}",
        }

    def set_tags(self, incident_id: str, tags: Any) -> None:
        if not isinstance(tags, list) or not all(isinstance(t, str) and t for t in tags):
            raise ApiError(400, "InvalidInput", "Tags must be a list of non-empty strings.")
        self.incident(incident_id)["tags"] = list(tags)

    def graph_create_alert(self, body: Any) -> dict[str, Any]:
        data = body.get("createAlertInput") if isinstance(body, dict) else None
        if not isinstance(data, dict):
            raise ApiError(400, "BadRequest", "createAlertInput is required.")
        for name in ("title", "severity", "description"):
            if not data.get(name):
                raise ApiError(400, "BadRequest", f"createAlertInput.{name} is required.")
        if not isinstance(data.get("entityDefinitions", []), list):
            raise ApiError(400, "BadRequest", "createAlertInput.entityDefinitions must be a list.")
        if data["severity"] not in GRAPH_SEVERITIES:
            raise ApiError(400, "BadRequest", f"Invalid severity '{data['severity']}'.")
        alert = {"id": f"ga{len(self.graph_alerts) + 1:08d}", **data, "createdDateTime": format_time(self.clock.now())}
        self.graph_alerts.append(alert)
        return alert

    def record(self, method: str, path: str, status: int) -> None:
        self.calls.append({"time": format_time(self.clock.now()), "method": method, "path": path, "status": status})

    def calls_of(self, path: str) -> list[dict[str, Any]]:
        return [c for c in self.calls if c["path"] == path]

    def snapshot(self) -> dict[str, Any]:
        return {
            "now": format_time(self.clock.now()),
            "alerts": [dict(a) for a in self.alerts],
            "incidents": list(self.incidents.values()),
            "merged": dict(self.merged),
            "throttled": dict(self.throttled),
            "injected": dict(self.faults.injected),
            "graph_alerts": [dict(a) for a in self.graph_alerts],
            "calls": list(self.calls),
        }
