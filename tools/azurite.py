"""Start and stop the real Azurite (queues, tables, blobs) for local runs and tests.

The ``azurite`` binary from the npm package in ``tools/azurite/`` is started directly (not
through npx) and its PID kept, so it is always stopped. ``--skipApiVersionCheck`` because the
Python SDKs are newer than Azurite's API table; ``--disableTelemetry`` because it would try to
reach the internet.
"""

from __future__ import annotations

import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from shared.storage import AZURITE_KEY

ROOT = Path(__file__).resolve().parents[1]
BINARY = ROOT / "tools" / "azurite" / "node_modules" / ".bin" / "azurite"
ACCOUNT = "devstoreaccount1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class Azurite:
    process: subprocess.Popen[bytes]
    blob_port: int
    queue_port: int
    table_port: int
    log: IO[bytes] | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={AZURITE_KEY};"
            f"BlobEndpoint=http://127.0.0.1:{self.blob_port}/{ACCOUNT};"
            f"QueueEndpoint=http://127.0.0.1:{self.queue_port}/{ACCOUNT};"
            f"TableEndpoint=http://127.0.0.1:{self.table_port}/{ACCOUNT};"
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.log:
            self.log.close()


def start(
    *,
    location: Path,
    ports: tuple[int, int, int] | None = None,
    in_memory: bool = False,
    log_file: Path | None = None,
    timeout: float = 60.0,
) -> Azurite:
    if not BINARY.exists():
        raise RuntimeError(f"Azurite is not installed at {BINARY}; run scripts/bootstrap.sh (npm ci in tools/azurite)")
    blob, queue, table = ports or (free_port(), free_port(), free_port())
    for port in (blob, queue, table):
        if _listening(port):
            raise RuntimeError(f"port {port} is already in use (another Azurite?); stop it or choose other ports")
    location.mkdir(parents=True, exist_ok=True)
    cmd = [
        str(BINARY),
        "--silent",
        "--skipApiVersionCheck",
        "--disableTelemetry",
        "--loose",
        "--blobHost",
        "127.0.0.1",
        "--blobPort",
        str(blob),
        "--queueHost",
        "127.0.0.1",
        "--queuePort",
        str(queue),
        "--tableHost",
        "127.0.0.1",
        "--tablePort",
        str(table),
    ]
    # In-memory persistence (tests) and --location are mutually exclusive in Azurite.
    cmd += ["--inMemoryPersistence"] if in_memory else ["--location", str(location)]
    log = log_file.open("ab") if log_file else None
    proc = subprocess.Popen(cmd, stdout=log or subprocess.DEVNULL, stderr=subprocess.STDOUT, cwd=location)
    azurite = Azurite(proc, blob, queue, table, log)
    deadline = time.monotonic() + timeout
    while not all(_listening(p) for p in (blob, queue, table)):
        if proc.poll() is not None:
            raise RuntimeError(f"Azurite exited with code {proc.returncode} before listening")
        if time.monotonic() > deadline:
            azurite.stop()
            raise RuntimeError(f"Azurite did not listen on {blob}/{queue}/{table} within {timeout:.0f}s")
        time.sleep(0.1)
    return azurite
