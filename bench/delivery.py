"""What one delivery costs, per outcome: storage round trips (queue and table calls to Azurite)
and Defender calls (seen by the emulator), for an event that leads and creates an alert, a
follower coalesced into it, an event with no device, and a duplicate. Asserts nothing.

    .venv/bin/python -m bench.delivery
"""

from __future__ import annotations

import base64
import json
import os
import re
import sys
import tempfile
import threading
import urllib.parse
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from azure.core.pipeline.transport import RequestsTransport  # noqa: E402 - after the path is set

from shared import wiring  # noqa: E402
from shared.clock import ManualClock  # noqa: E402
from shared.events import parse_events  # noqa: E402
from shared.functions.forward import process  # noqa: E402
from shared.tasks import QueuedEvent  # noqa: E402
from tools import azurite  # noqa: E402
from tools.emulator.server import EmulatorServer  # noqa: E402
from tools.emulator.state import DefenderState  # noqa: E402

DAY = datetime(2026, 3, 20, 18, 0, tzinfo=UTC)
SECRET = "whsec_" + base64.b64encode(b"delivery-benchmark-signing-key1").decode()


def _kind(request: Any) -> str:
    """A request as "METHOD resource": the table (without its key) or the queue path."""
    path = urllib.parse.urlsplit(request.url).path.split("/")[2:]  # after the account name
    resource = "/".join(path)
    if path and "(" in path[0]:
        resource = path[0].split("(")[0]
        resource += "" if path[0].endswith("()") else " (one row)"
    elif path and path[0] == "$batch":
        resource = "$batch"
    return f"{request.method} {re.sub(r'/messages/[0-9a-f-]+', '/messages/<id>', resource)}"


class StorageCalls:
    """Counts the HTTP requests the Azure SDK clients send (every queue and table operation)."""

    def __init__(self) -> None:
        self.count = 0
        self.by_kind: Counter[str] = Counter()  # "GET Ledger", "POST queue storm/messages", …
        self.empty_polls = 0  # receives that found the queue empty: the host's polling, paid per second, not per event
        self._lock = threading.Lock()
        self._original = RequestsTransport.send

    def __enter__(self) -> StorageCalls:
        counter = self

        def send(transport: RequestsTransport, request: Any, **kwargs: Any) -> Any:
            response = counter._original(transport, request, **kwargs)
            kind = _kind(request)
            empty = kind.startswith("GET ") and kind.endswith("/messages") and b"<QueueMessage>" not in response.body()
            with counter._lock:
                counter.count += 1
                counter.by_kind[kind] += 1
                counter.empty_polls += empty
            return response

        RequestsTransport.send = send
        return self

    def __exit__(self, *exc: object) -> None:
        RequestsTransport.send = self._original


@contextmanager
def stack() -> Iterator[EmulatorServer]:
    with tempfile.TemporaryDirectory(prefix="noxys-bench-delivery-") as tmp:
        store = azurite.start(location=Path(tmp) / "azurite", in_memory=True)
        clock = ManualClock(DAY)
        emulator = EmulatorServer(DefenderState(clock=clock), ca_file=Path(tmp) / "ca.pem").start()
        emulator.state.token_lifetime = 30 * 86400
        run = uuid.uuid4().hex[:8]
        os.environ.update(
            {
                "AzureWebJobsStorage": store.connection_string,
                "EVENTS_QUEUE_NAME": f"dl-{run}",
                "EVENTS_PRIORITY_QUEUE_NAME": f"dl-{run}-priority",
                "TABLE_PREFIX": f"D{run}",
                "NOXYS_SIGNING_SECRET": SECRET,
                "EVENT_MAX_PAST_DAYS": "3650",
                **emulator.connector_settings(),
            }
        )
        wiring.reset()
        wiring.use(clock=clock)
        try:
            yield emulator
        finally:
            wiring.reset()
            emulator.stop()
            store.stop()


def _message(i: int, host: str, policy: str) -> str:
    doc: dict[str, Any] = json.loads((ROOT / "samples" / "events" / "policy_violated.json").read_text())
    doc["id"] = f"evt_dl_{i:04d}"
    it = doc["data"]["interaction"]
    it["device"], it["content_metadata"] = {"hostname": host}, {}
    doc["created_at"] = it["occurred_at"] = DAY.strftime("%Y-%m-%dT%H:%M:%SZ")
    doc["data"]["policy"] = {"id": policy, "name": f"Policy {policy}", "action": "block"}
    (event,) = parse_events(json.dumps(doc).encode())
    return QueuedEvent.new(event, DAY).to_text()


def _cost(emulator: EmulatorServer, text: str) -> dict[str, Any]:
    """One delivery's own round trips. Not among them: the outcome counter (summed in memory, one
    write per counter per flush) and the event's pattern observations, written behind in each
    partition's transactions of up to 100 rows (reported as rows, not round trips)."""
    wiring.flush()
    before = len(emulator.state.calls)
    with StorageCalls() as storage:
        outcome = process(text)
    api = [c["path"].split("?")[0] for c in emulator.state.calls[before:]]
    return {
        "outcome": outcome.kind.value,
        "storage round trips": storage.count,
        "Defender calls": len(api),
        "rows written behind": wiring.patterns().waiting(),
    }


def run() -> dict[str, dict[str, Any]]:
    with stack() as emulator:
        wiring.settings()  # settings, clients and tokens built outside the measurement
        process(_message(0, "DAVE-MBP", "warm-up"))  # a first delivery builds clients and gets tokens
        return {
            "leader, device not cached (creates the alert)": _cost(emulator, _message(1, "ALICE-LAPTOP", "pol_a")),
            "leader, device cached (creates the alert)": _cost(emulator, _message(2, "ALICE-LAPTOP", "pol_b")),
            "first coalesced follower (schedules the note)": _cost(emulator, _message(3, "ALICE-LAPTOP", "pol_a")),
            "coalesced follower": _cost(emulator, _message(5, "ALICE-LAPTOP", "pol_a")),
            "no device": _cost(emulator, _message(4, "NOT-ONBOARDED-PC", "pol_a")),
            "duplicate (redelivered)": _cost(emulator, _message(1, "ALICE-LAPTOP", "pol_a")),
        }


def main() -> int:
    print(json.dumps(run(), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
