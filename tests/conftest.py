"""Fixtures: real Azurite, the TLS Defender emulator with a manual clock, and the dev host.

Nothing here is a mock: the product's real azure-storage-queue, azure-identity and requests
code paths run against real servers on 127.0.0.1.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests

from shared import wiring
from shared.clock import ManualClock
from shared.webhook import sign
from tools import azurite as azurite_launcher
from tools.emulator.server import DEFAULT_CLIENT, DEFAULT_SECRET, DEFAULT_TENANT, EmulatorServer
from tools.emulator.state import DefenderState
from tools.simulation import Simulation, VirtualDelaySender

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "samples" / "events"
CONTRACT_SAMPLES = ROOT.parent / "shared" / "samples" / "events"  # the reference, when checked out beside us
TEST_SECRET = "whsec_" + base64.b64encode(b"noxys-connector-test-signing-key!").decode()
EMULATOR_TENANT, EMULATOR_CLIENT, EMULATOR_SECRET = DEFAULT_TENANT, DEFAULT_CLIENT, DEFAULT_SECRET
LIMITED_CLIENT = ("2d1f7a3b-5c4e-4f60-8a9b-0c1d2e3f4a5b", "emulator-limited-secret")
EXPIRED_CLIENT = ("9e8d7c6b-5a49-4837-a261-504f3e2d1c0b", "emulator-expired-secret")
# Emulator time: late on the day of the samples, so their anchors are inside hunting's 30 days.
SAMPLE_DAY = datetime(2026, 3, 20, 18, 0, tzinfo=UTC)


def sample(name: str) -> bytes:
    return (SAMPLES / f"{name}.json").read_bytes()


def signed_headers(
    body: bytes, *, secret: str = TEST_SECRET, msg_id: str = "msg_1", ts: int | None = None
) -> dict[str, str]:
    stamp = int(time.time()) if ts is None else ts
    return {
        "Content-Type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(stamp),
        "webhook-signature": sign(secret, msg_id, stamp, body),
    }


@pytest.fixture(autouse=True)
def isolated_cwd(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test sees the developer's local.settings.json (the CLI reads it from the cwd)."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[azurite_launcher.Azurite]:
    location = tmp_path_factory.mktemp("azurite")
    proc = azurite_launcher.start(location=location, in_memory=True, log_file=location / "azurite.log")
    yield proc
    proc.stop()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(SAMPLE_DAY)


@pytest.fixture
def emulator(clock: ManualClock, tmp_path: Path) -> Iterator[EmulatorServer]:
    server = EmulatorServer(DefenderState(clock=clock), ca_file=tmp_path / "emulator-ca.pem").start()
    yield server
    server.stop()


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


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, azurite: azurite_launcher.Azurite, emulator: EmulatorServer) -> Iterator[Env]:
    """The product's settings, pointed at this test's queue, Azurite and the emulator."""
    run = uuid.uuid4().hex[:12]
    values = {
        "AzureWebJobsStorage": azurite.connection_string,
        "EVENTS_QUEUE_NAME": f"ev-{run}",
        "EVENTS_PRIORITY_QUEUE_NAME": f"ev-{run}-priority",
        "TABLE_PREFIX": f"T{run}",
        "NOXYS_SIGNING_SECRET": TEST_SECRET,
        "HEALTH_SCHEDULE": "0 0 * * * *",
        "HUNTING_SCHEDULE": "*/30 * * * * *",
        **emulator.connector_settings(),
    }
    for name in ("NOXYS_BEARER_TOKEN", "FORWARD_EVENT_TYPES"):
        monkeypatch.delenv(name, raising=False)
    for k, v in values.items():
        monkeypatch.setenv(k, v)
    wiring.reset()
    yield Env(values, azurite)
    wiring.reset()


@pytest.fixture
def host(env: Env) -> Iterator[Any]:
    """The dev host serving HTTP on a free port; queues are drained explicitly by the test."""
    import function_app
    from tools.devhost.host import DevHost

    dev = DevHost(function_app.app, root=ROOT, http_port=0).start(queues=False, timers=False)
    yield dev
    dev.stop()


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


@pytest.fixture
def fast_root(tmp_path: Path) -> Path:
    """host.json as shipped, but a failed message is visible again at once (no real waiting)."""
    host = json.loads((ROOT / "host.json").read_text())
    host["extensions"]["queues"]["visibilityTimeout"] = "00:00:00"
    (tmp_path / "host.json").write_text(json.dumps(host))
    return tmp_path


@pytest.fixture
def sim(env: Env, clock: ManualClock, emulator: EmulatorServer, fast_root: Path) -> Iterator[Simulation]:
    import function_app
    from shared.config import get_settings
    from shared.delivery.sender import AzureQueueSender
    from tools.devhost.host import DevHost

    emulator.state.token_lifetime = 30 * 86400
    sender = VirtualDelaySender(AzureQueueSender(get_settings()), clock)
    wiring.use(clock=clock, sender=sender)
    host = DevHost(function_app.app, root=fast_root, http_port=0).start(queues=False, timers=False)
    yield Simulation(host, clock, sender, TEST_SECRET)
    host.stop()


def ledger_states(env: Env) -> dict[str, str]:
    return {e["event_id"]: e["state"] for e in env.table("Ledger").list_entities()}


def send_raw(env: Env, queue: str, text: str) -> None:
    from azure.storage.queue import QueueClient, TextBase64EncodePolicy

    QueueClient.from_connection_string(
        env.azurite.connection_string, queue, message_encode_policy=TextBase64EncodePolicy()
    ).send_message(text)
