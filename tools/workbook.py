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
        items.append(
            {
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
                "name": f"query-{i}",
            }
        )
    return {
        "version": "Notebook/1.0",
        "items": items,
        "isLocked": False,
        "fallbackResourceIds": [],
        "$schema": "https://github.com/Microsoft/Application-Insights-Workbooks/blob/master/schema/workbook.json",
    }


def main() -> int:
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(build(), indent=2) + "\n")
    print(f"wrote {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
