"""Defender for Endpoint: machines, their network events (for advanced hunting and the anchor
check), CreateAlertByReference with its required fields, enums, 404 triple and merge rule, alert
updates, and findbyip."""

from __future__ import annotations

import hashlib
import math
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

from tools.emulator.base import Base
from tools.emulator.common import ApiError, format_time, parse_time
from tools.emulator.odata import ALERT_FIELDS as FILTERABLE_ALERT_FIELDS
from tools.emulator.odata import compile_filter

SEVERITIES = ("Low", "Medium", "High")
CATEGORIES = (
    "General",
    "CommandAndControl",
    "Collection",
    "CredentialAccess",
    "DefenseEvasion",
    "Discovery",
    "Exfiltration",
    "Exploit",
    "Execution",
    "InitialAccess",
    "LateralMovement",
    "Malware",
    "Persistence",
    "PrivilegeEscalation",
    "Ransomware",
    "SuspiciousActivity",
)
ALERT_FIELDS = (
    "machineId",
    "reportId",
    "eventTime",
    "severity",
    "title",
    "description",
    "recommendedAction",
    "category",
)
RETENTION = timedelta(days=30)
DEVICE_VALUES = ("Normal", "Low", "High")  # docs/reference/defender-api.md §12
ALERT_STATUSES = ("New", "InProgress", "Resolved")
CLASSIFICATIONS = ("TruePositive", "InformationalExpectedActivity", "FalsePositive")
DETERMINATIONS = (
    "MultiStagedAttack",
    "MaliciousUserActivity",
    "Malware",
    "Phishing",
    "UnwantedSoftware",
    "SecurityTesting",
    "LineOfBusinessApplication",
    "ConfirmedActivity",
    "NotMalicious",
    "Other",
)


def _public(machine: dict[str, Any]) -> dict[str, Any]:
    """A machine as the API returns it (without the fixture's IP history)."""
    return {k: v for k, v in machine.items() if k != "ip_history"}


def _check_alert_body(body: Any) -> None:
    """Required fields (case-sensitive names) and the severity and category enums."""
    if not isinstance(body, dict):
        raise ApiError(400, "InvalidRequestBody", "Request body must be a JSON object.")
    for name in ALERT_FIELDS:
        if name not in body or body[name] in (None, ""):
            hint = next((k for k in body if k.lower() == name.lower() and k != name), None)
            extra = f" (found '{hint}': parameter names are case-sensitive)" if hint else ""
            raise ApiError(400, "MissingRequiredParameter", f"Missing required parameter '{name}'{extra}.")
    if body["severity"] not in SEVERITIES:
        raise ApiError(
            400, "InvalidInput", f"Invalid value '{body['severity']}' for severity; allowed: {', '.join(SEVERITIES)}."
        )
    if body["category"] not in CATEGORIES:
        raise ApiError(400, "InvalidInput", f"Invalid value '{body['category']}' for category.")


class Mde(Base):
    def find_machines(self, odata_filter: str | None, top: int | None) -> list[dict[str, Any]]:
        if top is not None and not 0 < top <= 10000:
            raise ApiError(400, "InvalidInput", "$top must be between 1 and 10000.")
        match = compile_filter(odata_filter) if odata_filter else (lambda m: True)
        found = [_public(m) for m in self.machines if match(m)]
        return found[:top] if top else found

    def set_machine(self, machine_id: str, *, device_value: str | None = None, os_platform: str | None = None) -> None:
        """What a customer sets in the portal (a high-value asset) or what onboarding reports (the
        platform); the device value is one of its three documented values."""
        machine = next((m for m in self.machines if m["id"] == machine_id), None)
        if machine is None:
            raise ApiError(404, "ResourceNotFound", f"Machine {machine_id} was not found.")
        if device_value is not None:
            if device_value not in DEVICE_VALUES:
                raise ApiError(400, "InvalidInput", f"DeviceValue must be one of {', '.join(DEVICE_VALUES)}.")
            machine["deviceValue"] = device_value
        if os_platform is not None:
            machine["osPlatform"] = os_platform

    def get_machine(self, key: str) -> dict[str, Any]:
        for m in self.machines:
            if m["id"] == key.lower() or m.get("computerDnsName", "").lower() == key.lower():
                return _public(m)
        raise ApiError(404, "ResourceNotFound", f"Machine {key} was not found.")

    # ---------------------------------------------------------------- network events
    def device_process_events(self, device_id: str, start: datetime, end: datetime) -> list[dict[str, Any]]:
        """Fixture (or test-seeded) process rows of one device, within hunting's 30 days and the past."""
        now = self.clock.now()
        start, end = max(start, now - RETENTION), min(end, now)
        return [
            e for e in self.process_events if e["DeviceId"] == device_id and start <= parse_time(e["Timestamp"]) <= end
        ]

    def machine_alerts(self, machine_id: str) -> list[dict[str, Any]]:
        """``GET /api/machines/{id}/alerts``: every alert of one machine (404 for an unknown machine)."""
        self.get_machine(machine_id)
        return [dict(a) for a in self.alerts if a["machineId"] == machine_id]

    def device_network_events(self, device_id: str, start: datetime, end: datetime) -> list[dict[str, Any]]:
        """Fixture rows plus the periodic connections of each device's declared AI traffic,
        limited to the 30 days advanced hunting keeps and to what has already happened."""
        now = self.clock.now()
        start, end = max(start, now - RETENTION), min(end, now)
        rows = [
            e for e in self.network_events if e["DeviceId"] == device_id and start <= parse_time(e["Timestamp"]) <= end
        ]
        for domain, every in self.traffic.get(device_id, []):
            offset = int(hashlib.sha256(f"{device_id}/{domain}".encode()).hexdigest()[:6], 16) % every
            k = math.ceil((start.timestamp() - offset) / every)
            while (t := k * every + offset) <= end.timestamp():
                when = datetime.fromtimestamp(t, UTC) + timedelta(microseconds=123456)
                if when <= end:
                    rows.append(
                        {
                            "Timestamp": format_time(when),
                            "ReportId": int(hashlib.sha256(f"{device_id}/{domain}/{k}".encode()).hexdigest()[:8], 16),
                            "DeviceId": device_id,
                            "RemoteUrl": domain,
                            "ActionType": "ConnectionSuccess",
                        }
                    )
                k += 1
        return rows

    def event_exists(self, device_id: str, report_id: str, event_time: str) -> bool:
        try:
            when = parse_time(event_time)
        except ValueError:
            return False
        window = timedelta(seconds=1)
        return any(
            str(r["ReportId"]) == str(report_id) and parse_time(r["Timestamp"]) == when
            for r in self.device_network_events(device_id, when - window, when + window)
        )

    # ---------------------------------------------------------------- alerts
    def create_alert(self, body: Any) -> dict[str, Any]:
        _check_alert_body(body)
        machine_id = str(body["machineId"])
        machine = next((m for m in self.machines if m["id"] == machine_id), None)
        if machine is None:
            raise ApiError(404, "ResourceNotFound", f"Machine {machine_id} was not found.")
        if not self.event_exists(machine_id, str(body["reportId"]), str(body["eventTime"])):
            raise ApiError(
                404, "ResourceNotFound", "No event was found for the given machineId, reportId and eventTime."
            )
        for alert in self.alerts:
            if alert["machineId"] == machine_id and alert["title"] == body["title"] and alert["status"] != "Resolved":
                self.merged[alert["id"]] = self.merged.get(alert["id"], 0) + 1
                return dict(alert)
        now = self.clock.now()
        alert = {
            "id": f"da{now:%Y%m%d}{self.next_alert:010d}_{secrets.randbelow(10**9):09d}",
            "incidentId": None,
            "machineId": machine_id,
            "computerDnsName": machine.get("computerDnsName"),
            "severity": body["severity"],
            "status": "New",
            "title": body["title"],
            "description": body["description"],
            "recommendedAction": body["recommendedAction"],
            "category": body["category"],
            "detectionSource": "CustomTI",
            "reportId": str(body["reportId"]),
            "eventTime": body["eventTime"],
            "alertCreationTime": format_time(now),
            "lastUpdateTime": format_time(now),
            "comments": [],
        }
        self.next_alert += 1
        self.alerts.append(alert)
        if self.incident_delay > 0:  # correlated later: the answer carries no incident id yet
            self.pending_incidents[alert["id"]] = now + timedelta(seconds=self.incident_delay)
        else:
            self._correlate(alert)
        return dict(alert)

    def _correlate(self, alert: dict[str, Any]) -> None:
        """Defender groups the alert into the device's open incident (or a new one)."""
        machine_id = alert["machineId"]
        incident = next(
            (i for i in self.incidents.values() if i["machineId"] == machine_id and i["status"] == "Active"), None
        )
        if incident is None:
            incident = {
                "incidentId": 1000 + len(self.incidents) + 1,
                "machineId": machine_id,
                "status": "Active",
                "tags": [],
                "createdTime": format_time(self.clock.now()),
            }
            self.incidents[str(incident["incidentId"])] = incident
        alert["incidentId"] = incident["incidentId"]

    def list_alerts(self, odata_filter: str | None, top: int | None) -> list[dict[str, Any]]:
        if top is not None and not 0 < top <= 10000:
            raise ApiError(400, "InvalidInput", "$top must be between 1 and 10000.")
        now = self.clock.now()
        for alert in self.alerts:
            due = self.pending_incidents.get(alert["id"])
            if due is not None and due <= now:
                del self.pending_incidents[alert["id"]]
                self._correlate(alert)
        match = compile_filter(odata_filter, FILTERABLE_ALERT_FIELDS) if odata_filter else (lambda a: True)
        listed = now - timedelta(seconds=self.faults.index_delay)  # not indexed yet: not listed
        found = [dict(a) for a in self.alerts if parse_time(a["alertCreationTime"]) <= listed and match(a)]
        return found[:top] if top else found

    def update_alert(self, alert_id: str, body: Any) -> dict[str, Any]:
        alert = next((a for a in self.alerts if a["id"] == alert_id), None)
        if alert is None:
            raise ApiError(404, "ResourceNotFound", f"Alert {alert_id} was not found.")
        if not isinstance(body, dict) or not body:
            raise ApiError(400, "InvalidRequestBody", "Request body must be a JSON object.")
        allowed = {"status": ALERT_STATUSES, "classification": CLASSIFICATIONS, "determination": DETERMINATIONS}
        for key, value in body.items():
            if key not in ("status", "assignedTo", "classification", "determination", "comment"):
                raise ApiError(400, "InvalidInput", f"Property '{key}' cannot be updated.")
            if key in allowed and value not in allowed[key]:
                raise ApiError(400, "InvalidInput", f"Invalid value '{value}' for {key}.")
        now = format_time(self.clock.now())
        for key, value in body.items():
            if key == "comment":
                alert["comments"].append({"comment": str(value), "createdBy": "API", "createdTime": now})
            else:
                alert[key] = value
        alert["lastUpdateTime"] = now
        return dict(alert)

    def find_by_ip(self, ip: str, timestamp: str) -> list[dict[str, Any]]:
        try:
            when = parse_time(timestamp)
        except ValueError:
            raise ApiError(400, "InvalidInput", "Invalid timestamp.") from None
        if self.clock.now() - when > RETENTION:
            raise ApiError(400, "InvalidInput", "The timestamp must be within the last 30 days.")
        out = []
        for m in self.machines:
            for seen in m.get("ip_history", []):
                if seen["ip"] == ip and parse_time(seen["from"]) - timedelta(minutes=15) <= when <= parse_time(
                    seen["to"]
                ) + timedelta(minutes=15):
                    out.append(_public(m))
                    break
        return out
