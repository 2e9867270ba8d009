"""Operator commands for risk and response: ``explain``, ``rules check``, ``rules try`` and
``response undo``.

``explain`` and ``rules try`` judge an event file as the delivery would *now* — with the pattern
windows as they stand in storage and Defender's current view of the device when both can be
reached (each says when it could not) — and act on nothing: no window is written, no action sent.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from azure.core.exceptions import ClientAuthenticationError

from ops.cli_env import defender_problem, settings_from_local, storage_problem
from shared import devices, wiring
from shared.config import ConfigError
from shared.defender.errors import DefenderError
from shared.delivery.devicecache import identity, view_of
from shared.delivery.patterns import Observation, PatternStore
from shared.events import Device, Envelope, InvalidEvents, parse_events
from shared.facts import facts
from shared.health import roles_of
from shared.mapping import AlertDraft, draft_alert
from shared.response.files import risk_or_defaults
from shared.response.rules import (
    GRAPH_PERMISSIONS,
    PerHour,
    RulesError,
    RulesFile,
    describe_plan,
    load_rules,
    permission_warnings,
    setting_warnings,
)
from shared.response.rules import PERMISSION as ALL_PERMISSIONS
from shared.response.situation import situation
from shared.response.undo import UnknownAction
from shared.risk import Assessment, DeviceView, Patterns, assess
from shared.secrets import VaultUnavailable
from shared.timeshift import as_if_now


@dataclass
class Analysis:
    event: Envelope
    draft: AlertDraft
    assessment: Assessment
    view: DeviceView
    patterns: Patterns
    notes: list[str] = field(default_factory=list)


def _event(path: str, keep_timestamps: bool) -> Envelope:
    """The event of ``path`` judged as the live connector would judge it sent by ``send-sample``:
    moved to now (the same rule), unless ``--keep-timestamps``."""
    try:
        body = Path(path).read_bytes()
        if not keep_timestamps:
            body = json.dumps(as_if_now(json.loads(body), wiring.clock().now())).encode()
        events = parse_events(body)
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror}") from None
    except ValueError as exc:  # not JSON, or a timestamp that is not one (before the move to now)
        raise ValueError(f"{path} cannot be read as an event: {exc}") from None
    except InvalidEvents as exc:
        raise ValueError(f"{path} is not a valid Noxys event: {exc}") from None
    if len(events) != 1:
        raise ValueError(f"{path} holds {len(events)} events: give one event (a JSON object), not a batch")
    return events[0]


def _device(event: Envelope, notes: list[str]) -> DeviceView:
    if event.device is None:
        notes.append("the event names no device: no Defender device factors")
        return DeviceView()
    problem = defender_problem()
    if problem:
        notes.append(f"Defender not reachable ({problem}): no Defender device factors")
        return DeviceView()
    now = datetime.now(UTC)
    try:
        machine, why = devices.resolve(event.device, wiring.defender_client(), when=event.occurred_at, now=now)
    except (DefenderError, ConfigError) as exc:
        notes.append(f"device lookup failed ({exc}): no Defender device factors")
        return DeviceView()
    if machine is None:
        notes.append(f"device {event.device.display_name}: {why}")
    return view_of(machine)


def _patterns(event: Envelope, notes: list[str]) -> Patterns:
    if storage_problem() is not None:
        notes.append("storage not reachable: the event alone, without its pattern windows")
        return Patterns(available=False, why="storage not reachable")
    kept = facts(event)
    device = identity(event.device) if event.device else ""
    store = PatternStore(wiring.table("Patterns"))
    observation = Observation(event.id, event.occurred_at.timestamp(), device, kept.user, kept.platform, kept.pii_types)
    return store.read(observation, recorded=False)


def analyse(path: str, keep_timestamps: bool = False) -> Analysis:
    settings_from_local()
    event = _event(path, keep_timestamps)  # after the settings: the clock is the connector's
    notes: list[str] = []
    draft = draft_alert(event, wiring.settings().platform_domains)
    patterns, view = _patterns(event, notes), _device(event, notes)
    cfg, problem = risk_or_defaults(wiring.settings())  # as delivery scores: the defaults, said so
    if problem:
        notes.append(problem.line())
    found = assess(event, patterns, view, cfg, base=draft.severity, now=event.occurred_at.timestamp())
    return Analysis(event, draft, found, view, patterns, notes)


def cmd_explain(args: argparse.Namespace) -> int:
    try:
        a = analyse(args.event, args.keep_timestamps)
    except (ValueError, ConfigError) as exc:
        print(f"✗ {exc}", file=sys.stderr)
        return 2
    f = a.assessment
    print(f"event {a.event.id} ({a.event.type})")
    print(f"  {f.line()}")
    total = f.noxys + sum(factor.weight for factor in f.factors)
    if total > f.score + 1e-9:
        print(f"  capped: the terms add up to {total:.2f}; a combined risk is at most {f.score:.2f}")
    print(f"  severity: {a.draft.severity} from the event alone → {f.severity} combined")
    for factor in f.factors:
        print(f"    + {factor.weight:.2f}  {factor.text}  [{factor.name} = {factor.value}]")
    for note in a.notes:
        print(f"  note: {note}")
    return 0


def cmd_rules_check(args: argparse.Namespace) -> int:
    try:
        rules = load_rules(args.file)
    except RulesError as exc:
        print(f"✗ {exc.problem}", file=sys.stderr)
        return 1
    assert rules is not None
    live = [r.name for r in rules.rules if not r.dry_run]
    print(f"✓ {args.file}: {len(rules.rules)} rule(s), {len(live)} live, {len(rules.rules) - len(live)} dry run")
    caps = ", ".join(f"{kind} {rules.limits.cap(kind)}" for kind in PerHour.model_fields)
    print(f"  limits an hour, across all instances: {caps}; {rules.limits.max_devices_per_hour} distinct device(s); "
          f"{rules.limits.device_cooldown_minutes} min cooldown per device")  # fmt: skip
    for permission, names in sorted(rules.permissions().items()):
        print(f"  needs {permission} (for {', '.join(names)}): `test-connection` checks that it is granted")
    settings_from_local()
    for warning in setting_warnings(rules, os.environ) + _permission_warnings(rules):
        print(f"  ⚠ {warning}")
    return 0


def _permission_warnings(rules: RulesFile) -> list[str]:
    """What the app's own token says it is granted, against what the rules' actions need."""
    problem = defender_problem()
    if problem is None:
        try:
            token = wiring.credential().get_token(wiring.settings().defender_scope).token
        except (ClientAuthenticationError, VaultUnavailable, ConfigError) as exc:
            problem = f"no token ({str(exc)[:160]})"
        else:
            return permission_warnings(rules, set(roles_of(token)) | _graph_roles(rules))
    return [f"permissions not checked: {problem}; `test-connection` checks them"]


def _graph_roles(rules: RulesFile) -> set[str]:
    """The Graph roles of the app, when a rule's action needs one (notify_user, contain_user):
    they are in the Graph token, not in the Defender one."""
    kinds = {a.action for r in rules.rules for a in r.then}
    if not any(ALL_PERMISSIONS.get(k, "") in GRAPH_PERMISSIONS for k in kinds):
        return set()
    try:
        return set(roles_of(wiring.credential().get_token(wiring.settings().graph_scope).token))
    except (ClientAuthenticationError, VaultUnavailable, ConfigError):
        return set()  # each Graph permission is then reported missing, which test-connection confirms


def cmd_rules_try(args: argparse.Namespace) -> int:
    try:
        rules = load_rules(args.file)
        a = analyse(args.event, args.keep_timestamps)
    except RulesError as exc:
        print(f"✗ {exc.problem}", file=sys.stderr)
        return 1
    except (ValueError, ConfigError) as exc:
        print(f"✗ {exc}", file=sys.stderr)
        return 2
    assert rules is not None
    found = situation(a.event, a.draft, a.assessment.score, a.view, a.patterns, rules)
    print(f"event {a.event.id}: severity {a.assessment.severity}, combined risk {a.assessment.score:.2f}, "
          f"platform {found.platform_name}, device tags {list(found.device_tags) or 'none'}")  # fmt: skip
    for line in describe_plan(rules, found):
        print(f"  {line}")
    for note in a.notes:
        print(f"  note: {note}")
    print("  (nothing was sent: rules try only judges)")
    return 0


def _machine_of(name: str) -> tuple[str | None, str]:
    """The machine a host name or FQDN names (the same resolution as delivery), or why not."""
    device = Device(fqdn=name) if "." in name.strip(".") else Device(hostname=name)
    now = datetime.now(UTC)
    machine, why = devices.resolve(device, wiring.defender_client(), when=now, now=now)
    return (str(machine["id"]), why) if machine else (None, why)


def cmd_response_undo(args: argparse.Namespace) -> int:
    """Release what response did, by machine action id or by device; paced, audited, idempotent."""
    settings_from_local()
    try:
        releaser = wiring.releaser()
        if args.action:
            said = releaser.by_action(args.action)
        else:
            machine, why = _machine_of(args.device)
            if machine is None:
                print(f"✗ device {args.device}: {why}", file=sys.stderr)
                return 1
            said = releaser.by_machine(machine)
    except UnknownAction as exc:
        print(f"✗ {exc}", file=sys.stderr)
        return 1
    except (DefenderError, ConfigError) as exc:
        print(f"✗ {exc}", file=sys.stderr)
        return 2
    for line in said:
        print(f"  {line}")
    return 0


def add_parsers(sub: Any) -> None:
    e = sub.add_parser("explain", help="the combined risk score an event would get now, factor by factor")
    e.add_argument("event", help="a Noxys event (JSON); its timestamps are moved to now, as send-sample does")
    e.set_defaults(run=cmd_explain)
    r = sub.add_parser("rules", help="automated response rules: check a file, or try it on an event")
    verbs = r.add_subparsers(dest="verb", required=True, metavar="VERB")
    c = verbs.add_parser("check", help="validate a rules file; name the first wrong field")
    c.add_argument("file")
    c.set_defaults(run=cmd_rules_check)
    t = verbs.add_parser("try", help="which rules an event would meet and what they would do (acts on nothing)")
    t.add_argument("file")
    t.add_argument("event", help="a Noxys event (JSON); its timestamps are moved to now, as send-sample does")
    t.set_defaults(run=cmd_rules_try)
    for judged in (e, t):
        judged.add_argument("--keep-timestamps", action="store_true", help="judge the event at its own timestamps")
    resp = sub.add_parser("response", help="automated response: undo what it did")
    rverbs = resp.add_subparsers(dest="verb", required=True, metavar="VERB")
    u = rverbs.add_parser("undo", help="release isolation, lift restriction, remove the tag, delete the indicator")
    which = u.add_mutually_exclusive_group(required=True)
    which.add_argument("--action", help="the Defender machine action id (as status and the audit trail show it)")
    which.add_argument("--device", help="a host name or FQDN: everything still in force on that device")
    u.set_defaults(run=cmd_response_undo)
