"""Entra ID: the OpenID configuration, the client-credentials token endpoint with its documented
errors, and the bearer-token check every API makes (401 bad token, 403 audience or role)."""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta
from typing import Any

from tools.emulator.base import Base
from tools.emulator.common import ApiError, TokenError

MDE_AUDIENCE = "https://api.securitycenter.microsoft.com"
MDE_AUDIENCES = {MDE_AUDIENCE, "fc780465-2017-40d4-a0c5-307022471b92"}  # WindowsDefenderATP app id
GRAPH_AUDIENCE = "https://graph.microsoft.com"
RESOURCES = {
    MDE_AUDIENCE,
    "https://api.security.microsoft.com",
    GRAPH_AUDIENCE,
    "https://vault.azure.net",
    "https://monitor.azure.com",
}

# Which API (token audience) each application permission belongs to: a token only carries the
# roles of its own resource, as Entra ID does.
PERMISSION_RESOURCE = {
    "Alert": MDE_AUDIENCE,
    "Machine": MDE_AUDIENCE,
    "AdvancedQuery": MDE_AUDIENCE,
    "Ti": MDE_AUDIENCE,
    "Vulnerability": MDE_AUDIENCE,
    "Incident": "https://api.security.microsoft.com",
    "SecurityIncident": GRAPH_AUDIENCE,
    "SecurityAlert": GRAPH_AUDIENCE,
    "ThreatHunting": GRAPH_AUDIENCE,
    "Application": GRAPH_AUDIENCE,
    "Mail": GRAPH_AUDIENCE,
    "GroupMember": GRAPH_AUDIENCE,
    "Group": GRAPH_AUDIENCE,
    "User": GRAPH_AUDIENCE,
    "Directory": GRAPH_AUDIENCE,
}


def roles_for(roles: list[str], resource: str) -> list[str]:
    return [r for r in roles if PERMISSION_RESOURCE.get(r.split(".")[0]) == resource]


class Entra(Base):
    def openid_configuration(self, tenant: str, base: str) -> dict[str, Any]:
        if tenant not in self.tenants:
            raise TokenError(
                400,
                "invalid_tenant",
                f"AADSTS90002: Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID "
                "and are signing into the correct cloud.",
            )
        return {
            "token_endpoint": f"{base}/{tenant}/oauth2/v2.0/token",
            "authorization_endpoint": f"{base}/{tenant}/oauth2/v2.0/authorize",
            "issuer": f"{base}/{tenant}/v2.0",
            "jwks_uri": f"{base}/{tenant}/discovery/v2.0/keys",
            "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "tenant_region_scope": "EU",
        }

    def issue_token(self, tenant: str, form: dict[str, str]) -> dict[str, Any]:
        import jwt

        if self.faults.token_outage:
            self.faults.count("token_outage")
            raise TokenError(
                503, "temporarily_unavailable", "AADSTS90033: A transient error has occurred. Please try again."
            )
        if tenant not in self.tenants:
            raise TokenError(400, "invalid_request", f"AADSTS90002: Tenant '{tenant}' not found.")
        if form.get("grant_type") != "client_credentials":
            raise TokenError(400, "unsupported_grant_type", "AADSTS70003: The app requested an unsupported grant type.")
        client_id, scope = form.get("client_id", ""), form.get("scope", "")
        client = self.clients.get((tenant, client_id))
        if client is None:
            raise TokenError(
                400,
                "unauthorized_client",
                f"AADSTS700016: Application with identifier '{client_id}' was not found in the directory '{tenant}'.",
            )
        if not secrets.compare_digest(form.get("client_secret", "").encode(), client.secret.encode()):
            raise TokenError(
                401,
                "invalid_client",
                "AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the request is "
                f"the client secret value, not the client secret ID, for a secret added to app '{client_id}'.",
            )
        now = self.clock.now()
        if client.secret_expires and now >= client.secret_expires:
            raise TokenError(
                401,
                "invalid_client",
                f"AADSTS7000222: The provided client secret keys for app '{client_id}' are expired.",
            )
        if not scope.endswith("/.default"):
            raise TokenError(
                400,
                "invalid_scope",
                "AADSTS1002012: The provided value for scope is not valid. Client credential flows must have "
                "a scope value with /.default suffixed to the resource identifier.",
            )
        resource = scope.removesuffix("/.default")
        if resource not in RESOURCES:
            raise TokenError(
                400,
                "invalid_resource",
                f"AADSTS500011: The resource principal named {resource} was not found in the tenant named {tenant}.",
            )
        claims = {
            "aud": resource,
            "iss": f"https://sts.windows.net/{tenant}/",
            "tid": tenant,
            "appid": client_id,
            "oid": hashlib.sha256(client_id.encode()).hexdigest()[:32],
            "roles": roles_for(client.roles, resource),
            "iat": int(now.timestamp()),
            "nbf": int(now.timestamp()),
            "exp": int((now + timedelta(seconds=self.token_lifetime)).timestamp()),
        }
        token = jwt.encode(claims, self.signing_key, algorithm="HS256")
        return {"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599, "access_token": token}

    def authorize(self, header: str | None, audiences: set[str], role: str | tuple[str, ...]) -> dict[str, Any]:
        """Validate a bearer token for an API; 401 for a bad token, 403 for audience or role."""
        import jwt

        if not header or not header.startswith("Bearer "):
            raise ApiError(401, "Unauthorized", "Authorization header is missing or is not a Bearer token.")
        try:
            claims = jwt.decode(
                header[7:],
                self.signing_key,
                algorithms=["HS256"],
                options={"verify_aud": False, "verify_exp": False, "verify_iat": False, "verify_nbf": False},
            )
        except jwt.PyJWTError:
            raise ApiError(401, "Unauthorized", "The access token is invalid.") from None
        if claims.get("exp", 0) <= self.clock.now().timestamp():
            raise ApiError(401, "Unauthorized", "The access token has expired.")
        if claims.get("iat", 0) < self.revoked_before:
            raise ApiError(401, "Unauthorized", "The access token has been revoked.")
        if claims.get("aud") not in audiences:
            raise ApiError(
                403, "Forbidden", "The application does not have permission to this API (token audience mismatch)."
            )
        wanted = (role,) if isinstance(role, str) else role
        if not set(wanted) & set(claims.get("roles", [])):
            raise ApiError(
                403,
                "Forbidden",
                "The application does not have any of the required application permissions "
                f"({', '.join(wanted)}) to access the resource.",
            )
        return dict(claims)
