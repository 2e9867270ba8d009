"""Microsoft Graph security and the Defender XDR incidents API: incidents (read, tag) and the
beta ``createAlert``."""

from __future__ import annotations

from typing import Any

from tools.emulator.base import Base
from tools.emulator.common import ApiError, format_time

# Graph's createAlert takes a MITRE ATT&CK tactic as its category (not MDE's categories).
MITRE_TACTICS = (
    "Reconnaissance",
    "ResourceDevelopment",
    "InitialAccess",
    "Execution",
    "Persistence",
    "PrivilegeEscalation",
    "DefenseEvasion",
    "CredentialAccess",
    "Discovery",
    "LateralMovement",
    "Collection",
    "CommandAndControl",
    "Exfiltration",
    "Impact",
)
ENTITY_FIELDS = ("entityType", "entityIdentifier", "identifierValue")
GRAPH_SEVERITIES = ("informational", "low", "medium", "high")


class Graph(Base):
    def incident(self, incident_id: str) -> dict[str, Any]:
        found = self.incidents.get(str(incident_id))
        if found is None:
            raise ApiError(404, "ResourceNotFound", f"Incident {incident_id} was not found.")
        return found

    def graph_incident(self, incident_id: str) -> dict[str, Any]:
        i = self.incident(incident_id)
        return {
            "id": str(i["incidentId"]),
            "status": "active",
            "customTags": list(i["tags"]),
            "createdDateTime": i["createdTime"],
            "displayName": f"Incident on {i['machineId'][:8]}",
        }

    def set_tags(self, incident_id: str, tags: Any) -> None:
        if not isinstance(tags, list) or not all(isinstance(t, str) and t for t in tags):
            raise ApiError(400, "InvalidInput", "Tags must be a list of non-empty strings.")
        self.incident(incident_id)["tags"] = list(tags)

    def graph_create_alert(self, body: Any) -> dict[str, Any]:
        data = body.get("createAlertInput") if isinstance(body, dict) else None
        if not isinstance(data, dict):
            raise ApiError(400, "BadRequest", "createAlertInput is required.")
        for name in ("title", "severity", "description", "category"):
            if not data.get(name):
                raise ApiError(400, "BadRequest", f"createAlertInput.{name} is required.")
        if data["category"] not in MITRE_TACTICS:
            raise ApiError(
                400, "BadRequest", f"createAlertInput.category '{data['category']}' is not a MITRE ATT&CK tactic."
            )
        entities = data.get("entityDefinitions")
        if not isinstance(entities, list) or not entities:
            raise ApiError(400, "BadRequest", "createAlertInput.entityDefinitions is required (at least one entity).")
        for i, entity in enumerate(entities):
            missing = [k for k in ENTITY_FIELDS if not (isinstance(entity, dict) and entity.get(k))]
            if missing:
                raise ApiError(400, "BadRequest", f"createAlertInput.entityDefinitions[{i}].{missing[0]} is required.")
        if data["severity"] not in GRAPH_SEVERITIES:
            raise ApiError(400, "BadRequest", f"Invalid severity '{data['severity']}'.")
        alert = {"id": f"ga{len(self.graph_alerts) + 1:08d}", **data, "createdDateTime": format_time(self.clock.now())}
        self.graph_alerts.append(alert)
        return alert
