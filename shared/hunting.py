"""Rows for the ``NoxysInteractions_CL`` hunting table (pure).

The columns are declared once, here: the Data Collection Rule's stream declaration in Bicep and
Terraform, the table schema, the Logs Ingestion emulator and the KQL checks all compare against
:data:`COLUMNS`. They are chosen for the seed's query (``NoxysInteractions | where RiskScore >
0.8 | join (DeviceNetworkInfo) on DeviceId``): ``DeviceId`` is Defender's machine id, so joins
with every ``Device*`` table work, and ``UserPrincipalName`` matches Defender's column of that
name. ``PiiTypes`` holds type codes only — never a PII value, never prompt text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shared import pii, platforms
from shared.events import Envelope

# (column, Log Analytics type) in table order
COLUMNS: tuple[tuple[str, str], ...] = (
    ("TimeGenerated", "datetime"),
    ("EventId", "string"),
    ("EventType", "string"),
    ("InteractionId", "string"),
    ("Platform", "string"),
    ("PlatformDomain", "string"),
    ("RiskScore", "real"),
    ("PolicyName", "string"),
    ("PolicyAction", "string"),
    ("PiiTypes", "dynamic"),
    ("PiiCount", "int"),
    ("ClassificationLevel", "string"),
    ("UserPrincipalName", "string"),
    ("DeviceName", "string"),
    ("DeviceId", "string"),
    ("AadDeviceId", "string"),
    ("DefenderAlertId", "string"),
    ("Direction", "string"),
    ("Source", "string"),
    ("NoxysAlertId", "string"),
    ("NoxysAlertSeverity", "string"),
    ("Correlation", "string"),
    ("ResolvedBy", "string"),
    ("AlertDelaySeconds", "real"),
    ("CombinedRiskScore", "real"),
    ("RiskFactors", "dynamic"),
)
TABLE = "NoxysInteractions_CL"
STREAM = "Custom-NoxysInteractions"


def _iso(event: Envelope) -> str:
    return event.occurred_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class Delivered:
    """What delivery learned about the event (from its ledger entry), when it is known."""

    machine_id: str | None = None
    alert_id: str | None = None
    correlation: str = ""  # the ledger state: alert_created, coalesced, no_device, no_anchor, …
    resolved_by: str = ""  # aadDeviceId, fqdn, hostname or ip
    delay_seconds: float | None = None  # webhook → alert, for the event that raised it
    combined_risk: float | None = None
    risk_factors: list[dict[str, Any]] | None = None  # [{factor, value, weight}]: types and counts only


def row(event: Envelope, delivered: Delivered | None = None) -> dict[str, Any]:
    """One row per event, with what delivery learned when it is known."""
    d = delivered or Delivered()
    it = event.data.interaction if event.kind != "alert" else None
    al = event.data.alert if event.kind == "alert" else None
    policy = event.data.policy
    url = it.content_metadata.url if it and it.content_metadata else None
    platform = platforms.resolve(event.platform_id, it.platform_name if it else None)
    classifications = it.classifications if it else []
    device = event.device
    return {
        "TimeGenerated": _iso(event),
        "EventId": event.id,
        "EventType": event.type,
        "InteractionId": (it.id if it else None) or "",
        "Platform": platform.name,
        "PlatformDomain": platform.domains[0] if platform.domains else (platforms.reported_host(url) or ""),
        "RiskScore": event.risk_score,
        "PolicyName": (policy.name or policy.id or "") if policy else "",
        "PolicyAction": (policy.action or "") if policy else "",
        "PiiTypes": pii.type_codes(classifications),
        "PiiCount": len(classifications),
        "ClassificationLevel": (it.classification_level if it else None) or "",
        "UserPrincipalName": event.user_email or "",
        "DeviceName": (device.fqdn or device.hostname or "").lower() if device else "",
        "DeviceId": d.machine_id or "",
        "AadDeviceId": (device.aad_device_id or "") if device else "",
        "DefenderAlertId": d.alert_id or "",
        "Direction": (it.direction if it else None) or "",
        "Source": (it.source if it else None) or "",
        "NoxysAlertId": (al.id if al else None) or "",
        "NoxysAlertSeverity": (al.severity if al else None) or "",
        "Correlation": d.correlation,
        "ResolvedBy": d.resolved_by,
        "AlertDelaySeconds": d.delay_seconds,
        "CombinedRiskScore": d.combined_risk,
        "RiskFactors": d.risk_factors or [],
    }
