"""Tokens for the Defender API through azure-identity (which caches them for their lifetime).

azure-identity is the supported way to do client credentials against Entra ID in every cloud;
it handles token caching, refresh and the authority per cloud, and its errors carry the AADSTS
code we turn into a precise diagnosis. An authority that is not a known Microsoft cloud (the
local emulator) needs instance discovery turned off, or MSAL first asks
login.microsoftonline.com to validate it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol
from urllib.parse import urlsplit

from shared.config import Settings

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

KNOWN_AUTHORITY_HOSTS = {
    "login.microsoftonline.com",
    "login.microsoftonline.us",
    "login.chinacloudapi.cn",
}


class TokenProvider(Protocol):
    def token(self) -> str: ...


class CredentialTokenProvider:
    """A bearer token for one scope from any azure-identity credential."""

    def __init__(self, credential: TokenCredential, scope: str) -> None:
        self._credential = credential
        self.scope = scope

    def token(self) -> str:
        return self._credential.get_token(self.scope).token


def build_credential(settings: Settings) -> TokenCredential:
    """ClientSecretCredential for the configured tenant, app and cloud."""
    settings.require("defender_tenant_id", "defender_client_id", "defender_client_secret")
    from azure.identity import ClientSecretCredential

    host = urlsplit(settings.defender_authority_host).hostname or ""
    return ClientSecretCredential(
        tenant_id=str(settings.defender_tenant_id),
        client_id=str(settings.defender_client_id),
        client_secret=str(settings.defender_client_secret),
        authority=settings.defender_authority_host,
        disable_instance_discovery=host not in KNOWN_AUTHORITY_HOSTS,
    )
