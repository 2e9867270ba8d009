"""Telemetry: the one module that decides what the connector counts, for ``status`` (Table Storage)
and for Azure Monitor (OpenTelemetry metrics and traces).

Why both: ``status`` must answer offline, from the storage account alone, while an operator in
Azure charts and alerts on metrics and follows one event through the transaction view. One call
per event feeds both — :meth:`Tally.count` writes the Table counter and, for the names that are
metrics, the OpenTelemetry counter whose attributes :func:`measure` derives from the counter name
— so the two can never tell different stories.

Off unless configured, and free when off: with no ``APPLICATIONINSIGHTS_CONNECTION_STRING`` (nor a
local exporter, see below) nothing of OpenTelemetry is imported and every call here returns at
once. When configured, the standard distro (``azure-monitor-opentelemetry``) is imported and set up
once per process, on first use — never at import, so indexing the functions (cold start) pays
nothing. Locally (command 1), ``OTEL_EXPORTER_OTLP_ENDPOINT`` sends to an OTLP collector and
``NOXYS_TELEMETRY=console`` prints spans and metrics.

Attributes are low-cardinality by construction: every attribute value passes through a closed
vocabulary (:data:`VOCABULARY`), and anything outside it is exported as ``other``. No event id,
user, device or alert id is ever an attribute, so nothing a sender chooses can become a series.

Traces: the webhook request is a server span; the trace context travels in each queue message
(``trace``, a W3C ``traceparent``), so the delivery's consumer span, and the Defender calls under
it, join the webhook's trace however many retries later.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentelemetry.metrics import Counter, Histogram, MeterProvider, _Gauge
    from opentelemetry.trace import Span, Tracer, TracerProvider

log = logging.getLogger(__name__)
NAME = "noxys.connector"
CONNECTION_STRING = "APPLICATIONINSIGHTS_CONNECTION_STRING"
AUTHENTICATION_STRING = "APPLICATIONINSIGHTS_AUTHENTICATION_STRING"
OTLP_ENDPOINT = "OTEL_EXPORTER_OTLP_ENDPOINT"
LOCAL_SWITCH = "NOXYS_TELEMETRY"  # "console": print spans and metrics (command 1)
OTHER = "other"

# The distro's automatic instrumentations are all off: they would record storage round trips on
# the webhook's hot path, and URLs (which carry machine ids) as span attributes.
INSTRUMENTATIONS = (
    "azure_sdk", "django", "fastapi", "flask", "httpx", "httpx2", "psycopg2", "requests", "urllib", "urllib3",
)  # fmt: skip

REFUSAL_REASONS = {  # Refused.error -> the reason attribute (and the Table counter's last part)
    "unauthorized": "signature",
    "invalid_event": "invalid",
    "event_too_large": "invalid",
    "payload_too_large": "too_large",
    "unsupported_media_type": "media_type",
    "queue_unavailable": "queue_unavailable",
    "secrets_unavailable": "secrets_unavailable",
    "not_configured": "not_configured",
}
DELIVERED = {  # Outcome kind -> noxys.events.delivered's outcome (what became of the event)
    "created": "alert_created",
    "coalesced": "coalesced",
    "no_device": "no_device",
    "no_anchor": "no_anchor",
    "dead_letter": "dead_letter",
    "held": "held",
}
ACTIONS = (  # the response rules' action kinds (shared.response.rules.ActionKind), and its audit's other verbs
    "isolate", "restrict_app_execution", "av_scan", "collect_investigation_package", "tag_device", "block_domain",
    "ticket", "comment", "excluded", "notify_user", "contain_user",
)  # fmt: skip
STATES = (  # the executor's verdicts, Defender's machine action states (lower case), and a tripped cap
    "done", "sent", "dry_run", "skipped", "error", "circuit_open",
    "succeeded", "failed", "timeout", "cancelled", "pending", "inprogress",
)  # fmt: skip
VOCABULARY: dict[str, frozenset[str]] = {
    "outcome": frozenset({"accepted", "ignored", "refused", *DELIVERED.values()}),
    "reason": frozenset(REFUSAL_REASONS.values()),
    "api": frozenset(
        {"alerts.create", "alerts", "actions", "machines", "indicators", "hunting", "incidents", "graph", "other"}
    ),
    "action": frozenset(ACTIONS),
    "state": frozenset(STATES),
    "result": frozenset({"ok", "failing"}),
    "secret": frozenset({"key_vault", "entra"}),
    "lane": frozenset({"normal", "priority"}),
}


def attribute(key: str, value: object) -> str:
    """``value`` if the vocabulary of ``key`` has it, else ``other``; an HTTP status stays a status."""
    text = str(value).lower() if key == "state" else str(value)
    if key == "status":
        return text if text.isdigit() and len(text) <= 3 else OTHER
    return text if text in VOCABULARY.get(key, frozenset()) else OTHER


def measure(counter: str) -> tuple[str, dict[str, str]] | None:
    """The metric and attributes a Table counter name also counts as, or None (status only)."""
    if counter == "ingest.accepted":
        return "noxys.events.received", {"outcome": "accepted"}
    if counter.startswith("ingest.ignored."):
        return "noxys.events.received", {"outcome": "ignored"}
    if counter.startswith("ingest.refused."):
        return "noxys.events.received", {"outcome": "refused", "reason": attribute("reason", counter[15:])}
    if counter.startswith("outcome.") and counter[8:] in DELIVERED:
        return "noxys.events.delivered", {"outcome": DELIVERED[counter[8:]]}
    return None


# ------------------------------------------------------------------------------------ the SDK's side
@dataclass
class Instruments:
    """The tracer and the instruments, from one pair of providers (the distro's, or a test's)."""

    tracer: Tracer
    counters: dict[str, Counter]
    histograms: dict[str, Histogram]
    gauges: dict[str, _Gauge]
    flush: list[Callable[[], object]] = field(default_factory=list)

    @classmethod
    def of(cls, tracer_provider: TracerProvider, meter_provider: MeterProvider) -> Instruments:
        meter = meter_provider.get_meter(NAME)
        counters = {
            name: meter.create_counter(name, unit="1", description=what)
            for name, what in (
                ("noxys.events.received", "Events the webhook received, by outcome (and reason when refused)"),
                ("noxys.events.delivered", "What became of each delivered event"),
                ("noxys.alerts.created", "Defender alerts created (one per event that led a group)"),
                ("noxys.defender.calls", "Calls to Defender, Graph and the incidents API, by api and HTTP status"),
                ("noxys.response.actions", "Automated response verdicts and final states, by action"),
                ("noxys.hunting.rows_shipped", "Rows written to NoxysInteractions_CL"),
                ("noxys.health.checks", "Health checks, by result (ok / failing)"),
            )
        }
        histograms = {
            "noxys.quota.wait": meter.create_histogram(
                "noxys.quota.wait", unit="s", description="Waits for the shared Defender budget"
            ),
            "noxys.delivery.latency": meter.create_histogram(
                "noxys.delivery.latency", unit="s", description="From the webhook's receipt to the Defender alert"
            ),
        }
        gauges = {
            name: meter.create_gauge(name, unit=unit, description=what)
            for name, unit, what in (
                ("noxys.queue.depth", "1", "Messages waiting on the event queues (health check)"),
                ("noxys.poison.depth", "1", "Messages on the poison queues (health check)"),
                ("noxys.secret.days_left", "d", "Days until the Defender client secret expires (health check)"),
                ("noxys.response.circuits_open", "1", "Response caps that stopped an action (health check)"),
            )
        }
        flushers = [getattr(p, "force_flush", None) for p in (tracer_provider, meter_provider)]
        return cls(tracer_provider.get_tracer(NAME), counters, histograms, gauges, [f for f in flushers if f])


_lock = threading.Lock()
_state: dict[str, Instruments | None] = {}


def install(tracer_provider: TracerProvider, meter_provider: MeterProvider) -> None:
    """Use these providers (tests: the SDK's in-memory exporters) instead of the environment's."""
    with _lock:
        _state["otel"] = Instruments.of(tracer_provider, meter_provider)


def reset() -> None:
    """Read the environment again on next use (tests). Providers already set up stay set up."""
    with _lock:
        _state.clear()


def _otel() -> Instruments | None:
    try:
        return _state["otel"]
    except KeyError:
        pass
    with _lock:
        if "otel" not in _state:
            _state["otel"] = None  # a failing set-up is not tried again on every event
            try:
                _state["otel"] = _from_environment()
            except Exception as exc:  # telemetry never breaks the connector
                log.warning("telemetry: not configured: %s: %s", exc.__class__.__name__, exc)
        return _state["otel"]


def enabled() -> bool:
    return _otel() is not None


def _from_environment() -> Instruments | None:
    connection = os.environ.get(CONNECTION_STRING, "").strip()
    if connection:
        return _azure_monitor(connection)
    local = os.environ.get(LOCAL_SWITCH, "").strip().lower() == "console"
    if local or os.environ.get(OTLP_ENDPOINT, "").strip():
        return _local(console=local)
    return None


def aad_client(authentication: str | None) -> tuple[bool, str | None]:
    """(use Entra ID, managed identity client id) from ``APPLICATIONINSIGHTS_AUTHENTICATION_STRING``
    (``ClientId=<id>;Authorization=AAD``, what the infra sets: the resource refuses instrumentation keys)."""
    parts = dict(p.split("=", 1) for p in (authentication or "").split(";") if "=" in p)
    aad = parts.get("Authorization", "").strip().upper() == "AAD"
    return aad, (parts.get("ClientId") or "").strip() or None


def _resource() -> Any:
    from opentelemetry.sdk.resources import Resource

    return Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME") or "noxys-defender-connector"})


def _azure_monitor(connection: str) -> Instruments:
    from azure.monitor.opentelemetry import configure_azure_monitor
    from opentelemetry import metrics, trace

    options: dict[str, Any] = {
        "connection_string": connection,
        "disable_logging": True,  # the Functions host already ships the logs: not twice
        "enable_live_metrics": False,
        "enable_performance_counters": False,
        "instrumentation_options": {name: {"enabled": False} for name in INSTRUMENTATIONS},
        "resource": _resource(),
    }
    if not os.environ.get("OTEL_TRACES_SAMPLER"):  # the distro's default keeps 5 traces a second, cut anywhere
        options["sampling_ratio"] = 1.0  # every trace whole: decided by trace id, so a delivery follows its webhook
    # The app runs on App Service (Functions): its detector names the app and instance; the VM
    # detector would probe the instance metadata endpoint on the first event for nothing.
    os.environ.setdefault("OTEL_EXPERIMENTAL_RESOURCE_DETECTORS", "azure_app_service")
    aad, client_id = aad_client(os.environ.get(AUTHENTICATION_STRING))
    if aad:
        from azure.identity import ManagedIdentityCredential

        options["credential"] = ManagedIdentityCredential(client_id=client_id)
    configure_azure_monitor(**options)
    log.info("telemetry: exporting to Application Insights")
    return Instruments.of(trace.get_tracer_provider(), metrics.get_meter_provider())


def _local(*, console: bool) -> Instruments:
    """Command 1: the SDK with console or OTLP (HTTP) exporters, for a developer to see the spans."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import MetricExporter, PeriodicExportingMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

    spans: SpanExporter
    figures: MetricExporter
    if console:
        from opentelemetry.sdk.metrics.export import ConsoleMetricExporter
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        spans, figures = ConsoleSpanExporter(), ConsoleMetricExporter()
    else:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        spans, figures = OTLPSpanExporter(), OTLPMetricExporter()  # OTEL_EXPORTER_OTLP_ENDPOINT
    tracer_provider = TracerProvider(resource=_resource())
    tracer_provider.add_span_processor(BatchSpanProcessor(spans))
    reader = PeriodicExportingMetricReader(figures, export_interval_millis=10_000)
    meter_provider = MeterProvider(resource=_resource(), metric_readers=[reader])
    log.info("telemetry: exporting to %s", "the console" if console else "the OTLP endpoint")
    return Instruments.of(tracer_provider, meter_provider)


def flush() -> None:
    """Export what is pending now (tests; the end of a command)."""
    otel = _otel()
    for each in otel.flush if otel else ():
        each()


# ------------------------------------------------------------------------------------ what is recorded
def _add(metric: str, n: float, attrs: Mapping[str, str] | None = None) -> None:
    otel = _otel()
    if otel is not None and n > 0:
        otel.counters[metric].add(n, dict(attrs or {}))


def _timed(metric: str, seconds: float, attrs: Mapping[str, str] | None = None) -> None:
    otel = _otel()
    if otel is not None and seconds >= 0:
        otel.histograms[metric].record(seconds, dict(attrs or {}))


def _gauge(metric: str, value: float, attrs: Mapping[str, str] | None = None) -> None:
    otel = _otel()
    if otel is not None:
        otel.gauges[metric].set(value, dict(attrs or {}))


class Tally:
    """The Table counters and their metrics, fed by one call (see the module's docstring)."""

    def __init__(self, table: Callable[[str, datetime, int], None], now: Callable[[], datetime]) -> None:
        self._table = table
        self._now = now

    def count(self, name: str, n: int = 1) -> None:
        """Best effort: counting never changes an answer or fails a delivery."""
        if n <= 0:
            return
        try:
            self._table(name, self._now(), n)
        except Exception as exc:
            log.warning("counter %s not updated: %s", name, exc.__class__.__name__)
        found = measure(name)
        if found is not None:
            _add(found[0], n, found[1])


def alert_created(received_at: datetime | None, now: datetime) -> None:
    """One Defender alert, and how long it took from the webhook's receipt (retries included)."""
    _add("noxys.alerts.created", 1)
    if received_at is not None:
        _timed("noxys.delivery.latency", (now - received_at).total_seconds())


def defender_call(api: str, status: int) -> None:
    _add("noxys.defender.calls", 1, {"api": attribute("api", api), "status": attribute("status", status)})


def quota_wait(api: str, seconds: float) -> None:
    _timed("noxys.quota.wait", seconds, {"api": attribute("api", api)})


def response_action(action: str, state: str) -> None:
    """A verdict or final state of the response executor; ``circuit_open`` when a cap stopped it."""
    _add("noxys.response.actions", 1, {"action": attribute("action", action), "state": attribute("state", state)})


def rows_shipped(n: int) -> None:
    _add("noxys.hunting.rows_shipped", n)


CIRCUIT = "response circuit open"  # how the health record's problems name a tripped response cap


@dataclass(frozen=True)
class HealthFigures:
    ok: bool
    waiting: int | None
    poison: int | None
    days_left: dict[str, float]
    circuits_open: int = 0


def health_figures(record: Mapping[str, Any], now: datetime) -> HealthFigures:
    """What the health check's record says, as numbers: pure, so every alert rule's input is tested.
    Failing means the record says so (``ok``; else its connection test failed) or a secret expires
    within the error horizon; an open response circuit is one of the record's problems."""
    queues = record.get("queues") or {}
    expiring = any(int(e.get("level", 0)) >= logging.ERROR for e in record.get("expiry") or [])
    passed = record["ok"] if "ok" in record else (record.get("connection") or {}).get("ok")
    ok = bool(passed) and not expiring
    problems = [p for p in record.get("problems") or [] if isinstance(p, str)]
    days: dict[str, float] = {}
    for what, when in (record.get("secret_expires_on") or {}).items():
        which = "key_vault" if "Key Vault" in what else "entra"
        left = (datetime.fromisoformat(when) - now).total_seconds() / 86400
        days[which] = round(min(left, days.get(which, left)), 2)
    circuits = sum(p.startswith(CIRCUIT) for p in problems)
    return HealthFigures(ok, queues.get("waiting"), queues.get("poison"), days, circuits)


def health(record: Mapping[str, Any], now: datetime) -> HealthFigures:
    figures = health_figures(record, now)
    _add("noxys.health.checks", 1, {"result": "ok" if figures.ok else "failing"})
    if figures.waiting is not None:
        _gauge("noxys.queue.depth", figures.waiting)
    if figures.poison is not None:
        _gauge("noxys.poison.depth", figures.poison)
    for which, days in figures.days_left.items():
        _gauge("noxys.secret.days_left", days, {"secret": attribute("secret", which)})
    _gauge("noxys.response.circuits_open", figures.circuits_open)
    return figures


# ------------------------------------------------------------------------------------ traces
def traceparent() -> str | None:
    """The current span's W3C ``traceparent``, to carry in a queue message (None when off)."""
    if _otel() is None:
        return None
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier)
    return carrier.get("traceparent")


def carried(body: str) -> tuple[str | None, datetime | None]:
    """The trace context and first receipt a queue message carries (a bundle: its first event's)."""
    if _otel() is None:
        return None, None
    try:
        doc = json.loads(body)
        first = doc.get("events", [doc])[0] if doc.get("kind") == "bundle" else doc
        trace, received = first.get("trace"), doc.get("first_received_at")
        when = datetime.fromisoformat(received.replace("Z", "+00:00")) if isinstance(received, str) else None
        aware = when if when is not None and when.utcoffset() is not None else None  # never breaks a subtraction
        return (trace if isinstance(trace, str) else None), aware
    except (ValueError, AttributeError, IndexError, TypeError):
        return None, None


@contextmanager
def span(
    name: str, kind: str, parent: str | None = None, *, route: str | None = None, **attrs: str
) -> Iterator[Span | None]:
    """A span (``kind``: server, consumer, client), child of the current one or of ``parent`` (a
    carried ``traceparent``); None when telemetry is off. Attributes pass the vocabulary; ``route``
    ("POST /api/...") makes a server span an HTTP request (method, route, and later its status)."""
    otel = _otel()
    if otel is None:
        yield None
        return
    from opentelemetry.trace import SpanKind
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    context = TraceContextTextMapPropagator().extract({"traceparent": parent}) if parent else None
    fixed: dict[str, str] = {f"noxys.{k}": attribute(k, v) for k, v in attrs.items()}
    if route:
        fixed["http.request.method"], fixed["http.route"] = route.split(" ", 1)
    with otel.tracer.start_as_current_span(
        name,
        context=context,
        kind=SpanKind[kind.upper()],
        attributes=fixed,
        record_exception=False,  # an exception's message may quote an id: only its type is kept
    ) as current:
        try:
            yield current
        except BaseException as exc:
            current.set_attribute("error.type", exc.__class__.__name__)
            raise


def mark(current: Span | None, **attrs: str | int | float) -> None:
    """Attributes learnt during a span: numbers as they are, words through the vocabulary."""
    if current is None:
        return
    for key, value in attrs.items():
        if key == "status":  # the HTTP status, where Application Insights reads a response code
            current.set_attribute("http.response.status_code", int(value))
        else:
            current.set_attribute(f"noxys.{key}", value if isinstance(value, int | float) else attribute(key, value))
