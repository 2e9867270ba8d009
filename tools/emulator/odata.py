"""The slice of OData ``$filter`` the Defender APIs document, compiled to a predicate.

Supported: ``<field> <op> <literal>`` with ``eq ne gt ge lt le`` (a quoted string, an unquoted
GUID or an unquoted ISO datetime), and ``startswith(<field>,'<text>')``, joined by ``and``/``or``
(no parentheses). Anything else is a 400, as the real API answers a filter it cannot apply: a
query the connector sends that the emulator cannot parse is a bug worth seeing.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from typing import Any

from tools.emulator.common import ApiError, parse_time

MACHINE_FIELDS = frozenset(
    {
        "id",
        "computerDnsName",
        "aadDeviceId",
        "lastIpAddress",
        "healthStatus",
        "osPlatform",
        "riskScore",
        "exposureLevel",
        "rbacGroupId",
        "lastSeen",
    }
)
ALERT_FIELDS = frozenset(
    {
        "alertCreationTime",
        "lastUpdateTime",
        "incidentId",
        "investigationId",
        "id",
        "assignedTo",
        "detectionSource",
        "lastEventTime",
        "status",
        "severity",
        "category",
    }
)
DATETIME_FIELDS = frozenset({"lastSeen", "alertCreationTime", "lastUpdateTime", "lastEventTime"})

_LIT = r"'((?:[^']|'')*)'|([0-9A-Za-z:.\-+]+)"
_CMP = re.compile(rf"^\s*(\w+)\s+(eq|ne|gt|ge|lt|le)\s+(?:{_LIT})\s*$")
_STARTS = re.compile(rf"^\s*startswith\(\s*(\w+)\s*,\s*(?:{_LIT})\s*\)\s*$")

Predicate = Callable[[dict[str, Any]], bool]
_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "eq": lambda a, b: a == b,
    "ne": lambda a, b: a != b,
    "gt": lambda a, b: a > b,
    "ge": lambda a, b: a >= b,
    "lt": lambda a, b: a < b,
    "le": lambda a, b: a <= b,
}


def _value(field: str, text: str) -> Any:
    if field in DATETIME_FIELDS:
        try:
            return parse_time(text)
        except ValueError:
            raise ApiError(400, "InvalidInput", f"Invalid datetime literal for {field}.") from None
    return text


def _have(entity: dict[str, Any], field: str) -> Any:
    raw = entity.get(field)
    if field in DATETIME_FIELDS:
        return parse_time(str(raw)) if raw else datetime.min.replace(tzinfo=None)
    return "" if raw is None else str(raw)


def _compare(field: str, op: str, value: Any) -> Predicate:
    test = _OPS[op]

    def predicate(entity: dict[str, Any]) -> bool:
        have = _have(entity, field)
        try:
            return test(have, value)
        except TypeError:
            return False

    return predicate


def _starts(field: str, value: str) -> Predicate:
    def predicate(entity: dict[str, Any]) -> bool:
        return str(entity.get(field) or "").startswith(value)

    return predicate


def _term(text: str, fields: frozenset[str]) -> Predicate:
    m = _CMP.match(text)
    if m:
        field, op = m.group(1), m.group(2)
        if field not in fields:
            raise ApiError(400, "InvalidInput", f"Filtering on '{field}' is not supported.")
        raw = (m.group(3) if m.group(3) is not None else m.group(4)).replace("''", "'")
        return _compare(field, op, _value(field, raw))
    m = _STARTS.match(text)
    if m:
        field = m.group(1)
        if field not in fields:
            raise ApiError(400, "InvalidInput", f"Filtering on '{field}' is not supported.")
        return _starts(field, (m.group(2) if m.group(2) is not None else m.group(3)).replace("''", "'"))
    raise ApiError(400, "InvalidInput", "Invalid $filter expression.")


def compile_filter(text: str, fields: frozenset[str] = MACHINE_FIELDS) -> Predicate:
    ors = [[_term(t, fields) for t in re.split(r"\s+and\s+", part)] for part in re.split(r"\s+or\s+", text)]
    return lambda m: any(all(t(m) for t in ands) for ands in ors)
