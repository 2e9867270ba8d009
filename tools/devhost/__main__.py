"""Run the dev host alone, as one process of a scaled-out app: ``python -m tools.devhost``.

The reliability run starts a web process (HTTP only) and a worker process (queues only) this way,
so that a worker can be killed with SIGKILL mid-delivery — a real process death, not a patched
function — while the webhook keeps answering. Settings come from the environment.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

import function_app
from shared import logsafe
from tools.devhost.host import LOCK_SECONDS, DevHost


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.devhost", description=__doc__.splitlines()[0])
    p.add_argument("--http-port", type=int, default=0, help="0: no HTTP")
    p.add_argument("--queues", action="store_true", help="poll the queue triggers")
    p.add_argument("--timers", action="store_true", help="fire the timer triggers")
    p.add_argument("--lock-seconds", type=float, default=LOCK_SECONDS, help="message lock while a function runs")
    p.add_argument("--root", default=".", help="folder holding host.json")
    args = p.parse_args(argv)
    logsafe.install()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    for noisy in ("azure", "urllib3", "msal"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    host = DevHost(
        function_app.app, root=Path(args.root), http_port=args.http_port, lock_seconds=args.lock_seconds
    ).start(http=bool(args.http_port), queues=args.queues, timers=args.timers)
    print(f"devhost ready http={host.http_port if args.http_port else '-'}", flush=True)
    done = threading.Event()

    def stop(signum: int, frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    done.wait()
    host.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
