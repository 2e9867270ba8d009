"""The webhook's cost against the storage operation it cannot avoid, measured side by side in one run.

In-process ``handle()`` (verify, validate, route, queue, answer) on real Azurite against a raw
``QueueClient.send_message`` of the same message: one event per request, and 100 events per
request against 100 sequential raw sends (a 100-event request is queued as a few bundles, whose
events the workers deliver: that cost is in bench.storm). Asserts nothing; prints and returns the
figures.

With ``--telemetry`` the webhook runs with OpenTelemetry on: the Azure Monitor distro configured
from ``APPLICATIONINSIGHTS_CONNECTION_STRING`` as in Azure, exporting in the background to a local
sink that answers like the ingestion endpoint (``/v2.1/track``), so the figure includes its span,
its counter, the trace context written into the message and the exporter's threads. The distro sets
process-wide providers, so :func:`with_telemetry` runs it in a fresh interpreter.

    .venv/bin/python -m bench.ingest [--requests 500] [--batches 10] [--telemetry]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from shared import wiring  # noqa: E402 - after the path is set
from shared.functions.ingest import handle  # noqa: E402
from shared.webhook import sign  # noqa: E402
from tools import azurite  # noqa: E402

SECRET = "whsec_" + base64.b64encode(b"ingest-benchmark-signing-key-001").decode()


@contextmanager
def stack() -> Iterator[azurite.Azurite]:
    with tempfile.TemporaryDirectory(prefix="noxys-bench-ingest-") as tmp:
        store = azurite.start(location=Path(tmp), in_memory=True)
        run = uuid.uuid4().hex[:8]
        os.environ.update(
            {
                "AzureWebJobsStorage": store.connection_string,
                "EVENTS_QUEUE_NAME": f"bench-{run}",
                "EVENTS_PRIORITY_QUEUE_NAME": f"bench-{run}-priority",
                "TABLE_PREFIX": f"B{run}",
                "NOXYS_SIGNING_SECRET": SECRET,
                "HEALTH_SCHEDULE": "0 0 * * * *",
                "HUNTING_SCHEDULE": "*/30 * * * * *",
            }
        )
        wiring.reset()
        try:
            yield store
        finally:
            wiring.reset()
            store.stop()


def _event(i: int) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((ROOT / "samples" / "events" / "policy_violated.json").read_text())
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    doc["id"], doc["created_at"] = f"evt_bench_{uuid.uuid4().hex}_{i}", now
    doc["data"]["interaction"]["occurred_at"] = now
    return doc


def _signed(body: bytes) -> dict[str, str]:
    ts = int(time.time())
    return {
        "Content-Type": "application/json",
        "webhook-id": "bench",
        "webhook-timestamp": str(ts),
        "webhook-signature": sign(SECRET, "bench", ts, body),
    }


def _timed(action: Callable[[], object], n: int) -> list[float]:
    out = []
    for _ in range(n):
        started = time.perf_counter()
        action()
        out.append((time.perf_counter() - started) * 1000)
    return out


def run(requests: int = 500, batches: int = 10, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    from azure.storage.queue import QueueClient, TextBase64EncodePolicy

    from shared.events import parse_events
    from shared.tasks import QueuedEvent

    with stack() as store:
        settings = wiring.settings()
        raw = QueueClient.from_connection_string(
            store.connection_string, settings.events_queue_name, message_encode_policy=TextBase64EncodePolicy()
        )
        raw.create_queue()
        single = json.dumps(_event(0)).encode()
        (event,) = parse_events(single)
        text = QueuedEvent.new(event, datetime.now(UTC)).to_text()
        for _ in range(20):  # warm both paths: clients, tokens, first-use model builds
            handle(single, _signed(single))
            raw.send_message(text)
        if progress:
            progress("one event per request")
        webhook_1, raw_1 = [], []
        for _ in range(requests):  # interleaved, so both see the same machine load
            body = json.dumps(_event(0)).encode()
            headers = _signed(body)
            webhook_1 += _timed(lambda b=body, h=headers: handle(b, h), 1)  # type: ignore[misc]
            raw_1 += _timed(lambda: raw.send_message(text), 1)
        if progress:
            progress("100 events per request")
        webhook_100, raw_100 = [], []
        for _ in range(batches):
            body = json.dumps([_event(i) for i in range(100)]).encode()
            headers = _signed(body)
            webhook_100 += _timed(lambda b=body, h=headers: handle(b, h), 1)  # type: ignore[misc]
            raw_100 += _timed(lambda: [raw.send_message(text) for _ in range(100)], 1)
        bundles = _messages_for_one_batch(raw)
    one = (statistics.median(webhook_1), statistics.median(raw_1))
    hundred = (statistics.median(webhook_100), statistics.median(raw_100))
    return {
        "webhook, 1 event (median ms)": round(one[0], 2),
        "raw enqueue, same message (median ms)": round(one[1], 2),
        "ratio, 1 event (target ≤ 1.2)": round(one[0] / one[1], 2),
        "webhook, 100 events (median ms)": round(hundred[0], 1),
        "100 sequential raw enqueues (median ms)": round(hundred[1], 1),
        "ratio, 100 events (target ≤ 0.35)": round(hundred[0] / hundred[1], 2),
        "queue messages for 100 events (bundles)": bundles,
    }


def _messages_for_one_batch(raw: Any) -> int:
    """How many queue messages one 100-event request becomes."""
    raw.clear_messages()
    body = json.dumps([_event(i) for i in range(100)]).encode()
    handle(body, _signed(body))
    count = len(raw.peek_messages(max_messages=32))
    raw.clear_messages()
    return count


@contextmanager
def ingestion_sink() -> Iterator[str]:
    """A local stand-in for Application Insights ingestion that accepts everything: the exporter's
    real HTTP traffic, without the network. Yields the connection string that points at it."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from threading import Thread

    class Sink(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            answer = b'{"itemsReceived": 0, "itemsAccepted": 0, "errors": []}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Sink)
    Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"InstrumentationKey={uuid.uuid4()};IngestionEndpoint=http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()


def run_with_telemetry(requests: int, batches: int) -> dict[str, Any]:
    """:func:`run` with the distro configured (this process), and what its first use cost."""
    from shared import telemetry

    with ingestion_sink() as connection:
        os.environ.update(
            {
                telemetry.CONNECTION_STRING: connection,
                "APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL": "true",  # no calls to Microsoft from a benchmark
                "APPLICATIONINSIGHTS_SDKSTATS_DISABLED": "true",
                "APPLICATIONINSIGHTS_CONTROLPLANE_DISABLED": "true",
            }
        )
        started = time.perf_counter()
        if not telemetry.enabled():
            raise RuntimeError("telemetry did not start: see the log")
        configured = (time.perf_counter() - started) * 1000
        found = run(requests, batches)
        telemetry.flush()
    return {
        "webhook, 1 event, telemetry on (median ms)": found["webhook, 1 event (median ms)"],
        "raw enqueue, same message (median ms)": found["raw enqueue, same message (median ms)"],
        "ratio, 1 event, telemetry on (target ≤ 1.2)": found["ratio, 1 event (target ≤ 1.2)"],
        "ratio, 100 events, telemetry on (target ≤ 0.35)": found["ratio, 100 events (target ≤ 0.35)"],
        "first use: the distro imported and configured (ms, once per process)": round(configured, 1),
    }


def with_telemetry(requests: int, batches: int) -> dict[str, Any]:
    """:func:`run_with_telemetry` in a fresh interpreter (the distro's providers are process-wide)."""
    import subprocess

    out = subprocess.run(  # noqa: S603 - this interpreter, this module
        [sys.executable, "-m", "bench.ingest", "--telemetry", "--requests", str(requests), "--batches", str(batches)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    found: dict[str, Any] = json.loads(out.stdout)
    return found


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.ingest", description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=500)
    p.add_argument("--batches", type=int, default=10)
    p.add_argument("--telemetry", action="store_true", help="with OpenTelemetry on (the Azure Monitor distro)")
    args = p.parse_args(argv)
    found = run_with_telemetry(args.requests, args.batches) if args.telemetry else run(args.requests, args.batches)
    print(json.dumps(found, indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
