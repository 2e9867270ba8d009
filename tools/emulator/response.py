"""Defender's response surface, as docs/reference/defender-api.md §8 and §9 describes it: machine
actions with their state progression (Pending → InProgress → Succeeded, or a final state a test
chooses) and the "already running → 400" rule, device tags, indicators (validated, 15,000 per
tenant) — and a ticket receiver that verifies the Standard Webhooks signature, as a ServiceNow,
Jira or Teams relay would. The undo side is there too (§12): ``unisolate``,
``unrestrictCodeExecution``, tag removal and ``DELETE /api/indicators/{id}``; and a ticket relay a
test can make answer with a redirect, to prove the connector never follows one.

The permissions and quotas are checked by the routes in :mod:`tools.emulator.app`; this mixin
holds the data and the rules.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from tools.emulator.base import Base
from tools.emulator.common import ApiError, format_time, parse_time
from tools.emulator.odata import compile_filter

# the path segment → (MachineAction type, the permission it needs, the body field and its values)
ACTIONS: dict[str, tuple[str, str, str | None, tuple[str, ...]]] = {
    "isolate": ("Isolate", "Machine.Isolate", "IsolationType", ("Full", "Selective")),
    "unisolate": ("Unisolate", "Machine.Isolate", None, ()),
    "restrictCodeExecution": ("RestrictCodeExecution", "Machine.RestrictExecution", None, ()),
    "unrestrictCodeExecution": ("UnrestrictCodeExecution", "Machine.RestrictExecution", None, ()),
    "runAntiVirusScan": ("RunAntiVirusScan", "Machine.Scan", "ScanType", ("Quick", "Full")),
    "collectInvestigationPackage": ("CollectInvestigationData", "Machine.CollectForensics", None, ()),
}
RUNNING = ("Pending", "InProgress")
FINAL = ("Succeeded", "Failed", "TimeOut", "Cancelled")
INDICATOR_TYPES = ("FileSha1", "FileSha256", "FileMd5", "CertificateThumbprint", "IpAddress", "DomainName", "Url")
INDICATOR_ACTIONS = ("Warn", "Block", "Audit", "Alert", "AlertAndBlock", "BlockAndRemediate", "Allowed")
MAX_INDICATORS = 15000
ACTION_FIELDS = frozenset({"id", "machineId", "status", "type", "requestor", "creationDateTimeUtc"})


@dataclass
class ResponseState:
    actions: list[dict[str, Any]] = field(default_factory=list)
    indicators: list[dict[str, Any]] = field(default_factory=list)
    tickets: list[dict[str, Any]] = field(default_factory=list)
    ticket_secret: str = ""  # whsec_…: the relay's shared secret
    start_after: float = 10.0  # seconds Pending before InProgress
    run_for: float = 60.0  # seconds InProgress before the final state
    final_state: str = "Succeeded"  # what every action ends as (a test may choose Failed, TimeOut, …)
    next_indicator: int = 1  # ids are never reused, even after a deletion
    ticket_redirect: tuple[int, str] | None = None  # (status, Location): the relay answers with a redirect


class Response(Base):
    response: ResponseState

    def _advance(self, action: dict[str, Any]) -> dict[str, Any]:
        """The action's status now: it moves on with the emulator's clock, as Defender's do."""
        if action["status"] in FINAL:
            return action
        age = (self.clock.now() - parse_time(action["creationDateTimeUtc"])).total_seconds()
        r = self.response
        status = (
            "Pending"
            if age < r.start_after
            else "InProgress"
            if age < r.start_after + r.run_for
            else action["finalState"]
        )
        if status != action["status"]:
            action["status"], action["lastUpdateDateTimeUtc"] = status, format_time(self.clock.now())
        return action

    @staticmethod
    def _public(action: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in action.items() if k != "finalState"}

    def machine_action(self, machine_id: str, segment: str, body: Any, requestor: str) -> dict[str, Any]:
        kind, _, option, values = ACTIONS[segment]
        if not any(m["id"] == machine_id for m in self.machines):
            raise ApiError(404, "ResourceNotFound", f"Machine {machine_id} was not found.")
        if not isinstance(body, dict) or not isinstance(body.get("Comment"), str) or not body["Comment"].strip():
            raise ApiError(400, "InvalidRequestBody", "Comment is required.")
        if option and body.get(option) not in values:
            raise ApiError(400, "InvalidRequestBody", f"{option} must be one of {', '.join(values)}.")
        running = [a for a in self.response.actions if a["machineId"] == machine_id and a["type"] == kind]
        if any(self._advance(a)["status"] in RUNNING for a in running):
            raise ApiError(400, "ActiveRequestAlreadyExists", f"Action type {kind} is already in progress.")
        now = format_time(self.clock.now())
        action = {
            "id": str(uuid.uuid4()),
            "type": kind,
            "scope": body.get(option) if option else None,
            "requestor": requestor,
            "requestorComment": body["Comment"],
            "status": "Pending",
            "machineId": machine_id,
            "creationDateTimeUtc": now,
            "lastUpdateDateTimeUtc": now,
            "finalState": self.response.final_state,
        }
        self.response.actions.append(action)
        return self._public(action)

    def get_machine_action(self, action_id: str) -> dict[str, Any]:
        found = next((a for a in self.response.actions if a["id"] == action_id), None)
        if found is None:
            raise ApiError(404, "ResourceNotFound", f"Machine action {action_id} was not found.")
        return self._public(self._advance(found))

    def list_machine_actions(self, odata_filter: str | None) -> list[dict[str, Any]]:
        match = compile_filter(odata_filter, ACTION_FIELDS) if odata_filter else (lambda a: True)
        return [self._public(a) for a in (self._advance(x) for x in self.response.actions) if match(a)]

    def tag_machine(self, machine_id: str, body: Any) -> dict[str, Any]:
        machine = next((m for m in self.machines if m["id"] == machine_id), None)
        if machine is None:
            raise ApiError(404, "ResourceNotFound", f"Machine {machine_id} was not found.")
        value = body.get("Value") if isinstance(body, dict) else None
        if not isinstance(value, str) or not 0 < len(value) <= 200 or body.get("Action") not in ("Add", "Remove"):
            raise ApiError(400, "InvalidRequestBody", "Value (1-200 characters) and Action (Add|Remove) are required.")
        tags = list(machine.get("machineTags") or [])
        if body["Action"] == "Add" and value not in tags:
            tags.append(value)
        elif body["Action"] == "Remove" and value in tags:
            tags.remove(value)
        machine["machineTags"] = tags
        return dict(machine)

    def add_indicator(self, body: Any, requestor: str) -> dict[str, Any]:
        self._check_indicator(body)
        live = [i for i in self.response.indicators if not self._expired(i)]
        key = (body["indicatorValue"], body["indicatorType"])
        same = next((i for i in live if (i["indicatorValue"], i["indicatorType"]) == key), None)
        if same is not None:  # Defender updates the indicator of the same value and type
            same.update({k: body[k] for k in ("action", "title", "description", "expirationTime") if k in body})
            return dict(same)
        if len(live) >= MAX_INDICATORS:
            raise ApiError(400, "BadRequest", f"The maximum number of indicators ({MAX_INDICATORS}) was reached.")
        r = self.response  # ids are never reused: not after a deletion, nor after a restart (persist)
        r.next_indicator = max([r.next_indicator, *(int(i["id"]) + 1 for i in r.indicators if str(i["id"]).isdigit())])
        indicator = {**body, "id": str(r.next_indicator), "createdBy": requestor}
        r.next_indicator += 1
        indicator["creationTimeDateTimeUtc"] = format_time(self.clock.now())
        self.response.indicators.append(indicator)
        return dict(indicator)

    def delete_indicator(self, indicator_id: str) -> None:
        """``DELETE /api/indicators/{id}``: 204, or 404 for an id that is not (or no longer) there."""
        found = next((i for i in self.response.indicators if str(i["id"]) == indicator_id), None)
        if found is None:
            raise ApiError(404, "ResourceNotFound", f"Indicator {indicator_id} was not found.")
        self.response.indicators.remove(found)

    def _check_indicator(self, body: Any) -> None:
        if not isinstance(body, dict):
            raise ApiError(400, "InvalidRequestBody", "Request body must be a JSON object.")
        for name in ("indicatorValue", "title", "description"):
            if not isinstance(body.get(name), str) or not body[name].strip():
                raise ApiError(400, "InvalidRequestBody", f"{name} is required.")
        if body.get("indicatorType") not in INDICATOR_TYPES:
            raise ApiError(400, "InvalidRequestBody", f"indicatorType must be one of {', '.join(INDICATOR_TYPES)}.")
        if body.get("action") not in INDICATOR_ACTIONS:
            raise ApiError(400, "InvalidRequestBody", f"action must be one of {', '.join(INDICATOR_ACTIONS)}.")
        expires = body.get("expirationTime")
        if expires is None:
            return
        try:
            future = parse_time(str(expires)) > self.clock.now()
        except ValueError:
            raise ApiError(400, "InvalidRequestBody", "expirationTime is not a valid date.") from None
        if not future:
            raise ApiError(400, "InvalidRequestBody", "expirationTime must be in the future.")

    def _expired(self, indicator: dict[str, Any]) -> bool:
        expires = indicator.get("expirationTime")
        return bool(expires) and parse_time(str(expires)) <= self.clock.now()

    def receive_ticket(self, headers: dict[str, str], body: bytes) -> dict[str, Any]:
        """A relay's intake: verify the signature (Standard Webhooks), keep one ticket per webhook-id."""
        from standardwebhooks.webhooks import WebhookVerificationError

        if not self.response.ticket_secret:
            raise ApiError(503, "NotConfigured", "The ticket receiver has no secret.")
        if self.response.ticket_redirect:
            status, location = self.response.ticket_redirect
            raise ApiError(status, "Redirect", "The ticket relay moved.", headers={"Location": location})
        try:
            doc = _relay(self.response.ticket_secret, self.clock.now).verify(body, headers)
        except WebhookVerificationError as exc:
            raise ApiError(401, "InvalidSignature", str(exc)) from None
        msg_id = headers.get("webhook-id", "")
        if any(t["webhook_id"] == msg_id for t in self.response.tickets):
            return {"status": "duplicate", "webhook_id": msg_id}
        self.response.tickets.append({"webhook_id": msg_id, "received": format_time(self.clock.now()), "body": doc})
        return {"status": "created", "webhook_id": msg_id, "number": f"INC{len(self.response.tickets):07d}"}


def _relay(secret: str, now: Callable[[], datetime]) -> Any:
    """The Standard Webhooks library's own verification, with the relay's clock: the connector
    stamps tickets with its clock, which is the emulator's simulated time in the tests."""
    from standardwebhooks.webhooks import Webhook, WebhookVerificationError

    class Relay(Webhook):
        def _Webhook__verify_timestamp(self, header: str) -> datetime:  # the library's, on our clock
            try:
                stamp = datetime.fromtimestamp(float(header), tz=UTC)
            except ValueError:
                raise WebhookVerificationError("Invalid Signature Headers") from None
            if abs((now() - stamp).total_seconds()) > 300:
                raise WebhookVerificationError("Message timestamp too old or too new")
            return stamp

    return Relay(secret)
