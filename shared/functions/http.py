"""JSON responses for the HTTP functions."""

from __future__ import annotations

import json
from typing import Any

import azure.functions as func


def json_response(status: int, body: dict[str, Any]) -> func.HttpResponse:
    return func.HttpResponse(
        json.dumps(body, ensure_ascii=False),
        status_code=status,
        mimetype="application/json",
        charset="utf-8",
    )
