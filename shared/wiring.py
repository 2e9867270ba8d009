"""The composition root: builds the adapters from settings once per process, lazily.

Triggers ask here for the delivery service or a client instead of constructing one, so a worker
reuses one HTTP session, one token cache and one set of table clients, nothing is built at
import time, and tests swap settings by calling :func:`reset`. The benchmark and the simulated
time tests replace the clock and the delayed-message sender with :func:`use`.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from shared.config import get_settings, reset_settings

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

    from shared.audit import AuditTrail
    from shared.clock import Clock
    from shared.counters import Counters
    from shared.defender.client import DefenderClient, GraphClient, IncidentsClient
    from shared.delivery.deadletter import DeadLetters
    from shared.delivery.forward import Delivery
    from shared.delivery.hold import Held
    from shared.delivery.pacing import Pacer
    from shared.delivery.sender import QueueSender
    from shared.secrets import SecretStore

_overrides: dict[str, Any] = {}
_build_lock = threading.RLock()
T = TypeVar("T")


class _once(Generic[T]):
    """Like functools.cache, but concurrent first calls (a batch of queue messages on a fresh
    worker) get the same object instead of each building their own."""

    def __init__(self, build: Callable[[], T]) -> None:
        self._build = build
        self._value: T | None = None
        self._built = False

    def __call__(self) -> T:
        with _build_lock:
            if not self._built:
                self._value, self._built = self._build(), True
            return self._value  # type: ignore[return-value]

    def cache_clear(self) -> None:
        with _build_lock:
            self._value, self._built = None, False


def use(*, clock: Clock | None = None, sender: QueueSender | None = None) -> None:
    """Substitute the clock and/or the delayed-message sender (simulated time)."""
    if clock is not None:
        _overrides["clock"] = clock
    if sender is not None:
        _overrides["sender"] = sender
    _clear_caches()


def clock() -> Clock:
    from shared.clock import SystemClock

    found: Clock = _overrides.get("clock") or _system_clock(SystemClock)
    return found


@functools.cache
def _system_clock(factory: Any) -> Clock:
    result: Clock = factory()
    return result


def table(name: str) -> Any:
    from shared.storage import table_client

    settings = get_settings()
    return table_client(settings, f"{settings.table_prefix}{name}")


@_once
def identity_credential() -> TokenCredential:
    """The app's own identity (managed identity in Azure; your az login locally) for Key Vault."""
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential(
        managed_identity_client_id=get_settings().azure_client_id, exclude_interactive_browser_credential=True
    )


@_once
def secret_store() -> SecretStore | None:
    from shared.secrets import build_store

    s = get_settings()
    return build_store(s, identity_credential()) if s.key_vault_url else None


def signing_secrets(*, refresh: bool = False) -> list[str]:
    """The accepted Noxys signing secrets: every enabled Key Vault version, else the setting."""
    from shared.config import signing_secret_ok

    store, s = secret_store(), get_settings()
    if store is None:
        return list(s.noxys_signing_secrets)
    return [v for v in store.enabled_values(s.noxys_signing_secret_name, refresh=refresh) if signing_secret_ok(v)]


@_once
def credential() -> TokenCredential:
    from shared.defender.auth import build_credential

    s, store = get_settings(), secret_store()
    if store is None:
        return build_credential(s)

    def from_vault(refresh: bool) -> str:
        return store.get(s.defender_client_secret_name, refresh=refresh).value

    return build_credential(s, from_vault)


@_once
def pacer() -> Pacer:
    from shared.delivery.pacing import Pacer, quotas_from

    return Pacer(table("Pacing"), quotas_from(get_settings()), clock())


@_once
def audit() -> AuditTrail:
    from shared.audit import AuditTrail

    return AuditTrail(table("Audit"))


@_once
def counters() -> Counters:
    from shared.counters import Counters

    return Counters(table("Counters"))


@_once
def held() -> Held:
    from shared.delivery.hold import Held

    return Held(table("Held"))


@_once
def dead_letters() -> DeadLetters:
    from shared.delivery.deadletter import DeadLetters

    return DeadLetters(table("DeadLetters"))


@_once
def logs_client() -> Any:
    """LogsIngestionClient for the hunting table, with the app's managed identity."""
    from azure.monitor.ingestion import LogsIngestionClient

    s = get_settings()
    return LogsIngestionClient(str(s.hunting_ingestion_endpoint), credential=identity_credential(), retry_total=3)


def _client_kwargs() -> dict[str, Any]:
    return {"timeout": get_settings().http_timeout_seconds, "observers": [audit().record], "pacer": pacer()}


@_once
def defender_client() -> DefenderClient:
    from shared.defender.auth import CredentialTokenProvider
    from shared.defender.client import DefenderClient

    s = get_settings()
    return DefenderClient(
        s.defender_api_url, CredentialTokenProvider(credential(), s.defender_scope), **_client_kwargs()
    )


@_once
def graph_client() -> GraphClient:
    from shared.defender.auth import CredentialTokenProvider
    from shared.defender.client import GraphClient

    s = get_settings()
    return GraphClient(s.graph_api_url, CredentialTokenProvider(credential(), s.graph_scope), **_client_kwargs())


@_once
def incidents_client() -> IncidentsClient:
    from shared.defender.auth import CredentialTokenProvider
    from shared.defender.client import IncidentsClient

    s = get_settings()
    return IncidentsClient(
        s.security_api_url, CredentialTokenProvider(credential(), s.security_scope), **_client_kwargs()
    )


@_once
def delivery() -> Delivery:
    from shared.delivery.coalesce import Groups
    from shared.delivery.devicecache import DeviceCache
    from shared.delivery.forward import Delivery
    from shared.delivery.ledger import Ledger
    from shared.delivery.ports import Deps, IncidentApi
    from shared.delivery.sender import AzureQueueSender

    s = get_settings()
    incidents: IncidentApi | None = None
    if s.incident_tagging == "graph":
        incidents = graph_client()
    elif s.incident_tagging == "legacy":
        incidents = incidents_client()
    return Delivery(
        Deps(
            settings=s,
            mde=defender_client(),
            ledger=Ledger(table("Ledger")),
            groups=Groups(table("Groups")),
            devices=DeviceCache(table("Devices")),
            dead=dead_letters(),
            held=held(),
            sender=_overrides.get("sender") or AzureQueueSender(s),
            clock=clock(),
            incidents=incidents,
            fallback=graph_client() if s.alert_fallback == "graph" else None,
        )
    )


def _clear_caches() -> None:
    for cached in (
        identity_credential,
        secret_store,
        credential,
        pacer,
        audit,
        defender_client,
        graph_client,
        incidents_client,
        counters,
        held,
        dead_letters,
        logs_client,
        delivery,
    ):
        cached.cache_clear()


def reset() -> None:
    """Forget settings, overrides and every cached adapter (the environment changed)."""
    from shared import storage

    reset_settings()
    _overrides.clear()
    _clear_caches()
    storage.reset_clients()
