"""Build infra/workbook/noxys-workbook.json from the dashboard queries in infra/kql/.

The workbook is generated so that the queries live in one place (the .kql files) and the
deployed dashboard can never drift from them; a test checks the committed JSON is current.

    .venv/bin/python -m tools.workbook        # rewrite the JSON
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
KQL = ROOT / "infra" / "kql"
OUT = ROOT / "infra" / "workbook" / "noxys-workbook.json"
PANELS = (
    ("dashboard-ai-platform-usage.kql", "AI platform usage", "timechart"),
    ("dashboard-high-risk-rate.kql", "High-risk interaction rate (%)", "timechart"),
    ("dashboard-violations-by-platform.kql", "Policy violations by platform", "barchart"),
    ("dashboard-correlation-quality.kql", "Correlation quality (7 days)", "table"),
    ("hunting-high-risk-with-network.kql", "High-risk interactions with network context", "table"),
)


def query_text(name: str) -> str:
    lines = [li for li in (KQL / name).read_text().splitlines() if not li.lstrip().startswith("//")]
    return "\n".join(li for li in lines if not li.strip().startswith("| render")).strip()


def tile(name: str, title: str, visual: str, item: str) -> dict[str, Any]:
    """One query tile of the workbook, its query read from infra/kql/``name``."""
    return {
        "type": 3,
        "content": {
            "version": "KqlItem/1.0",
            "query": query_text(name),
            "size": 0,
            "title": title,
            "queryType": 0,
            "resourceType": "microsoft.operationalinsights/workspaces",
            "visualization": visual,
        },
        "name": item,
    }


def build() -> dict[str, Any]:
    items: list[dict[str, Any]] = [
        {
            "type": 1,
            "content": {
                "json": "## Noxys AI Firewall\nInteractions forwarded by the Noxys → Defender connector "
                "(table `NoxysInteractions_CL`). PII *types* only — never values."
            },
            "name": "title",
        }
    ]
    for i, (name, title, visual) in enumerate(PANELS):
        items.append(tile(name, title, visual, f"query-{i}"))
    items.append(health_page())
    return {
        "version": "Notebook/1.0",
        "items": items,
        "isLocked": False,
        "fallbackResourceIds": [],
        "$schema": "https://github.com/Microsoft/Application-Insights-Workbooks/blob/master/schema/workbook.json",
    }


HEALTH_PANELS = (
    ("health-events.kql", "Events in and out, by outcome", "timechart"),
    ("health-outcomes.kql", "Delivery outcomes (24 h)", "piechart"),
    ("health-latency.kql", "Webhook → alert latency, p50 and p95 (s)", "timechart"),
    ("health-quota-waits.kql", "Waits for the Defender budget", "timechart"),
    ("health-dead-letters.kql", "Dead letters and poison depth", "timechart"),
    ("health-secret-days.kql", "Days until each client secret expires", "table"),
)


def health_page() -> dict[str, Any]:
    """The connector's own health, from its OpenTelemetry metrics and spans (docs/operations.md):
    a group of its own, after the interaction tiles."""
    tiles: list[dict[str, Any]] = [
        {
            "type": 1,
            "content": {
                "json": "## Connector health\nFrom the connector's metrics and traces (Application Insights, "
                "tables `AppMetrics` and `AppRequests`); the alert rules read the same numbers."
            },
            "name": "health-title",
        }
    ]
    tiles += [tile(name, title, visual, f"health-{i}") for i, (name, title, visual) in enumerate(HEALTH_PANELS)]
    group = {"version": "NotebookGroup/1.0", "groupType": "editable", "title": "Connector health", "items": tiles}
    return {"type": 12, "content": group, "name": "connector-health"}


def main() -> int:
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(build(), indent=2) + "\n")
    print(f"wrote {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
