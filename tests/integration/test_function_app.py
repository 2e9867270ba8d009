"""Importing function_app registers exactly the expected functions and bindings, cheaply."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.support import ROOT

INDEX = """
import json, function_app
out = {}
for f in function_app.app.get_functions():
    out[f.get_function_name()] = [
        {k: (v.value if hasattr(v, "value") else [getattr(m, "value", m) for m in v] if isinstance(v, list) else v)
         for k, v in b.get_dict_repr().items() if k != "direction"}
        for b in f.get_bindings()]
print(json.dumps(out))
"""


def test_registers_exactly_the_expected_functions_and_bindings() -> None:
    # Indexed in a fresh interpreter, as the Functions worker does (once per process).
    out = subprocess.run(
        [sys.executable, "-c", INDEX], cwd=ROOT, capture_output=True, text=True, check=True, timeout=60
    )
    fns = json.loads(out.stdout)
    assert set(fns) == {
        "noxys_events",
        "forward_event",
        "forward_priority_event",
        "health_check",
        "release_held_events",
        "health",
        "test_connection_endpoint",
        "ship_hunting_rows",
    }

    def trigger(name: str) -> dict[str, object]:
        spec: dict[str, object] = fns[name][0]
        return spec

    assert trigger("noxys_events") == {
        "type": "httpTrigger",
        "name": "req",
        "methods": ["POST"],
        "authLevel": "function",
        "route": "noxys/events",
    }
    assert fns["noxys_events"][1] == {"type": "http", "name": "$return"}
    assert trigger("forward_event") == {
        "type": "queueTrigger",
        "name": "msg",
        "queueName": "%EVENTS_QUEUE_NAME%",
        "connection": "AzureWebJobsStorage",
    }
    assert trigger("forward_priority_event") == {
        "type": "queueTrigger",
        "name": "msg",
        "queueName": "%EVENTS_PRIORITY_QUEUE_NAME%",
        "connection": "AzureWebJobsStorage",
    }
    assert trigger("release_held_events") == {
        "type": "timerTrigger",
        "name": "timer",
        "schedule": "0 * * * * *",
        "runOnStartup": False,
    }
    assert trigger("health") == {
        "type": "httpTrigger",
        "name": "req",
        "methods": ["GET"],
        "authLevel": "function",
        "route": "health",
    }
    assert trigger("test_connection_endpoint") == {
        "type": "httpTrigger",
        "name": "req",
        "methods": ["GET", "POST"],
        "authLevel": "admin",
        "route": "connector/test-connection",
    }
    assert trigger("ship_hunting_rows") == {
        "type": "timerTrigger",
        "name": "timer",
        "schedule": "%HUNTING_SCHEDULE%",
        "runOnStartup": False,
    }
    assert trigger("health_check") == {
        "type": "timerTrigger",
        "name": "timer",
        "schedule": "%HEALTH_SCHEDULE%",
        "runOnStartup": False,
    }


def test_import_touches_no_heavy_sdk() -> None:
    heavy = [
        "requests",
        "azure.identity",
        "azure.storage.queue",
        "azure.data.tables",
        "azure.keyvault.secrets",
        "msal",
        "azure.monitor.ingestion",
    ]
    code = f"import sys, function_app; print([m for m in {heavy!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"
