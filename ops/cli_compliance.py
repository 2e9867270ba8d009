"""Operator commands for compliance: ``report``, ``correlation`` and ``subject export|erase``.

Thin: they read the ledger and the state tables (``shared.wiring``), ask Defender for its view
of the alerts (paced through the shared budgets, like every other call, and audited), and hand
the rest to the pure modules ``ops.report``, ``shared.correlation`` and ``ops.subject``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from typing import Any

from ops import cli_timeline, report
from ops.cli_env import (
    defender_problem,
    moment,
    output_problem,
    period,
    settings_from_local,
    storage_problem,
    write_private,
)
from ops.subject import Subject, SubjectRequests, export_view, hunting_query, purge_request
from shared import correlation, wiring
from shared.readback import read_back
from shared.response.store import ResponseStore

__all__ = ["add_parsers", "moment", "read_back"]
TIMELINES = 20  # report --timeline: alerts with a timeline section (each costs two hunting queries)


def subject_email(text: str) -> Subject:
    """``--user``: an e-mail. A blank one would match every row that names no user (an erasure of
    everything written before the ledger kept users), and a look-alike (U+212A KELVIN SIGN) would
    fold into someone else's address: both are refused before any table is read."""
    return _subject("email", text)


def subject_user_id(text: str) -> Subject:
    """``--user-id``: a Noxys user id, matched only against user ids (never against e-mails)."""
    return _subject("user_id", text)


def _subject(kind: str, text: str) -> Subject:
    try:
        return Subject.of("email" if kind == "email" else "user_id", text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _period(args: argparse.Namespace) -> tuple[datetime, datetime]:
    return period(args.since, args.until, datetime.now(UTC))


def _ready() -> str | None:
    settings_from_local()
    return storage_problem()


# ---------------------------------------------------------------------- report
def cmd_report(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    if (problem := _ready() or (output_problem(args.output) if args.output else None)) is not None:
        print(f"✗ {problem}", file=sys.stderr)
        return 1
    try:
        since, until = _period(args)
    except ValueError as exc:
        print(f"✗ {exc}", file=sys.stderr)
        return 2
    entries = list(wiring.ledger().between(since.timestamp(), until.timestamp()))
    ids = sorted({e.alert_id for e in entries if e.state.value == "alert_created" and e.alert_id and e.via != "graph"})
    defender: dict[str, dict[str, Any]] = {}
    problem = None if args.no_defender else defender_problem()
    if ids and not args.no_defender and problem is None:
        with tqdm(total=len(ids), desc="reading alerts from Defender", unit="alert", file=sys.stderr) as bar:
            defender = read_back(wiring.defender_client(), ids, since, progress=lambda: bar.update(1))
    elif ids:
        reason = "not read back (--no-defender)" if args.no_defender else f"not read back: {problem}"
        defender = {i: {"error": reason} for i in ids}
    configured = bool(wiring.settings().response_rules_file)
    actions = ResponseStore(wiring.table("Responses")).between(since.timestamp(), until.timestamp())
    built = report.build(
        entries, defender, since=since, until=until, now=datetime.now(UTC), actions=actions,
        response_configured=configured,
    )  # fmt: skip
    if args.timeline and defender and problem is None and not args.no_defender:
        order = [a.alert_id for a in built.alerts]
        built.timelines = cli_timeline.for_report(wiring.defender_client(), order, defender, TIMELINES)
    text = report.RENDERERS[args.format](built)
    if args.output:
        write_private(args.output, [text])
        print(f"wrote the {args.format} report ({len(entries)} event(s), {len(ids)} alert(s)) to {args.output}")
    else:
        sys.stdout.write(text)
    return 0


# ---------------------------------------------------------------------- correlation
def cmd_correlation(args: argparse.Namespace) -> int:
    if (problem := _ready()) is not None:
        print(f"✗ {problem}", file=sys.stderr)
        return 1
    try:
        since, until = _period(args)
    except ValueError as exc:
        print(f"✗ {exc}", file=sys.stderr)
        return 2
    found = correlation.summarize(wiring.ledger().between(since.timestamp(), until.timestamp()))
    if args.json:
        print(json.dumps(found.as_dict(), indent=2))
    else:
        print("\n".join(correlation.render(found, f"{since:%Y-%m-%d %H:%M} – {until:%Y-%m-%d %H:%M} UTC")))
    return 0


# ---------------------------------------------------------------------- data-subject requests
def _requests(rate: float) -> SubjectRequests:
    gap = 1.0 / rate if rate > 0 else 0.0
    state = {"next": 0.0}

    def pace() -> None:
        wait = state["next"] - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        state["next"] = max(state["next"], time.monotonic()) + gap

    return SubjectRequests(wiring.table, pace)


def _not_searched() -> dict[str, int]:
    s = wiring.settings()
    names = [s.events_queue_name, s.events_priority_queue_name, f"{s.events_queue_name}-poison"]
    names += [f"{s.events_priority_queue_name}-poison", s.hunting_queue_name]
    out = {}
    for name in names:
        try:
            out[name] = wiring.queue(name).get_queue_properties().approximate_message_count or 0
        except Exception:  # a queue that does not exist holds nothing
            out[name] = 0
    return out


def _who(args: argparse.Namespace) -> Subject:
    subject: Subject = args.user or args.user_id
    return subject


def cmd_subject_export(args: argparse.Namespace) -> int:
    if (problem := _ready() or (output_problem(args.output) if args.output else None)) is not None:
        print(f"✗ {problem}", file=sys.stderr)
        return 1
    subject = _who(args)
    found = _requests(args.rate).find(subject)
    doc = {
        "subject": {subject.kind: subject.typed},
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "counts": found.counts(),
        "tables": export_view(found),
        "defender_alert_ids": found.alert_ids,
        "hunting_query": hunting_query(found),
        "not_searched": {"queue_messages": _not_searched()},
        "not_personal": ["Devices (machine ids by device name)", "Counters", "Pacing", "Health"],
    }
    text = json.dumps(doc, indent=2, ensure_ascii=False, default=str)
    if args.output:
        write_private(args.output, [text + "\n"])
        counts = ", ".join(f"{k} {v}" for k, v in found.counts().items())
        print(f"wrote {sum(found.counts().values())} row(s) ({counts}) to {args.output}")
    else:
        print(text)
    return 0


def _confirmed(args: argparse.Namespace, subject: Subject, total: int) -> bool:
    if args.yes:
        return True
    if not sys.stdin.isatty():
        print("refusing to erase without confirmation: pass --yes (or run it in a terminal)", file=sys.stderr)
        return False
    answer = input(f"Erase {total} row(s) about {subject.typed}? Type the user again to confirm: ")
    try:
        if Subject.of(subject.kind, answer).value == subject.value:
            return True
    except ValueError:
        pass
    print(f"✗ that is not {subject.typed}: nothing was erased", file=sys.stderr)
    return False


def cmd_subject_erase(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    if (problem := _ready()) is not None:
        print(f"✗ {problem}", file=sys.stderr)
        return 1
    requests = _requests(args.rate)
    subject = _who(args)
    found = requests.find(subject)
    if args.keep_audit:
        found.rows["Audit"] = []
    counts, total = found.counts(), sum(found.counts().values())
    print("found: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    if args.dry_run:
        print(f"dry run: {total} row(s) would be erased; nothing was deleted")
    elif total and not _confirmed(args, subject, total):
        return 2
    elif total:
        with tqdm(total=total, desc="erasing", unit="row", file=sys.stderr) as bar:
            erased = requests.erase(found, progress=lambda _: bar.update(1), keep_audit=args.keep_audit)
        wiring.audit().record_erasure(wiring.clock().now(), erased)
        print(f"erased {erased} row(s); the audit trail records that an erasure happened (not whose)")
    print("the hunting table is in Log Analytics; the connector does not purge it (that needs the Data Purger role,")
    print("which its identity deliberately lacks). An operator who holds it runs:")
    print("  " + purge_request(found))
    waiting = {k: v for k, v in _not_searched().items() if v}
    if waiting:
        print(f"messages still queued (not searchable): {waiting}; run this again once they are delivered")
    return 0


def add_parsers(sub: Any) -> None:
    r = sub.add_parser("report", help="compliance report for a period: per platform, user and device (html|md|json)")
    r.add_argument("--since", required=True, help="start: 7d, 24h or ISO 8601 (UTC unless a zone is given)")
    r.add_argument("--until", help="end (default: now)")
    r.add_argument("--format", choices=sorted(report.RENDERERS), default="html")
    r.add_argument("--output", help="write here instead of stdout")
    r.add_argument("--no-defender", action="store_true", help="do not read the alerts back from Defender")
    r.add_argument(
        "--timeline", action="store_true",
        help=f"add each alert's device timeline to the HTML (at most {TIMELINES} alerts; two hunting queries each)",
    )  # fmt: skip
    r.set_defaults(run=cmd_report)
    c = sub.add_parser("correlation", help="share of events resolved to a device and anchored, with hints")
    c.add_argument("--since", default="7d", help="start: 7d (default), 24h or ISO 8601")
    c.add_argument("--until", help="end (default: now)")
    c.add_argument("--json", action="store_true")
    c.set_defaults(run=cmd_correlation)
    s = sub.add_parser("subject", help="data-subject requests: export or erase what the connector keeps on a user")
    verbs = s.add_subparsers(dest="verb", required=True, metavar="VERB")
    e = verbs.add_parser("export", help="everything stored about a user, as JSON (GDPR art. 15)")
    e.add_argument("--output", help="write here instead of stdout")
    x = verbs.add_parser("erase", help="delete it from the connector's state (GDPR art. 17)")
    x.add_argument("--dry-run", action="store_true", help="count only; delete nothing")
    x.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    x.add_argument("--keep-audit", action="store_true", help="keep the Defender call records (event ids only)")
    for verb in (e, x):
        who = verb.add_mutually_exclusive_group(required=True)
        who.add_argument("--user", type=subject_email, help="the user's e-mail (case and width do not matter)")
        who.add_argument("--user-id", type=subject_user_id, help="the user's Noxys user id (never matched to e-mails)")
        verb.add_argument("--rate", type=float, default=50.0, help="storage operations per second (default 50)")
    e.set_defaults(run=cmd_subject_export)
    x.set_defaults(run=cmd_subject_erase)
