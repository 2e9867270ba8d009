"""README command 1: Azurite + (the Defender emulator) + the dev host, until Ctrl-C.

The emulator is the embedded default: it starts whenever ``DEFENDER_TENANT_ID`` is empty, and
the Defender settings are pointed at it. Configure a real tenant in local.settings.json and the
same command talks to your real Defender instead.

Settings are read once, at start, as in Azure (where a change restarts the app): the settings
this run uses are published in ``.local/host.settings.json`` (secrets left out) so that the
operator commands run beside it use the same ones, and say which of theirs differ.
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
import socket
import sys
import threading
from pathlib import Path
from types import FrameType

import function_app
from ops.cli_env import HOST_SETTINGS, publish_host_settings
from shared import logsafe
from shared.config import ConfigError, Settings
from shared.response.files import start_warnings
from shared.response.rules import load_rules
from tools import azurite
from tools.devhost.host import DevHost
from tools.emulator.persist import StateFile
from tools.emulator.server import EmulatorServer
from tools.emulator.state import DefenderState

ROOT = Path(__file__).resolve().parents[1]
HOST_PORT, EMULATOR_PORT, STORAGE_PORT = 7071, 8443, 10000
STORAGE = "AzureWebJobsStorage"


def ensure_local_settings(root: Path) -> dict[str, str]:
    """Create local.settings.json from the example on first run, with a fresh signing secret."""
    settings = root / "local.settings.json"
    if not settings.exists():
        doc = json.loads((root / "local.settings.json.example").read_text())
        doc["Values"]["NOXYS_SIGNING_SECRET"] = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
        settings.write_text(json.dumps(doc, indent=2) + "\n")
        print(f"created {settings.name} with a new local signing secret")
    return {k: str(v) for k, v in json.loads(settings.read_text())["Values"].items()}


def start_emulator(local: Path, port: int) -> EmulatorServer:
    """The embedded Defender emulator, with what it was told before the last stop, and its
    settings published for `python -m shared test-connection|status` run beside it."""
    state = DefenderState()
    saved = StateFile(local / "emulator-state.json", state)
    if saved.load():
        print(f"Defender emulator: {len(state.alerts)} alert(s) kept from the last run (--reset forgets them)")
    state.on_change = saved.save
    emulator = EmulatorServer(state, port=port, ca_file=local / "emulator-ca.pem").start()
    emulated = emulator.connector_settings()
    os.environ.update(emulated)
    (local / "emulator.settings.json").write_text(json.dumps(emulated, indent=2))
    print(f"Defender emulator on {emulator.url} (no DEFENDER_TENANT_ID configured)")
    return emulator


def taken(ports: dict[str, int]) -> str | None:
    """The ports already in use, each with the option that moves it, in one message (checked
    before anything starts, so a second command 1 changes nothing)."""
    busy = [f"{port} ({what})" for what, port in ports.items() if port and not port_free(port)]
    if not busy:
        return None
    return (
        f"port {', '.join(busy)} already in use — is command 1 already running in another terminal? "
        "Otherwise choose free ports: scripts/dev.sh --port 7171 --emulator-port 8543 --storage-port 11000"
    )


def port_free(port: int) -> bool:
    """Whether this port can be bound on 127.0.0.1 now by a server (a listener cannot; a port the
    last run just left, still in TIME_WAIT, can: Azurite and the host reuse addresses too)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def response_mode(path: str | None) -> str:
    """Whether automated response is off, a dry run or live, and from which rules file."""
    if not path:
        return "automated response off (no RESPONSE_RULES_FILE)"
    try:
        rules = load_rules(path)
    except ConfigError as exc:
        return f"automated response OFF: rules file {path} not usable ({exc.problem}); alerts unaffected"
    assert rules is not None
    live = [r.name for r in rules.rules if not r.dry_run]
    if not live:
        return f"automated response in dry run (all {len(rules.rules)} rule(s) of {path})"
    return f"automated response LIVE ({len(live)} of {len(rules.rules)} rule(s) of {path} act on devices)"


def ready_line(webhook: str, defender: str, response: str) -> str:
    return f"ready: webhook {webhook} — Defender: {defender}; {response}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/dev.sh", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--reset",
        action="store_true",
        help="forget the local state first: Azurite's data (ledger, queues) and the emulator's alerts",
    )
    parser.add_argument("--port", type=int, default=HOST_PORT, help=f"the Functions host's port (default {HOST_PORT})")
    parser.add_argument(
        "--emulator-port", type=int, default=EMULATOR_PORT, help=f"the Defender emulator's (default {EMULATOR_PORT})"
    )
    parser.add_argument(
        "--storage-port",
        type=int,
        default=STORAGE_PORT,
        help=f"Azurite's blob port; queue and table use the next two (default {STORAGE_PORT})",
    )
    parser.add_argument("--root", type=Path, default=ROOT, help=argparse.SUPPRESS)  # tests run it in a copy
    args = parser.parse_args(argv)
    root, local = args.root, args.root / ".local"
    storage_ports = (args.storage_port, args.storage_port + 1, args.storage_port + 2)
    ports = {"Functions host, --port": args.port, "Azurite, --storage-port": storage_ports[0]}
    ports |= {"Azurite queue": storage_ports[1], "Azurite table": storage_ports[2]}
    if _will_emulate(root):
        ports["Defender emulator, --emulator-port"] = args.emulator_port
    if (busy := taken(ports)) is not None:
        print(f"✗ {busy}", file=sys.stderr)
        return 1
    logsafe.install()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    for noisy in ("azure", "urllib3", "msal"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    values = ensure_local_settings(root)
    for k, v in values.items():
        os.environ.setdefault(k, v)  # the shell's environment wins over local.settings.json

    for warning in start_warnings(os.environ):  # a bad rules/risk file: said now, alerts unaffected
        print(warning, file=sys.stderr, flush=True)
    local.mkdir(exist_ok=True)
    if args.reset:  # both together: a ledger without its alerts (or the reverse) is inconsistent
        shutil.rmtree(local / "azurite", ignore_errors=True)
        (local / "emulator-state.json").unlink(missing_ok=True)
        print("local state reset: Azurite data and emulator alerts forgotten")
    try:
        store = azurite.start(location=local / "azurite", ports=storage_ports, log_file=local / "azurite.log")
    except RuntimeError as exc:  # another Azurite started meanwhile: say so, no traceback
        print(f"✗ {exc} — is command 1 already running in another terminal?", file=sys.stderr)
        return 1
    shorthand = os.environ.get(STORAGE) == "UseDevelopmentStorage=true"  # which means the default ports
    if shorthand and args.storage_port != STORAGE_PORT:
        os.environ[STORAGE] = store.connection_string
    print(f"Azurite running (pid {store.pid}), data in {local / 'azurite'}")
    try:
        return _serve(args, root, local, values, start_emulator(local, args.emulator_port) if _emulated() else None)
    finally:
        store.stop()
        print("stopped")


def _emulated() -> bool:
    return not os.environ.get("DEFENDER_TENANT_ID")


def _will_emulate(root: Path) -> bool:
    """Whether the emulator will start, judged before local.settings.json is created or read."""
    try:
        configured = json.loads((root / "local.settings.json").read_text())["Values"].get("DEFENDER_TENANT_ID")
    except (OSError, ValueError, KeyError, AttributeError):
        configured = None
    return not (os.environ.get("DEFENDER_TENANT_ID") or configured)


def _serve(
    args: argparse.Namespace, root: Path, local: Path, values: dict[str, str], emulator: EmulatorServer | None
) -> int:
    """The host, until Ctrl-C; the ready line last, once everything answers (and Ctrl-C is ours:
    a Ctrl-C right after "ready" stops everything cleanly)."""
    done = threading.Event()

    def stop(signum: int, frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        host = DevHost(function_app.app, root=root, http_port=args.port).start()
        webhook = f"http://127.0.0.1:{host.http_port}/api/noxys/events"
        known = [f.alias for f in Settings.model_fields.values() if f.alias]
        emulated = emulator.connector_settings() if emulator else {}
        publish_host_settings(root / HOST_SETTINGS, [*values, *known, *emulated])
        url = "" if host.http_port == HOST_PORT else f" --url {webhook}"
        see = (
            "See the resulting Defender alert:\n    .venv/bin/python -m tools.emulator show"
            + (f" --url {emulator.url}" if args.emulator_port != EMULATOR_PORT else "")
            if emulator
            else "See the resulting alert in the Defender portal (Incidents & alerts), tenant "
            + os.environ.get("DEFENDER_TENANT_ID", "")
        )
        defender = f"emulator at {emulator.url}" if emulator else f"tenant {os.environ.get('DEFENDER_TENANT_ID')}"
        print(
            f"""
Functions host on http://127.0.0.1:{host.http_port} — {", ".join(f.name for f in host.http + host.queues + host.timers)}

Send a sample event (signed with the secret in local.settings.json, timestamps moved to now):
    .venv/bin/python -m shared send-sample samples/events/policy_violated.json{url}
{see}
Settings are read at start: after changing local.settings.json, restart this command (as Azure
restarts the app). Ctrl-C stops everything.

{ready_line(webhook, defender, response_mode(os.environ.get("RESPONSE_RULES_FILE")))}""",
            flush=True,
        )
        done.wait()
        host.stop()
    finally:
        (root / HOST_SETTINGS).unlink(missing_ok=True)
        if emulator:
            emulator.stop()
            (local / "emulator.settings.json").unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
