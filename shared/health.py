"""Connection test, secret expiry, health record and the plain-language status.

The seed's users clicked "Test Connection" and walked a troubleshooting list by hand. Here the
connector answers those questions itself: :func:`test_connection` names the exact problem
(unknown tenant, wrong client id, bad or expired secret, wrong audience, each missing
permission, unreachable or wrong-region API); :func:`expiry_warning` turns days left into a
log level; :func:`explain` turns counters and the health record into causes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, NotRequired, TypedDict

from shared.config import Settings
from shared.response.files import problems as file_problems
from shared.response.files import rules_or_off
from shared.response.rules import GRAPH_PERMISSIONS
from shared.secrets import VaultUnavailable

if TYPE_CHECKING:
    import requests

log = logging.getLogger(__name__)
REQUIRED = ("Alert.ReadWrite.All", "Machine.Read.All", "AdvancedQuery.Read.All")
OK_MESSAGE = "Successfully connected to Defender for Endpoint"

_AAD = {
    "AADSTS90002": (
        "unknown_tenant",
        "the tenant {tenant} does not exist in this cloud: check DEFENDER_TENANT_ID (and DEFENDER_CLOUD)",
    ),
    "AADSTS700016": ("wrong_client_id", "no application {client} in tenant {tenant}: check DEFENDER_CLIENT_ID"),
    "AADSTS7000215": ("bad_secret", "the client secret is wrong (use the secret's Value, not its Secret ID)"),
    "AADSTS7000222": ("expired_secret", "the client secret has expired: create a new one in Entra ID and store it"),
    "AADSTS500011": (
        "wrong_scope",
        "the token scope {scope} names an API this tenant does not know: check DEFENDER_SCOPE / DEFENDER_CLOUD",
    ),
    "Unable to get authority configuration": (
        "unknown_tenant",
        "the tenant {tenant} is unknown to {authority}: check DEFENDER_TENANT_ID and DEFENDER_CLOUD",
    ),
}


@dataclass
class Problem:
    code: str
    message: str


@dataclass
class ConnectionReport:
    """``problems`` break the alert path (exit 1); ``warnings`` name an optional feature that is
    lost and what restores it (exit 0, unless the caller asks for ``strict``)."""

    ok: bool = False
    lines: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    granted: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    latency_ms: float | None = None

    def fail(self, code: str, message: str) -> ConnectionReport:
        self.problems.append(Problem(code, message))
        self.lines.append(f"✗ {message}")
        return self

    def warn(self, code: str, message: str) -> None:
        self.warnings.append(Problem(code, message))
        self.lines.append(f"⚠ {message}")

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "lines": self.lines,
            "problems": [vars(p) for p in self.problems],
            "warnings": [vars(p) for p in self.warnings],
            "granted": self.granted,
            "missing": self.missing,
            "latency_ms": self.latency_ms,
        }


def roles_of(token: str) -> list[str]:
    """The application permissions granted, read from our own token (no signature check needed)."""
    import jwt

    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return []
    return sorted(str(r) for r in claims.get("roles", []))


@dataclass(frozen=True)
class Need:
    """A permission one enabled function needs; ``feature`` is None for the alert path itself."""

    role: str
    feature: str | None = None
    restore: str = ""


def required_permissions(settings: Settings) -> dict[str, tuple[Need, ...]]:
    """Permissions per API that the enabled functions need: {scope: (needs...)}; a live response
    rule needs the permission behind each of its actions."""
    response, _ = rules_or_off(settings)  # a bad file is reported by connection_test, not raised
    live = [
        Need(role, f"automated response (rule{'s' if len(names) > 1 else ''} {', '.join(repr(n) for n in names)})",
             "or set those rules to \"dry_run\": true")
        for role, names in (response.permissions() if response else {}).items()
    ]  # fmt: skip
    on_graph = [n for n in live if n.role in GRAPH_PERMISSIONS]  # notify_user's Mail.Send is Graph's
    live = [n for n in live if n.role not in GRAPH_PERMISSIONS]
    needs: dict[str, tuple[Need, ...]] = {settings.defender_scope: (*(Need(r) for r in REQUIRED), *live)}
    graph: list[Need] = list(on_graph)
    if settings.incident_tagging == "graph":
        graph.append(Need("SecurityIncident.ReadWrite.All", "incident tagging", "or set INCIDENT_TAGGING=off"))
    if settings.alert_fallback == "graph":
        graph.append(Need("SecurityAlert.Create.All", "the Graph alert fallback", "or set ALERT_FALLBACK=none"))
    if graph:
        needs[settings.graph_scope] = tuple(graph)
    if settings.incident_tagging == "legacy":
        needs[settings.security_scope] = (
            Need("Incident.ReadWrite.All", "incident tagging", "or set INCIDENT_TAGGING=off"),
        )
    return needs


def _token_problem(report: ConnectionReport, settings: Settings, text: str, scope: str) -> ConnectionReport:
    for marker, (code, template) in _AAD.items():
        if marker in text:
            return report.fail(
                code,
                template.format(
                    tenant=settings.defender_tenant_id,
                    client=settings.defender_client_id,
                    scope=scope,
                    authority=settings.defender_authority_host,
                ),
            )
    if "503" in text or "temporarily" in text.lower():
        return report.fail("token_service_unavailable", f"Entra ID is not answering right now ({text[:120]})")
    if any(word in text for word in ("Connection", "resolve", "Max retries", "unreachable")):
        return report.fail(
            "authority_unreachable", f"cannot reach {settings.defender_authority_host} (network, proxy or DNS)"
        )
    return report.fail("token_error", f"no token: {text[:200]}")


def connection_test(
    settings: Settings, credential: Any, *, session: requests.Session | None = None, strict: bool = False
) -> ConnectionReport:
    """Token → roles → GET /api/machines?$top=1 → every needed permission, each failure named.

    Only what the alert path needs can fail the test; a feature's missing permission is a
    warning naming the feature and the fix, unless ``strict``."""
    report = ConnectionReport()
    for problem in file_problems(settings):
        report.warn("config_file", problem.line())
    token = _tokens_and_roles(report, settings, credential)
    if token is None or not _probe_api(report, settings, token, session):
        return report
    if not report.problems and not (strict and report.warnings):
        report.ok = True
        report.lines.append(f"✓ permissions granted: {', '.join(report.granted)}")
        report.lines.append(f"✓ {OK_MESSAGE}" + (" (with the warnings above)" if report.warnings else ""))
    elif report.warnings and not report.problems:
        report.lines.append("✗ --strict: the warnings above count as failures")
    return report


def _tokens_and_roles(report: ConnectionReport, settings: Settings, credential: Any) -> str | None:
    """A token per API the enabled functions use, and their roles checked; the Defender token, or
    None when the alert path cannot get one (the report says why)."""
    from azure.core.exceptions import ClientAuthenticationError

    defender: str | None = None
    for scope, needed in required_permissions(settings).items():
        alert_path = scope == settings.defender_scope
        try:
            token = credential.get_token(scope).token
        except VaultUnavailable as exc:
            report.fail("secret_unavailable", f"the Defender client secret could not be read: {exc}")
            return None
        except ClientAuthenticationError as exc:
            if alert_path:
                _token_problem(report, settings, str(getattr(exc, "message", None) or exc), scope)
                return None
            features = ", ".join(sorted({n.feature or "" for n in needed}))
            report.warn("feature_token", f"{features} lost: no token for {scope} ({str(exc)[:160]})")
            continue
        if alert_path:
            defender = token
            report.lines.append(
                f"✓ token for {scope} (tenant {settings.defender_tenant_id}, app {settings.defender_client_id})"
            )
        _check_roles(report, settings, scope, token, needed)
    return defender


def _check_roles(
    report: ConnectionReport, settings: Settings, scope: str, token: str, needed: tuple[Need, ...]
) -> None:
    granted = roles_of(token)
    report.granted += [r for r in granted if r not in report.granted]
    missing = [n for n in needed if n.role not in granted]
    report.missing += [n.role for n in missing]
    alert_path = scope == settings.defender_scope
    api = "Defender for Endpoint (WindowsDefenderATP)" if alert_path else scope.removesuffix("/.default")
    for need in missing:
        grant = (
            f"permission {need.role} of {api} is not granted "
            "(add it as an application permission and grant admin consent"
        )
        if need.feature is None:
            report.fail("missing_permission", f"{grant})")
        else:
            report.warn("feature_permission", f"{need.feature} is lost: {grant}, {need.restore})")


def _probe_api(report: ConnectionReport, settings: Settings, token: str, session: requests.Session | None) -> bool:
    """GET /api/machines?$top=1 with the token; False when the API answer ends the test."""
    import requests

    url = f"{settings.defender_api_url}/api/machines"
    started = time.monotonic()
    try:
        resp = (session or requests.Session()).get(
            url,
            params={"$top": "1"},
            timeout=settings.http_timeout_seconds,
            headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
        )
    except requests.RequestException as exc:
        report.fail(
            "api_unreachable",
            f"cannot reach {settings.defender_api_url} ({exc.__class__.__name__}): check "
            "DEFENDER_API_URL / DEFENDER_CLOUD and outbound network",
        )
        return False
    report.latency_ms = round((time.monotonic() - started) * 1000, 1)
    if resp.status_code == 403 and "audience" in resp.text.lower():
        report.fail(
            "wrong_audience",
            f"{settings.defender_api_url} refused the token's audience: DEFENDER_SCOPE "
            f"({settings.defender_scope}) does not belong to this API",
        )
        return False
    if resp.status_code == 403:
        report.fail("forbidden", f"{settings.defender_api_url} answered 403: {_api_message(resp)}")
        return True
    if resp.status_code in (404, 400) or "json" not in resp.headers.get("Content-Type", ""):
        report.fail(
            "wrong_api_url",
            f"{url} answered {resp.status_code}: this is not the Defender API — check "
            "DEFENDER_API_URL (region) or DEFENDER_CLOUD",
        )
        return False
    if resp.status_code >= 400:
        report.fail("api_error", f"{url} answered {resp.status_code}: {_api_message(resp)}")
        return False
    report.lines.append(
        f"✓ {settings.defender_api_url} answered GET /api/machines?$top=1 in {report.latency_ms:.0f} ms"
    )
    return True


def _api_message(resp: requests.Response) -> str:
    try:
        return str(resp.json().get("error", {}).get("message", ""))[:200]
    except ValueError:
        return resp.reason


# ------------------------------------------------------------------------------ secret expiry
THRESHOLDS = ((1, logging.CRITICAL), (7, logging.ERROR), (14, logging.WARNING), (30, logging.INFO))


def expiry_warning(expires_on: datetime | None, now: datetime, what: str) -> tuple[int, str] | None:
    """(log level, message) when ``expires_on`` is within 30 days (rising at 14, 7 and 1), else None."""
    if expires_on is None:
        return None
    days = (expires_on - now).total_seconds() / 86400
    if days <= 0:
        return logging.CRITICAL, f"{what} EXPIRED on {expires_on:%Y-%m-%d}: alerts stop until a new secret is stored"
    for limit, level in THRESHOLDS:
        if days <= limit:
            return level, f"{what} expires in {days:.0f} day(s), on {expires_on:%Y-%m-%d}: rotate it"
    return None


# ------------------------------------------------------------------------------ status
class QueueStats(TypedDict, total=False):
    waiting: int
    poison: int
    oldest_age_seconds: int | None
    errors: list[str]  # a queue that could not be read, named


class Expiry(TypedDict):
    level: int  # a logging level
    message: str


class HealthRecord(TypedDict, total=False):
    """What the hourly health check stores (as JSON, in the Health table) and status reads back."""

    checked_at: str
    integration_enabled: bool
    expiry: list[Expiry]
    connection: dict[str, Any]  # ConnectionReport.as_dict()
    secret_expires_on: dict[str, str]  # what → ISO date
    problems: list[str]
    ok: bool
    queues: QueueStats
    tables: dict[str, dict[str, Any]]  # name → rows and oldest, or error
    correlation: dict[str, Any]
    dead_letters: int
    held: int
    tables_error: str
    review: dict[str, Any]  # the last scheduled review and the policies it suppressed


class Snapshot(TypedDict):
    """The status an operator reads (``status``, GET /api/health): the health record plus live reads."""

    at: str
    integration_enabled: bool
    forwarded_types: list[str]
    counters: dict[str, int]  # the last 24 h
    marks: dict[str, str]
    queues: QueueStats
    dead_letters: int
    held: int
    hunting: dict[str, Any]
    response: dict[str, Any]
    review: dict[str, Any]
    config_problems: list[str]
    health: HealthRecord | None
    findings: NotRequired[list[dict[str, Any]]]


@dataclass
class Finding:
    question: str  # the seed's troubleshooting question this answers
    cause: str


NOT_APPEARING, NO_INCIDENT, NO_CORRELATION, RESPONSE = (
    "events not appearing",
    "incidents not created",
    "correlation not working",
    "configuration and automated response",
)


def _switched_off(snap: Mapping[str, Any], c: dict[str, int]) -> Finding | None:
    if snap.get("integration_enabled", True):
        return None
    return Finding(
        NOT_APPEARING,
        f"the integration is switched off (INTEGRATION_ENABLED=false): {snap.get('held', 0)} event(s) are kept "
        "and will be delivered, oldest first, when it is switched on",
    )


def _signatures(snap: Mapping[str, Any], c: dict[str, int]) -> Finding | None:
    if not c.get("ingest.refused.signature"):
        return None
    return Finding(
        NOT_APPEARING,
        f"{c['ingest.refused.signature']} webhook call(s) refused for their signature: "
        "the signing secret in Noxys and the connector's differ, or the sender's clock is off",
    )


def _ignored(snap: Mapping[str, Any], c: dict[str, int]) -> Finding | None:
    ignored = {k.removeprefix("ingest.ignored."): v for k, v in c.items() if k.startswith("ingest.ignored.")}
    if not ignored:
        return None
    kinds = ", ".join(f"{n} {t}" for t, n in sorted(ignored.items()))
    return Finding(NOT_APPEARING, f"event types not forwarded (FORWARD_EVENT_TYPES): {kinds}")


def _no_device(snap: Mapping[str, Any], c: dict[str, int]) -> Finding | None:
    if not c.get("outcome.no_device"):
        return None
    return Finding(
        NO_INCIDENT,
        f"{c['outcome.no_device']} event(s) matched no Defender device (not onboarded, "
        "or Noxys reports a name Defender does not use)",
    )


def _no_anchor(snap: Mapping[str, Any], c: dict[str, int]) -> Finding | None:
    if not c.get("outcome.no_anchor"):
        return None
    return Finding(
        NO_CORRELATION,
        f"{c['outcome.no_anchor']} event(s) found no network connection from the device to the AI platform "
        "near the interaction time, so no alert could be anchored (is network protection / network event "
        "collection on for these devices?)",
    )


def _waiting(snap: Mapping[str, Any], c: dict[str, int]) -> Finding | None:
    waiting = snap.get("queues", {}).get("waiting", 0)
    if not waiting:
        return None
    return Finding(
        NOT_APPEARING,
        f"{waiting} event(s) waiting in the queues: Defender accepts 15 alerts a minute, storms are paced "
        "(criticals go first)",
    )


def _dead_letters(snap: Mapping[str, Any], c: dict[str, int]) -> Finding | None:
    if not snap.get("dead_letters"):
        return None
    return Finding(
        NOT_APPEARING,
        f"{snap['dead_letters']} event(s) were given up on: `python -m shared replay --all --dry-run` shows why",
    )


RULES = (_switched_off, _signatures, _ignored, _no_device, _no_anchor, _waiting, _dead_letters)


def explain(snapshot: Mapping[str, Any]) -> list[Finding]:
    """Causes, in the words of the troubleshooting list, from counters and the health record."""
    counters = snapshot.get("counters", {})
    health = snapshot.get("health") or {}
    # first: a configuration problem or an open response circuit, named (not blamed on quotas)
    live = [*(snapshot.get("config_problems") or []), *((snapshot.get("response") or {}).get("circuits") or [])]
    out = [Finding(RESPONSE, line) for line in dict.fromkeys([*live, *(health.get("problems") or [])])]
    out += [f for rule in RULES if (f := rule(snapshot, counters)) is not None]
    for problem in (health.get("connection") or {}).get("problems", []):
        question = NO_INCIDENT if problem["code"] in ("missing_permission", "forbidden") else NOT_APPEARING
        out.append(Finding(question, problem["message"]))
    out += [
        Finding(NOT_APPEARING, w["message"]) for w in health.get("expiry", []) if w.get("level", 0) >= logging.WARNING
    ]
    return out
