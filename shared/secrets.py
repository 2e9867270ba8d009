"""Secrets from Key Vault (managed identity), cached, with rotation picked up without a restart.

When ``KEY_VAULT_URL`` is set, Key Vault wins over the plain ``DEFENDER_CLIENT_SECRET`` and
``NOXYS_SIGNING_SECRET`` settings (those stay for local development):

* the Defender client secret is read once and cached for ``SECRET_CACHE_SECONDS``; when Entra
  answers ``invalid_client`` (rotated or expired), it is read again once and the token request
  retried with the new value (:class:`RotatingSecretCredential`);
* the Noxys signing secret: every *enabled* version is accepted (and each value may itself be a
  space-separated list), so rotating in Noxys and in Key Vault need not happen at the same
  second; a signature that matches none of them triggers one re-read, at most once a minute, so
  a flood of bad signatures cannot hammer the vault.

Nothing here ever logs or returns a secret value in an error.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from shared.config import ConfigError, Settings

if TYPE_CHECKING:
    from azure.core.credentials import AccessToken, TokenCredential

AZURE_VAULT_SUFFIXES = (".vault.azure.net", ".vault.usgovcloudapi.net", ".vault.azure.cn")
BAD_SECRET_CODES = ("AADSTS7000215", "AADSTS7000222", "invalid_client")
REFRESH_FLOOR_SECONDS = 60.0


class VaultUnavailable(Exception):
    """Key Vault could not be read; the message names the vault, the secret and the reason."""


@dataclass(frozen=True)
class Secret:
    name: str
    value: str
    version: str
    expires_on: datetime | None


class SecretStore:
    def __init__(self, client: Any, *, ttl: float, vault_url: str) -> None:
        self._client = client
        self._ttl = ttl
        self.vault_url = vault_url
        self._cache: dict[str, tuple[float, Any]] = {}
        self._refreshed: dict[str, float] = {}
        self._lock = threading.Lock()

    def _cached(self, key: str, load: Callable[[], Any], refresh: bool) -> Any:
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(key)
            if refresh and now - self._refreshed.get(key, -1e9) < REFRESH_FLOOR_SECONDS and hit:
                return hit[1]  # re-read very recently: the vault has nothing newer
            if hit and not refresh and now - hit[0] < self._ttl:
                return hit[1]
        value = load()
        with self._lock:
            self._cache[key] = (now, value)
            if refresh:
                self._refreshed[key] = now
        return value

    def get(self, name: str, *, refresh: bool = False) -> Secret:
        def load() -> Secret:
            s = self._call(name, lambda: self._client.get_secret(name))
            return Secret(name, s.value or "", s.properties.version or "", s.properties.expires_on)

        result: Secret = self._cached(f"one:{name}", load, refresh)
        return result

    def enabled_values(self, name: str, *, refresh: bool = False) -> list[str]:
        """Every value of every enabled version (newest first), split on whitespace."""

        def load() -> list[str]:
            versions = self._call(name, lambda: list(self._client.list_properties_of_secret_versions(name)))
            enabled = sorted(
                (v for v in versions if v.enabled), key=lambda v: v.created_on or datetime.min, reverse=True
            )
            values: list[str] = []
            for props in enabled:
                secret = self._call(name, functools.partial(self._client.get_secret, name, props.version))
                values.extend(v for v in (secret.value or "").split() if v not in values)
            return values

        result: list[str] = self._cached(f"all:{name}", load, refresh)
        return result

    def _call(self, name: str, op: Callable[[], Any]) -> Any:
        from azure.core.exceptions import (
            AzureError,
            ClientAuthenticationError,
            HttpResponseError,
            ResourceNotFoundError,
        )

        where = f"Key Vault {self.vault_url}, secret {name}"
        try:
            return op()
        except ResourceNotFoundError:
            raise VaultUnavailable(f"{where}: not found (create it, or set the *_SECRET_NAME setting)") from None
        except ClientAuthenticationError as exc:
            raise VaultUnavailable(f"{where}: the app's identity could not sign in ({_first_line(exc)})") from None
        except HttpResponseError as exc:
            if exc.status_code == 403:
                raise VaultUnavailable(
                    f"{where}: access denied (grant the app's identity 'Key Vault Secrets User')"
                ) from None
            raise VaultUnavailable(f"{where}: {exc.status_code} {exc.reason}") from None
        except AzureError as exc:
            raise VaultUnavailable(f"{where}: unreachable ({exc.__class__.__name__})") from None


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "message", None) or exc).strip()
    return (text.splitlines() or ["?"])[0][:200]


def build_store(settings: Settings, credential: TokenCredential) -> SecretStore:
    from azure.keyvault.secrets import SecretClient

    if not settings.key_vault_url:
        raise ConfigError("KEY_VAULT_URL", "is not set")
    host = urlsplit(settings.key_vault_url).hostname or ""
    client = SecretClient(
        settings.key_vault_url,
        credential,
        # An emulator's vault is not on a Microsoft vault domain; real vaults keep the check.
        verify_challenge_resource=host.endswith(AZURE_VAULT_SUFFIXES),
        retry_total=2,
    )
    return SecretStore(client, ttl=settings.secret_cache_seconds, vault_url=settings.key_vault_url)


class RotatingSecretCredential:
    """ClientSecretCredential whose secret comes from a source and is re-read once on invalid_client."""

    def __init__(self, build: Callable[[str], TokenCredential], secret: Callable[[bool], str]) -> None:
        self._build = build
        self._secret_source = secret
        self._lock = threading.Lock()
        self._secret: str | None = None
        self._inner: TokenCredential | None = None

    def _current(self) -> TokenCredential:
        with self._lock:
            if self._inner is None:
                self._secret = self._secret_source(False)
                self._inner = self._build(self._secret)
            return self._inner

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        from azure.core.exceptions import ClientAuthenticationError

        inner = self._current()
        try:
            return inner.get_token(*scopes, **kwargs)
        except ClientAuthenticationError as exc:
            if not any(code in str(exc) for code in BAD_SECRET_CODES):
                raise
            fresh = self._secret_source(True)
            with self._lock:
                if fresh == self._secret:
                    raise  # the vault holds nothing newer: the secret really is wrong or expired
                self._secret, self._inner = fresh, self._build(fresh)
                inner = self._inner
            return inner.get_token(*scopes, **kwargs)

    def reset(self) -> None:
        """Forget the credential and its token cache (a 401 from an API: the token is stale)."""
        with self._lock:
            self._inner = None
