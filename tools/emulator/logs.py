"""The Logs Ingestion API (Data Collection Endpoint), emulated for the hunting table.

``POST {endpoint}/dataCollectionRules/{dcr immutable id}/streams/{stream}?api-version=2023-01-01``
with a JSON array (gzip-encoded by the SDK). Enforced as documented: a body over 1 MB is 413;
every row is checked against the stream's declared columns and their types (400 naming the
column); the caller's identity needs *Monitoring Metrics Publisher* on the DCR (403); 429 with
``Retry-After`` on demand. Accepted rows are kept for inspection.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from tools.emulator.common import ApiError, Core

MONITOR_AUDIENCE = "https://monitor.azure.com"
# The stream declaration the Bicep and Terraform DCRs deploy (loadJsonContent / jsondecode).
COLUMNS_FILE = Path(__file__).resolve().parents[2] / "infra" / "hunting" / "columns.json"


def declared_columns() -> dict[str, str]:
    return {c["name"]: c["type"] for c in json.loads(COLUMNS_FILE.read_text())}


MAX_BODY = 1024 * 1024


@dataclass
class LogsState:
    dcr_id: str = "dcr-00000000000000000000000000000001"
    stream: str = "Custom-NoxysInteractions"
    columns: dict[str, str] = field(default_factory=dict)
    publishers: set[str] = field(default_factory=set)
    rows: list[dict[str, Any]] = field(default_factory=list)
    calls: list[dict[str, Any]] = field(default_factory=list)
    burst_429: int = 0
    retry_after: int = 5
    outage: bool = False  # answer 503 to everything


def _type_ok(kind: str, value: Any) -> bool:
    if value is None:
        return True
    if kind == "string":
        return isinstance(value, str)
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "real":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "datetime":
        try:
            datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            return False
        return True
    return kind == "dynamic"


def ingest(
    state: Core,
    logs: LogsState,
    dcr: str,
    stream: str,
    headers: dict[str, str],
    body: bytes,
    api_version: str | None,
) -> None:
    """POST {endpoint}/dataCollectionRules/{dcr}/streams/{stream}: the documented checks, in order."""
    claims = _authorize(state, headers.get("Authorization", ""))
    if not api_version:
        raise ApiError(400, "InvalidApiVersion", "api-version is required.")
    if dcr != logs.dcr_id or stream != logs.stream:
        raise ApiError(404, "NotFound", f"Data collection rule {dcr} or stream {stream} was not found.")
    if claims.get("oid") not in logs.publishers:
        raise ApiError(
            403,
            "OperationFailed",
            "The authentication token provided does not have access to ingest data "
            "for the data collection rule (Monitoring Metrics Publisher is required).",
        )
    _faults(logs)
    if len(body) > MAX_BODY:
        raise ApiError(413, "ContentLengthLimitExceeded", f"The request body is {len(body)} bytes; the limit is 1 MB.")
    raw = gzip.decompress(body) if headers.get("Content-Encoding", "").lower() == "gzip" else body
    rows = _rows(logs, stream, raw)
    logs.rows.extend(rows)
    logs.calls.append({"bytes": len(body), "raw_bytes": len(raw), "rows": len(rows)})


def _authorize(state: Core, auth: str) -> dict[str, Any]:
    import jwt

    if not auth.startswith("Bearer "):
        raise ApiError(401, "InvalidToken", "An authorization token is required.")
    try:
        claims: dict[str, Any] = jwt.decode(
            auth[7:], state.signing_key, algorithms=["HS256"], options={"verify_aud": False, "verify_exp": False}
        )
    except jwt.PyJWTError:
        raise ApiError(401, "InvalidToken", "The token is invalid.") from None
    if claims.get("aud") != MONITOR_AUDIENCE:
        raise ApiError(401, "InvalidToken", "The token audience is not https://monitor.azure.com.")
    return claims


def _faults(logs: LogsState) -> None:
    if logs.outage:
        raise ApiError(503, "ServiceUnavailable", "The service is temporarily unavailable.")
    if logs.burst_429 > 0:
        logs.burst_429 -= 1
        raise ApiError(429, "TooManyRequests", "Request rate is too high.", retry_after=logs.retry_after)


def _rows(logs: LogsState, stream: str, raw: bytes) -> list[dict[str, Any]]:
    """The body as rows, every column declared in the stream and of its declared type."""
    try:
        rows = json.loads(raw)
    except ValueError:
        raise ApiError(400, "InvalidContent", "The body is not a JSON array.") from None
    if not isinstance(rows, list):
        raise ApiError(400, "InvalidContent", "The body must be a JSON array of rows.")
    for i, r in enumerate(rows):
        if not isinstance(r, dict):
            raise ApiError(400, "InvalidContent", f"Row {i} is not an object.")
        for name, value in r.items():
            if name not in logs.columns:
                raise ApiError(400, "InvalidStream", f"Row {i}: column '{name}' is not declared in stream {stream}.")
            if not _type_ok(logs.columns[name], value):
                raise ApiError(400, "InvalidStream", f"Row {i}: column '{name}' is not of type {logs.columns[name]}.")
    return rows
