"""``python -m shared review``: the weekly review of analysts' classifications (shared.review).

The alerts are read back from Defender with the report's read-back (one listing, then one paced
GET per alert it missed; the shared pacing budget, waiting out a 429), with a progress bar on
standard error; the result goes to standard output or ``--output`` (written privately).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ops.cli_compliance import _period, _ready
from ops.cli_env import PERIOD_HELP, defender_problem, output_problem, write_private
from shared import review, review_job, wiring


def cmd_review(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    if (problem := _ready() or (output_problem(args.output) if args.output else None)) is not None:
        print(f"✗ {problem}", file=sys.stderr)
        return 1
    try:
        since, until = _period(args)
    except ValueError as exc:
        print(f"✗ {exc}", file=sys.stderr)
        return 2
    if (problem := defender_problem()) is not None:
        print(f"✗ the review reads the analysts' classifications from Defender: {problem}", file=sys.stderr)
        return 1
    with tqdm(desc="reading classifications from Defender", unit="alert", file=sys.stderr, disable=args.quiet) as bar:
        built = review_job.collect(
            review_job.Sources.of(wiring.ledger(), wiring.defender_client(), wiring.table),
            since,
            until,
            progress=bar.update,
            total=lambda n: bar.reset(total=n),
        )
    text = review.RENDERERS[args.format](built)
    if args.output:
        write_private(args.output, [text])
        print(
            f"wrote the {args.format} review ({built.alerts} alert(s), {built.classified} classified) to {args.output}"
        )
    else:
        sys.stdout.write(text)
    return 0


def cmd_review_or_unsuppress(args: argparse.Namespace) -> int:
    if not args.what:
        return cmd_review(args)
    if args.what[0] != "unsuppress" or len(args.what) != 2:
        print("✗ usage: python -m shared review [--since 7d …] | review unsuppress POLICY", file=sys.stderr)
        return 2
    if (problem := _ready()) is not None:
        print(f"✗ {problem}", file=sys.stderr)
        return 1
    said = wiring.suppressions().unsuppress(args.what[1], wiring.clock().now())
    if not said:
        print(f"✗ no suppressed policy has the id or name {args.what[1]!r}", file=sys.stderr)
        return 1
    print("\n".join(said))
    return 0


def add_parsers(sub: Any) -> None:
    r = sub.add_parser(
        "review",
        help="how analysts classified the alerts, per policy and per response rule, with suggestions",
        description="Reads back from Defender each alert the connector raised in the period and reports, per "
        "Noxys policy and per response rule: alerts, classifications, false-positive rate (false positives ÷ "
        "classified), median time to classification, devices and users most involved, and what to change.",
    )
    r.add_argument("--since", default="7d", help=f"start (inclusive, default 7d): {PERIOD_HELP}")
    r.add_argument("--until", help="end (exclusive); default now")
    r.add_argument("--format", choices=tuple(review.RENDERERS), default="md")
    r.add_argument("--output", help="write to this file instead of standard output")
    r.add_argument("--quiet", action="store_true", help="no progress bar")
    r.add_argument(
        "what", nargs="*", metavar="unsuppress POLICY",
        help="re-enable a policy the review suppressed (its id or name): its events raise alerts again",
    )  # fmt: skip
    r.set_defaults(run=cmd_review_or_unsuppress)
