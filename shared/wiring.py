"""The composition root: every client and adapter is built here, from settings, once per process.

Triggers and commands ask here for the use case they run (the delivery, the intake, the status
dependencies) instead of constructing anything, so a worker reuses one HTTP session, one token
cache and one set of queue and table clients; nothing is built at import time. The adapters live
in one :class:`Wiring` object, built with the clock and the delayed-message sender it is given;
the module functions (``wiring.ledger()``, ``wiring.table(name)``, …) are thin accessors of the
current one. :func:`reset` starts a fresh one (tests swap settings), :func:`use` one on a
simulated clock and sender (the benchmark, the simulated-time tests). Dependencies point one way:
the rest of ``shared`` never imports this module, except the thin blueprints and the command line.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar, cast

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
from shared.response.contain import Containment
from shared.response.executor import Responder, ResponseDeps
from shared.response.files import log_problems, risk_or_defaults, rules_or_off
from shared.response.identity import IdentityClient, build_notifier
from shared.response.rules import RulesFile
from shared.response.store import ResponseStore
from shared.response.ticket import HttpTickets
from shared.response.undo import Releaser
from shared.secrets import SecretStore, build_store
from shared.status import StatusDeps
from shared.suppress import Cached, Suppressions
from shared.tasks import QueuedEvent
from shared.telemetry import Tally

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential
    from azure.data.tables import TableClient
    from azure.storage.queue import QueueClient

log = logging.getLogger(__name__)
T = TypeVar("T")
IO_CONCURRENCY = 16  # storage round trips in flight at once (a batch's messages, ledger reads, deletes)


class Wiring:
    """Every adapter of one process, each built on first use and then reused. Concurrent first
    calls (a batch of queue messages on a fresh worker) get the same object instead of each
    building their own. ``clock`` and ``sender`` stand in for the system clock and the
    visibility-timeout sender (simulated time); ``pool`` is the storage thread pool, which holds no
    settings and outlives a reset."""

    def __init__(
        self, *, clock: Clock | None = None, sender: QueueSender | None = None, pool: ThreadPoolExecutor | None = None
    ) -> None:
        self.clock = clock or SystemClock()
        self.sender = sender
        self.pool = pool or ThreadPoolExecutor(max_workers=IO_CONCURRENCY, thread_name_prefix="storage-io")
        self._lock = threading.RLock()
        self._built: dict[str, Any] = {}
        self._queues: dict[str, QueueClient] = {}
        self._tables: dict[str, TableClient] = {}

    def _once(self, name: str, build: Callable[[], T]) -> T:
        with self._lock:
            if name not in self._built:
                self._built[name] = build()
            return cast(T, self._built[name])

    def settings(self) -> Settings:
        return get_settings()

    # ------------------------------------------------------------------------------ storage
    def storage_credential(self) -> TokenCredential | None:
        """The identity for storage; None when a connection string is used (local, Azurite)."""
        s = self.settings()
        return self._once(
            "storage_credential", lambda: None if storage.connection_string(s) else storage.identity_credential(s)
        )

    def queue(self, name: str) -> QueueClient:
        with self._lock:
            if name not in self._queues:
                self._queues[name] = storage.build_queue_client(self.settings(), name, self.storage_credential())
            return self._queues[name]

    def table(self, name: str) -> TableClient:
        with self._lock:
            if name not in self._tables:
                s = self.settings()
                self._tables[name] = storage.build_table_client(s, f"{s.table_prefix}{name}", self.storage_credential())
            return self._tables[name]

    def enqueue(
        self, name: str, text: str, *, visibility_timeout: int | None = None, time_to_live: int | None = None
    ) -> object:
        return storage.send(self.queue(name), text, visibility_timeout=visibility_timeout, time_to_live=time_to_live)

    def queue_sender(self) -> QueueSender:
        return self.sender or StorageQueueSender(self.enqueue)

    # ------------------------------------------------------------------------------ identity and secrets
    def identity_credential(self) -> TokenCredential:
        def build() -> TokenCredential:
            from azure.identity import DefaultAzureCredential

            return DefaultAzureCredential(
                managed_identity_client_id=self.settings().azure_client_id, exclude_interactive_browser_credential=True
            )

        return self._once("identity_credential", build)

    def secret_store(self) -> SecretStore | None:
        s = self.settings()
        return self._once(
            "secret_store", lambda: build_store(s, self.identity_credential()) if s.key_vault_url else None
        )

    def credential(self) -> TokenCredential:
        def build() -> TokenCredential:
            s, store = self.settings(), self.secret_store()
            if store is None:
                return build_credential(s)
            return build_credential(s, lambda refresh: store.get(s.defender_client_secret_name, refresh=refresh).value)

        return self._once("credential", build)

    # ------------------------------------------------------------------------------ state tables
    def pacer(self) -> Pacer:
        return self._once("pacer", lambda: Pacer(self.table("Pacing"), quotas_from(self.settings()), self.clock))

    def audit(self) -> AuditTrail:
        return self._once("audit", lambda: AuditTrail(self.table("Audit")))

    def counters(self) -> BufferedCounters:
        return self._once("counters", lambda: BufferedCounters(Counters(self.table("Counters"))))

    def switch(self) -> Switch:
        return self._once(
            "switch", lambda: Switch(self.table("Switch"), self.settings().integration_setting, self.clock)
        )

    def held(self) -> Held:
        return self._once("held", lambda: Held(self.table("Held"), self.switch()))

    def dead_letters(self) -> DeadLetters:
        return self._once("dead_letters", lambda: DeadLetters(self.table("DeadLetters")))

    def ledger(self) -> Ledger:
        return self._once("ledger", lambda: Ledger(self.table("Ledger")))

    def patterns(self) -> PatternStore:
        return self._once("patterns", lambda: PatternStore(self.table("Patterns"), self.pool))

    def hunting_outbox(self) -> HuntingOutbox:
        return self._once("hunting_outbox", lambda: HuntingOutbox(self.table(OUTBOX_TABLE), self.pool))

    def responses(self) -> ResponseStore:
        return self._once("responses", lambda: ResponseStore(self.table("Responses")))

    # ------------------------------------------------------------------------------ outbound APIs
    def logs_client(self) -> Any:
        def build() -> Any:
            from azure.monitor.ingestion import LogsIngestionClient

            endpoint = str(self.settings().hunting_ingestion_endpoint)
            return LogsIngestionClient(endpoint, credential=self.identity_credential(), retry_total=3)

        return self._once("logs_client", build)

    def _client_kwargs(self) -> dict[str, Any]:
        return {
            "timeout": self.settings().http_timeout_seconds,
            "observers": [self.audit().record],
            "pacer": self.pacer(),
        }

    def _api(self, name: str, client: Callable[..., T], url: str, scope: str) -> T:
        """One API client: its own token scope, the shared credential, pacer and audit."""

        def build() -> T:
            return client(url, CredentialTokenProvider(self.credential(), scope), **self._client_kwargs())

        return self._once(name, build)

    def defender_client(self) -> DefenderClient:
        s = self.settings()
        return self._api("defender_client", DefenderClient, s.defender_api_url, s.defender_scope)

    def graph_client(self) -> GraphClient:
        s = self.settings()
        return self._api("graph_client", GraphClient, s.graph_api_url, s.graph_scope)

    def incidents_client(self) -> IncidentsClient:
        s = self.settings()
        return self._api("incidents_client", IncidentsClient, s.security_api_url, s.security_scope)

    def identity_client(self) -> IdentityClient:
        """Graph's identity calls (sendMail, group members): the Graph token, the same budget and audit."""
        s = self.settings()
        return self._api("identity_client", IdentityClient, s.graph_api_url, s.graph_scope)

    def containment(self) -> Containment | None:
        """contain_user's groups and Graph client, when CONTAIN_GROUP_ID is set (its absence is said per action)."""
        s = self.settings()
        if not s.contain_group_id:
            return None
        return Containment(self.identity_client(), s.contain_group_id, s.protected_group_id or "")

    def suppressions(self) -> Suppressions:
        """The scheduled review's summary and the policies it suppressed (shared.suppress)."""
        return Suppressions(self.table("Reviews"))

    def _suppressed_now(self) -> frozenset[str]:
        active = self.suppressions().active().items()
        return frozenset(k for pid, row in active for k in (pid, str(row.get("name") or "")) if k)

    # ------------------------------------------------------------------------------ use cases
    def delivery(self) -> Delivery:
        return self._once("delivery", self._delivery)

    def _delivery(self) -> Delivery:
        s = self.settings()
        log_problems(s)  # a bad rules or risk file switches that feature off; it never stops an alert
        rules, _ = rules_or_off(s)
        incidents: IncidentApi | None = None
        if s.incident_tagging == "graph":
            incidents = self.graph_client()
        elif s.incident_tagging == "legacy":
            incidents = self.incidents_client()
        return Delivery(
            Deps(
                settings=s,
                mde=self.defender_client(),
                ledger=self.ledger(),
                groups=Groups(self.table("Groups")),
                devices=DeviceCache(self.table("Devices")),
                dead=self.dead_letters(),
                held=self.held(),
                sender=self.queue_sender(),
                clock=self.clock,
                incidents=incidents,
                fallback=self.graph_client() if s.alert_fallback == "graph" else None,
                patterns=self.patterns() if s.risk_patterns else None,
                risk=risk_or_defaults(s)[0],
                rules=rules,
                responder=self._responder(rules) if rules else None,
                audit=self.audit().record,
            )
        )

    def releaser(self) -> Releaser:
        """Undo and the hourly releases: the same paced, audited client and action rows as response."""
        return Releaser(
            self.defender_client(),
            self.responses(),
            self.audit().record,
            self.clock.now,
            self.settings().release_on_false_positive,
            identity=self.containment(),
        )

    def ticket_secret(self) -> str | None:
        """The ticket relay's signing secret: Key Vault (TICKET_SIGNING_SECRET_NAME) when configured,
        else the setting (local development)."""
        s, store = self.settings(), self.secret_store()
        if store is not None:
            return store.get(s.ticket_signing_secret_name).value
        return s.ticket_signing_secret

    def _responder(self, rules: RulesFile) -> Responder:
        s = self.settings()

        def alert_of(event_id: str) -> str | None:
            entry = self.ledger().get(event_id)
            return entry.alert_id if entry else None

        tickets = HttpTickets(s.ticket_url, self.ticket_secret, self.clock.now) if s.ticket_url else None
        notifier = build_notifier(s, self.identity_client()) if s.notify_sender else None
        return Responder(
            ResponseDeps(
                rules=rules,
                api=self.defender_client(),
                store=self.responses(),
                now=self.clock.now,
                send=lambda text, delay: self.queue_sender().send(s.events_queue_name, text, delay),
                audit=self.audit().record,
                alert_of=alert_of,
                tickets=tickets,
                notifier=notifier,
                containment=self.containment(),
                max_age=timedelta(hours=s.max_event_age_hours),
            )
        )

    def tally(self) -> Tally:
        """One call per event feeds the Table counter (status) and its metric (Azure Monitor)."""
        return self._once(
            "tally", lambda: Tally(lambda name, now, n: self.counters().add(name, now, n), self.clock.now)
        )

    def signing_secrets(self, refresh: bool = False) -> list[str]:
        """The accepted Noxys signing secrets: every enabled Key Vault version, else the setting."""
        store, s = self.secret_store(), self.settings()
        if store is None:
            return list(s.noxys_signing_secrets)
        return [v for v in store.enabled_values(s.noxys_signing_secret_name, refresh=refresh) if signing_secret_ok(v)]

    def intake(self) -> Intake:
        def build() -> Intake:
            def count(name: str, n: int) -> None:  # best effort: counting never changes the answer
                self.tally().count(name, n)

            def keep_rows(rows: list[tuple[QueuedEvent, str]], partition: str) -> None:
                self.hunting_outbox().put(rows, partition)

            def send(queue: str, text: str) -> object:
                return self.enqueue(queue, text)

            s = self.settings()
            now = self.clock.now
            off = Cached(self._suppressed_now, lambda: now().timestamp()) if s.suppress_false_positive_rate else None
            return Intake(s, self.signing_secrets, send, count, self.clock, self.pool, keep_rows, off)

        return self._once("intake", build)

    def status_deps(self) -> StatusDeps:
        return StatusDeps(
            settings=self.settings(),
            clock=self.clock,
            queue=self.queue,
            table=self.table,
            counters=self.counters,
            dead_letters=self.dead_letters,
            held=self.held,
            credential=self.credential,
            secret_store=self.secret_store,
            graph=self.graph_client,
            ledger=self.ledger,
            responses=self.responses,
            outbox=self.hunting_outbox,
        )

    def keep_clients(self, other: Wiring) -> None:
        """Reuse ``other``'s queue and table clients (same settings, another clock)."""
        with self._lock:
            self._queues.update(other._queues)
            self._tables.update(other._tables)

    def buffers(self) -> list[BufferedCounters | PatternStore]:
        """What is kept in memory for a moment before it is written, as far as it has been built."""
        with self._lock:
            return [self._built[k] for k in ("counters", "patterns") if k in self._built]


_root = Wiring()


# ---------------------------------------------------------------------------------- the current wiring
def current() -> Wiring:
    """The process's wiring (a test or the benchmark may have replaced it)."""
    return _root


def use(*, clock: Clock | None = None, sender: QueueSender | None = None) -> None:
    """A fresh wiring on this clock and/or delayed-message sender (simulated time)."""
    global _root
    fresh = Wiring(clock=clock or _root.clock, sender=sender or _root.sender, pool=_root.pool)
    fresh.keep_clients(_root)  # same settings: the queue and table clients stay
    _root = fresh


def flush() -> None:
    """Write what is kept in memory for a moment (counters, pattern observations) now."""
    for buffered in _root.buffers():
        buffered.flush()


def reset() -> None:
    """A fresh wiring, on fresh settings (the environment changed); what was kept in memory is
    written to the tables it was kept for first."""
    global _root
    for buffered in _root.buffers():
        buffered.close()
    reset_settings()
    _root = Wiring(pool=_root.pool)


# The accessors the triggers, commands and tests call: one line each, over the current wiring.
def settings() -> Settings:
    return _root.settings()


def clock() -> Clock:
    return _root.clock


def storage_credential() -> TokenCredential | None:
    return _root.storage_credential()


def queue(name: str) -> QueueClient:
    return _root.queue(name)


def raw_queue(name: str) -> QueueClient:
    """A client without base64 decoding, for messages that may not be valid base64 (poison)."""
    return storage.build_queue_client(settings(), name, storage_credential(), raw=True)


def table(name: str) -> TableClient:
    """The table ``<TABLE_PREFIX><name>``, created on first use (once per process)."""
    return _root.table(name)


def enqueue(name: str, text: str, *, visibility_timeout: int | None = None, time_to_live: int | None = None) -> object:
    """Durably add one message to a queue; raises storage.QueueUnavailable."""
    return _root.enqueue(name, text, visibility_timeout=visibility_timeout, time_to_live=time_to_live)


def queue_sender() -> QueueSender:
    """Delayed messages: the simulated-time sender when one is in use, else visibility timeouts."""
    return _root.queue_sender()


def identity_credential() -> TokenCredential:
    """The app's own identity (managed identity in Azure; your az login locally) for Key Vault."""
    return _root.identity_credential()


def secret_store() -> SecretStore | None:
    return _root.secret_store()


def signing_secrets(refresh: bool = False) -> list[str]:
    return _root.signing_secrets(refresh)


def credential() -> TokenCredential:
    return _root.credential()


def pacer() -> Pacer:
    return _root.pacer()


def audit() -> AuditTrail:
    return _root.audit()


def counters() -> BufferedCounters:
    """Counted in memory, written by a background flush: never a storage round trip on the request path."""
    return _root.counters()


def held() -> Held:
    return _root.held()


def switch() -> Switch:
    """The on/off switch: a row of its own table, which no provision can overwrite."""
    return _root.switch()


def dead_letters() -> DeadLetters:
    return _root.dead_letters()


def ledger() -> Ledger:
    return _root.ledger()


def patterns() -> PatternStore:
    """Observations written behind (every second, and before a window is read)."""
    return _root.patterns()


def hunting_outbox() -> HuntingOutbox:
    return _root.hunting_outbox()


def responses() -> ResponseStore:
    """The response actions and their guards (cooldowns, caps, circuits)."""
    return _root.responses()


def logs_client() -> Any:
    """LogsIngestionClient for the hunting table, with the app's managed identity."""
    return _root.logs_client()


def defender_client() -> DefenderClient:
    return _root.defender_client()


def graph_client() -> GraphClient:
    return _root.graph_client()


def incidents_client() -> IncidentsClient:
    return _root.incidents_client()


def identity_client() -> IdentityClient:
    return _root.identity_client()


def containment() -> Containment | None:
    return _root.containment()


def suppressions() -> Suppressions:
    return _root.suppressions()


def delivery() -> Delivery:
    return _root.delivery()


def releaser() -> Releaser:
    return _root.releaser()


def ticket_secret() -> str | None:
    return _root.ticket_secret()


def tally() -> Tally:
    return _root.tally()


def io_pool() -> ThreadPoolExecutor:
    return _root.pool


def intake() -> Intake:
    return _root.intake()


def status_deps() -> StatusDeps:
    return _root.status_deps()
