"""Automated response rules (pure): the file's shape, its validation, which rules an event meets,
and the guardrails' verdict on each action.

A rules file (``RESPONSE_RULES_FILE``, JSON) is validated whole before anything runs: one wrong
field refuses the file with the field's path (``rules[2].then[0].isolation_type``), so a rule is
never half-applied. Every rule is a **dry run** unless it says ``"dry_run": false``: the would-be
actions are recorded and written on the alert, and nothing is sent. The guardrails — device-tag
exclusions, a per-device cooldown, an hourly cap on isolations across all instances, and never an
action while the same one is pending on the device — are decided here from what the executor read;
the executor (``shared.response.executor``) only reads, reserves and sends.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from shared.config import ConfigError, app_file
from shared.mapping import RANK, Severity

ActionKind = Literal[
    "isolate",
    "restrict_app_execution",
    "av_scan",
    "collect_investigation_package",
    "tag_device",
    "block_domain",
    "ticket",
]
PERMISSION: dict[str, str] = {
    "isolate": "Machine.Isolate",
    "restrict_app_execution": "Machine.RestrictExecution",
    "av_scan": "Machine.Scan",
    "collect_investigation_package": "Machine.CollectForensics",
    "tag_device": "Machine.ReadWrite.All",
    "block_domain": "Ti.ReadWrite.All",
}
MACHINE_ACTION_TYPE = {  # our action → the MachineAction ``type`` Defender reports
    "isolate": "Isolate",
    "restrict_app_execution": "RestrictCodeExecution",
    "av_scan": "RunAntiVirusScan",
    "collect_investigation_package": "CollectInvestigationData",
}
Tag = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9 _.\-]+$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Repeat(_Strict):
    count: int = Field(ge=2, le=1000)
    within_minutes: int = Field(ge=1, le=1440)
    per: Literal["device", "user"] = "device"


class When(_Strict):
    event_types: list[Annotated[str, StringConstraints(min_length=1, max_length=100)]] = []
    min_severity: Severity | None = None
    min_combined_risk: float | None = Field(default=None, ge=0, le=1)
    platforms: list[Annotated[str, StringConstraints(min_length=1, max_length=100)]] = []
    policy_actions: list[Annotated[str, StringConstraints(min_length=1, max_length=32)]] = []
    repeat: Repeat | None = None
    exclude_device_tags: list[Tag] = []


class Isolate(_Strict):
    action: Literal["isolate"]
    isolation_type: Literal["Full", "Selective"] = "Selective"


class RestrictAppExecution(_Strict):
    action: Literal["restrict_app_execution"]


class AvScan(_Strict):
    action: Literal["av_scan"]
    scan_type: Literal["Quick", "Full"] = "Quick"


class CollectInvestigationPackage(_Strict):
    action: Literal["collect_investigation_package"]


class TagDevice(_Strict):
    action: Literal["tag_device"]
    tag: Tag


class BlockDomain(_Strict):
    action: Literal["block_domain"]
    indicator_action: Literal["Block", "Warn", "Audit"] = "Block"
    expires_after_hours: int = Field(default=24, ge=1, le=8760)


class Ticket(_Strict):
    action: Literal["ticket"]


Action = Annotated[
    Isolate | RestrictAppExecution | AvScan | CollectInvestigationPackage | TagDevice | BlockDomain | Ticket,
    Field(discriminator="action"),
]


class Rule(_Strict):
    name: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    when: When = When()
    then: list[Action] = Field(min_length=1, max_length=10)
    dry_run: bool = True


class Limits(_Strict):
    max_isolations_per_hour: int = Field(default=5, ge=0, le=1000)
    device_cooldown_minutes: int = Field(default=60, ge=0, le=10080)


class RulesFile(_Strict):
    rules: list[Rule] = Field(max_length=100)
    limits: Limits = Limits()

    def permissions(self) -> dict[str, list[str]]:
        """Permission → the enabled (not dry-run) rules whose actions need it."""
        out: dict[str, list[str]] = {}
        for rule in self.rules:
            for action in rule.then:
                if not rule.dry_run and action.action in PERMISSION:
                    out.setdefault(PERMISSION[action.action], []).append(rule.name)
        return out


class RulesError(ConfigError):
    def __init__(self, problem: str) -> None:
        super().__init__("RESPONSE_RULES_FILE", problem)


def _where(loc: tuple[int | str, ...]) -> str:
    """A pydantic location as the path a person writes: rules[2].then[0].isolation_type."""
    out = ""
    kinds = set(PERMISSION) | {"ticket"}
    for i, part in enumerate(loc):
        if isinstance(part, int):
            out += f"[{part}]"
        elif not (part in kinds and i > 0 and isinstance(loc[i - 1], int)):  # the union's tag
            out += f".{part}" if out else part
    return out or "(file)"


def parse_rules(text: str, source: str = "rules") -> RulesFile:
    try:
        return RulesFile.model_validate(json.loads(text))
    except json.JSONDecodeError as exc:
        raise RulesError(f"{source} is not JSON (line {exc.lineno}, column {exc.colno})") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        raise RulesError(f"{source}: {_where(tuple(first['loc']))}: {first['msg']}") from None


def load_rules(path: str | None) -> RulesFile | None:
    """The rules, or None when no file is configured (no response at all)."""
    if not path:
        return None
    try:
        text = app_file(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise RulesError(f"{path} cannot be read ({exc.strerror})") from None
    return parse_rules(text, path)


# ---------------------------------------------------------------------- matching
@dataclass(frozen=True)
class Situation:
    """What a rule is judged on; the counts are per (per, within_minutes) of the rules' repeats."""

    event_type: str
    severity: Severity
    combined_risk: float
    platform_id: str
    platform_name: str
    policy_action: str
    device_tags: tuple[str, ...] = ()
    counts: dict[str, int] = field(default_factory=dict)


def repeat_key(r: Repeat) -> str:
    return f"{r.per}:{r.within_minutes}"


def why_not(rule: Rule, s: Situation) -> str | None:
    """None when the rule's conditions hold; otherwise the first one that does not, in words."""
    w = rule.when
    checks = (
        (bool(w.event_types) and s.event_type not in w.event_types, f"event type {s.event_type} not listed"),
        (w.min_severity is not None and RANK[s.severity] < RANK[w.min_severity], f"severity {s.severity} too low"),
        (
            w.min_combined_risk is not None and s.combined_risk < w.min_combined_risk,
            f"combined risk {s.combined_risk:.2f} below {w.min_combined_risk}",
        ),
        (
            bool(w.platforms)
            and not {s.platform_id.lower(), s.platform_name.lower()} & {p.lower() for p in w.platforms},
            f"platform {s.platform_name} not listed",
        ),
        (
            bool(w.policy_actions) and s.policy_action.lower() not in {a.lower() for a in w.policy_actions},
            f"policy action {s.policy_action or 'none'} not listed",
        ),
    )
    for failed, reason in checks:
        if failed:
            return reason
    if w.repeat and (n := s.counts.get(repeat_key(w.repeat), 0)) < w.repeat.count:
        return f"{n} of {w.repeat.count} events per {w.repeat.per} within {w.repeat.within_minutes} min"
    return None


def excluded_by(rule: Rule, s: Situation) -> str | None:
    tags = {t.lower() for t in s.device_tags}
    hit = [t for t in rule.when.exclude_device_tags if t.lower() in tags]
    return hit[0] if hit else None


def repeats(rules: RulesFile) -> list[Repeat]:
    return [r.when.repeat for r in rules.rules if r.when.repeat is not None]


# ---------------------------------------------------------------------- guardrails
@dataclass(frozen=True)
class Guard:
    """What the executor read (and reserved) before deciding: the device's cooldown holder, the
    isolations in the last hour across all instances, and the actions pending on the device."""

    cooldown_until: float = 0.0
    cooldown_owner: str = ""
    isolations_last_hour: int = 0
    isolation_owners: tuple[str, ...] = ()
    pending: dict[str, str] = field(default_factory=dict)  # MachineAction type → its id


Verdict = Literal["send", "dry_run", "skip"]


def verdict(action: Action, rule: Rule, event_id: str, guard: Guard, limits: Limits, now: float) -> tuple[Verdict, str]:
    """Send it, record it as a dry run, or skip it (and why)."""
    if rule.dry_run:
        return "dry_run", "dry run: recorded, not sent"
    if guard.cooldown_until > now and guard.cooldown_owner != event_id:
        return "skip", f"device cooldown until {guard.cooldown_until:.0f} ({limits.device_cooldown_minutes} min)"
    kind = MACHINE_ACTION_TYPE.get(action.action)
    if kind and kind in guard.pending:
        return "skip", f"{kind} already pending or running on the device (action {guard.pending[kind]})"
    if (
        action.action == "isolate"
        and event_id not in guard.isolation_owners
        and guard.isolations_last_hour >= limits.max_isolations_per_hour
    ):
        return "skip", f"hourly isolation cap reached ({limits.max_isolations_per_hour})"
    return "send", ""


def describe(action: Action) -> str:
    """The action as a person reads it on the alert."""
    match action:
        case Isolate():
            return f"isolate the device ({action.isolation_type})"
        case AvScan():
            return f"run a {action.scan_type.lower()} antivirus scan"
        case TagDevice():
            return f"tag the device {action.tag}"
        case BlockDomain():
            return f"{action.indicator_action.lower()} the platform's domain for {action.expires_after_hours} h"
        case Ticket():
            return "open a ticket"
        case RestrictAppExecution():
            return "restrict app execution"
        case _:
            return "collect an investigation package"


def describe_plan(rules: RulesFile, s: Situation) -> list[str]:
    """``rules try``: which rules fire for a situation and what each would do, acting on nothing."""
    out = []
    for rule in rules.rules:
        why = why_not(rule, s)
        if why is not None:
            out.append(f"✗ {rule.name}: does not apply ({why})")
            continue
        tag = excluded_by(rule, s)
        if tag:
            out.append(f"✗ {rule.name}: applies, but the device is excluded (tag {tag})")
            continue
        mode = "dry run: would record and comment" if rule.dry_run else "live: would send"
        out.append(f"✓ {rule.name} ({mode}): " + "; ".join(describe(a) for a in rule.then))
    return out
