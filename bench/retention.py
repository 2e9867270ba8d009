"""Storage the connector keeps per 10,000 events, before and after the retention purge.

Runs a storm through the whole stack (bench.storm), measures every state table (rows, and bytes as
the JSON of their entities), moves the clock past every retention, runs the purge the health
timer runs, and measures again. Asserts nothing.

    .venv/bin/python -m bench.retention [--events 1000]
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import storm  # noqa: E402 - after the path is set
from shared import jobs, wiring  # noqa: E402
from shared.clock import ManualClock  # noqa: E402
from shared.status import STATE_TABLES  # noqa: E402


def _sizes() -> dict[str, dict[str, int]]:
    out = {}
    for name in STATE_TABLES:
        rows = list(wiring.table(name).list_entities())
        out[name] = {"rows": len(rows), "bytes": sum(len(json.dumps(dict(r), default=str)) for r in rows)}
    return out


def run(events: int = 1000) -> dict[str, Any]:
    def measure(clock: ManualClock) -> dict[str, Any]:
        wiring.counters().flush()
        before = _sizes()
        settings = wiring.settings()
        days = max(settings.ledger_retention_days, settings.counters_retention_days, settings.groups_retention_days)
        clock.advance(timedelta(days=days + 1).total_seconds())
        removed: dict[str, int] = {}
        while any((step := jobs.purge_state(settings, wiring.table, clock.now())).values()):
            for table, n in step.items():
                removed[table] = removed.get(table, 0) + n
        after = _sizes()
        scale = 10_000 / events
        per_10k = {
            name: {
                "bytes before": round(before[name]["bytes"] * scale),
                "bytes after": round(after[name]["bytes"] * scale),
            }
            for name in STATE_TABLES
        }
        total = (sum(v["bytes before"] for v in per_10k.values()), sum(v["bytes after"] for v in per_10k.values()))
        return {
            "rows before / after the purge": {n: [before[n]["rows"], after[n]["rows"]] for n in STATE_TABLES},
            "removed": removed,
            "bytes kept per 10,000 events, before the purge": total[0],
            "bytes kept per 10,000 events, after the purge": total[1],
            "per table, per 10,000 events": per_10k,
        }

    figures = storm.run(argparse.Namespace(events=events, devices=20, minutes=2.0, policies=2, seed=42), after=measure)
    result: dict[str, Any] = figures["after"]
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.retention", description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=1000)
    args = p.parse_args(argv)
    print(json.dumps(run(args.events), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
