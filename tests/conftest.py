"""Fixtures: real Azurite, the TLS Defender emulator with a manual clock, and the dev host.

Nothing here is a mock: the product's real azure-storage-queue, azure-identity and requests
code paths run against real servers on 127.0.0.1. Plain helpers are in tests/support.py.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shared import wiring
from shared.clock import ManualClock
from tests.support import ROOT, SAMPLE_DAY, TEST_SECRET, Env
from tools import azurite as azurite_launcher
from tools.emulator.server import EmulatorServer
from tools.emulator.state import DefenderState
from tools.simulation import Simulation, VirtualDelaySender


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
        "EVENT_MAX_PAST_DAYS": "3650",  # the samples are dated 2026-03-20; the window has its own tests
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
    from shared.delivery.sender import StorageQueueSender
    from tools.devhost.host import DevHost

    emulator.state.token_lifetime = 30 * 86400
    sender = VirtualDelaySender(StorageQueueSender(wiring.enqueue), clock)
    wiring.use(clock=clock, sender=sender)
    host = DevHost(function_app.app, root=fast_root, http_port=0).start(queues=False, timers=False)
    yield Simulation(host, clock, sender, TEST_SECRET)
    host.stop()
