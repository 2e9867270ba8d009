"""README command 1: Azurite + (the Defender emulator) + the dev host, until Ctrl-C.

The emulator is the embedded default: it starts whenever ``DEFENDER_TENANT_ID`` is empty, and
the Defender settings are pointed at it. Configure a real tenant in local.settings.json and the
same command talks to your real Defender instead.
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import os
import secrets
import shutil
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

import function_app
from shared import logsafe
from shared.response.files import start_warnings
from tools import azurite
from tools.devhost.host import DevHost
from tools.emulator.persist import StateFile
from tools.emulator.server import EmulatorServer
from tools.emulator.state import DefenderState

ROOT = Path(__file__).resolve().parents[1]
LOCAL = ROOT / ".local"
SETTINGS = ROOT / "local.settings.json"
EMULATOR_PORT = 8443


def ensure_local_settings() -> dict[str, str]:
    """Create local.settings.json from the example on first run, with a fresh signing secret."""
    if not SETTINGS.exists():
        doc = json.loads((ROOT / "local.settings.json.example").read_text())
        doc["Values"]["NOXYS_SIGNING_SECRET"] = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
        SETTINGS.write_text(json.dumps(doc, indent=2) + "\n")
        print(f"created {SETTINGS.name} with a new local signing secret")
    return {k: str(v) for k, v in json.loads(SETTINGS.read_text())["Values"].items()}


def start_emulator() -> EmulatorServer:
    """The embedded Defender emulator, with what it was told before the last stop, and its
    settings published for `python -m shared test-connection|status` run beside it."""
    state = DefenderState()
    saved = StateFile(LOCAL / "emulator-state.json", state)
    if saved.load():
        print(f"Defender emulator: {len(state.alerts)} alert(s) kept from the last run (--reset forgets them)")
    state.on_change = saved.save
    emulator = EmulatorServer(state, port=EMULATOR_PORT, ca_file=LOCAL / "emulator-ca.pem").start()
    emulated = emulator.connector_settings()
    os.environ.update(emulated)
    (LOCAL / "emulator.settings.json").write_text(json.dumps(emulated, indent=2))
    print(f"Defender emulator on {emulator.url} (no DEFENDER_TENANT_ID configured)")
    return emulator


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/dev.sh", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--reset",
        action="store_true",
        help="forget the local state first: Azurite's data (ledger, queues) and the emulator's alerts",
    )
    args = parser.parse_args(argv)
    logsafe.install()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    for noisy in ("azure", "urllib3", "msal"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    values = ensure_local_settings()
    for k, v in values.items():
        os.environ.setdefault(k, v)  # the shell's environment wins over local.settings.json

    for warning in start_warnings(os.environ):  # a bad rules/risk file: said now, alerts unaffected
        print(warning, file=sys.stderr, flush=True)
    LOCAL.mkdir(exist_ok=True)
    if args.reset:  # both together: a ledger without its alerts (or the reverse) is inconsistent
        shutil.rmtree(LOCAL / "azurite", ignore_errors=True)
        (LOCAL / "emulator-state.json").unlink(missing_ok=True)
        print("local state reset: Azurite data and emulator alerts forgotten")
    try:
        store = azurite.start(location=LOCAL / "azurite", ports=(10000, 10001, 10002), log_file=LOCAL / "azurite.log")
    except RuntimeError as exc:  # a second command 1, or another Azurite: say so, no traceback
        print(f"✗ {exc} — is command 1 already running in another terminal?", file=sys.stderr)
        return 1
    print(f"Azurite running (pid {store.pid}), data in {LOCAL / 'azurite'}")
    emulator = None
    try:
        if not os.environ.get("DEFENDER_TENANT_ID"):
            emulator = start_emulator()  # port 8443 taken: werkzeug says so and exits (Azurite is stopped below)

        host = DevHost(function_app.app, root=ROOT).start()
        print(
            f"""
Functions host on http://127.0.0.1:{host.http_port} — {", ".join(f.name for f in host.http + host.queues + host.timers)}

Send a sample event (signed with the secret in local.settings.json, timestamps moved to now):
    .venv/bin/python -m shared send-sample samples/events/policy_violated.json
See the resulting Defender alert:
    .venv/bin/python -m tools.emulator show
Ctrl-C stops everything.""",
            flush=True,
        )
        done = threading.Event()

        def stop(signum: int, frame: FrameType | None) -> None:
            done.set()

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        done.wait()
        host.stop()
    finally:
        if emulator:
            emulator.stop()
            (LOCAL / "emulator.settings.json").unlink(missing_ok=True)
        store.stop()
        print("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
