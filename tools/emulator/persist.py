"""Keep what the local emulator has been told across restarts of command 1.

Azurite keeps the connector's ledger on disk under ``.local/``; if the emulator forgot its alerts
at every restart, an event coalesced into an "existing" alert would find no alert to note and end
as a dead letter. So what Defender would remember (alerts, incidents, Graph alerts, hunting-table
rows) is written to ``.local/emulator-state.json`` after every change, atomically, and read back at
start. Tokens are not kept: the connector simply asks for a new one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from tools.emulator.state import DefenderState


class StateFile:
    def __init__(self, path: Path, state: DefenderState) -> None:
        self.path = path
        self.state = state

    def load(self) -> bool:
        """Restore a saved state; False when there is none (a first run, or after --reset)."""
        try:
            saved: dict[str, Any] = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return False
        with self.state.lock:
            self.state.alerts = list(saved.get("alerts", []))
            self.state.incidents = dict(saved.get("incidents", {}))
            self.state.graph_alerts = list(saved.get("graph_alerts", []))
            self.state.merged = dict(saved.get("merged", {}))
            self.state.logs.rows = list(saved.get("hunting_rows", []))
            self.state.next_alert = int(saved.get("next_alert", len(self.state.alerts) + 1))
            self.state.response.actions = list(saved.get("machine_actions", []))
            self.state.response.indicators = list(saved.get("indicators", []))
            self.state.response.tickets = list(saved.get("tickets", []))
            self.state.identity.mails = list(saved.get("mails", []))
            self.state.identity.revoked = list(saved.get("revoked_sessions", []))
            for gid, members in saved.get("group_members", {}).items():  # containments in force
                if gid in self.state.identity.groups:
                    self.state.identity.groups[gid]["members"] = list(members)
            for m in self.state.machines:  # tags the connector added
                m["machineTags"] = list(saved.get("machine_tags", {}).get(m["id"], m.get("machineTags") or []))
        return True

    def save(self) -> None:
        with self.state.lock:
            doc = {
                "alerts": self.state.alerts,
                "incidents": self.state.incidents,
                "graph_alerts": self.state.graph_alerts,
                "merged": self.state.merged,
                "hunting_rows": self.state.logs.rows,
                "next_alert": self.state.next_alert,
                "machine_actions": self.state.response.actions,
                "indicators": self.state.response.indicators,
                "tickets": self.state.response.tickets,
                "machine_tags": {m["id"]: m.get("machineTags") or [] for m in self.state.machines},
                "mails": self.state.identity.mails,
                "revoked_sessions": self.state.identity.revoked,
                "group_members": {g: v["members"] for g, v in self.state.identity.groups.items()},
            }
            text = json.dumps(doc, default=str)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(text)
        os.replace(tmp, self.path)  # a crash mid-write never leaves half a file behind
