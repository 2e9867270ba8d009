"""The connector's command line: ``python -m shared <command>``.

One entry point for operators and developers; each later capability adds a subcommand here
(``test-connection``, ``status``, ``replay``, ``export-audit``). Every command exits non-zero on
failure so it can be scripted.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from azure.core.exceptions import AzureError

from ops import cli_compliance, cli_response, cli_review, cli_timeline
from ops.cli_env import (
    PERIOD_HELP,
    defender_problem,
    local_values,
    output_problem,
    period,
    settings_from_local,
    storage_problem,
    write_private,
)
from ops.replay import Candidate, candidates, replay, why_not
from shared import logsafe, status, wiring
from shared.audit import export
from shared.config import ConfigError
from shared.delivery.ledger import Ledger
from shared.events import InvalidEvents, parse_events
from shared.health import connection_test
from shared.intake import queue_for
from shared.timeshift import as_if_now, shift_to_now, stamps
from shared.webhook import sign

__all__ = ["main", "shift_to_now"]

DEFAULT_WEBHOOK_URL = "http://127.0.0.1:7071/api/noxys/events"


def too_old(doc: Any, now: datetime, values: dict[str, str]) -> str | None:
    """With --keep-timestamps, say before sending that the webhook will refuse the event: the
    samples are dated months ago, beyond its date window (EVENT_MAX_PAST_DAYS, 90 days)."""
    days = int(os.environ.get("EVENT_MAX_PAST_DAYS") or values.get("EVENT_MAX_PAST_DAYS") or 90)
    oldest = min(stamps(doc), default=now)
    if now - oldest <= timedelta(days=days):
        return None
    return (
        f"note: --keep-timestamps sends timestamps {(now - oldest).days} days old; the webhook refuses events older "
        f"than EVENT_MAX_PAST_DAYS ({days}) with a 400 naming the fields (without the option they move to now)"
    )


WEBHOOK_KEY_FORMAT = "it should be whsec_ followed by base64 (as in local.settings.json's NOXYS_SIGNING_SECRET)"


def cmd_send_sample(args: argparse.Namespace) -> int:
    import requests

    values = local_values()
    secrets = args.secret or os.environ.get("NOXYS_SIGNING_SECRET") or values.get("NOXYS_SIGNING_SECRET", "")
    secret = secrets.split()[0] if secrets.split() else ""
    if not secret:
        print("no signing secret: pass --secret or set NOXYS_SIGNING_SECRET (local.settings.json)", file=sys.stderr)
        return 2
    try:
        doc = json.loads(Path(args.event).read_text())
    except (OSError, ValueError) as exc:
        print(f"cannot read {args.event}: {exc}", file=sys.stderr)
        return 2
    now = wiring.clock().now()  # the webhook's clock: the system's (a test's simulated one in-process)
    if not args.keep_timestamps:
        doc = as_if_now(doc, now)
    elif (late := too_old(doc, now, values)) is not None:
        print(late, file=sys.stderr)
    ts = int(now.timestamp())
    if args.new_id and isinstance(doc, dict):
        doc["id"] = f"{doc.get('id', 'evt')}-{ts}"
    body = json.dumps(doc).encode()
    msg_id = str(doc.get("id", "msg")) if isinstance(doc, dict) else f"batch_{ts}"
    try:
        signature = sign(secret, msg_id, ts, body)
    except Exception:  # standardwebhooks: binascii.Error, EmptyWebhookSecretError
        print(f"✗ the signing secret is not a Standard Webhooks secret: {WEBHOOK_KEY_FORMAT}", file=sys.stderr)
        return 2
    headers = {
        "Content-Type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": signature,
    }
    bearer = args.bearer or os.environ.get("NOXYS_BEARER_TOKEN") or values.get("NOXYS_BEARER_TOKEN")
    if bearer:
        headers["Authorization"] = f"Bearer {bearer}"
    try:
        resp = requests.post(args.url, data=body, headers=headers, timeout=30)
    except requests.RequestException as exc:
        print(
            f"cannot reach {args.url}: {exc.__class__.__name__} (is the local host running? scripts/dev.sh)",
            file=sys.stderr,
        )
        return 1
    return _answer(resp.status_code, resp.text, body)


def _answer(status: int, text: str, body: bytes) -> int:
    print(status, text)
    if status == 401:
        print("the webhook refused the signature: is the secret the NOXYS_SIGNING_SECRET command 1 started with?")
    elif status == 202:
        for line in lanes(body):
            print(line)
    return 0 if 200 <= status < 300 else 1


def lanes(body: bytes) -> list[str]:
    """Which queue each forwarded event of ``body`` went to: criticals have a lane of their own."""
    settings_from_local()
    try:
        settings = wiring.settings()
        events = parse_events(body)
    except (ConfigError, InvalidEvents):
        return []
    wanted = set(settings.forward_event_types)
    return [
        f"{e.id}: queued on {queue_for(settings, e)}"
        + (" (the critical lane)" if queue_for(settings, e) == settings.events_priority_queue_name else "")
        for e in events
        if e.type in wanted
    ]


def cmd_export_audit(args: argparse.Namespace) -> int:
    settings_from_local()
    if (problem := storage_problem() or (output_problem(args.output) if args.output else None)) is not None:
        print(f"✗ {problem}", file=sys.stderr)
        return 1
    try:
        since, until = period(args.since, args.until, datetime.now(UTC))
    except ValueError as exc:
        print(f"✗ {exc}", file=sys.stderr)
        return 2
    try:
        lines = (line + "\n" for line in export(wiring.audit().rows(since, until), args.format))
        if args.output:
            count = write_private(args.output, lines)
        else:
            count = 0
            for line in lines:
                sys.stdout.write(line)
                count += 1
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    if args.output:
        print(f"wrote {count - (1 if args.format == 'csv' else 0)} call(s) to {args.output}", file=sys.stderr)
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    settings_from_local()
    if not (args.all or args.id or args.reason):
        print("say what to replay: --all, --id EVENT_ID (repeatable) or --reason TEXT", file=sys.stderr)
        return 2
    if (problem := storage_problem()) is not None:
        print(f"✗ {problem}", file=sys.stderr)
        return 1
    try:
        settings = wiring.settings()
        dead, ledger = wiring.dead_letters(), wiring.ledger()
        sources = {"dead", "poison"} if args.source == "all" else {args.source}
        chosen = [
            c
            for c in candidates(settings, dead, sources, wiring.raw_queue, peek=args.dry_run)
            if args.all or c.event_id in (args.id or []) or (args.reason and args.reason.lower() in c.reason.lower())
        ]
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    if args.dry_run:
        for c in chosen:
            print(f"would replay {c.event_id} from {c.source} to {c.queue}: {c.reason}")
        print(f"{len(chosen)} event(s) would be replayed (dry run: nothing moved)")
        _say_why_not(args.id, chosen, ledger)
        return 0
    results: dict[str, int] = {}
    now = wiring.clock().now()
    for c in tqdm(chosen, desc="replaying", unit="event", disable=not chosen or args.quiet):
        outcome = replay(wiring.enqueue, ledger, dead, c, now)
        results[outcome] = results.get(outcome, 0) + 1
    print(", ".join(f"{n} {what}" for what, n in results.items()) or "nothing matched")
    _say_why_not(args.id, chosen, ledger)
    return 0


def _say_why_not(asked: list[str] | None, chosen: list[Candidate], ledger: Ledger) -> None:
    for missing in sorted(set(asked or []) - {c.event_id for c in chosen}):
        print(why_not(missing, ledger.get(missing)))


def cmd_test_connection(args: argparse.Namespace) -> int:
    settings_from_local()
    problem = defender_problem()
    if problem:
        print(f"✗ {problem}", file=sys.stderr)
        return 1
    try:
        report = connection_test(wiring.settings(), wiring.credential(), strict=args.strict)
    except ConfigError as exc:
        print(f"✗ {exc}", file=sys.stderr)
        return 1
    print(json.dumps(report.as_dict(), indent=2) if args.json else "\n".join(report.lines))
    return 0 if report.ok else 1


def cmd_status(args: argparse.Namespace) -> int:
    settings_from_local()
    if (problem := storage_problem()) is not None:
        print(f"✗ {problem}", file=sys.stderr)
        return 1
    try:
        deps = wiring.status_deps()
        if args.check:
            status.run_health_check(deps)
        snap = status.snapshot(deps)
    except ConfigError as exc:
        print(f"✗ {exc}", file=sys.stderr)
        return 1
    print(json.dumps(snap, indent=2, default=str) if args.json else status.render(snap))
    return 0


def cmd_switch(args: argparse.Namespace) -> int:
    """The on/off switch, written where no provision can flip it back (``shared.delivery.hold``)."""
    settings_from_local()
    if (problem := storage_problem()) is not None:
        print(f"✗ {problem}", file=sys.stderr)
        return 1
    switch = wiring.switch()
    if args.state != "show":
        switch.set(args.state == "on")
    on = switch.current()
    print(
        "integration ON: events go to Defender (kept events are released within a minute)"
        if on
        else "integration OFF: events are verified, accepted and kept; no Defender call (a redeploy keeps it off)"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m shared",
        description="Noxys → Microsoft Defender for Endpoint connector: operator and developer commands.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_add_send_sample, _add_export_audit, _add_replay, _add_test_connection, _add_status, _add_switch):
        add(sub)
    cli_compliance.add_parsers(sub)
    cli_response.add_parsers(sub)
    cli_review.add_parsers(sub)
    cli_timeline.add_parsers(sub)
    return p


def _add_send_sample(sub: Any) -> None:
    s = sub.add_parser(
        "send-sample",
        help="sign a Noxys event like Noxys does and POST it to the webhook",
        description="Sign EVENT.json with the Standard Webhooks scheme and POST it. "
        "Timestamps are moved to now unless --keep-timestamps.",
    )
    s.add_argument("event", metavar="EVENT.json")
    s.add_argument("--url", default=DEFAULT_WEBHOOK_URL, help=f"webhook URL (default {DEFAULT_WEBHOOK_URL})")
    s.add_argument(
        "--secret", help="whsec_... (default: NOXYS_SIGNING_SECRET from the environment or local.settings.json)"
    )
    s.add_argument("--bearer", help="bearer token (default: NOXYS_BEARER_TOKEN if set)")
    s.add_argument("--keep-timestamps", action="store_true", help="send the event's own timestamps unchanged")
    s.add_argument("--new-id", action="store_true", help="give the event a fresh id (send the same sample twice)")
    s.set_defaults(run=cmd_send_sample)


def _add_export_audit(sub: Any) -> None:
    e = sub.add_parser(
        "export-audit",
        help="export the audit trail of Defender/Graph calls",
        description="Every outbound call with time, method, path, status, latency, event id, "
        "correlation id and attempt. Never a token, secret or PII value.",
    )
    e.add_argument("--since", required=True, help=f"start (inclusive): {PERIOD_HELP}")
    e.add_argument("--until", help="end (exclusive); default now")
    e.add_argument("--format", choices=("jsonl", "csv"), default="jsonl")
    e.add_argument("--output", help="write to this file instead of standard output")
    e.set_defaults(run=cmd_export_audit)


def _add_replay(sub: Any) -> None:
    r = sub.add_parser(
        "replay",
        help="move dead-lettered and poison events back onto their queue",
        description="Replay events the connector gave up on. Already delivered events are "
        "skipped, so a replay never makes a second alert.",
    )
    r.add_argument("--all", action="store_true", help="every dead-lettered / poison event")
    r.add_argument("--id", action="append", metavar="EVENT_ID", help="this event (repeatable)")
    r.add_argument("--reason", metavar="TEXT", help="events whose reason contains TEXT (e.g. 'Forbidden', 'poison')")
    r.add_argument("--source", choices=("dead", "poison", "all"), default="all")
    r.add_argument("--dry-run", action="store_true", help="list what would be replayed; move nothing")
    r.add_argument("--quiet", action="store_true", help="no progress bar")
    r.set_defaults(run=cmd_replay)


def _add_test_connection(sub: Any) -> None:
    t = sub.add_parser(
        "test-connection",
        help="check credentials, permissions and the Defender API",
        description="Gets a token, calls GET /api/machines?$top=1, reads the granted permissions and "
        "names the exact problem when something is wrong.",
    )
    t.add_argument("--json", action="store_true", help="machine-readable output")
    t.add_argument(
        "--strict", action="store_true", help="fail on a missing optional-feature permission too (default: warn)"
    )
    t.set_defaults(run=cmd_test_connection)


def _add_status(sub: Any) -> None:
    st = sub.add_parser("status", help="health record, counters, queues and the likely cause of missing alerts")
    st.add_argument("--check", action="store_true", help="run the full health check first (calls Defender)")
    st.add_argument("--json", action="store_true", help="machine-readable output")
    st.set_defaults(run=cmd_status)


def _add_switch(sub: Any) -> None:
    sw = sub.add_parser("switch", help="turn delivery to Defender off or on (kept in Table Storage; redeploys keep it)")
    sw.add_argument("state", choices=("off", "on", "show"))
    sw.set_defaults(run=cmd_switch)


def main(argv: list[str] | None = None) -> int:
    logsafe.install()
    args = build_parser().parse_args(argv)
    try:
        result: int = args.run(args)
    except BrokenPipeError:  # `... | head`: the reader has gone, which is not an error
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except ConfigError as exc:
        print(f"✗ {exc}", file=sys.stderr)
        return 1
    except AzureError as exc:  # storage failed half-way: say what, not a traceback
        print(f"✗ storage error: {exc.__class__.__name__}: {str(exc).splitlines()[0][:200]}", file=sys.stderr)
        return 1
    except OSError as exc:  # writing --output failed half-way (disk full, permissions): nothing is left behind
        reason = exc.strerror or exc.__class__.__name__
        print(f"✗ cannot write {exc.filename or 'the output'}: {reason}", file=sys.stderr)
        return 1
    return result
