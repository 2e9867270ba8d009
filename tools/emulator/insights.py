"""Application Insights ingestion (the "Breeze" track endpoint), emulated: what the Azure Monitor
OpenTelemetry exporter sends, checked as the service documents it, and kept for inspection.

``POST {IngestionEndpoint}/v2.1/track`` with a JSON array of envelopes (or one envelope per line;
gzip when ``Content-Encoding: gzip``). Enforced as documented:

- the resource refuses local authentication (``DisableLocalAuth``, as the infra deploys it): a
  Microsoft Entra token for ``https://monitor.azure.com`` is required (401), and its identity needs
  *Monitoring Metrics Publisher* on the resource (403);
- an envelope is accepted only with its ``iKey`` (the resource's instrumentation key), ``name``,
  ``time`` and ``data.baseType``/``data.baseData``; the others are answered item by item
  (``206`` with ``errors: [{index, statusCode, message}]``, or ``400`` when none is valid);
- the answer is ``{"itemsReceived", "itemsAccepted", "errors"}``.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass, field
from typing import Any

from tools.emulator.common import ApiError, Core
from tools.emulator.logs import MONITOR_AUDIENCE, _authorize  # the same Entra check as Logs Ingestion

BASE_TYPES = {
    "RequestData",
    "RemoteDependencyData",
    "MetricData",
    "MessageData",
    "ExceptionData",
    "EventData",
    "PageViewData",
    "AvailabilityData",
}


@dataclass
class InsightsState:
    instrumentation_key: str = "00000000-0000-4000-8000-00000000a11a"
    publishers: set[str] = field(default_factory=set)  # managed identities with Monitoring Metrics Publisher
    items: list[dict[str, Any]] = field(default_factory=list)
    calls: list[dict[str, Any]] = field(default_factory=list)

    def connection_string(self, url: str) -> str:
        return f"InstrumentationKey={self.instrumentation_key};IngestionEndpoint={url.rstrip('/')}/"

    def of_type(self, base_type: str) -> list[dict[str, Any]]:
        """The accepted items' ``baseData`` of one kind (``RequestData``, ``MetricData``...)."""
        return [i["data"]["baseData"] for i in self.items if i["data"]["baseType"] == base_type]


def _problem(item: Any, ikey: str) -> str | None:
    if not isinstance(item, dict):
        return "Invalid telemetry item: not an object"
    if item.get("iKey") != ikey:
        return "Invalid instrumentation key"
    for required in ("name", "time"):
        if not item.get(required):
            return f"Field '{required}' on type 'Envelope' is required but missing or empty."
    data = item.get("data")
    if (
        not isinstance(data, dict)
        or data.get("baseType") not in BASE_TYPES
        or not isinstance(data.get("baseData"), dict)
    ):
        return "Field 'data' on type 'Envelope' is required, with a known baseType and its baseData."
    return None


def track(state: Core, insights: InsightsState, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, Any]]:
    """POST /v2.1/track: authenticate, read the envelopes, accept the valid ones."""
    claims = _authorize(state, headers.get("Authorization", ""))
    if claims.get("aud") != MONITOR_AUDIENCE:  # _authorize checks it too; here it is the contract
        raise ApiError(401, "InvalidToken", "The token audience is not https://monitor.azure.com.")
    if claims.get("oid") not in insights.publishers:
        raise ApiError(403, "Forbidden", "The identity lacks Monitoring Metrics Publisher on this resource.")
    raw = gzip.decompress(body) if headers.get("Content-Encoding", "").lower() == "gzip" else body
    text = raw.decode("utf-8")
    try:
        doc = json.loads(text)
        envelopes = doc if isinstance(doc, list) else [doc]
    except ValueError:
        try:
            envelopes = [json.loads(line) for line in text.splitlines() if line.strip()]
        except ValueError:
            invalid = {"index": 0, "statusCode": 400, "message": "Invalid JSON"}
            return 400, {"itemsReceived": 0, "itemsAccepted": 0, "errors": [invalid]}
    errors = []
    for index, item in enumerate(envelopes):
        problem = _problem(item, insights.instrumentation_key)
        if problem:
            errors.append({"index": index, "statusCode": 400, "message": problem})
        else:
            insights.items.append(item)
    accepted = len(envelopes) - len(errors)
    insights.calls.append({"bytes": len(body), "items": len(envelopes), "accepted": accepted})
    status = 200 if not errors else 206 if accepted else 400
    return status, {"itemsReceived": len(envelopes), "itemsAccepted": accepted, "errors": errors}
