"""Helpers shared by the tests: samples, signing, the test environment's view of storage,
and event builders. Plain functions and classes — fixtures live in conftest.py — so any test
module imports them by name, and a developer can read one file to know what a test can call.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests

from shared import wiring
from shared.webhook import sign
from tests.fakes import FakeTable
from tools import azurite as azurite_launcher
from tools.emulator.server import DEFAULT_CLIENT, DEFAULT_SECRET, DEFAULT_TENANT, EmulatorServer

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "samples" / "events"
TEST_SECRET = "whsec_" + base64.b64encode(b"noxys-connector-test-signing-key!").decode()
EMULATOR_TENANT, EMULATOR_CLIENT, EMULATOR_SECRET = DEFAULT_TENANT, DEFAULT_CLIENT, DEFAULT_SECRET
LIMITED_CLIENT = ("2d1f7a3b-5c4e-4f60-8a9b-0c1d2e3f4a5b", "emulator-limited-secret")
ALERTS_ONLY_CLIENT = ("4b3c2d1e-0f9a-4b8c-9d7e-6f5a4b3c2d1e", "emulator-alerts-only-secret")
EXPIRED_CLIENT = ("9e8d7c6b-5a49-4837-a261-504f3e2d1c0b", "emulator-expired-secret")
# Emulator time: late on the day of the samples, so their anchors are inside hunting's 30 days.
SAMPLE_DAY = datetime(2026, 3, 20, 18, 0, tzinfo=UTC)


def sample(name: str) -> bytes:
    return (SAMPLES / f"{name}.json").read_bytes()


def signed_headers(
    body: bytes, *, secret: str = TEST_SECRET, msg_id: str = "msg_1", ts: int | None = None
) -> dict[str, str]:
    """Headers as Noxys signs them, stamped at the app's now (simulated time when a test uses it)."""
    stamp = int(wiring.clock().now().timestamp()) if ts is None else ts
    return {
        "Content-Type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(stamp),
        "webhook-signature": sign(secret, msg_id, stamp, body),
    }


@dataclass
class Env:
    values: dict[str, str]
    azurite: azurite_launcher.Azurite

    @property
    def queue(self) -> str:
        return self.values["EVENTS_QUEUE_NAME"]

    @property
    def priority_queue(self) -> str:
        return self.values["EVENTS_PRIORITY_QUEUE_NAME"]

    def table(self, name: str) -> Any:
        from azure.data.tables import TableClient

        return TableClient.from_connection_string(
            self.azurite.connection_string, f"{self.values['TABLE_PREFIX']}{name}"
        )

    def queue_client(self, name: str | None = None) -> Any:
        from azure.storage.queue import QueueClient

        return QueueClient.from_connection_string(self.azurite.connection_string, name or self.queue)

    def queued_texts(self, name: str | None = None) -> list[str]:
        """Decoded bodies of the messages now visible in a queue (peek: nothing is consumed)."""
        from azure.core.exceptions import ResourceNotFoundError

        try:
            peeked = self.queue_client(name).peek_messages(max_messages=32)
        except ResourceNotFoundError:
            return []
        return [base64.b64decode(m.content).decode() for m in peeked]


def post(host: Any, body: bytes, headers: dict[str, str]) -> requests.Response:
    return requests.post(f"http://127.0.0.1:{host.http_port}/api/noxys/events", data=body, headers=headers, timeout=30)


def emulator_state(server: EmulatorServer) -> dict[str, Any]:
    """What the emulator holds, read over its inspection endpoint (as a user would)."""
    resp = requests.get(f"{server.url}/emulator/state", verify=str(server.ca_file), timeout=10)
    resp.raise_for_status()
    result: dict[str, Any] = resp.json()
    return result


def dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False)


# ------------------------------------------------------------------ simulated delivery
DEVICES = {  # hostname -> (platform id, a domain it talks to in the fixture)
    "ALICE-LAPTOP": "chatgpt",
    "BOB-WS-0042": "deepseek",
    "DAVE-MBP": "chatgpt",
    "ERIN-LAPTOP": "gemini",
    "GINA-PC": "chatgpt",
}


# The fixture machines' lastIpAddress: with the host name, the two identifiers a destructive
# response action needs (a name alone, however spelt, is not enough).
DEVICE_IPS = {"ALICE-LAPTOP": "10.1.2.3", "DAVE-MBP": "10.1.9.15", "ERIN-LAPTOP": "10.1.4.8", "GINA-PC": "10.1.8.8"}


def strong_device(host: str) -> dict[str, str]:
    """The event's device as its host name and IP address: enough to isolate it."""
    return {"hostname": host, "ip_address": DEVICE_IPS[host]}


def violation(
    i: int,
    *,
    host: str = "ALICE-LAPTOP",
    policy: str | None = None,
    at: datetime = SAMPLE_DAY,
    device: dict[str, Any] | None = None,
    platform: str | None = None,
) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(sample("policy_violated"))
    doc["id"] = f"evt_sim_{i:05d}"
    it = doc["data"]["interaction"]
    it["id"] = f"int_sim_{i:05d}"
    it["device"] = device if device is not None else {"hostname": host}
    it["platform_id"] = platform or DEVICES.get(host, "chatgpt")
    it["platform_name"] = None
    it["content_metadata"] = {}
    it["occurred_at"] = doc["created_at"] = at.strftime("%Y-%m-%dT%H:%M:%SZ")
    doc["data"]["policy"] = {"id": f"pol_{policy or i}", "name": f"Policy {policy or i}", "action": "block"}
    return doc


def critical(i: int, at: datetime) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(sample("alert_critical"))
    doc["id"] = f"evt_crit_{i:03d}"
    doc["data"]["alert"]["title"] = f"Critical exfiltration {i}"
    doc["data"]["alert"]["created_at"] = doc["created_at"] = at.strftime("%Y-%m-%dT%H:%M:%SZ")
    return doc


def observed(env: Env) -> list[tuple[str, str]]:
    """Every observation the Patterns table holds, as (partition, event id), read from the stored
    rows themselves: a pack's JSON list, or a row of one observation (the older format)."""
    out: list[tuple[str, str]] = []
    for e in env.table("Patterns").list_entities():
        if "obs" in e:
            out += [(str(e["PartitionKey"]), str(o[0])) for o in json.loads(e["obs"])]
        elif "event_id" in e:
            out.append((str(e["PartitionKey"]), str(e["event_id"])))
    return out


def ledger_states(env: Env) -> dict[str, str]:
    return {e["event_id"]: e["state"] for e in env.table("Ledger").list_entities()}


def send_raw(env: Env, queue: str, text: str) -> None:
    from azure.storage.queue import QueueClient, TextBase64EncodePolicy

    QueueClient.from_connection_string(
        env.azurite.connection_string, queue, message_encode_policy=TextBase64EncodePolicy()
    ).send_message(text)


# The in-memory Table of the unit tests: real ETags, conditional writes, transactions, queries.
AzureLikeTable = FakeTable
