"""What an operator meets when following the README with part of the stack stopped: a sentence
saying what is wrong and what to do, never a traceback; the emulator remembers across restarts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ops.cli import main
from shared import wiring
from tests.support import ROOT, Env, violation
from tools.azurite import free_port
from tools.emulator.persist import StateFile
from tools.emulator.server import EmulatorServer
from tools.emulator.state import DefenderState
from tools.simulation import Arrival, Simulation

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("argv", [["status"], ["replay", "--all"], ["export-audit", "--since", "2026-03-20T00:00:00Z"]])
def test_unreachable_storage_is_one_sentence_naming_it(
    argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()
    monkeypatch.setenv(
        "AzureWebJobsStorage",
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5;"
        f"QueueEndpoint=http://127.0.0.1:{port}/devstoreaccount1;"
        f"TableEndpoint=http://127.0.0.1:{port}/devstoreaccount1;",
    )
    wiring.reset()
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.strip() == (
        f"✗ storage unreachable at http://127.0.0.1:{port} — is command 1 (./scripts/dev.sh) running?"
    )


def test_test_connection_with_the_stack_stopped_says_the_emulator_is_not_running(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    for name in ("DEFENDER_TENANT_ID", "DEFENDER_CLIENT_ID", "DEFENDER_CLIENT_SECRET"):
        monkeypatch.delenv(name, raising=False)
    wiring.reset()
    assert main(["test-connection"]) == 1
    assert "the local Defender emulator is not running: start command 1" in capsys.readouterr().err

    # a stack that was killed leaves its emulator settings behind: nothing answers there now
    port = free_port()
    (tmp_path / ".local").mkdir()
    (tmp_path / ".local" / "emulator.settings.json").write_text(
        json.dumps({"DEFENDER_TENANT_ID": "t", "DEFENDER_API_URL": f"https://127.0.0.1:{port}"})
    )
    assert main(["test-connection"]) == 1
    assert f"not running (nothing answers at https://127.0.0.1:{port})" in capsys.readouterr().err


def test_piped_output_closed_early_is_not_a_traceback(env: Env) -> None:
    read, write = os.pipe()
    os.close(read)  # the reader (`| head`) has already gone
    child_env = {**os.environ, **env.values, "PYTHONPATH": str(ROOT)}
    try:
        done = subprocess.run(
            [sys.executable, "-m", "shared", "status", "--json"],
            stdout=write,
            stderr=subprocess.PIPE,
            env=child_env,
            cwd=ROOT,
            timeout=120,
            check=False,
        )
    finally:
        os.close(write)
    assert done.returncode == 0 and b"Traceback" not in done.stderr, done.stderr.decode()


def test_emulator_keeps_its_alerts_across_a_restart(
    sim: Simulation, env: Env, emulator: EmulatorServer, tmp_path: Path
) -> None:
    saved = StateFile(tmp_path / "emulator-state.json", emulator.state)
    emulator.state.on_change = saved.save
    sim.run([Arrival(0, [violation(1)])])
    (alert,) = emulator.state.alerts

    again = DefenderState(clock=emulator.state.clock)  # command 1 started again
    assert StateFile(tmp_path / "emulator-state.json", again).load()
    assert [a["id"] for a in again.alerts] == [alert["id"]]
    assert again.next_alert == emulator.state.next_alert  # new alerts never reuse an id
    assert not StateFile(tmp_path / "absent.json", DefenderState()).load()
