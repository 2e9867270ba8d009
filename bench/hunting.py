"""Hunting-table shipping on a 10,000-event corpus: rows per second, events per ingestion call,
bytes per event.

Real Azurite table (the hunting outbox, written 100 rows to a request as the webhook does for a
batch), the real sink and LogsIngestionClient (gzip, ≤ 1 MB chunks), the emulated Logs Ingestion
endpoint (which checks every row against the declared columns). Prints figures; asserts nothing.

    .venv/bin/python -m bench.hunting [--events 10000]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
MI = "5d2e6b1a-7c4f-4e39-8a1d-0b9c8d7e6f50"
PLATFORMS = ("chatgpt", "claude", "gemini", "deepseek", "mistral", "copilot", "perplexity")
TYPES = ("EMAIL", "PHONE", "IBAN", "API_KEY", "PERSON", "CREDIT_CARD")


def corpus(n: int, rng: random.Random) -> list[dict[str, Any]]:
    start = datetime(2026, 3, 20, 9, 0, tzinfo=UTC)
    out: list[dict[str, Any]] = []
    for i in range(n):
        at = (start + timedelta(seconds=i * 0.3)).strftime("%Y-%m-%dT%H:%M:%SZ")
        out.append(
            {
                "id": f"evt_h_{i:06d}",
                "type": "interaction.created" if i % 3 else "interaction.high_risk",
                "created_at": at,
                "data": {
                    "interaction": {
                        "id": f"int_{i:06d}",
                        "platform_id": rng.choice(PLATFORMS),
                        "risk_score": round(rng.random(), 2),
                        "direction": "outbound",
                        "source": "browser_extension",
                        "interaction_type": "prompt",
                        "classification_level": rng.choice(("Public", "Internal", "Confidential", "Restricted")),
                        "classifications": [
                            {"type": rng.choice(TYPES), "value": "secret", "score": 0.9}
                            for _ in range(rng.randrange(4))
                        ],
                        "user_email": f"user{rng.randrange(2000)}@corp.example",
                        "device": {"hostname": f"PC-{rng.randrange(500):04d}", "aad_device_id": None},
                        "occurred_at": at,
                    }
                },
            }
        )
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=10_000)
    args = p.parse_args()
    print(json.dumps(run(args.events), indent=2))
    return 0


def run(n_events: int) -> dict[str, Any]:
    """Queue ``n_events`` hunting rows, ship them with the timer's code; returns the figures."""

    from shared import wiring
    from shared.events import parse_events
    from shared.functions.hunting import ship_rows
    from shared.tasks import QueuedEvent
    from tools import azurite
    from tools.emulator.server import EmulatorServer
    from tools.emulator.state import DefenderState

    wall = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        store = azurite.start(location=Path(tmp) / "az", in_memory=True)
        state = DefenderState()
        emulator = EmulatorServer(state, ca_file=Path(tmp) / "ca.pem").start()
        try:
            os.environ.update(
                {
                    "AzureWebJobsStorage": store.connection_string,
                    "REQUESTS_CA_BUNDLE": str(emulator.ca_file),
                    "IDENTITY_ENDPOINT": f"{emulator.url}/msi/token",
                    "IDENTITY_HEADER": state.vault.identity_header,
                    "AZURE_CLIENT_ID": MI,
                    "HUNTING_INGESTION_ENDPOINT": emulator.url,
                    "HUNTING_DCR_IMMUTABLE_ID": state.logs.dcr_id,
                    "FORWARD_EVENT_TYPES": "interaction.high_risk",
                }
            )
            wiring.reset()
            events = corpus(n_events, random.Random(7))
            t0 = time.monotonic()
            outbox = wiring.hunting_outbox()
            for start in range(0, len(events), 100):
                rows = []
                for doc in events[start : start + 100]:
                    (event,) = parse_events(json.dumps(doc).encode())
                    task = QueuedEvent.new(event, datetime.now(UTC) - timedelta(hours=1))
                    rows.append((task, task.to_text()))
                outbox.put(rows)
            queued_s = time.monotonic() - t0
            t1 = time.monotonic()
            sent = runs = 0
            while True:
                shipped = ship_rows().sent
                if not shipped:
                    break
                sent, runs = sent + shipped, runs + 1
            ship_s = time.monotonic() - t1
            calls = state.logs.calls
            figures = {
                "events": n_events,
                "rows accepted": len(state.logs.rows),
                "timer runs": runs,
                "ingestion calls": len(calls),
                "events per ingestion call": round(len(state.logs.rows) / max(1, len(calls)), 1),
                "largest call, bytes (gzip / raw JSON)": [
                    max(c["bytes"] for c in calls),
                    max(c["raw_bytes"] for c in calls),
                ],
                "bytes per event on the wire (gzip)": round(
                    sum(c["bytes"] for c in calls) / max(1, len(state.logs.rows)), 1
                ),
                "bytes per event raw JSON": round(sum(c["raw_bytes"] for c in calls) / max(1, len(state.logs.rows)), 1),
                "seconds to write the corpus to the outbox": round(queued_s, 1),
                "seconds to ship it": round(ship_s, 1),
                "rows shipped per second (target ≥ 300)": round(len(state.logs.rows) / max(ship_s, 1e-9), 1),
                "wall-clock seconds": round(time.monotonic() - wall, 1),
            }
        finally:
            wiring.reset()
            emulator.stop()
            store.stop()
    return figures


if __name__ == "__main__":
    sys.exit(main())
