"""Every KQL query the infra ships — the hunting, dashboard and detection queries, the workbook's
tiles and the alert rules — parses and binds against the real table schemas, checked by Microsoft's
own Kusto parser (``@kusto/language-service-next``, run in Node offline by tools/kusto/check.js):
a misspelt column, an unknown table or a type mismatch fails here instead of in Azure."""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
from typing import Any

import pytest

from shared.hunting import COLUMNS, TABLE
from tests.support import ROOT

pytestmark = pytest.mark.infra

KQL_DIR = ROOT / "infra" / "kql"
KUSTO = ROOT / "tools" / "kusto"

# Schemas as Azure Monitor documents them (learn.microsoft.com/azure/azure-monitor/reference/tables,
# Defender XDR's advanced hunting schema reference); the custom table as the DCR declares it.
_APP_COMMON = (
    "TenantId:string, TimeGenerated:datetime, OperationName:string, OperationId:string, ParentId:string, "
    "SyntheticSource:string, SessionId:string, UserId:string, UserAuthenticatedId:string, UserAccountId:string, "
    "AppVersion:string, AppRoleName:string, AppRoleInstance:string, ClientType:string, ClientModel:string, "
    "ClientOS:string, ClientIP:string, ClientCity:string, ClientStateOrProvince:string, "
    "ClientCountryOrRegion:string, ClientBrowser:string, ResourceGUID:string, IKey:string, SDKVersion:string, "
    "ItemCount:int, Properties:dynamic, SourceSystem:string, Type:string, _ResourceId:string"
)
TABLES: dict[str, str] = {
    TABLE: "(" + ", ".join(f"{name}:{kind}" for name, kind in COLUMNS) + ")",
    "DeviceNetworkInfo": (
        "(Timestamp:datetime, DeviceId:string, DeviceName:string, NetworkAdapterName:string, MacAddress:string, "
        "NetworkAdapterType:string, NetworkAdapterStatus:string, TunnelType:string, ConnectedNetworks:dynamic, "
        "DnsAddresses:dynamic, IPv4Dhcp:string, IPv6Dhcp:string, DefaultGateways:dynamic, IPAddresses:dynamic, "
        "NetworkAdapterVendor:string, ReportId:long, MachineGroup:string)"
    ),
    "AppMetrics": f"({_APP_COMMON}, Name:string, Sum:real, Min:real, Max:real)",
    "AppRequests": (
        f"({_APP_COMMON}, Id:string, Name:string, Source:string, Url:string, Success:bool, ResultCode:string, "
        "DurationMs:real, PerformanceBucket:string, Measurements:dynamic, ReferencedItemId:string, "
        "ReferencedType:string)"
    ),
    "AppDependencies": (
        f"({_APP_COMMON}, Id:string, Name:string, Target:string, DependencyType:string, Data:string, "
        "Success:bool, ResultCode:string, DurationMs:real, PerformanceBucket:string, Measurements:dynamic)"
    ),
}


def shipped_queries() -> dict[str, str]:
    """Every query the infra deploys, by where it comes from."""
    out = {f"kql/{p.name}": p.read_text() for p in sorted(KQL_DIR.glob("*.kql"))}
    alerts = json.loads((ROOT / "infra" / "alerts" / "rules.json").read_text())
    for rule in [*alerts["rules"], alerts["noEvents"]]:
        out[f"alert/{rule['name']}"] = rule["query"]
    workbook = json.loads((ROOT / "infra" / "workbook" / "noxys-workbook.json").read_text())
    for item in _items(workbook):
        if item.get("type") == 3:
            out[f"workbook/{item['name']}"] = item["content"]["query"]
    return out


def _items(node: dict[str, Any]) -> list[dict[str, Any]]:
    """The workbook's items, groups included."""
    found = []
    for item in node.get("items", []) + node.get("content", {}).get("items", []):
        found += [item, *_items(item)]
    return found


@functools.cache
def _node() -> str:
    exe = shutil.which("node")
    if exe is None or not (KUSTO / "node_modules" / "@kusto" / "language-service-next").is_dir():
        pytest.fail("the Kusto parser is not installed: run scripts/bootstrap.sh --infra")
    return exe


def diagnostics(queries: dict[str, str], tables: dict[str, str] | None = None) -> dict[str, list[dict[str, Any]]]:
    """The Kusto parser's diagnostics (errors and warnings) of each query."""
    doc = json.dumps({"tables": tables or TABLES, "queries": queries})
    done = subprocess.run(
        [_node(), "check.js"], input=doc, cwd=KUSTO, capture_output=True, text=True, timeout=120, check=True
    )
    found: dict[str, list[dict[str, Any]]] = json.loads(done.stdout)
    return found


@functools.cache
def _shipped_diagnostics() -> dict[str, list[dict[str, Any]]]:
    return diagnostics(shipped_queries())


@pytest.mark.parametrize("where", sorted(shipped_queries()))
def test_each_shipped_query_parses_and_binds(where: str) -> None:
    problems = [d for d in _shipped_diagnostics()[where] if d["severity"] == "Error"]
    assert problems == [], shipped_queries()[where]


def test_every_kind_of_query_is_checked() -> None:
    kinds = {where.split("/")[0] for where in shipped_queries()}
    assert kinds == {"kql", "alert", "workbook"}


def test_the_parser_catches_what_azure_would_refuse() -> None:
    found = diagnostics(
        {
            "misspelt": f"{TABLE} | where RiskScor > 0.8 | project DeviceId",
            "unknown_table": "customMetric | take 1",
            "type": 'AppRequests | where Success == "false" | where DurationMs > now()',
            "syntax": "AppMetrics | where Name ==",
            "fine": f"{TABLE} | where RiskScore > 0.8 | project DeviceId",
        }
    )
    errors = {k: [d["message"] for d in v if d["severity"] == "Error"] for k, v in found.items()}
    assert "RiskScor" in errors["misspelt"][0]
    assert "customMetric" in errors["unknown_table"][0]
    assert errors["type"] and errors["syntax"] and errors["fine"] == []


def test_code_and_deployed_stream_declare_the_same_columns() -> None:
    deployed = json.loads((ROOT / "infra" / "hunting" / "columns.json").read_text())
    assert [(c["name"], c["type"]) for c in deployed] == list(COLUMNS)


def test_workbook_is_built_from_the_current_queries() -> None:
    from tools.workbook import OUT, build

    assert json.loads(OUT.read_text()) == build()
