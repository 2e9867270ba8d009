"""Undoing what automated response did — on an operator's word, after ``release_after_hours``, or
when an analyst classifies the alert ``FalsePositive``.

Everything a live rule did is an action row (``shared.response.store``): the machine, the
Defender machine action id, what else undoing needs (the tag, the indicator id). Releasing one
sends the documented opposite (``unisolate``, ``unrestrictCodeExecution``, the tag call with
``"Action": "Remove"``, ``DELETE /api/indicators/{id}``) through the same paced, audited client,
then marks the row released — so a second undo, a retry or another instance's sweep says
"already released" instead of acting twice. A scan, an investigation package or a ticket has no
opposite and is left as it is (said so).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from shared.defender.errors import CallRecord, DefenderError
from shared.response.contain import Containment
from shared.response.rules import iso
from shared.response.store import ActionRow, ResponseStore

log = logging.getLogger(__name__)
RELEASE = {"isolate": "unisolate", "restrict_app_execution": "unrestrictCodeExecution"}
UNDOABLE = frozenset({*RELEASE, "tag_device", "block_domain", "contain_user"})
SWEEP_DAYS = 7  # the false-positive and timed releases look this far back


class UnknownAction(Exception):
    """No action row carries the machine action id an operator gave."""


class UndoApi(Protocol):
    def machine_action(self, machine_id: str, segment: str, body: dict[str, Any]) -> dict[str, Any]: ...
    def tag_machine(self, machine_id: str, tag: str, action: str = "Add") -> dict[str, Any]: ...
    def delete_indicator(self, indicator_id: str) -> bool: ...
    def get_alert(self, alert_id: str) -> dict[str, Any]: ...
    def comment_alert(self, alert_id: str, comment: str) -> dict[str, Any]: ...


@dataclass
class Releaser:
    api: UndoApi
    store: ResponseStore
    audit: Callable[[CallRecord], None]
    now: Callable[[], datetime]
    on_false_positive: bool = True
    identity: Containment | None = None  # contain_user's group removal (shared.response.contain)
    _alerts: dict[str, dict[str, Any]] = field(default_factory=dict)

    # ------------------------------------------------------------------ operator: response undo
    def by_action(self, action_id: str) -> list[str]:
        """Release the action Defender knows by ``action_id`` (as status and the audit trail show it)."""
        rows = self.store.find("action_id eq @id", {"id": action_id})
        if not rows:
            raise UnknownAction(f"no response action {action_id} in the Responses table")
        return [self.release(row, "undo --action") for row in rows]

    def by_machine(self, machine_id: str) -> list[str]:
        """Release everything still in force that response did on one machine."""
        rows = [r for r in self.store.find("machine_id eq @m", {"m": machine_id}) if r.action in UNDOABLE]
        in_force = [r for r in rows if r.in_force]
        if not in_force:
            return [
                f"nothing in force on machine {machine_id} ({len(rows)} earlier action(s), all released or not taken)"
            ]
        return [self.release(row, "undo --device") for row in in_force]

    # ------------------------------------------------------------------ the hourly sweep
    def sweep(self) -> list[str]:
        """Timed releases that are due, and (``RELEASE_ON_FALSE_POSITIVE``) isolations and
        restrictions whose alert an analyst classified FalsePositive; one Defender call per alert."""
        now = self.now().timestamp()
        since = now - SWEEP_DAYS * 86400
        query = (
            "at ge @since and (action eq 'isolate' or action eq 'restrict_app_execution' or action eq 'contain_user')"
        )
        done, self._alerts = [], {}
        for row in self.store.find(query, {"since": since}):
            if not row.in_force:
                continue
            if row.release_at and row.release_at <= now:
                done.append(self.release(row, "release_after_hours"))
            elif self.on_false_positive and row.alert_id and self._classification(row.alert_id) == "FalsePositive":
                said = self.release(row, f"alert {row.alert_id} classified FalsePositive")
                self.api.comment_alert(row.alert_id, f"Noxys response: classified FalsePositive, so {said}.")
                done.append(said)
        return done

    def sweep_logged(self) -> list[str]:
        """The sweep for the hourly timer: Defender or storage trouble is logged, and what was not
        released is tried again next hour (the rows still say it is in force)."""
        from azure.core.exceptions import AzureError

        try:
            done = self.sweep()
        except (DefenderError, AzureError) as exc:
            log.error("response: releases not done, tried again next hour: %s", exc)
            return []
        for line in done:
            log.info("response: %s", line)
        return done

    def _classification(self, alert_id: str) -> str:
        if alert_id not in self._alerts:
            self._alerts[alert_id] = self.api.get_alert(alert_id)
        return str(self._alerts[alert_id].get("classification") or "")

    # ------------------------------------------------------------------ one row
    def release(self, row: ActionRow, why: str) -> str:
        what = f"{row.action} on {row.machine_id or 'the tenant'} (rule '{row.rule}')"
        if row.released:
            return f"{what}: already released ({row.released})"
        if not row.in_force:
            return f"{what}: nothing to undo ({'dry run' if row.dry_run else row.state})"
        if row.action not in UNDOABLE:
            return f"{what}: has no undo in Defender; left as it is"
        how = self._send(row, why)
        row.released = f"{why} at {iso(self.now().timestamp())}{how}"
        self.store.save(row)
        self._record(row, why)
        log.info("response: released %s (%s)", what, why)
        return f"{what}: released{how}"

    def _send(self, row: ActionRow, why: str) -> str:
        """The documented opposite of the row's action; what Defender answered, in words."""
        if row.action in RELEASE:
            comment = f"Noxys response: release of action {row.action_id} ({why})"
            try:
                found = self.api.machine_action(row.machine_id, RELEASE[row.action], {"Comment": comment})
            except DefenderError as exc:
                if exc.code != "ActiveRequestAlreadyExists":
                    raise
                return " (a release was already running)"
            return f" (action {found.get('id', '?')})"
        kind, _, value = row.undo.partition(":")
        if kind == "tag":
            self.api.tag_machine(row.machine_id, value, "Remove")
            return f" (tag {value} removed)"
        if kind == "group":
            if self.identity is None:
                raise DefenderError(
                    400, "ContainNotConfigured", "CONTAIN_GROUP_ID is not set: containment not released"
                )
            return self.identity.release(row.undo)
        if kind == "indicator":
            gone = self.api.delete_indicator(value)
            return f" (indicator {value} {'deleted' if gone else 'already gone'})"
        return " (nothing recorded to undo)"

    def _record(self, row: ActionRow, why: str) -> None:
        self.audit(
            CallRecord(
                time=self.now().timestamp(),
                service="response",
                method=f"UNDO_{row.action.upper()}",
                path=f"released: rule '{row.rule}' ({why})",
                status=200,
                latency_ms=0,
                correlation_id=None,
                error_code=None,
                event_id=row.event_id,
                attempt=0,
            )
        )
