"""Where the operator commands get their settings and how they check, in a second, that what
they need is there: local.settings.json and the local emulator's published settings, then the
storage and Defender endpoints (one clear line instead of a minute of SDK retries)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import sys
import tempfile
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

from shared import wiring
from shared.config import ConfigError
from shared.storage import connection_string, table_service_uri

LOCAL_SETTINGS = Path("local.settings.json")
EMULATOR_SETTINGS = Path(".local/emulator.settings.json")
HOST_SETTINGS = Path(".local/host.settings.json")  # what a running command 1 started with
SECRET_NAMES = re.compile(r"SECRET|TOKEN|PASSWORD|CONNECTION", re.IGNORECASE)
# the app's own setting, observed only by the app (shared.delivery.hold): a workstation's value
# must never reach the stored switch through an operator command
APP_ONLY = "INTEGRATION_ENABLED"


def local_values(path: Path = LOCAL_SETTINGS) -> dict[str, str]:
    """The ``Values`` of local.settings.json, or {} when there is none."""
    try:
        return {k: str(v) for k, v in json.loads(path.read_text())["Values"].items()}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def emulator_values() -> dict[str, str]:
    """With no tenant configured, ``scripts/dev.sh`` runs the Defender emulator and publishes
    the settings that reach it here; they describe what is running, so they override."""
    if local_values().get("DEFENDER_TENANT_ID"):
        return {}
    try:
        return {k: str(v) for k, v in json.loads(EMULATOR_SETTINGS.read_text()).items()}
    except (OSError, ValueError, AttributeError):
        return {}


def _shareable(name: str, value: str) -> bool:
    """Whether a setting may be written beside the code: never a secret (a storage connection
    string only when it is Azurite's, whose key is the published development key)."""
    if name == "AzureWebJobsStorage":
        return value == "UseDevelopmentStorage=true" or "AccountName=devstoreaccount1;" in value
    return not SECRET_NAMES.search(name)


def publish_host_settings(path: Path, names: Iterable[str]) -> None:
    """Command 1 writes the settings it started with (their values now in its environment,
    secrets left out) and its process id, for the operator commands run beside it."""
    values = {n: os.environ[n] for n in sorted(set(names) | {"AzureWebJobsStorage"}) if n in os.environ}
    doc = {"pid": os.getpid(), "values": {n: v for n, v in values.items() if _shareable(n, v)}}
    write_private(str(path), [json.dumps(doc, indent=2)])


def host_values(path: Path = HOST_SETTINGS) -> dict[str, str]:
    """The settings the running command 1 started with; {} when none runs (no file, or a file
    left by one that was killed: its process is gone)."""
    try:
        doc = json.loads(path.read_text())
        os.kill(int(doc["pid"]), 0)
        return {str(k): str(v) for k, v in doc["values"].items()}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def settings_from_local(note: Callable[[str], object] = lambda text: print(text, file=sys.stderr)) -> None:
    """Operators run the CLI from the project folder: fill the environment from local.settings.json
    (the shell's environment wins), and point at the local emulator when that is what runs.

    While command 1 runs, its settings win: they are what the connector is doing now (settings
    apply at its next start, as in Azure), so ``status`` shows the rules file the host uses and
    ``test-connection`` the tenant it talks to. ``note`` says which settings here differ."""
    shell, local, emulated = dict(os.environ), local_values(), emulator_values()
    local.pop(APP_ONLY, None)
    for k, v in local.items():
        os.environ.setdefault(k, v)
    os.environ.update(emulated)
    running = host_values()
    running.pop(APP_ONLY, None)
    os.environ.update(running)
    here = {**local, **emulated, **shell}  # what this command would use without command 1
    differ = sorted(k for k in running if here.get(k, "") != running[k])
    if differ:
        note(
            f"note: command 1 is running with the settings it started with; {', '.join(differ)} differ here "
            "(local.settings.json or this shell) and apply at its next start — shown is what it uses"
        )


def when(text: str) -> datetime:
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


RELATIVE = re.compile(r"^(\d+)\s*([mhdw])$")
UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
PERIOD_HELP = "use 7d, 24h, 30m, 2w or ISO 8601, e.g. 2026-03-20T00:00:00Z"


def moment(text: str, now: datetime) -> datetime:
    """``7d``/``24h``/``30m``/``2w`` before ``now``, or an ISO 8601 time (UTC when no zone is given):
    the one reading of every ``--since`` and ``--until``."""
    found = RELATIVE.match(text.strip())
    if found:
        return now - timedelta(**{UNITS[found.group(2)]: int(found.group(1))})
    return when(text)


def period(since: str, until: str | None, now: datetime) -> tuple[datetime, datetime]:
    """``--since`` and ``--until`` (default: now); ValueError names the one that does not parse."""
    found: list[datetime] = []
    for name, text in (("--since", since), ("--until", until)):
        try:
            found.append(moment(text, now) if text else now)
        except ValueError:
            raise ValueError(f"{name} {text!r} is not a time: {PERIOD_HELP}") from None
    return found[0], found[1]


def output_problem(path: str) -> str | None:
    """Why ``--output`` cannot be written, in one line, checked before any Defender call."""
    target = Path(path)
    if target.is_dir():
        return f"--output {path} is a folder: name a file in it"
    folder = target.parent
    if not folder.is_dir():
        return f"--output {path}: the folder {folder} does not exist"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"--output {path}: the folder {folder} is not writable"
    return None


def write_private(path: str, chunks: Iterable[str]) -> int:
    """Write ``chunks`` to ``path`` readable by its owner only (0600: exports hold personal data).

    The text goes to a new temporary file beside it (created with O_EXCL by ``mkstemp``), which
    then replaces ``path`` by rename: a symbolic link at ``path`` is replaced, never followed, so
    the command cannot be turned into overwriting another file, and a reader never sees half a
    file. Returns how many chunks were written."""
    target = Path(path)
    fd, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            written = 0
            for chunk in chunks:
                out.write(chunk)
                written += 1
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    return written


def storage_problem() -> str | None:
    """Storage the commands need, checked in a second instead of a minute of SDK retries and a
    traceback: the endpoint, and what to do when nothing answers there."""
    try:
        settings = wiring.settings()
        conn = connection_string(settings)
        if conn:
            parts = dict(p.split("=", 1) for p in conn.split(";") if "=" in p)
            endpoint = parts.get("TableEndpoint") or (
                f"{parts.get('DefaultEndpointsProtocol', 'https')}://{parts.get('AccountName')}.table."
                f"{parts.get('EndpointSuffix', 'core.windows.net')}"
            )
        else:
            endpoint = table_service_uri(settings)
    except ConfigError as exc:
        return str(exc)
    url = urlsplit(endpoint)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname or "", port), timeout=3).close()
    except OSError:
        local = url.hostname in ("127.0.0.1", "localhost")
        hint = (
            "is command 1 (./scripts/dev.sh) running?"
            if local
            else "check AzureWebJobsStorage and your network (private endpoint, firewall)"
        )
        return f"storage unreachable at {url.scheme}://{url.hostname}:{port} — {hint}"
    return None


def defender_problem() -> str | None:
    """With no tenant configured, the local emulator is the Defender: say so when it is not running."""
    emulated = emulator_values()
    if emulated:
        url = urlsplit(emulated.get("DEFENDER_API_URL", ""))
        try:
            socket.create_connection((url.hostname or "", url.port or 443), timeout=3).close()
        except OSError:
            return (
                f"the local Defender emulator is not running (nothing answers at {url.scheme}://{url.netloc}): "
                "start command 1 (./scripts/dev.sh)"
            )
        return None
    if os.environ.get("DEFENDER_TENANT_ID"):
        return None
    return (
        "no Defender tenant is configured and the local Defender emulator is not running: start command 1 "
        "(./scripts/dev.sh), or set DEFENDER_TENANT_ID, DEFENDER_CLIENT_ID and the secret in local.settings.json"
    )
