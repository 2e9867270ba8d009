"""Tokens for the Defender API through azure-identity (which caches them for their lifetime).

azure-identity is the supported way to do client credentials against Entra ID in every cloud;
it handles token caching, refresh and the authority per cloud, and its errors carry the AADSTS
code we turn into a precise diagnosis. An authority that is not a known Microsoft cloud (the
local emulator) needs instance discovery turned off, or MSAL first asks
login.microsoftonline.com to validate it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol
from urllib.parse import urlsplit

from shared.config import Settings
from shared.secrets import RotatingSecretCredential

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

KNOWN_AUTHORITY_HOSTS = {
    "login.microsoftonline.com",
    "login.microsoftonline.us",
    "login.chinacloudapi.cn",
}


class TokenProvider(Protocol):
    def token(self) -> str: ...
    def invalidate(self) -> None: ...


class CredentialTokenProvider:
    """A bearer token for one scope from any azure-identity credential."""

    def __init__(self, credential: TokenCredential, scope: str) -> None:
        self._credential = credential
        self.scope = scope

    def token(self) -> str:
        return self._credential.get_token(self.scope).token

    def invalidate(self) -> None:
        reset = getattr(self._credential, "reset", None)
        if callable(reset):
            reset()


def client_secret_credential(settings: Settings, secret: str) -> TokenCredential:
    """ClientSecretCredential for the configured tenant, app and cloud."""
    settings.require("defender_tenant_id", "defender_client_id")
    from azure.identity import ClientSecretCredential

    host = urlsplit(settings.defender_authority_host).hostname or ""
    return ClientSecretCredential(
        tenant_id=str(settings.defender_tenant_id),
        client_id=str(settings.defender_client_id),
        client_secret=secret,
        authority=settings.defender_authority_host,
        disable_instance_discovery=host not in KNOWN_AUTHORITY_HOSTS,
    )


def build_credential(settings: Settings, secret_source: Callable[[bool], str] | None = None) -> TokenCredential:
    """The Defender app's credential; its secret comes from ``secret_source`` (Key Vault) or the
    DEFENDER_CLIENT_SECRET setting, and is re-read once when Entra says it is no longer valid."""
    settings.require("defender_tenant_id", "defender_client_id")
    if secret_source is None:
        settings.require("defender_client_secret")

        def secret_source(refresh: bool) -> str:
            return str(settings.defender_client_secret)

    return RotatingSecretCredential(lambda secret: client_secret_credential(settings, secret), secret_source)
