"""Microsoft Graph's identity side, as docs/reference/defender-api.md §12 describes it: users (by id
or UPN, 404 when unknown), ``sendMail`` with its body checked field by field (202, the mail kept
for tests to read), group membership by ``members/$ref`` (204; 400 when already a member, 404 on
removal of a non-member), ``revokeSignInSessions`` and ``checkMemberGroups`` (the subset of the
asked groups the user is in, transitively through nested groups).

Permissions per call are the routes' (:mod:`tools.emulator.app`, 403 without the role); every call
is throttled per app per tenant (429 + ``Retry-After``) like the rest of Graph.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from tools.emulator.base import Base
from tools.emulator.common import ApiError, format_time

QUOTA = [(60, 120)]  # Graph identity calls per app per tenant per minute (emulated)
UPN_FILTER = re.compile(r"^userPrincipalName eq '((?:[^']|'')*)'$")
DIRECTORY_OBJECT = re.compile(r"^https://graph\.microsoft\.com/v1\.0/directoryObjects/([0-9a-fA-F-]{36})$")


@dataclass
class IdentityState:
    users: dict[str, dict[str, Any]] = field(default_factory=dict)  # id → user
    groups: dict[str, dict[str, Any]] = field(default_factory=dict)  # id → {"displayName", "members": [ids]}
    mails: list[dict[str, Any]] = field(default_factory=list)  # what sendMail accepted: {"from", "message", "at"}
    revoked: list[dict[str, Any]] = field(default_factory=list)  # {"user", "at"}


def load(state: IdentityState, fixture: dict[str, Any]) -> None:
    for u in fixture.get("users", []):
        state.users[u["id"]] = dict(u)
    for g in fixture.get("groups", []):
        state.groups[g["id"]] = {"id": g["id"], "displayName": g.get("displayName", ""), "members": list(g["members"])}


class Identity(Base):
    identity: IdentityState

    def identity_quota(self, claims: dict[str, Any]) -> None:
        try:
            self.limiter.take((f"{claims.get('tid')}/{claims.get('appid')}", "graph.identity"), self.clock.now(), QUOTA)
        except ApiError:
            self.throttled["graph.identity"] = self.throttled.get("graph.identity", 0) + 1
            raise

    def user(self, key: str) -> dict[str, Any]:
        """A user by object id or userPrincipalName (case-insensitive), or 404."""
        found = self.identity.users.get(key) or next(
            (u for u in self.identity.users.values() if str(u.get("userPrincipalName", "")).lower() == key.lower()),
            None,
        )
        if found is None:
            raise ApiError(404, "Request_ResourceNotFound", f"Resource '{key}' does not exist.")
        return found

    def find_users(self, odata_filter: str) -> list[dict[str, Any]]:
        """``$filter=userPrincipalName eq '…'`` (the one filter the connector sends); 400 for others."""
        found = UPN_FILTER.match(odata_filter.strip())
        if found is None:
            raise ApiError(400, "Request_UnsupportedQuery", f"Unsupported filter: {odata_filter[:100]}")
        upn = found.group(1).replace("''", "'").lower()
        return [u for u in self.identity.users.values() if str(u.get("userPrincipalName", "")).lower() == upn]

    def _group(self, group_id: str) -> dict[str, Any]:
        found = self.identity.groups.get(group_id)
        if found is None:
            raise ApiError(404, "Request_ResourceNotFound", f"Resource '{group_id}' does not exist.")
        return found

    def send_mail(self, sender: str, body: Any) -> None:
        mailbox = self.user(sender)
        message = body.get("message") if isinstance(body, dict) else None
        if not isinstance(message, dict):
            raise ApiError(400, "ErrorInvalidRequest", "message is required.")
        if not isinstance(message.get("subject"), str) or not message["subject"]:
            raise ApiError(400, "ErrorInvalidRequest", "message.subject is required.")
        content = message.get("body")
        if not isinstance(content, dict) or content.get("contentType") not in ("Text", "HTML"):
            raise ApiError(400, "ErrorInvalidRequest", "message.body.contentType must be Text or HTML.")
        if not isinstance(content.get("content"), str) or not content["content"]:
            raise ApiError(400, "ErrorInvalidRequest", "message.body.content is required.")
        to = message.get("toRecipients")
        if not isinstance(to, list) or not to:
            raise ApiError(400, "ErrorInvalidRecipients", "At least one recipient is required.")
        for i, r in enumerate(to):
            address = r.get("emailAddress", {}).get("address") if isinstance(r, dict) else None
            if not isinstance(address, str) or "@" not in address:
                raise ApiError(400, "ErrorInvalidRecipients", f"toRecipients[{i}].emailAddress.address is invalid.")
        self.identity.mails.append(
            {"from": mailbox["userPrincipalName"], "message": message, "at": format_time(self.clock.now())}
        )

    def add_member(self, group_id: str, body: Any) -> None:
        group = self._group(group_id)
        ref = body.get("@odata.id") if isinstance(body, dict) else None
        found = DIRECTORY_OBJECT.match(ref) if isinstance(ref, str) else None
        if found is None:
            raise ApiError(400, "Request_BadRequest", "@odata.id must be a directoryObjects URL.")
        member = self.user(found.group(1))["id"]
        if member in group["members"]:
            raise ApiError(
                400,
                "Request_BadRequest",
                "One or more added object references already exist for the following modified properties: 'members'.",
            )
        group["members"].append(member)

    def remove_member(self, group_id: str, member_id: str) -> None:
        group = self._group(group_id)
        if member_id not in group["members"]:
            raise ApiError(404, "Request_ResourceNotFound", f"Resource '{member_id}' does not exist.")
        group["members"].remove(member_id)

    def revoke_sessions(self, user_key: str) -> dict[str, Any]:
        user = self.user(user_key)
        self.identity.revoked.append({"user": user["id"], "at": format_time(self.clock.now())})
        return {"value": True}

    def _groups_of(self, user_id: str) -> set[str]:
        """Transitive membership: a user in A, A a member of B → the user is in B."""
        found: set[str] = set()
        frontier = {user_id}
        while frontier:
            nxt = {g for g, v in self.identity.groups.items() if set(v["members"]) & frontier and g not in found}
            found |= nxt
            frontier = nxt
        return found

    def check_member_groups(self, user_key: str, body: Any) -> dict[str, Any]:
        user = self.user(user_key)
        ids = body.get("groupIds") if isinstance(body, dict) else None
        if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids) or len(ids) > 20:
            raise ApiError(400, "Request_BadRequest", "groupIds must be a list of 1 to 20 group ids.")
        mine = self._groups_of(user["id"])
        return {"value": [i for i in ids if i in mine]}
