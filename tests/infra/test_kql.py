"""The shipped KQL only uses columns the table (or the Defender table it joins) declares."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from shared.hunting import COLUMNS, TABLE
from tests.support import ROOT

pytestmark = pytest.mark.infra

KQL_DIR = ROOT / "infra" / "kql"
DEFENDER_TABLES = {
    "DeviceNetworkInfo": {
        "Timestamp",
        "DeviceId",
        "DeviceName",
        "IPAddresses",
        "ConnectedNetworks",
        "MacAddress",
        "NetworkAdapterType",
        "NetworkAdapterStatus",
        "ReportId",
    },
}


def undeclared(kql: str) -> set[str]:
    text = re.sub(r"//[^\n]*", "", kql)
    text = re.sub(r'"[^"]*"|\'[^\']*\'', '""', text)
    idents = set(re.findall(r"\b[A-Z][A-Za-z0-9_]*\b", text))
    defined = set(re.findall(r"\b([A-Z][A-Za-z0-9_]*)\s*=(?!=)", text))
    allowed = {name for name, _ in COLUMNS} | defined | {TABLE} | set(DEFENDER_TABLES)
    for table, columns in DEFENDER_TABLES.items():
        if table in idents:
            allowed |= columns
    return idents - allowed


@pytest.mark.parametrize("path", sorted(KQL_DIR.glob("*.kql")), ids=lambda p: p.name)
def test_each_query_uses_only_declared_columns(path: Path) -> None:
    kql = path.read_text()
    assert TABLE in kql
    assert undeclared(kql) == set()


def test_checker_catches_a_misspelt_column() -> None:
    assert undeclared(f"{TABLE} | where RiskScor > 0.8 | project DeviceId") == {"RiskScor"}


def test_code_and_deployed_stream_declare_the_same_columns() -> None:
    deployed = json.loads((ROOT / "infra" / "hunting" / "columns.json").read_text())
    assert [(c["name"], c["type"]) for c in deployed] == list(COLUMNS)


def test_workbook_is_built_from_the_current_queries() -> None:
    from tools.workbook import OUT, build

    assert json.loads(OUT.read_text()) == build()
