"""Build infra/workbook/noxys-workbook.json from the dashboard queries in infra/kql/.

The workbook is generated so that the queries live in one place (the .kql files) and the
deployed dashboard can never drift from them; a test checks the committed JSON is current.

    .venv/bin/python -m tools.workbook        # rewrite the JSON
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
KQL = ROOT / "infra" / "kql"
OUT = ROOT / "infra" / "workbook" / "noxys-workbook.json"
# Both flavours replace this with the workspace's resource id when they deploy the workbook: it
# opens on that workspace (fallbackResourceIds), and the Workspace picker can choose another.
WORKSPACE_PLACEHOLDER = "__WORKSPACE_ID__"
WORKSPACE_PARAMETER = "Workspace"


@dataclass(frozen=True)
class Panel:
    """One query tile: its .kql file (under infra/kql), its title and how it is drawn."""

    kql: str
    title: str
    visualization: str


@dataclass(frozen=True)
class Page:
    """A group of tiles under a heading; a new page (say, the connector's health) is one more entry."""

    name: str
    heading: str
    panels: tuple[Panel, ...]


PAGES: tuple[Page, ...] = (
    Page(
        "interactions",
        "## Noxys AI Firewall\nInteractions forwarded by the Noxys → Defender connector "
        "(table `NoxysInteractions_CL`). PII *types* only — never values.",
        (
            Panel("dashboard-ai-platform-usage.kql", "AI platform usage", "timechart"),
            Panel("dashboard-high-risk-rate.kql", "High-risk interaction rate (%)", "timechart"),
            Panel("dashboard-combined-risk.kql", "Above 0.8: combined score vs Noxys's score", "timechart"),
            Panel("dashboard-violations-by-platform.kql", "Policy violations by platform", "barchart"),
            Panel("dashboard-correlation-quality.kql", "Correlation quality (7 days)", "table"),
            # DeviceNetworkInfo only with the Defender XDR connector: the query guards itself
            Panel("hunting-high-risk-with-network.kql", "High-risk interactions with network context", "table"),
        ),
    ),
    Page(
        "health",
        "## Connector health\nFrom the connector's OpenTelemetry metrics and traces (Application Insights, "
        "tables `AppMetrics` and `AppRequests`); the alert rules read the same numbers. When the hunting "
        "table lives in an existing Sentinel workspace, pick the connector's own workspace above.",
        (
            Panel("health-events.kql", "Events in and out, by outcome", "timechart"),
            Panel("health-outcomes.kql", "Delivery outcomes (24 h)", "piechart"),
            Panel("health-latency.kql", "Webhook → alert latency, p50 and p95 (s)", "timechart"),
            Panel("health-quota-waits.kql", "Waits for the Defender budget", "timechart"),
            Panel("health-dead-letters.kql", "Dead letters and poison depth", "timechart"),
            Panel("health-secret-days.kql", "Days until each client secret expires", "table"),
        ),
    ),
)


def query_text(name: str) -> str:
    lines = [li for li in (KQL / name).read_text().splitlines() if not li.lstrip().startswith("//")]
    return "\n".join(li for li in lines if not li.strip().startswith("| render")).strip()


def workspace_picker() -> dict[str, Any]:
    """A workspace parameter (Sentinel's usual picker), defaulting to the first fallback resource."""
    return {
        "type": 9,
        "content": {
            "version": "KqlParameterItem/1.0",
            "parameters": [
                {
                    "id": "6f4c3c1e-3b1a-4c55-9a51-0b7f1d2a9e01",
                    "version": "KqlParameterItem/1.0",
                    "name": WORKSPACE_PARAMETER,
                    "label": "Sentinel workspace",
                    "type": 5,
                    "isRequired": True,
                    "query": "where type =~ 'microsoft.operationalinsights/workspaces'\n| project id",
                    "crossComponentResources": ["value::all"],
                    "typeSettings": {"additionalResourceOptions": ["value::1"], "showDefault": False},
                    "defaultValue": "value::1",
                    "queryType": 1,
                    "resourceType": "microsoft.resourcegraph/resources",
                }
            ],
            "style": "pills",
            "queryType": 1,
            "resourceType": "microsoft.resourcegraph/resources",
        },
        "name": "parameters",
    }


def query_item(panel: Panel, name: str) -> dict[str, Any]:
    return {
        "type": 3,
        "content": {
            "version": "KqlItem/1.0",
            "query": query_text(panel.kql),
            "size": 0,
            "title": panel.title,
            "queryType": 0,
            "resourceType": "microsoft.operationalinsights/workspaces",
            "crossComponentResources": [f"{{{WORKSPACE_PARAMETER}}}"],
            "visualization": panel.visualization,
        },
        "name": name,
    }


def build(pages: tuple[Page, ...] = PAGES) -> dict[str, Any]:
    items: list[dict[str, Any]] = [workspace_picker()]
    for page in pages:
        items.append({"type": 1, "content": {"json": page.heading}, "name": f"{page.name}-title"})
        items += [query_item(panel, f"{page.name}-{i}") for i, panel in enumerate(page.panels)]
    return {
        "version": "Notebook/1.0",
        "items": items,
        "isLocked": False,
        "fallbackResourceIds": [WORKSPACE_PLACEHOLDER],
        "$schema": "https://github.com/Microsoft/Application-Insights-Workbooks/blob/master/schema/workbook.json",
    }


def main() -> int:
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(build(), indent=2) + "\n")
    print(f"wrote {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
