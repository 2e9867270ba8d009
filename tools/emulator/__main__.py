"""``python -m tools.emulator``: run the Defender emulator on its own, or show what it holds."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tools.emulator.server import EmulatorServer
from tools.emulator.state import DefenderState

DEFAULT_CA = Path(".local/emulator-ca.pem")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.emulator", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run", help="serve the emulator until interrupted")
    run.add_argument("--port", type=int, default=8443)
    run.add_argument("--fixture", type=Path, help="devices, apps and network events (JSON)")
    run.add_argument("--ca-file", type=Path, default=DEFAULT_CA, help="where to write the test CA")
    show = sub.add_parser("show", help="print the alerts the running emulator holds")
    show.add_argument("--url", default="https://127.0.0.1:8443")
    show.add_argument("--ca-file", type=Path, default=DEFAULT_CA)
    args = p.parse_args(argv)

    if args.cmd == "show":
        import requests

        try:
            state = requests.get(f"{args.url}/emulator/state", verify=str(args.ca_file), timeout=10).json()
        except requests.RequestException as exc:
            print(f"emulator not reachable at {args.url}: {exc.__class__.__name__}", file=sys.stderr)
            return 1
        for alert in state["alerts"]:
            print(
                f"{alert['alertCreationTime']}  {alert['severity']:<6} {alert['id']}  incident {alert['incidentId']}  "
                f"{alert['computerDnsName']}  {alert['title']}"
            )
        print(f"{len(state['alerts'])} alert(s); throttled calls: {state['throttled'] or 'none'}")
        for alert_id, times in sorted(state["merged"].items()):  # Defender's own merge of a same-title alert
            print(f"{alert_id}: {times} later alert(s) with the same title merged into it")
        return 0

    fixture = json.loads(args.fixture.read_text()) if args.fixture else None
    server = EmulatorServer(DefenderState(fixture), port=args.port, ca_file=args.ca_file).start()
    print(f"Defender emulator on {server.url} (CA: {args.ca_file}); Ctrl-C to stop", flush=True)
    try:
        server._thread.join()
    except KeyboardInterrupt:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
