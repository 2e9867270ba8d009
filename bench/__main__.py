"""Every benchmark in one run, one table: ``python -m bench [--quick] [--json FILE]``.

Runs, in order: the webhook against a raw enqueue (bench.ingest; telemetry off, then on), the cost
of one delivery per outcome (bench.delivery), the storm (bench.storm), the hunting shipper (bench.hunting), the
storage kept per 10,000 events before and after retention (bench.retention) and the cold import
of the app, then prints one table of figures with their targets, and the whole
result as JSON when asked. ``--quick`` uses sizes that finish in a few minutes on 2 cores.
Asserts nothing: the figures are for people and for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import delivery, hunting, ingest, retention, storm  # noqa: E402 - after the path is set


@dataclass(frozen=True)
class Size:
    requests: int  # single-event webhook requests (and as many raw enqueues)
    batches: int  # 100-event requests
    storms: tuple[tuple[int, int, float], ...]  # events, devices, simulated minutes
    hunting: int  # rows
    imports: int  # fresh interpreters per import measurement


FLOOR_STORM = (1000, 20, 10.0)  # the storm the storage floor is measured on (requests and CPU per event)
SIZES = {
    "quick": Size(200, 5, (FLOOR_STORM,), 2000, 5),
    "full": Size(1000, 20, (FLOOR_STORM, (10_000, 200, 10.0)), 10_000, 15),
}


def _storm_args(events: int, devices: int, minutes: float) -> argparse.Namespace:
    return argparse.Namespace(events=events, devices=devices, minutes=minutes, policies=2, seed=42)


def cold_import(runs: int) -> dict[str, Any]:
    """``import function_app`` against ``import azure.functions``, each in a fresh interpreter; and,
    said plainly, what the blueprints defer to a function's first run (``import shared.wiring``)."""
    code = (
        "import time; t=time.perf_counter(); import azure.functions; a=time.perf_counter()-t; "
        "t=time.perf_counter(); import function_app; b=time.perf_counter()-t; "
        "t=time.perf_counter(); import shared.wiring; print(a, b, time.perf_counter()-t)"
    )
    base, app, first = [], [], []
    for _ in range(runs):
        out = subprocess.run(  # noqa: S603 - this interpreter, a fixed snippet
            [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
        )
        a, b, c = (float(x) for x in out.stdout.split())
        base.append(a * 1000)
        app.append((a + b) * 1000)
        first.append(c * 1000)
    return {
        "import azure.functions (median ms)": round(statistics.median(base), 1),
        "import function_app (median ms)": round(statistics.median(app), 1),
        "ratio (target ≤ 1.2)": round(statistics.median(a / b for a, b in zip(app, base, strict=True)), 2),
        "deferred to a function's first run: import shared.wiring (median ms)": round(statistics.median(first), 1),
    }


def main(argv: list[str] | None = None) -> int:
    from tqdm import tqdm

    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="sizes that finish in a few minutes on 2 cores")
    p.add_argument("--json", metavar="FILE", help="also write every figure as JSON")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)  # the figures, not the connector's own warnings
    size = SIZES["quick" if args.quick else "full"]
    storms = [
        (f"storm of {events:,} events on {devices} devices", functools.partial(storm.run, _storm_args(*sized)))
        for sized in size.storms
        for events, devices, _ in [sized]
    ]
    steps: list[tuple[str, Callable[[], Any]]] = [
        ("ingest", lambda: ingest.run(size.requests, size.batches)),
        ("ingest, telemetry on", lambda: ingest.with_telemetry(size.requests, size.batches)),
        ("delivery cost per outcome", delivery.run),
        *storms,
        ("hunting", lambda: hunting.run(size.hunting)),
        ("storage kept and retention", lambda: retention.run(1000)),
        ("cold import", lambda: cold_import(size.imports)),
    ]
    results: dict[str, Any] = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "size": "quick" if args.quick else "full",
    }
    started = time.monotonic()
    with tqdm(steps, desc="benchmarks", unit="step", file=sys.stderr) as bar:
        for name, step in bar:
            bar.set_postfix_str(name)
            saved = dict(os.environ)  # each benchmark sets up its own stack: none may see another's settings
            try:
                results[name] = step()
            finally:
                os.environ.clear()
                os.environ.update(saved)
    results["seconds"] = round(time.monotonic() - started, 1)
    print(render(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    return 0


def render(results: dict[str, Any]) -> str:
    lines = [f"Benchmarks, {results['when']} ({results['size']} size; {results['machine']}; {results['seconds']} s)"]
    for section, figures in results.items():
        if not isinstance(figures, dict):
            continue
        lines.append(f"\n{section}")
        for key, value in figures.items():
            lines.append(f"  {key:<72} {json.dumps(value, ensure_ascii=False)}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
