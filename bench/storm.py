"""The storm benchmark: N policy violations over D devices in M simulated minutes.

Runs the real stack — webhook over HTTP, Azurite queues and tables, the dev host's polling, the
TLS Defender emulator with its quotas — on a simulated clock (tools/simulation.py), and prints:
max alert calls per minute, 429s received, events per alert call, machine-API calls per event,
hunting calls per alert, events lost, duplicated alerts, and simulated minutes from the first
event to the last alert. Not a test: it asserts nothing; it measures.

    .venv/bin/python -m bench.storm                # 10,000 events, 200 devices, 10 minutes
    .venv/bin/python -m bench.storm --events 2000 --devices 50
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import logging
import os
import random
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shared.clock import ManualClock

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

START = datetime(2026, 3, 20, 9, 0, tzinfo=UTC)
SECRET = "whsec_" + base64.b64encode(b"storm-benchmark-signing-key-0001").decode()
TENANT, CLIENT, CLIENT_SECRET = "0f6a1f4e-8d55-4b71-9a4c-e0f1d2c3b4a5", "7c9e6679-7425-40de-944b-e07fc1f90ae7", "bench"


def fixture(devices: int) -> dict[str, Any]:
    roles = ["Alert.ReadWrite.All", "Machine.Read.All", "AdvancedQuery.Read.All", "SecurityIncident.ReadWrite.All"]
    return {
        "tenants": [{"id": TENANT, "clients": [{"client_id": CLIENT, "secret": CLIENT_SECRET, "roles": roles}]}],
        "machines": [
            {
                "id": hashlib.sha1(f"dev-{d:04d}".encode(), usedforsecurity=False).hexdigest(),
                "computerDnsName": f"dev-{d:04d}.corp.local",
                "aadDeviceId": None,
                "healthStatus": "Active",
                "lastSeen": "2026-03-20T08:00:00Z",
                "traffic": [{"domain": "chatgpt.com", "every_seconds": 120}],
            }
            for d in range(devices)
        ],
    }


def event(i: int, device: int, policy: int, at: datetime) -> dict[str, Any]:
    stamp = at.strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "id": f"evt_storm_{i:06d}",
        "type": "interaction.policy_violated",
        "created_at": stamp,
        "data": {
            "interaction": {
                "id": f"int_{i:06d}",
                "platform_id": "chatgpt",
                "risk_score": 0.9,
                "direction": "outbound",
                "classifications": [{"type": "EMAIL", "value": "someone@example.org", "score": 0.9}],
                "user_email": f"user{device}@corp.local",
                "device": {"hostname": f"DEV-{device:04d}"},
                "occurred_at": stamp,
            },
            "policy": {"id": f"pol_{policy}", "name": f"Block PII policy {policy}", "action": "block"},
        },
    }


def max_per_minute(times: list[datetime]) -> int:
    times = sorted(times)
    best, j = 0, 0
    for i, t in enumerate(times):
        while times[j] <= t - timedelta(seconds=60):
            j += 1
        best = max(best, i - j + 1)
    return best


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=10_000)
    p.add_argument("--devices", type=int, default=200)
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--policies", type=int, default=2, help="distinct policies per device (coalescing groups)")
    p.add_argument("--seed", type=int, default=42)
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    print(json.dumps(run(args), indent=2))
    return 0


def run(args: argparse.Namespace, after: Callable[[ManualClock], dict[str, Any]] | None = None) -> dict[str, Any]:
    """The storm, with ``args`` (events, devices, minutes, policies, seed); returns its figures.
    ``after`` runs on the stack the storm left behind (its figures are added under "after")."""

    from tqdm import tqdm

    import function_app
    from bench.delivery import StorageCalls
    from shared import wiring
    from shared.clock import ManualClock
    from shared.delivery.sender import StorageQueueSender
    from tools import azurite
    from tools.devhost.host import DevHost
    from tools.emulator.server import EmulatorServer
    from tools.emulator.state import DefenderState, parse_time
    from tools.simulation import Arrival, Simulation, VirtualDelaySender

    rng = random.Random(args.seed)
    wall, cpu = time.monotonic(), time.process_time()
    with tempfile.TemporaryDirectory() as tmp:
        store = azurite.start(location=Path(tmp) / "azurite", in_memory=True)
        clock = ManualClock(START)
        emulator = EmulatorServer(
            DefenderState(fixture(args.devices), clock=clock, token_lifetime=30 * 86400), ca_file=Path(tmp) / "ca.pem"
        ).start()
        try:
            os.environ.update(
                {
                    "AzureWebJobsStorage": store.connection_string,
                    "EVENTS_QUEUE_NAME": "storm",
                    "EVENTS_PRIORITY_QUEUE_NAME": "storm-priority",
                    "NOXYS_SIGNING_SECRET": SECRET,
                    "HEALTH_SCHEDULE": "0 0 * * * *",
                    "HUNTING_SCHEDULE": "*/30 * * * * *",
                    **emulator.connector_settings(tenant=TENANT, client=CLIENT, secret=CLIENT_SECRET),
                }
            )
            wiring.reset()
            sender = VirtualDelaySender(StorageQueueSender(wiring.enqueue), clock)
            wiring.use(clock=clock, sender=sender)
            host = DevHost(function_app.app, root=ROOT, http_port=0).start(queues=False, timers=False)
            sim = Simulation(host, clock, sender, SECRET)

            span = args.minutes * 60
            offsets = sorted(rng.uniform(0, span) for _ in range(args.events))
            batches: dict[int, list[dict[str, Any]]] = {}
            for i, off in enumerate(offsets):
                device, policy = rng.randrange(args.devices), rng.randrange(args.policies)
                batches.setdefault(int(off // 6), []).append(event(i, device, policy, START + timedelta(seconds=off)))
            arrivals = [Arrival(k * 6, evs[j : j + 100]) for k, evs in batches.items() for j in range(0, len(evs), 100)]
            with (
                StorageCalls() as storage,
                tqdm(desc="storm", unit=" sim s", file=sys.stderr, bar_format="{desc}: {n:.0f}{unit} {postfix}") as bar,
            ):

                def progress(now: datetime) -> None:
                    bar.n = (now - START).total_seconds()
                    bar.set_postfix_str(f"{sim.messages} messages", refresh=False)
                    if sim.steps % 50 == 0:
                        bar.refresh()

                sim.on_step = progress
                sim.run(arrivals, max_steps=200_000)
            host.stop()
            extra = after(clock) if after else None

            state = emulator.state
            creates = [parse_time(c["time"]) for c in state.calls_of("/api/alerts/CreateAlertByReference")]
            machine_calls = [c for c in state.calls if c["path"].startswith("/api/machines")]
            hunting_calls = state.calls_of("/api/advancedqueries/run")
            ledger = list(wiring.table("Ledger").list_entities())
            by_state: dict[str, int] = {}
            for e in ledger:
                by_state[e["state"]] = by_state.get(e["state"], 0) + 1
            groups = list(wiring.table("Groups").query_entities("RowKey eq 'group'"))
            noted = sum(int(g["noted"]) for g in groups)
            comments = sum(len(a["comments"]) for a in state.alerts)
            delivered = by_state.get("alert_created", 0) + by_state.get("coalesced", 0)
            lost = args.events - delivered
            duplicated = len(state.alerts) - len(groups)
            last_alert = max(creates) if creates else START
            figures = {
                "events": args.events,
                "devices": args.devices,
                "simulated minutes of arrivals": args.minutes,
                "alert calls (CreateAlertByReference)": len(creates),
                "max alert calls in any 60 s": max_per_minute(creates),
                "429s received from Defender": sum(state.throttled.values()) + state.faults.injected.get("429", 0),
                "events represented per alert call": round(args.events / max(1, len(creates)), 1),
                "machines-API calls per event": round(len(machine_calls) / args.events, 4),
                "hunting calls per alert": round(len(hunting_calls) / max(1, len(creates)), 2),
                "alert comments (PATCH)": comments,
                "events counted on alerts (created + noted)": noted,
                "lost": lost,
                "duplicated alerts": duplicated,
                "ledger states": by_state,
                "simulated minutes, first event to last alert": round((last_alert - START).total_seconds() / 60, 1),
                "storage requests per event (queues and tables, webhook to last note)": round(
                    storage.count / args.events, 2
                ),
                "… of which the host's empty polls (paid per second of polling, not per event)": round(
                    storage.empty_polls / args.events, 2
                ),
                "storage requests per event, without those polls (target ≤ 4.5)": round(
                    (storage.count - storage.empty_polls) / args.events, 2
                ),
                "storage requests per event, by kind": {
                    k: round(n / args.events, 3) for k, n in storage.by_kind.most_common()
                },
                "wall-clock seconds": round(time.monotonic() - wall, 1),
                "wall ms per event": round((time.monotonic() - wall) * 1000 / args.events, 1),
                "CPU ms per event (this process: webhook, delivery, dev host, emulator)": round(
                    (time.process_time() - cpu) * 1000 / args.events, 1
                ),
            }
            if extra is not None:
                figures["after"] = extra
        finally:
            wiring.reset()  # the buffered counters are flushed while Azurite still runs
            emulator.stop()
            store.stop()
    return figures


if __name__ == "__main__":
    sys.exit(main())
