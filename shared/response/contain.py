"""The ``contain_user`` action: put the person in the Entra security group ``CONTAIN_GROUP_ID`` (the
one the customer's Conditional Access policy blocks from AI apps), for the rule's ``for_hours``.

Acting on an identity is acting on everything that person can reach, so:

* **never a protected identity**: ``PROTECTED_GROUP_ID`` (break-glass and admin accounts) is
  required, and membership is read **fresh** (``checkMemberGroups``, transitive) immediately before
  each containment — never cached, never taken from the event;
* only the user Entra ID has under the event's address (``GET /users/{upn}``), never an id the
  event supplies;
* a release removes only what this connector added: a person who was already in the group (an
  operator put them there) is reported and left there when the containment ends;
* retried after an interruption, an "already a member" answer is the connector's own earlier
  addition (the action row was still ``intended``), so it is released in time like any other.

The removal (``DELETE /groups/{id}/members/{user}/$ref``) is done by the hourly sweep once
``for_hours`` have passed, by ``response undo`` and by an analyst's ``FalsePositive``
(:mod:`shared.response.undo`); a 404 there means someone removed them already — still released.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from shared.defender.errors import DefenderError
from shared.response.rules import ContainUser, iso

UNDO_PREFIX = "group:"


class ContainApi(Protocol):
    def get_user(self, key: str) -> dict[str, Any] | None: ...
    def check_member_groups(self, user_id: str, group_ids: list[str]) -> list[str]: ...
    def add_member(self, group_id: str, user_id: str) -> bool: ...
    def remove_member(self, group_id: str, user_id: str) -> bool: ...
    def revoke_sessions(self, user_id: str) -> None: ...


@dataclass(frozen=True)
class Contained:
    detail: str
    undo: str = ""  # "group:{group id}:{user id}" when the connector added the user
    release_at: float = 0.0


@dataclass(frozen=True)
class Containment:
    api: ContainApi
    group_id: str  # CONTAIN_GROUP_ID
    protected_group_id: str  # PROTECTED_GROUP_ID

    @property
    def problem(self) -> str:
        if not self.group_id:
            return "CONTAIN_GROUP_ID is not set"
        if not self.protected_group_id:
            return "PROTECTED_GROUP_ID is not set: no identity is contained without a protected group"
        return ""

    def user_of(self, upn: str) -> tuple[str, str]:
        """(the Entra user id, "") or ("", why not): unknown, or protected right now."""
        user = self.api.get_user(upn)
        if user is None or not user.get("id"):
            return "", "Entra ID has no user with the event's address"
        user_id = str(user["id"])
        if self.protected_group_id in self.api.check_member_groups(user_id, [self.protected_group_id]):
            return "", "protected identity: a member of PROTECTED_GROUP_ID (checked now with checkMemberGroups)"
        return user_id, ""

    def contain(self, user_id: str, action: ContainUser, now: float, *, retry: bool) -> Contained:
        added = self.api.add_member(self.group_id, user_id)
        until = now + action.for_hours * 3600
        revoked = ""
        if action.revoke_sessions:
            self.api.revoke_sessions(user_id)
            revoked = "; sign-in sessions revoked"
        if added or retry:
            return Contained(
                f"added to the contain group until {iso(until)}{revoked}",
                f"{UNDO_PREFIX}{self.group_id}:{user_id}",
                until,
            )
        return Contained(
            f"already a member of the contain group (not added by this rule, so not released by it){revoked}"
        )

    def release(self, undo: str) -> str:
        """Remove the member the row names; what Graph answered, in words."""
        group_id, _, user_id = undo.removeprefix(UNDO_PREFIX).partition(":")
        if not group_id or not user_id:
            raise DefenderError(400, "BadUndo", "the containment row names no group and user")
        gone = self.api.remove_member(group_id, user_id)
        return " (removed from the contain group)" if gone else " (no longer a member: removed already)"
