"""The reliability run at full size: the same harness as tests/integration/test_reliability.py
(separate web and worker processes, real Azurite on disk, the TLS emulators, SIGKILLs of the
worker mid-call, Azurite restarts, token and Key Vault outages, 429 bursts, 10 % 5xx, creates whose
answer is lost after the alert was made), with more
events, more kills and more restarts. Prints what became of every event. Asserts nothing.

    .venv/bin/python -m bench.reliability                       # 400 events, 8 kills, 2 restarts
    .venv/bin/python -m bench.reliability --events 1000 --kills 12
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tools.reliability import Plan, Run  # noqa: E402 - after the path is set


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.reliability", description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=400)
    p.add_argument("--policies", type=int, default=5)
    p.add_argument("--kills", type=int, default=8)
    p.add_argument("--restarts", type=int, default=2, help="Azurite restarts")
    p.add_argument("--error-rate", type=float, default=0.1)
    p.add_argument("--lost-answers", type=int, default=8, help="creates answered 502/504/timeout/reset after acting")
    args = p.parse_args(argv)
    plan = Plan(
        events=args.events,
        batches=max(10, args.events // 10),
        policies=args.policies,
        kills=args.kills,
        azurite_restarts=args.restarts,
        error_rate=args.error_rate,
        lost_answers=args.lost_answers,
        bursts_429=4,
        deadline_seconds=1800,
    )
    with tempfile.TemporaryDirectory(prefix="noxys-reliability-") as tmp:
        run = Run(plan, Path(tmp), log=lambda line: print(f"{time.strftime('%H:%M:%S')} {line}", flush=True))
        try:
            report = run.run()
        finally:
            run.close()
    print("\n".join(report.lines()))
    return 0 if not report.lost and not report.duplicates and report.creates_made == report.alerts else 1


if __name__ == "__main__":
    sys.exit(main())
