"""The first hour of a new user: command 1 says when it is ready and how it responds, a taken port
says what to do, the commands read the settings the running host uses, and the rough edges of
send-sample, replay and the emulator's ``show`` are one clear line each."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from ops.cli import main
from ops.cli_env import settings_from_local
from tests.support import ROOT, SAMPLES, TEST_SECRET, Env, ledger_states, violation
from tools.azurite import free_port
from tools.emulator.server import EmulatorServer
from tools.run_local import port_free
from tools.simulation import Arrival, Simulation

pytestmark = pytest.mark.integration
RULES = ROOT / "samples" / "response-rules.json"


def _project(tmp_path: Path) -> Path:
    """A copy of what command 1 reads from the project folder (its state goes into the copy)."""
    root = tmp_path / "project"
    root.mkdir()
    for name in ("host.json", "local.settings.json.example"):
        shutil.copy(ROOT / name, root / name)
    return root


def _storage_base() -> int:
    """Three consecutive free ports for Azurite (blob, queue, table)."""
    for _ in range(50):
        base = free_port()
        if base < 65000 and all(port_free(base + i) for i in (1, 2)):
            return base
    raise AssertionError("no three consecutive free ports")


Running = tuple[Path, subprocess.Popen[str], list[str], int, int]


@contextlib.contextmanager
def _command_1(tmp_path: Path, **settings: str) -> Iterator[Running]:
    """Command 1 on free ports in a copy of the project, until it says it is ready; then Ctrl-C."""
    root, port, emulator_port = _project(tmp_path), free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DEFENDER_", "RESPONSE_"))}
    env |= {"PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", **settings}
    argv = ["--root", str(root), "--port", str(port), "--emulator-port", str(emulator_port)]
    argv += ["--storage-port", str(_storage_base())]
    proc = subprocess.Popen(
        [sys.executable, "-m", "tools.run_local", *argv], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:  # until it says it is ready (pytest-timeout bounds a hang)
        lines.append(line.rstrip("\n"))
        if line.startswith("ready:"):
            break
    yield root, proc, lines, port, emulator_port
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0 and rest.rstrip().endswith("stopped")
    assert not (root / ".local" / "host.settings.json").exists()


@pytest.fixture
def command_1(tmp_path: Path) -> Iterator[Running]:
    with _command_1(tmp_path, RESPONSE_RULES_FILE=str(RULES)) as running:
        yield running


def test_command_1_ends_with_one_ready_line(command_1: Running) -> None:
    """It used to end with "Ctrl-C stops everything." and never say whether it answered."""
    _, _, lines, port, emulator_port = command_1
    assert lines[-1] == (
        f"ready: webhook http://127.0.0.1:{port}/api/noxys/events — Defender: emulator at "
        f"https://127.0.0.1:{emulator_port}; automated response in dry run (all 2 rule(s) of {RULES})"
    )
    shown = "\n".join(lines)
    assert f"--url http://127.0.0.1:{port}/api/noxys/events" in shown  # the hint works on this port
    assert f"tools.emulator show --url https://127.0.0.1:{emulator_port}" in shown
    assert "restart this command" in shown


def test_with_a_real_tenant_the_banner_points_at_the_portal_not_the_emulator(tmp_path: Path) -> None:
    with _command_1(tmp_path, DEFENDER_TENANT_ID="tenant-of-acme") as (_, _, lines, port, _):
        assert lines[-1] == (
            f"ready: webhook http://127.0.0.1:{port}/api/noxys/events — Defender: tenant tenant-of-acme; "
            "automated response off (no RESPONSE_RULES_FILE)"
        )
        assert "tools.emulator" not in "\n".join(lines) and "Defender portal" in "\n".join(lines)


def test_the_commands_read_the_settings_the_running_host_uses(
    command_1: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, _, _, _, emulator_port = command_1
    published = root / ".local" / "host.settings.json"
    assert stat.S_IMODE(published.stat().st_mode) == 0o600
    text = published.read_text()
    assert "whsec_" not in text and "SECRET" not in text  # secrets are never published
    settings = json.loads((root / "local.settings.json").read_text())
    settings["Values"]["RESPONSE_RULES_FILE"] = "a-new-rules-file.json"  # changed after the start
    (root / "local.settings.json").write_text(json.dumps(settings))
    monkeypatch.chdir(root)
    monkeypatch.setattr(os, "environ", dict(os.environ))  # what the commands set stays in this test
    for name in ("RESPONSE_RULES_FILE", "AzureWebJobsStorage", "DEFENDER_API_URL", "REQUESTS_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DEFENDER_TENANT_ID", "another-tenant")  # this shell names another tenant
    notes: list[str] = []
    settings_from_local(notes.append)
    assert os.environ["RESPONSE_RULES_FILE"] == str(RULES)  # what the host uses, not the new file
    assert os.environ["DEFENDER_API_URL"] == f"https://127.0.0.1:{emulator_port}"
    assert os.environ["DEFENDER_TENANT_ID"] != "another-tenant"
    (note,) = notes
    # the storage too: local.settings.json says the default ports, this run uses others
    assert "AzureWebJobsStorage, DEFENDER_TENANT_ID, RESPONSE_RULES_FILE differ here" in note and "next start" in note


def test_a_taken_port_says_how_to_choose_others_before_anything_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tools.run_local import main as command_1

    root = _project(tmp_path)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert command_1(["--root", str(root), "--port", str(port), "--storage-port", str(_storage_base())]) == 1
    err = capsys.readouterr().err
    assert f"port {port} (Functions host, --port) already in use" in err and "scripts/dev.sh --port 7171" in err
    assert sorted(p.name for p in root.iterdir()) == ["host.json", "local.settings.json.example"]  # nothing made


# ---------------------------------------------------------------------- rough edges
def test_send_sample_with_a_malformed_secret_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["send-sample", str(SAMPLES / "policy_violated.json"), "--secret", "wrong"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a Standard Webhooks secret" in err and "Traceback" not in err


def test_send_sample_says_which_lane_each_event_used(
    sim: Simulation, env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"http://127.0.0.1:{sim.host.http_port}/api/noxys/events"
    for name, lane in (("alert_critical", f"{env.priority_queue} (the critical lane)"), ("high_risk", env.queue)):
        sample = str(SAMPLES / f"{name}.json")  # dated like the simulated clock: sent as they are
        assert main(["send-sample", sample, "--url", url, "--secret", TEST_SECRET, "--keep-timestamps"]) == 0
        out = capsys.readouterr().out
        assert out.splitlines()[-1].endswith(f": queued on {lane}"), out


def test_replay_of_a_final_event_says_why_nothing_moved(
    sim: Simulation, env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    sim.run([Arrival(0, [violation(12, host="DAVE-MBP", platform="mistral")])])
    assert ledger_states(env) == {"evt_sim_00012": "no_anchor"}
    assert main(["replay", "--id", "evt_sim_00012", "--id", "evt_unknown"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "nothing matched"
    assert out[1] == "evt_sim_00012: not dead-lettered — its outcome is final (no_anchor: " + out[1].split(": ", 2)[2]
    assert "replay only moves dead-lettered and poison events" in out[1]
    assert out[2].startswith("evt_unknown: not in the dead letters, the poison queues or the ledger")


def test_emulator_show_prints_alerts_and_nothing_stray(
    sim: Simulation, emulator: EmulatorServer, capsys: pytest.CaptureFixture[str]
) -> None:
    from tools.emulator.__main__ import main as emulator_main

    sim.run([Arrival(0, [violation(1)])])
    capsys.readouterr()
    assert emulator_main(["show", "--url", emulator.url, "--ca-file", str(emulator.ca_file)]) == 0
    out = capsys.readouterr().out
    assert "{" not in out and "merged" not in out
    assert out.splitlines()[-1] == "1 alert(s); throttled calls: none"


def test_keep_timestamps_warns_that_the_samples_are_older_than_the_window(capsys: pytest.CaptureFixture[str]) -> None:
    """The samples are dated 2026-03-20: sent unchanged they get a 400, which is said first."""
    dead = f"http://127.0.0.1:{free_port()}/api/noxys/events"  # nothing listens: the note comes before
    sample, secret = str(SAMPLES / "policy_violated.json"), ["--secret", TEST_SECRET]
    assert main(["send-sample", sample, *secret, "--keep-timestamps", "--url", dead]) == 1
    err = capsys.readouterr().err
    assert "days old; the webhook refuses events older than EVENT_MAX_PAST_DAYS (90)" in err
    assert main(["send-sample", sample, *secret, "--url", dead]) == 1
    assert "EVENT_MAX_PAST_DAYS" not in capsys.readouterr().err  # moved to now: nothing to say


def test_explain_and_rules_try_judge_a_sample_as_the_live_connector_would(
    sim: Simulation, env: Env, emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """A sample dated two months ago: send-sample moves it to now, so explain and rules try must
    too (they judged it in March, against empty windows); and a score over 1 says it was capped."""
    from tests.integration.test_response import STORM_RULE, _rules, _storm, _use

    rules = _rules(tmp_path, STORM_RULE | {"dry_run": True})
    _use(sim, env, emulator, monkeypatch, rules)
    sim.run(_storm(1, 4, "ALICE-LAPTOP"))
    old = tmp_path / "old-sample.json"
    old.write_text(json.dumps(violation(9, policy="storm", at=sim.clock.now() - timedelta(days=60))))
    assert main(["explain", str(old)]) == 0
    out = capsys.readouterr().out
    assert "5 violations on this device in 1 h (+0.08)" in out
    assert re.search(r"capped: the terms add up to 1\.\d\d; a combined risk is at most 1\.00", out), out
    assert main(["rules", "try", str(rules), str(old)]) == 0
    assert "✓ Auto-isolate devices with repeated violations (dry run" in capsys.readouterr().out
    assert main(["explain", str(old), "--keep-timestamps"]) == 0  # judged in its own past: no storm then
    assert "violations on this device" not in capsys.readouterr().out
