"""Microsoft Graph's identity side, as automated response uses it (docs/reference/defender-api.md §12):
send a mail from the notification mailbox.

The same :class:`~shared.defender.client.ApiClient` as every other call: one paced budget
(``graph``), the audit trail, typed errors (a 429 is transient and its ``Retry-After`` honoured by
every instance), a fresh token on 401. Values in paths are quoted, never trusted.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote

from shared.config import ConfigError
from shared.defender.client import ApiClient
from shared.defender.errors import DefenderError
from shared.response.notify import Mail, MailTemplate, load_template, render
from shared.response.rules import Situation

log = logging.getLogger(__name__)


class IdentityClient(ApiClient):
    """Graph v1.0 calls of the identity actions (application permissions)."""

    service = "graph"

    def send_mail(self, sender: str, body: dict[str, Any]) -> None:
        """``POST /v1.0/users/{sender}/sendMail`` (``Mail.Send``): 202, no body."""
        self._request("POST", f"/v1.0/users/{quote(sender, safe='@')}/sendMail", json=body)

    def get_user(self, upn: str) -> dict[str, Any] | None:
        """The user whose userPrincipalName is ``upn`` (``User.Read.All``), or None. Asked as a
        ``$filter`` so the address travels in the query, never in the path the audit trail keeps."""
        body = self._request(
            "GET",
            "/v1.0/users",
            params={
                "$filter": "userPrincipalName eq '" + upn.replace("'", "''") + "'",
                "$select": "id,userPrincipalName,accountEnabled",
            },
        )
        found = body.get("value", []) if isinstance(body, dict) else []
        return found[0] if len(found) == 1 and isinstance(found[0], dict) else None

    def check_member_groups(self, user_id: str, group_ids: list[str]) -> list[str]:
        """The subset of ``group_ids`` the user is a member of, transitively (read fresh, never cached)."""
        body = self._request(
            "POST", f"/v1.0/users/{quote(user_id, safe='')}/checkMemberGroups", json={"groupIds": group_ids}
        )
        return [str(g) for g in body.get("value", [])] if isinstance(body, dict) else []

    def add_member(self, group_id: str, user_id: str) -> bool:
        """``POST /groups/{id}/members/$ref``; False when the user was already a member (Graph's 400)."""
        ref = {"@odata.id": f"https://graph.microsoft.com/v1.0/directoryObjects/{user_id}"}
        try:
            self._request("POST", f"/v1.0/groups/{quote(group_id, safe='')}/members/$ref", json=ref)
        except DefenderError as exc:
            if exc.status == 400 and "already exist" in exc.message:
                return False
            raise
        return True

    def remove_member(self, group_id: str, user_id: str) -> bool:
        """``DELETE /groups/{id}/members/{user}/$ref``; False when the user was no longer a member (404)."""
        try:
            self._request("DELETE", f"/v1.0/groups/{quote(group_id, safe='')}/members/{quote(user_id, safe='')}/$ref")
        except DefenderError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def revoke_sessions(self, user_id: str) -> None:
        """``POST /users/{id}/revokeSignInSessions`` (``User.RevokeSessions.All``)."""
        self._request("POST", f"/v1.0/users/{quote(user_id, safe='')}/revokeSignInSessions")


class Mailer(Protocol):
    def send_mail(self, sender: str, body: dict[str, Any]) -> None: ...


@dataclass(frozen=True)
class Notifier:
    """What ``notify_user`` needs: the Graph client, the sending mailbox (``NOTIFY_SENDER``), the
    template (``NOTIFY_TEMPLATE_FILE`` or the default) and whom the mail says to contact."""

    api: Mailer
    sender: str
    template: MailTemplate
    contact: str = ""
    problem: str = ""  # NOTIFY_TEMPLATE_FILE refused: no mail is sent (the alerts never depend on it)

    def mail(self, to: str, s: Situation) -> Mail:
        return render(self.template, to, s, self.contact)

    def send(self, mail: Mail) -> None:
        if not self.sender or self.problem:
            raise DefenderError(400, "NotifyNotConfigured", "NOTIFY_SENDER is not set")
        self.api.send_mail(self.sender, mail.graph_body())


class NotifySettings(Protocol):
    @property
    def notify_sender(self) -> str | None: ...
    @property
    def notify_template_file(self) -> str | None: ...
    @property
    def notify_contact(self) -> str: ...


def template_problem(settings: NotifySettings) -> str:
    """Why ``NOTIFY_TEMPLATE_FILE`` cannot be used ("" when it can, or none is set)."""
    try:
        load_template(settings.notify_template_file)
    except ConfigError as exc:
        return str(exc)
    return ""


def build_notifier(settings: NotifySettings, api: Mailer) -> Notifier:
    """The notifier; a refused template file is logged and every mail skipped with its reason —
    never the alerts, and never a mail with a template nobody checked."""
    problem = template_problem(settings)
    if problem:
        log.error("configuration: %s — notify_user sends no mail; alerts are delivered as usual", problem)
    template = MailTemplate() if problem else load_template(settings.notify_template_file)
    return Notifier(api, settings.notify_sender or "", template, settings.notify_contact, problem)
