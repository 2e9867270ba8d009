"""The health check (timer) and the status snapshot (GET /api/health, ``python -m shared status``).

The health check does the slow things once an hour — a full connection test, secret expiry
from Key Vault and from Entra ID, queue depths — and writes a health record to Table Storage.
The status snapshot reads that record plus live counters and queue depths, so answering "why
are my events not showing up" costs a handful of storage reads, not a Defender call.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from shared import correlation
from shared.clock import Clock
from shared.config import ConfigError, Settings
from shared.counters import BufferedCounters
from shared.defender.errors import DefenderError
from shared.delivery.deadletter import DeadLetters
from shared.delivery.hold import Held
from shared.delivery.hunting_outbox import HuntingOutbox
from shared.delivery.ledger import Ledger
from shared.health import HealthRecord, QueueStats, Snapshot, connection_test, expiry_warning, explain
from shared.response.files import problems as file_problems
from shared.response.rules import load_rules
from shared.response.store import ResponseStore
from shared.secrets import SecretStore, VaultUnavailable
from shared.storage import Codec
from shared.suppress import Suppressions, status_lines

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

    from shared.defender.client import GraphClient


@dataclass(frozen=True)
class StatusDeps:
    """What the health check and the snapshot read: built by ``shared.wiring``. Callables, so that
    an unconfigured Defender tenant fails only the part that needs it."""

    settings: Settings
    clock: Clock
    queue: Callable[[str], Any]
    table: Callable[[str], Any]
    counters: Callable[[], BufferedCounters]
    dead_letters: Callable[[], DeadLetters]
    held: Callable[[], Held]
    credential: Callable[[], TokenCredential]
    secret_store: Callable[[], SecretStore | None]
    graph: Callable[[], GraphClient]
    ledger: Callable[[], Ledger]
    responses: Callable[[], ResponseStore]
    outbox: Callable[[], HuntingOutbox]


log = logging.getLogger(__name__)
PARTITION, ROW = "health", "latest"


@dataclass(frozen=True)
class HealthRow:
    """The one row of the Health table: the last health record, as JSON."""

    record: str = ""


_HEALTH = Codec(HealthRow, lambda _: (PARTITION, ROW))


def _entra_expiry(deps: StatusDeps, client_id: str, current_secret: str | None) -> datetime | None:
    """The Entra app secret's real end date (Graph), when the app may read its own registration."""
    try:
        found = deps.graph().password_credentials(client_id)
    except ConfigError:
        return None  # not configured: the connection check has already said which setting
    except DefenderError as exc:
        log.info(
            "health: Entra secret expiry not readable (%s %s; grant Application.Read.All to check it)",
            exc.status,
            exc.code,
        )
        return None
    creds = [c for c in found if c.get("endDateTime")]
    mine = [c for c in creds if current_secret and c.get("hint") and current_secret.startswith(c["hint"])]
    ends = [datetime.fromisoformat(str(c["endDateTime"]).replace("Z", "+00:00")) for c in (mine or creds)]
    return min(ends) if ends else None


def _queue_stats(deps: StatusDeps) -> QueueStats:
    from azure.core.exceptions import AzureError, ResourceNotFoundError

    s = deps.settings
    counts, oldest, errors = {"waiting": 0, "poison": 0}, None, []
    now = deps.clock.now()
    for name, key in (
        (s.events_queue_name, "waiting"),
        (s.events_priority_queue_name, "waiting"),
        (f"{s.events_queue_name}-poison", "poison"),
        (f"{s.events_priority_queue_name}-poison", "poison"),
    ):
        try:
            client = deps.queue(name)
            counts[key] += client.get_queue_properties().approximate_message_count or 0
            if key == "waiting":
                for msg in client.peek_messages(max_messages=1):
                    age = (now - msg.inserted_on).total_seconds() if msg.inserted_on else None
                    if age is not None and (oldest is None or age > oldest):
                        oldest = round(age)
        except ResourceNotFoundError:
            continue
        except AzureError as exc:
            errors.append(f"{name}: {exc.__class__.__name__}")
    out: QueueStats = {"waiting": counts["waiting"], "poison": counts["poison"], "oldest_age_seconds": oldest}
    if errors:
        out["errors"] = errors
    return out


STATE_TABLES = (
    "Ledger", "Groups", "Devices", "Counters", "DeadLetters", "Held", "Audit", "Pacing", "Patterns", "Responses",
    "HuntingOutbox",
)  # fmt: skip


def _table_stats(deps: StatusDeps) -> dict[str, Any]:
    """Rows and the oldest row's time per state table (a full scan: hourly, in the health check)."""
    out: dict[str, Any] = {}
    for name in STATE_TABLES:
        try:
            rows, oldest = 0, None
            for e in deps.table(name).list_entities(select=["PartitionKey", "Timestamp"], results_per_page=1000):
                rows += 1
                stamp = e.metadata.get("timestamp")
                oldest = stamp if stamp is not None and (oldest is None or stamp < oldest) else oldest
            out[name] = {"rows": rows, "oldest": oldest.isoformat() if oldest else None}
        except Exception as exc:  # status must still be written when a table is unreachable
            out[name] = {"error": exc.__class__.__name__}
    return out


def _hunting_stats(deps: StatusDeps) -> dict[str, Any]:
    """Rows waiting in the outbox, plus any an earlier version left on the hunting queue."""
    from azure.core.exceptions import AzureError, ResourceNotFoundError

    s = deps.settings
    if not s.hunting_configured:
        return {"configured": False}
    try:
        waiting = deps.outbox().count()
        with contextlib.suppress(ResourceNotFoundError):
            waiting += deps.queue(s.hunting_queue_name).get_queue_properties().approximate_message_count or 0
    except AzureError as exc:
        return {"configured": True, "error": exc.__class__.__name__}
    return {"configured": True, "rows_waiting": waiting, "types": s.hunting_event_types}


def run_health_check(deps: StatusDeps) -> HealthRecord:
    """Connectivity, permissions, secret expiry (Key Vault and Entra), queues; stored and logged."""
    s = deps.settings
    now = deps.clock.now()
    switched_on = deps.held().is_on(observe=False)
    record: HealthRecord = {"checked_at": now.isoformat(), "integration_enabled": switched_on, "expiry": []}
    try:
        report = connection_test(s, deps.credential())
    except ConfigError as exc:
        record["connection"] = {"ok": False, "problems": [{"code": "not_configured", "message": str(exc)}], "lines": []}
    else:
        record["connection"] = report.as_dict()
        level = logging.INFO if report.ok else logging.ERROR
        log.log(level, "health: %s", "; ".join(report.lines))

    current_secret: str | None = None
    store = deps.secret_store() if s.key_vault_url else None
    if store is not None:
        try:
            secret = store.get(s.defender_client_secret_name)
            current_secret = secret.value
            _expiry(deps, record, secret.expires_on, now, f"the Defender client secret (Key Vault {secret.name})")
        except VaultUnavailable as exc:
            record["expiry"].append({"level": logging.ERROR, "message": str(exc)})
            log.error("health: %s", exc)
    else:
        current_secret = s.defender_client_secret
    if s.defender_client_id:
        expires = _entra_expiry(deps, s.defender_client_id, current_secret)
        _expiry(deps, record, expires, now, "the Entra app's client secret")

    record["problems"] = _response_problems(deps, now)
    for line in record["problems"]:
        log.error("health: %s", line)
    record["ok"] = bool(record["connection"].get("ok")) and not record["problems"]
    record["review"] = _review_state(deps)  # suppressed policies are visible in the health record
    record["queues"] = _queue_stats(deps)
    record["tables"] = _table_stats(deps)
    record["correlation"] = _correlation(deps, now)
    try:
        record["dead_letters"] = deps.dead_letters().count()
        record["held"] = deps.held().count()
    except Exception as exc:  # status must still be written when a table is unreachable
        record["tables_error"] = exc.__class__.__name__
    from azure.data.tables import UpdateMode

    deps.table("Health").upsert_entity(_HEALTH.entity(HealthRow(json.dumps(record))), mode=UpdateMode.REPLACE)
    return record


def _review_state(deps: StatusDeps) -> dict[str, Any]:
    """The last scheduled review and the policies it suppressed (shared.suppress)."""
    try:
        store = Suppressions(deps.table("Reviews"))
        return {"latest": store.latest(), "suppressed": store.active()}
    except Exception as exc:  # status must still answer when the table is unreachable
        return {"error": exc.__class__.__name__}


def _response_problems(deps: StatusDeps, now: datetime) -> list[str]:
    """What fails the health record on the response side: a rules or risk file that cannot be
    used (naming the file and the field), and a response cap that refused an action this hour."""
    out = [p.line() for p in file_problems(deps.settings)]
    if deps.settings.response_rules_file:
        try:
            out += deps.responses().open_circuits(now.timestamp())
        except Exception as exc:  # the health record must still be written
            out.append(f"response circuits not read ({exc.__class__.__name__})")
    return out


def _correlation(deps: StatusDeps, now: datetime) -> dict[str, Any]:
    """Correlation quality over the last 7 days (a filtered ledger scan: hourly, not per status)."""
    try:
        since = (now - timedelta(days=7)).timestamp()
        found = correlation.summarize(deps.ledger().between(since, now.timestamp()))
    except Exception as exc:  # the health record must still be written
        return {"error": exc.__class__.__name__}
    return {"figures": found.as_dict(), "lines": correlation.render(found, "last 7 days")}


def _expiry(deps: StatusDeps, record: HealthRecord, expires_on: datetime | None, now: datetime, what: str) -> None:
    warning = expiry_warning(expires_on, now, what)
    if expires_on:
        record.setdefault("secret_expires_on", {})[what] = expires_on.isoformat()
    if warning:
        level, message = warning
        log.log(level, "health: %s", message)
        record["expiry"].append({"level": level, "message": message})
        if level >= logging.ERROR and deps.settings.expiry_alert:
            _expiry_alert(deps, message, now)


def _expiry_alert(deps: StatusDeps, message: str, now: datetime) -> None:
    """A Defender alert of the connector's own (Graph createAlert), at most once a day."""
    counters = deps.counters()
    day = now.strftime("%Y-%m-%d")
    if counters.marks().get("expiry_alert_day") == day:
        return
    try:
        deps.graph().create_alert(
            {
                "title": "Noxys connector: Defender client secret about to expire",
                "severity": "medium",
                "description": message,
                "category": "Impact",  # a MITRE ATT&CK tactic: alerts stop when the secret expires
                "recommendedActions": "Create a new client secret in Entra ID; store it in Key Vault with its expiry.",
                "entityDefinitions": [
                    {
                        "entityType": "cloudApplication",
                        "entityIdentifier": "appId",
                        "identifierValue": deps.settings.defender_client_id or "",
                        "role": "impacted",
                    }
                ],
            }
        )
        counters.mark("expiry_alert_day", day)
    except DefenderError as exc:
        hint = " (grant Graph SecurityAlert.Create.All)" if exc.status == 403 else ""
        log.warning("health: expiry alert not raised: %s%s", exc, hint)


def read_record(deps: StatusDeps) -> HealthRecord | None:
    from azure.core.exceptions import ResourceNotFoundError

    try:
        e = deps.table("Health").get_entity(PARTITION, ROW)
    except ResourceNotFoundError:
        return None
    record: HealthRecord = json.loads(_HEALTH.record(e).record)
    return record


def _response_stats(deps: StatusDeps, now: datetime) -> dict[str, Any]:
    """Automated response: on or off, its rules, and what it did in the last 24 h."""
    try:
        rules = load_rules(deps.settings.response_rules_file)
    except ConfigError as exc:
        return {"configured": True, "error": str(exc)}
    if rules is None:
        return {"configured": False}
    live = [r.name for r in rules.rules if not r.dry_run]
    out: dict[str, Any] = {"configured": True, "rules": len(rules.rules), "live": live}
    try:
        store = deps.responses()
        out |= store.recent((now - timedelta(hours=24)).timestamp())
        out["circuits"] = store.open_circuits(now.timestamp())
    except Exception as exc:  # status must still answer when the table is unreachable
        out["table_error"] = exc.__class__.__name__
    return out


def _render_hunting(hunting: dict[str, Any]) -> str:
    if hunting.get("configured"):
        return f"  hunting table NoxysInteractions_CL: on, {hunting.get('rows_waiting', '?')} row(s) waiting to ship"
    return (
        "  hunting table NoxysInteractions_CL: not configured (HUNTING_INGESTION_ENDPOINT and "
        "HUNTING_DCR_IMMUTABLE_ID unset): nothing is sent"
    )


def _render_response(r: dict[str, Any]) -> list[str]:
    if not r.get("configured"):
        return ["  automated response: off (RESPONSE_RULES_FILE not set): no action is ever taken"]
    if r.get("error"):
        return [f"  automated response: OFF — {r['error']} (alerts are delivered as usual)"]
    live = r.get("live") or []
    lines = [
        f"  automated response: {r['rules']} rule(s), {len(live)} live"
        + (f" ({', '.join(live)})" if live else "")
        + f", the rest dry run; last 24 h: {r.get('dry_runs', 0)} dry-run action(s)"
    ]
    done = r.get("by_action_and_state") or {}
    if done:
        lines.append("    actions: " + ", ".join(f"{k} {v}" for k, v in done.items()))
    lines += [f"    ! {f}" for f in r.get("failures") or []]
    lines += [f"    in force (`response undo --action ID`): {a}" for a in r.get("in_force") or []]
    lines += [f"    ! {c}" for c in r.get("circuits") or []]
    return lines


def snapshot(deps: StatusDeps) -> Snapshot:
    """The health record plus live counters (24 h), queue depths, dead letters and held events."""
    s = deps.settings
    now = deps.clock.now()
    counters = deps.counters()
    snap: Snapshot = {
        "at": now.isoformat(),
        "integration_enabled": deps.held().is_on(observe=False),
        "forwarded_types": s.forward_event_types,
        "counters": counters.totals(now),
        "marks": counters.marks(),
        "queues": _queue_stats(deps),
        "dead_letters": deps.dead_letters().count(),
        "held": deps.held().count(),
        "hunting": _hunting_stats(deps),
        "response": _response_stats(deps, now),
        "config_problems": [p.line() for p in file_problems(s)],
        "health": read_record(deps),
        "review": _review_state(deps),
    }
    snap["findings"] = [asdict(f) for f in explain(snap)]
    return snap


def render(snap: Snapshot) -> str:
    """The snapshot as text an operator reads top to bottom."""
    c, q, h = snap["counters"], snap["queues"], snap.get("health") or {}
    ignored = sum(v for k, v in c.items() if k.startswith("ingest.ignored."))
    lines = [
        f"Noxys → Defender connector status at {snap['at']}",
        *(f"  ! CONFIGURATION: {line}" for line in snap.get("config_problems") or []),
        f"  integration: {'ON' if snap['integration_enabled'] else 'OFF (events are kept, not sent)'}",
        f"  last 24 h: {c.get('ingest.accepted', 0)} accepted, {ignored} ignored, "
        f"{c.get('ingest.refused.signature', 0)} refused (signature), "
        f"{c.get('ingest.refused.invalid', 0)} refused (invalid)",
        "  deliveries: "
        + (
            ", ".join(f"{k.removeprefix('outcome.')} {v}" for k, v in sorted(c.items()) if k.startswith("outcome."))
            or "none"
        ),
        f"  last alert created: {snap['marks'].get('last_alert_at', 'never')}",
        f"  queues: {q['waiting']} waiting (oldest {q['oldest_age_seconds'] or 0} s), {q['poison']} poison; "
        f"{snap['dead_letters']} dead letter(s); {snap['held']} held",
    ]
    lines.append(_render_hunting(snap.get("hunting") or {}))
    lines += _render_response(snap.get("response") or {})
    review = snap.get("review") or {}
    lines += status_lines(review.get("latest"), review.get("suppressed") or {})
    if h:
        conn = h.get("connection") or {}
        lines.append(f"  last health check {h.get('checked_at')}: connection {'OK' if conn.get('ok') else 'FAILING'}")
        lines += [f"    {line}" for line in conn.get("lines", [])]
        lines += [f"    ! {w['message']}" for w in h.get("expiry", [])]
        tables = h.get("tables") or {}
        if tables:
            lines.append(
                "    state tables: "
                + ", ".join(
                    f"{n} {t.get('rows', '?')}" + (f" (oldest {str(t['oldest'])[:10]})" if t.get("oldest") else "")
                    for n, t in tables.items()
                )
            )
        lines += [f"    {line}" for line in (h.get("correlation") or {}).get("lines", [])[:8]]
    else:
        lines.append("  no health check has run yet (`python -m shared status --check` runs one now and records it)")
    findings = snap.get("findings", [])
    lines.append("Findings:" if findings else "Findings: none — events should be flowing.")
    lines += [f"  - [{f['question']}] {f['cause']}" for f in findings]
    return "\n".join(lines)
