"""``python -m shared timeline``: one device's timeline around an alert or a moment (shared.timeline).

Reads, all through the shared paced Defender client: the alert (``--alert``), the device's alerts
(``GET /api/machines/{id}/alerts``), and two advanced hunting queries (``DeviceNetworkEvents``,
``DeviceProcessEvents``; the hunting budget is 45 a minute); and the connector's own ledger for the
Noxys events and their anchors. A source that cannot be read is named, and the others still shown.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from ops.cli_env import moment, settings_from_local, storage_problem
from ops.cli_response import _machine_of
from shared import timeline, wiring
from shared.config import ConfigError
from shared.defender.errors import DefenderError

MARGIN = 3600.0  # ledger rows are found by when the connector received them: look an hour wider


def _anchor(args: argparse.Namespace, api: Any) -> tuple[str, datetime, str]:
    """(machine id, the moment, a title) for ``--alert`` or ``--device --around``; ValueError why not."""
    if args.alert:
        alert = api.get_alert(args.alert)
        machine, created = str(alert.get("machineId") or ""), str(alert.get("alertCreationTime") or "")
        if not machine or not created:
            raise ValueError(f"alert {args.alert} names no device or creation time in Defender")
        return machine, moment(created, datetime.now(UTC)), f"Timeline of alert {args.alert} ({alert.get('title', '')})"
    if not args.around:
        raise ValueError("--device needs --around ISO (the moment to centre the timeline on)")
    machine_id, why = _machine_of(args.device)
    if machine_id is None:
        raise ValueError(f"device {args.device}: {why}")
    return machine_id, moment(args.around, datetime.now(UTC)), f"Timeline of {args.device}"


def collect(api: Any, machine_id: str, around: datetime, minutes: int) -> tuple[list[timeline.Item], list[str]]:
    """The merged items, and the sources that could not be read (in words)."""
    start, end = timeline.window(around, minutes)
    missing: list[str] = []

    def read(what: str, call: Any) -> list[dict[str, Any]]:
        try:
            return list(call())
        except DefenderError as exc:
            missing.append(f"{what}: {exc.status} {exc.code}")
            return []

    entries = list(wiring.ledger().between(start.timestamp() - MARGIN, end.timestamp() + MARGIN))
    alerts = read("Defender's alerts on the device", lambda: api.machine_alerts(machine_id))
    network, process = (
        read(table, lambda t=table: api.run_hunting_query(timeline.hunting_query(t, machine_id, start, end)))
        for table in ("DeviceNetworkEvents", "DeviceProcessEvents")
    )
    items = timeline.merge(entries, alerts, network, process, machine_id=machine_id, start=start, end=end)
    return items, missing


def for_report(
    api: Any, alert_ids: list[str], read: dict[str, dict[str, Any]], limit: int
) -> dict[str, list[dict[str, str]]]:
    """The report's timelines (``report --timeline``): one per alert Defender read back with its
    device, ± 30 minutes around its creation, at most ``limit`` (two hunting queries each)."""
    out: dict[str, list[dict[str, str]]] = {}
    for alert_id in alert_ids:
        a = read.get(alert_id) or {}
        machine, created = str(a.get("machineId") or ""), str(a.get("alertCreationTime") or "")
        if len(out) >= limit or not machine or not created:
            continue
        items, _ = collect(api, machine, moment(created, datetime.now(UTC)), 30)
        out[alert_id] = [asdict(i) for i in items]
    return out


def cmd_timeline(args: argparse.Namespace) -> int:
    settings_from_local()
    if (problem := storage_problem()) is not None:
        print(f"✗ {problem}", file=sys.stderr)
        return 1
    try:
        api = wiring.defender_client()
        machine_id, around, title = _anchor(args, api)
        items, missing = collect(api, machine_id, around, args.minutes)
    except (ValueError, ConfigError) as exc:
        print(f"✗ {exc}", file=sys.stderr)
        return 2
    except DefenderError as exc:
        print(f"✗ Defender: {exc.status} {exc.code} {exc.message}", file=sys.stderr)
        return 1
    for line in missing:
        print(f"⚠ not shown: {line}", file=sys.stderr)
    start, end = timeline.window(around, args.minutes)
    head = f"{title}, machine {machine_id}, {timeline.iso(start)} – {timeline.iso(end)}"
    sys.stdout.write(timeline.render_json(items) if args.format == "json" else timeline.render_text(items, head))
    return 0


def add_parsers(sub: Any) -> None:
    t = sub.add_parser(
        "timeline",
        help="one device's timeline: Noxys events, the anchor, Defender's other alerts, network and process events",
        description="Merges, in time order, the Noxys events on the device and their anchor connections, "
        "Defender's other alerts on the device, and its DeviceNetworkEvents and DeviceProcessEvents from advanced "
        "hunting, in a window around an alert or a moment.",
    )
    which = t.add_mutually_exclusive_group(required=True)
    which.add_argument("--alert", help="a Defender alert id: its device, around its creation time")
    which.add_argument("--device", help="a host name or FQDN (with --around)")
    t.add_argument("--around", help="ISO 8601 time to centre the timeline on (with --device)")
    t.add_argument("--minutes", type=int, default=30, choices=range(1, 1441), metavar="1-1440",
                   help="minutes each side of the moment (default 30)")  # fmt: skip
    t.add_argument("--format", choices=("text", "json"), default="text")
    t.set_defaults(run=cmd_timeline)
