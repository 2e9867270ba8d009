"""Key Vault (secrets data plane) and the App Service managed-identity endpoint, emulated.

The real ``azure-keyvault-secrets`` SecretClient first sends an unauthenticated request, reads
the ``WWW-Authenticate`` challenge (authority + resource), asks its credential for a token for
``https://vault.azure.net/.default`` and retries. In a Function App that credential is the
managed identity, which azure-identity reaches through ``IDENTITY_ENDPOINT`` with the
``X-IDENTITY-HEADER`` header. Both are emulated here, so the product's real code path runs:
DefaultAzureCredential → ManagedIdentityCredential → SecretClient.
"""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from tools.emulator.common import ApiError, Core

VAULT_AUDIENCE = "https://vault.azure.net"


@dataclass
class Version:
    version: str
    value: str
    enabled: bool
    created: datetime
    expires: datetime | None


@dataclass
class VaultState:
    identity_header: str = field(default_factory=lambda: secrets.token_hex(16))
    identities: set[str] = field(default_factory=set)  # managed identity client ids that exist
    readers: set[str] = field(default_factory=set)  # those with 'Key Vault Secrets User'
    secrets: dict[str, list[Version]] = field(default_factory=dict)
    outage: bool = False  # every vault call answers 503 (a regional outage, a firewall change)

    def set(
        self, name: str, value: str, *, now: datetime, expires: datetime | None = None, enabled: bool = True
    ) -> str:
        version = uuid.uuid4().hex
        self.secrets.setdefault(name, []).append(Version(version, value, enabled, now, expires))
        return version

    def disable_all_but_latest(self, name: str) -> None:
        for v in self.secrets.get(name, [])[:-1]:
            v.enabled = False


def _epoch(t: datetime | None) -> int | None:
    return int(t.timestamp()) if t else None


def _bundle(base: str, name: str, v: Version, *, with_value: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": f"{base}/secrets/{name}/{v.version}",
        "attributes": {
            "enabled": v.enabled,
            "created": _epoch(v.created),
            "updated": _epoch(v.created),
            "exp": _epoch(v.expires),
            "recoveryLevel": "Recoverable+Purgeable",
        },
    }
    if body["attributes"]["exp"] is None:
        del body["attributes"]["exp"]
    if with_value:
        body["value"] = v.value
    return body


def managed_identity_token(state: Core, vault: VaultState, args: dict[str, str], header: str | None) -> dict[str, Any]:
    """GET {IDENTITY_ENDPOINT}?api-version=2019-08-01&resource=...&client_id=..."""
    import jwt

    if header != vault.identity_header:
        raise ApiError(401, "Unauthorized", "X-IDENTITY-HEADER is missing or wrong.")
    resource = args.get("resource", "").removesuffix("/.default").rstrip("/")
    client_id = args.get("client_id") or next(iter(sorted(vault.identities)), "")
    if client_id not in vault.identities:
        raise ApiError(400, "BadRequest", f"No managed identity with client id {client_id} is assigned to this app.")
    now = state.clock.now()
    exp = now + timedelta(hours=24)
    claims = {
        "aud": resource,
        "appid": client_id,
        "oid": client_id,
        "tid": "managed",
        "roles": [],
        "iat": int(now.timestamp()),
        "exp": int(exp.timestamp()),
    }
    return {
        "access_token": jwt.encode(claims, state.signing_key, algorithm="HS256"),
        "expires_on": str(int(exp.timestamp())),
        "resource": resource,
        "token_type": "Bearer",
        "client_id": client_id,
    }


def authorize(state: Core, vault: VaultState, header: str | None, base: str) -> None:
    import jwt

    if vault.outage:
        state.faults.count("vault_outage")
        raise ApiError(503, "ServiceUnavailable", "The service is temporarily unavailable.", retry_after=1)
    if not header or not header.startswith("Bearer "):
        challenge = f'Bearer authorization="{base}/managed", resource="{VAULT_AUDIENCE}"'
        raise ApiError(
            401,
            "Unauthorized",
            "AKV10000: Request is missing a Bearer or PoP token.",
            headers={"WWW-Authenticate": challenge},
        )
    try:
        claims = jwt.decode(
            header[7:], state.signing_key, algorithms=["HS256"], options={"verify_aud": False, "verify_exp": False}
        )
    except jwt.PyJWTError:
        raise ApiError(401, "Unauthorized", "AKV10022: Invalid audience or token.") from None
    if claims.get("aud") != VAULT_AUDIENCE:
        raise ApiError(401, "Unauthorized", "AKV10022: Invalid audience.")
    if claims.get("oid") not in vault.readers:
        raise ApiError(
            403,
            "Forbidden",
            "Caller is not authorized to perform action on resource. "
            "(ForbiddenByRbac: Microsoft.KeyVault/vaults/secrets/getSecret/action)",
        )


def get_secret(vault: VaultState, base: str, name: str, version: str | None) -> dict[str, Any]:
    versions = vault.secrets.get(name)
    if not versions:
        raise ApiError(404, "SecretNotFound", f"A secret with (name/id) {name} was not found in this key vault.")
    if version:
        found = next((v for v in versions if v.version == version), None)
        if found is None:
            raise ApiError(
                404, "SecretNotFound", f"A secret with (name/id) {name}/{version} was not found in this key vault."
            )
    else:
        found = versions[-1]
    if not found.enabled:
        raise ApiError(403, "Forbidden", "Operation get is not allowed on a disabled secret.")
    return _bundle(base, name, found, with_value=True)


def list_versions(vault: VaultState, base: str, name: str) -> dict[str, Any]:
    versions = vault.secrets.get(name)
    if not versions:
        raise ApiError(404, "SecretNotFound", f"A secret with (name/id) {name} was not found in this key vault.")
    return {"value": [_bundle(base, name, v, with_value=False) for v in versions], "nextLink": None}
