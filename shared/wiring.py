"""The composition root: every client and adapter is built here, from settings, once per process.

Triggers and commands ask here for the use case they run (the delivery, the intake, the status
dependencies) instead of constructing anything, so a worker reuses one HTTP session, one token
cache and one set of queue and table clients; nothing is built at import time, and tests swap
settings with :func:`reset`. The benchmark and the simulated-time tests replace the clock and the
delayed-message sender with :func:`use`. Dependencies point one way: the rest of ``shared`` never
imports this module, except the thin blueprints and the command line.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from shared import storage
from shared.audit import AuditTrail
from shared.clock import Clock, SystemClock
from shared.config import Settings, get_settings, reset_settings, signing_secret_ok
from shared.counters import BufferedCounters, Counters
from shared.defender.auth import CredentialTokenProvider, build_credential
from shared.defender.client import DefenderClient, GraphClient, IncidentsClient
from shared.delivery.coalesce import Groups
from shared.delivery.deadletter import DeadLetters
from shared.delivery.devicecache import DeviceCache
from shared.delivery.forward import Delivery
from shared.delivery.hold import Held, Switch
from shared.delivery.hunting_outbox import TABLE as OUTBOX_TABLE
from shared.delivery.hunting_outbox import HuntingOutbox
from shared.delivery.ledger import Ledger
from shared.delivery.pacing import Pacer, quotas_from
from shared.delivery.patterns import PatternStore
from shared.delivery.ports import Deps, IncidentApi
from shared.delivery.sender import QueueSender, StorageQueueSender
from shared.intake import Intake
from shared.response.executor import Responder, ResponseDeps
from shared.response.files import log_problems, risk_or_defaults, rules_or_off
from shared.response.rules import RulesFile
from shared.response.store import ResponseStore
from shared.response.ticket import HttpTickets
from shared.response.undo import Releaser
from shared.secrets import SecretStore, build_store
from shared.status import StatusDeps
from shared.tasks import QueuedEvent
from shared.telemetry import Tally

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential
    from azure.data.tables import TableClient
    from azure.storage.queue import QueueClient

log = logging.getLogger(__name__)
_overrides: dict[str, Any] = {}
_build_lock = threading.RLock()
T = TypeVar("T")
_ADAPTERS: list[_once[Any]] = []  # every cached adapter: reset() forgets them all, none can be left out


class _once(Generic[T]):
    """Like functools.cache, but concurrent first calls (a batch of queue messages on a fresh
    worker) get the same object instead of each building their own."""

    def __init__(self, build: Callable[[], T]) -> None:
        self._build = build
        self._value: T | None = None
        self._built = False
        _ADAPTERS.append(self)

    def __call__(self) -> T:
        with _build_lock:
            if not self._built:
                self._value, self._built = self._build(), True
            return self._value  # type: ignore[return-value]

    def cache_clear(self) -> None:
        with _build_lock:
            self._value, self._built = None, False

    def built(self) -> T | None:
        """The object, if it has been built (to close it), else None."""
        with _build_lock:
            return self._value if self._built else None


def use(*, clock: Clock | None = None, sender: QueueSender | None = None) -> None:
    """Substitute the clock and/or the delayed-message sender (simulated time)."""
    if clock is not None:
        _overrides["clock"] = clock
    if sender is not None:
        _overrides["sender"] = sender
    _clear_caches()


def settings() -> Settings:
    return get_settings()


def clock() -> Clock:
    found: Clock = _overrides.get("clock") or _system_clock()
    return found


@_once
def _system_clock() -> Clock:
    return SystemClock()


# ---------------------------------------------------------------------------------- storage
_queues: dict[str, QueueClient] = {}
_tables: dict[str, TableClient] = {}


@_once
def storage_credential() -> TokenCredential | None:
    """The identity for storage; None when a connection string is used (local, Azurite)."""
    s = settings()
    return None if storage.connection_string(s) else storage.identity_credential(s)


def queue(name: str) -> QueueClient:
    with _build_lock:
        if name not in _queues:
            _queues[name] = storage.build_queue_client(settings(), name, storage_credential())
        return _queues[name]


def raw_queue(name: str) -> QueueClient:
    """A client without base64 decoding, for messages that may not be valid base64 (poison)."""
    return storage.build_queue_client(settings(), name, storage_credential(), raw=True)


def table(name: str) -> TableClient:
    """The table ``<TABLE_PREFIX><name>``, created on first use (once per process)."""
    with _build_lock:
        if name not in _tables:
            s = settings()
            _tables[name] = storage.build_table_client(s, f"{s.table_prefix}{name}", storage_credential())
        return _tables[name]


def enqueue(name: str, text: str, *, visibility_timeout: int | None = None, time_to_live: int | None = None) -> object:
    """Durably add one message to a queue; raises storage.QueueUnavailable."""
    return storage.send(queue(name), text, visibility_timeout=visibility_timeout, time_to_live=time_to_live)


def queue_sender() -> QueueSender:
    """Delayed messages: the simulated-time sender when one is in use, else visibility timeouts."""
    found: QueueSender = _overrides.get("sender") or StorageQueueSender(enqueue)
    return found


# ---------------------------------------------------------------------------------- identity and secrets
@_once
def identity_credential() -> TokenCredential:
    """The app's own identity (managed identity in Azure; your az login locally) for Key Vault."""
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential(
        managed_identity_client_id=settings().azure_client_id, exclude_interactive_browser_credential=True
    )


@_once
def secret_store() -> SecretStore | None:
    s = settings()
    return build_store(s, identity_credential()) if s.key_vault_url else None


def signing_secrets(refresh: bool = False) -> list[str]:
    """The accepted Noxys signing secrets: every enabled Key Vault version, else the setting."""
    store, s = secret_store(), settings()
    if store is None:
        return list(s.noxys_signing_secrets)
    return [v for v in store.enabled_values(s.noxys_signing_secret_name, refresh=refresh) if signing_secret_ok(v)]


@_once
def credential() -> TokenCredential:
    s, store = settings(), secret_store()
    if store is None:
        return build_credential(s)

    def from_vault(refresh: bool) -> str:
        return store.get(s.defender_client_secret_name, refresh=refresh).value

    return build_credential(s, from_vault)


# ---------------------------------------------------------------------------------- state tables
@_once
def pacer() -> Pacer:
    return Pacer(table("Pacing"), quotas_from(settings()), clock())


@_once
def audit() -> AuditTrail:
    return AuditTrail(table("Audit"))


@_once
def counters() -> BufferedCounters:
    """Counted in memory, written by a background flush: never a storage round trip on the request path."""
    return BufferedCounters(Counters(table("Counters")))


@_once
def held() -> Held:
    return Held(table("Held"), switch())


@_once
def switch() -> Switch:
    """The on/off switch: a row of its own table, which no provision can overwrite."""
    return Switch(table("Switch"), settings().integration_setting, clock())


@_once
def dead_letters() -> DeadLetters:
    return DeadLetters(table("DeadLetters"))


@_once
def ledger() -> Ledger:
    return Ledger(table("Ledger"))


@_once
def patterns() -> PatternStore:
    """Observations written behind (every second, and before a window is read)."""
    return PatternStore(table("Patterns"), io_pool())


@_once
def hunting_outbox() -> HuntingOutbox:
    return HuntingOutbox(table(OUTBOX_TABLE), io_pool())


# ---------------------------------------------------------------------------------- outbound APIs
@_once
def logs_client() -> Any:
    """LogsIngestionClient for the hunting table, with the app's managed identity."""
    from azure.monitor.ingestion import LogsIngestionClient

    s = settings()
    return LogsIngestionClient(str(s.hunting_ingestion_endpoint), credential=identity_credential(), retry_total=3)


def _client_kwargs() -> dict[str, Any]:
    return {"timeout": settings().http_timeout_seconds, "observers": [audit().record], "pacer": pacer()}


@_once
def defender_client() -> DefenderClient:
    s = settings()
    tokens = CredentialTokenProvider(credential(), s.defender_scope)
    return DefenderClient(s.defender_api_url, tokens, **_client_kwargs())


@_once
def graph_client() -> GraphClient:
    s = settings()
    return GraphClient(s.graph_api_url, CredentialTokenProvider(credential(), s.graph_scope), **_client_kwargs())


@_once
def incidents_client() -> IncidentsClient:
    s = settings()
    return IncidentsClient(
        s.security_api_url, CredentialTokenProvider(credential(), s.security_scope), **_client_kwargs()
    )


# ---------------------------------------------------------------------------------- use cases
@_once
def delivery() -> Delivery:
    s = settings()
    log_problems(s)  # a bad rules or risk file switches that feature off; it never stops an alert
    rules, _ = rules_or_off(s)
    incidents: IncidentApi | None = None
    if s.incident_tagging == "graph":
        incidents = graph_client()
    elif s.incident_tagging == "legacy":
        incidents = incidents_client()
    return Delivery(
        Deps(
            settings=s,
            mde=defender_client(),
            ledger=ledger(),
            groups=Groups(table("Groups")),
            devices=DeviceCache(table("Devices")),
            dead=dead_letters(),
            held=held(),
            sender=queue_sender(),
            clock=clock(),
            incidents=incidents,
            fallback=graph_client() if s.alert_fallback == "graph" else None,
            patterns=patterns() if s.risk_patterns else None,
            risk=risk_or_defaults(s)[0],
            rules=rules,
            responder=_responder(rules) if rules else None,
            audit=audit().record,
        )
    )


@_once
def responses() -> ResponseStore:
    """The response actions and their guards (cooldowns, caps, circuits)."""
    return ResponseStore(table("Responses"))


def releaser() -> Releaser:
    """Undo and the hourly releases: the same paced, audited client and action rows as response."""
    return Releaser(
        defender_client(),
        responses(),
        audit().record,
        lambda: clock().now(),
        settings().release_on_false_positive,
    )


def ticket_secret() -> str | None:
    """The ticket relay's signing secret: Key Vault (TICKET_SIGNING_SECRET_NAME) when configured,
    else the setting (local development)."""
    s, store = settings(), secret_store()
    if store is not None:
        return store.get(s.ticket_signing_secret_name).value
    return s.ticket_signing_secret


def _responder(rules: RulesFile) -> Responder:
    s = settings()

    def alert_of(event_id: str) -> str | None:
        entry = ledger().get(event_id)
        return entry.alert_id if entry else None

    tickets = HttpTickets(s.ticket_url, ticket_secret, lambda: clock().now()) if s.ticket_url else None
    return Responder(
        ResponseDeps(
            rules=rules,
            api=defender_client(),
            store=responses(),
            now=lambda: clock().now(),
            send=lambda text, delay: queue_sender().send(s.events_queue_name, text, delay),
            audit=audit().record,
            alert_of=alert_of,
            tickets=tickets,
            max_age=timedelta(hours=s.max_event_age_hours),
        )
    )


@_once
def tally() -> Tally:
    """One call per event feeds the Table counter (status) and its metric (Azure Monitor)."""
    return Tally(lambda name, now, n: counters().add(name, now, n), lambda: clock().now())


def _count(name: str, n: int) -> None:
    """Best effort: counting must never change the webhook's answer."""
    tally().count(name, n)


def _send(queue: str, text: str) -> object:
    return enqueue(queue, text)


IO_CONCURRENCY = 16  # storage round trips in flight at once (a batch's messages, ledger reads, deletes)


@_once
def io_pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=IO_CONCURRENCY, thread_name_prefix="storage-io")


def _keep_rows(rows: list[tuple[QueuedEvent, str]], partition: str) -> None:
    hunting_outbox().put(rows, partition)


@_once
def intake() -> Intake:
    return Intake(settings(), signing_secrets, _send, _count, clock(), io_pool(), _keep_rows)


def status_deps() -> StatusDeps:
    return StatusDeps(
        settings=settings(),
        clock=clock(),
        queue=queue,
        table=table,
        counters=counters,
        dead_letters=dead_letters,
        held=held,
        credential=credential,
        secret_store=secret_store,
        graph=graph_client,
        ledger=ledger,
        responses=responses,
        outbox=hunting_outbox,
    )


def _clear_caches() -> None:
    """Every cached adapter but the clock and the thread pool, which hold no settings."""
    for cached in _ADAPTERS:
        if cached not in (_system_clock, io_pool):
            cached.cache_clear()


def _buffers() -> list[BufferedCounters | PatternStore]:
    """What is kept in memory for a moment before it is written, as far as it has been built."""
    return [b for b in (counters.built(), patterns.built()) if b is not None]


def flush() -> None:
    """Write what is kept in memory for a moment (counters, pattern observations) now."""
    for buffered in _buffers():
        buffered.flush()


def reset() -> None:
    """Forget settings, overrides and every cached adapter (the environment changed)."""
    for buffered in _buffers():  # written to the tables they were kept for
        buffered.close()
    reset_settings()
    _overrides.clear()
    _clear_caches()
    with _build_lock:
        _queues.clear()
        _tables.clear()
