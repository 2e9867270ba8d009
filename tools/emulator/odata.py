"""The slice of OData ``$filter`` that /api/machines documents, compiled to a predicate.

Supported: ``<field> eq '<text>'`` (or an unquoted GUID), ``startswith(<field>,'<text>')``,
joined by ``and``/``or`` (no parentheses). Anything else is a 400, as the real API answers a
filter it cannot apply: a query the connector sends that the emulator cannot parse is a bug.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from tools.emulator.state import ApiError

FIELDS = {
    "id",
    "computerDnsName",
    "aadDeviceId",
    "lastIpAddress",
    "healthStatus",
    "osPlatform",
    "riskScore",
    "exposureLevel",
    "rbacGroupId",
}
_LIT = r"'((?:[^']|'')*)'|([0-9a-fA-F-]{36})"
_EQ = re.compile(rf"^\s*(\w+)\s+eq\s+(?:{_LIT})\s*$")
_STARTS = re.compile(rf"^\s*startswith\(\s*(\w+)\s*,\s*(?:{_LIT})\s*\)\s*$")

Predicate = Callable[[dict[str, Any]], bool]


def _compare(name: str, value: str, *, starts: bool) -> Predicate:
    def test(machine: dict[str, Any]) -> bool:
        have = str(machine.get(name) or "")
        return have.startswith(value) if starts else have == value

    return test


def _term(text: str) -> Predicate:
    for pattern, op in ((_EQ, "eq"), (_STARTS, "startswith")):
        m = pattern.match(text)
        if m:
            name = m.group(1)
            if name not in FIELDS:
                raise ApiError(400, "InvalidInput", f"Filtering on '{name}' is not supported.")
            value = (m.group(2) if m.group(2) is not None else m.group(3)).replace("''", "'")
            return _compare(name, value, starts=op == "startswith")
    raise ApiError(400, "InvalidInput", "Invalid $filter expression.")


def compile_filter(text: str) -> Predicate:
    ors = [[_term(t) for t in re.split(r"\s+and\s+", part)] for part in re.split(r"\s+or\s+", text)]
    return lambda m: any(all(t(m) for t in ands) for ands in ors)
