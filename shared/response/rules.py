"""Automated response rules (pure): the file's shape, its validation, which rules an event meets,
and the guardrails' verdict on each action.

A rules file (``RESPONSE_RULES_FILE``, JSON) is validated whole and strictly before anything runs
(:mod:`shared.configfile`: ``"false"`` is not a boolean, NaN not a number, a duplicated key is an
error): one wrong field refuses the file with the field's path
(``rules[2].then[0].isolation_type``), so a rule is never half-applied — and response is then off,
never the alerts (:mod:`shared.response.files`). Every rule is a **dry run** unless it says
``"dry_run": false``: the would-be actions are recorded and written on the alert, and nothing is
sent.

The guardrails are decided here, from what the executor read (``shared.response.executor`` only
reads, reserves and sends): device-tag exclusions, a per-device cooldown, never an action while the
same one is pending; and the trust boundaries, because an event is authentic but not
authoritative — what ``block_domain`` may block (:func:`block_target`), which machines a
destructive action may touch (:func:`protected`) and how surely the event names one
(:func:`identity_proof`). The hourly caps' sentences are here too (:func:`cap_reason`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from shared.config import ConfigError
from shared.configfile import FileProblem, first_error, parse_strict, read_strict, where
from shared.mapping import RANK, Severity
from shared.platforms import PLATFORMS, on_domain

ActionKind = Literal[
    "isolate",
    "restrict_app_execution",
    "av_scan",
    "collect_investigation_package",
    "tag_device",
    "block_domain",
    "ticket",
    "notify_user",
    "contain_user",
]
PERMISSION: dict[str, str] = {
    "isolate": "Machine.Isolate",
    "restrict_app_execution": "Machine.RestrictExecution",
    "av_scan": "Machine.Scan",
    "collect_investigation_package": "Machine.CollectForensics",
    "tag_device": "Machine.ReadWrite.All",
    "block_domain": "Ti.ReadWrite.All",
    "notify_user": "Mail.Send",
    "contain_user": "GroupMember.ReadWrite.All",
}
# what an action needs besides its own permission: contain_user reads the user and checks, fresh,
# that it is not protected (GET /users, checkMemberGroups: User.Read.All); revoke_sessions its own
ALSO_NEEDS: dict[str, tuple[str, ...]] = {"contain_user": ("User.Read.All",)}
REVOKE_PERMISSION = "User.RevokeSessions.All"
GRAPH_PERMISSIONS = frozenset(  # granted on Microsoft Graph, not on the Defender API
    {"Mail.Send", "GroupMember.ReadWrite.All", "User.Read.All", REVOKE_PERMISSION}
)
MACHINE_ACTION_TYPE = {  # our action → the MachineAction ``type`` Defender reports
    "isolate": "Isolate",
    "restrict_app_execution": "RestrictCodeExecution",
    "av_scan": "RunAntiVirusScan",
    "collect_investigation_package": "CollectInvestigationData",
}
DESTRUCTIVE = frozenset({"isolate", "restrict_app_execution", "collect_investigation_package"})
Tag = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9 _.\-]+$")]
# a registrable host name: at least two labels, letters in the last; no IP, no bare "com"
DomainName = Annotated[
    str,
    StringConstraints(
        min_length=4,
        max_length=253,
        to_lower=True,
        pattern=r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z][A-Za-z0-9-]{0,61}[A-Za-z0-9]$",
    ),
]


class _Strict(BaseModel):
    """Strict: ``"false"`` is not a boolean, ``1.0`` not a count, NaN and infinities not numbers."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


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
    release_after_hours: int | None = Field(default=None, ge=1, le=720)


class RestrictAppExecution(_Strict):
    action: Literal["restrict_app_execution"]
    release_after_hours: int | None = Field(default=None, ge=1, le=720)


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


class NotifyUser(_Strict):
    """E-mail the person the event names (:mod:`shared.response.notify`), at most once per
    ``limits.notify_cooldown_minutes``."""

    action: Literal["notify_user"]


class ContainUser(_Strict):
    """Add the person to ``CONTAIN_GROUP_ID`` (the group Conditional Access blocks from AI apps)
    for ``for_hours``, never a member of ``PROTECTED_GROUP_ID`` (:mod:`shared.response.contain`)."""

    action: Literal["contain_user"]
    for_hours: int = Field(default=24, ge=1, le=720)
    revoke_sessions: bool = False


Action = Annotated[
    Isolate
    | RestrictAppExecution
    | AvScan
    | CollectInvestigationPackage
    | TagDevice
    | BlockDomain
    | Ticket
    | NotifyUser
    | ContainUser,
    Field(discriminator="action"),
]


class Rule(_Strict):
    name: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    when: When = When()
    then: list[Action] = Field(min_length=1, max_length=10)
    dry_run: bool = True
    allow_servers_and_high_value: bool = False


MAX_CAP = 300  # an hour's places are one Table entity: 300 of them stay far below its 64 KiB property limit
Cap = Annotated[int, Field(ge=0, le=MAX_CAP)]


class PerHour(_Strict):
    """How many of each action all rules may send in any hour, across all instances."""

    isolate: Cap = 5
    restrict_app_execution: Cap = 5
    collect_investigation_package: Cap = 5
    av_scan: Cap = 20
    tag_device: Cap = 50
    block_domain: Cap = 3
    ticket: Cap = 60
    notify_user: Cap = 30
    contain_user: Cap = 10


class Limits(_Strict):
    max_per_hour: PerHour = PerHour()
    max_devices_per_hour: Cap = 10
    max_isolations_per_hour: Cap | None = None  # older name of max_per_hour.isolate
    device_cooldown_minutes: int = Field(default=60, ge=0, le=10080)
    notify_cooldown_minutes: int = Field(default=60, ge=1, le=10080)  # one mail per user, across instances

    def cap(self, kind: str) -> int:
        if (
            kind == "isolate"
            and self.max_isolations_per_hour is not None
            and "isolate" not in self.max_per_hour.model_fields_set
        ):
            return self.max_isolations_per_hour
        return int(getattr(self.max_per_hour, kind))


class RulesFile(_Strict):
    rules: list[Rule] = Field(max_length=100)
    limits: Limits = Limits()
    allowed_block_domains: list[DomainName] = Field(default=[], max_length=100)

    def permissions(self) -> dict[str, list[str]]:
        """Permission → the enabled (not dry-run) rules whose actions need it."""
        out: dict[str, list[str]] = {}
        for rule in self.rules:
            for action in rule.then:
                if not rule.dry_run and action.action in PERMISSION:
                    needs = [PERMISSION[action.action], *ALSO_NEEDS.get(action.action, ())]
                    needs += [REVOKE_PERMISSION] if isinstance(action, ContainUser) and action.revoke_sessions else []
                    for role in needs:
                        if rule.name not in out.setdefault(role, []):
                            out[role].append(rule.name)
        return out


class RulesError(ConfigError):
    def __init__(self, problem: str) -> None:
        super().__init__("RESPONSE_RULES_FILE", problem)


def _where(loc: tuple[int | str, ...]) -> str:
    """A pydantic location as the path a person writes: rules[2].then[0].isolation_type."""
    kinds = set(PERMISSION) | {"ticket"}
    # the union's tag (then[0].isolate.isolation_type) is not a field a person wrote
    return where(tuple(p for i, p in enumerate(loc) if not (p in kinds and i > 0 and isinstance(loc[i - 1], int))))


def _validate(doc: Any, source: str) -> RulesFile:
    try:
        return RulesFile.model_validate(doc)
    except ValidationError as exc:
        raise RulesError(first_error(exc, source, _where(tuple(exc.errors()[0]["loc"])))) from None


def parse_rules(text: str | bytes, source: str = "rules") -> RulesFile:
    try:
        return _validate(parse_strict(text, source), source)
    except FileProblem as exc:
        raise RulesError(str(exc)) from None


def load_rules(path: str | None) -> RulesFile | None:
    """The rules, or None when no file is configured (no response at all); :class:`RulesError`
    naming the file and the field for anything else."""
    if not path:
        return None
    try:
        return _validate(read_strict(path), path)
    except FileProblem as exc:
        raise RulesError(str(exc)) from None


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
    device_ids: dict[str, str] = field(default_factory=dict)  # normalised (shared.devices.Ids), for the proof
    # what notify_user tells the person: never a PII value or prompt text, only type codes
    policy_name: str = ""
    pii_types: tuple[str, ...] = ()
    occurred_at: str = ""  # ISO 8601 UTC


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


def excluded_tag(rule: Rule, device_tags: tuple[str, ...]) -> str | None:
    tags = {t.lower() for t in device_tags}
    hit = [t for t in rule.when.exclude_device_tags if t.lower() in tags]
    return hit[0] if hit else None


def excluded_by(rule: Rule, s: Situation) -> str | None:
    return excluded_tag(rule, s.device_tags)


def repeats(rules: RulesFile) -> list[Repeat]:
    return [r.when.repeat for r in rules.rules if r.when.repeat is not None]


# ---------------------------------------------------------------------- guardrails
def iso(t: float) -> str:
    """A time as an analyst reads it on an alert: ISO 8601 UTC, never a raw epoch."""
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Guard:
    """What the executor read before deciding: the device's cooldown holder and the actions
    pending on the device. (The hourly caps are reserved one action at a time, see :func:`cap_reason`.)"""

    cooldown_until: float = 0.0
    cooldown_owner: str = ""
    pending: dict[str, str] = field(default_factory=dict)  # MachineAction type → its id

    def holds_off(self, event_id: str, now: float) -> bool:
        """Another event holds the device's cooldown: every live action of this one is skipped."""
        return self.cooldown_until > now and self.cooldown_owner != event_id


Verdict = Literal["send", "dry_run", "skip"]


def verdict(action: Action, rule: Rule, event_id: str, guard: Guard, limits: Limits, now: float) -> tuple[Verdict, str]:
    """Send it (once its hourly cap is reserved), record it as a dry run, or skip it (and why)."""
    if rule.dry_run:
        return "dry_run", "dry run: recorded, not sent"
    if guard.holds_off(event_id, now):
        return "skip", f"device cooldown until {iso(guard.cooldown_until)} ({limits.device_cooldown_minutes} min)"
    kind = MACHINE_ACTION_TYPE.get(action.action)
    if kind and kind in guard.pending:
        return "skip", f"{kind} already pending or running on the device (action {guard.pending[kind]})"
    return "send", ""


def cap_reason(what: str, limit: int) -> str:
    """The skip reason (and health finding) when an hourly cap refuses an action."""
    if what == "devices":
        return f"response circuit open: {limit} distinct device(s) acted on in the last hour (max_devices_per_hour)"
    return f"response circuit open: hourly cap on {what} reached ({limit}, max_per_hour.{what})"


def is_cooldown_skip(detail: str) -> bool:
    return detail.startswith("device cooldown until")


# ---------------------------------------------------------------------- trust boundaries
def block_target(platform_id: str, host: str, allowed: list[str]) -> tuple[str | None, str]:
    """The domain ``block_domain`` may act on, or (None, why not).

    The event is authentic, not authoritative: a signed event naming ``https://google.com/``
    must not block Google tenant-wide. A catalogued platform's own first domain is blocked; a
    host the event reported only when the operator listed it (or a parent) in
    ``allowed_block_domains``.
    """
    known = PLATFORMS.get(platform_id.lower())
    if known:
        return known.domains[0], ""
    if host and any(on_domain(host, (d,)) for d in allowed):
        return host, ""
    if host:
        return None, f"{host} is neither a catalogued platform's domain nor in allowed_block_domains"
    return None, "the platform's domain is unknown"


# Defender names Linux machines by distribution; in a fleet they are servers far more often than
# desktops, so they are protected by default too (allow_servers_and_high_value lifts it).
LINUX = ("linux", "ubuntu", "debian", "centos", "redhat", "rhel", "suse", "oracle", "amazon", "rocky", "alma", "fedora")


def _is_server(os_platform: str) -> bool:
    os = os_platform.lower()
    return "server" in os or any(name in os for name in LINUX)


def protected(rule: Rule, machine: dict[str, Any]) -> str | None:
    """Why a destructive action may not touch this machine (read fresh from Defender), or None."""
    if rule.allow_servers_and_high_value:
        return None
    if str(machine.get("deviceValue") or "") == "High":
        return "the device is marked high value in Defender (deviceValue High)"
    if _is_server(str(machine.get("osPlatform") or "")):
        return f"the device is a server ({machine.get('osPlatform')})"
    return None


def fresh_exclusion(rule: Rule, machine: dict[str, Any]) -> str | None:
    """The rule's exclusion tag the machine carries now, in Defender (not in a cache), or None."""
    tags = machine.get("machineTags") or []
    return excluded_tag(rule, tuple(str(t) for t in tags) if isinstance(tags, list) else ())


def identity_proof(machine: dict[str, Any], ids: dict[str, str], same_name: int) -> str | None:
    """Why the event's device is not surely this machine, or None.

    A destructive action needs the Entra device id matching the machine record, or its name (host
    name or FQDN: one identifier, however it is spelt) and its IP address both agreeing, with a
    name no other machine record carries: knowing a victim's DNS name must not be enough to
    isolate it.
    """
    aad, have_aad = ids.get("aad", ""), str(machine.get("aadDeviceId") or "").lower()
    if aad and have_aad and aad != have_aad:
        return "the event's Entra device id differs from the machine's"
    if aad and aad == have_aad:
        return None
    dns = str(machine.get("computerDnsName") or "").lower()
    listed = [a.get("ipAddress") if isinstance(a, dict) else a for a in machine.get("ipAddresses") or []]
    known_ips = {str(ip) for ip in (machine.get("lastIpAddress"), *listed) if ip}
    name = (bool(ids.get("fqdn")) and ids.get("fqdn") == dns) or (
        bool(ids.get("hostname")) and ids.get("hostname", "").split(".")[0] == dns.split(".")[0]
    )
    agree = [what for what, ok in (("its name", name), ("its IP address", ids.get("ip", "") in known_ips)) if ok]
    if same_name > 1:
        return f"ambiguous: {same_name} machine records carry the name {dns}"
    if len(agree) >= 2:
        return None
    return (
        f"device identified by {' and '.join(agree) or 'nothing that matches'} only: a destructive action needs "
        "the Entra device id, or the device's name and IP address agreeing"
    )


def _release(hours: int | None) -> str:
    return f", released after {hours} h" if hours else ""


def describe(action: Action) -> str:
    """The action as a person reads it on the alert."""
    match action:
        case Isolate():
            return f"isolate the device ({action.isolation_type})" + _release(action.release_after_hours)
        case AvScan():
            return f"run a {action.scan_type.lower()} antivirus scan"
        case TagDevice():
            return f"tag the device {action.tag}"
        case BlockDomain():
            return f"{action.indicator_action.lower()} the platform's domain for {action.expires_after_hours} h"

        case Ticket():
            return "open a ticket"
        case NotifyUser():
            return "e-mail the user"
        case ContainUser():
            revoke = " and revoke their sessions" if action.revoke_sessions else ""
            return f"contain the user (contain group, released after {action.for_hours} h){revoke}"
        case RestrictAppExecution():
            return "restrict app execution" + _release(action.release_after_hours)
        case _:
            return "collect an investigation package"


def setting_warnings(rules: RulesFile, env: Mapping[str, str]) -> list[str]:
    """``rules check``: each action whose setting is missing, so the live run does not find out
    (``400 TicketNotConfigured``), and what ``block_domain`` will refuse to block."""
    out = []
    for rule in rules.rules:
        kinds = {a.action for a in rule.then}
        if "notify_user" in kinds and not env.get("NOTIFY_SENDER"):
            out.append(
                f"rule '{rule.name}': notify_user, but NOTIFY_SENDER is not set (it would fail: NotifyNotConfigured)"
            )
        if "contain_user" in kinds and not (env.get("CONTAIN_GROUP_ID") and env.get("PROTECTED_GROUP_ID")):
            out.append(
                f"rule '{rule.name}': contain_user, but CONTAIN_GROUP_ID and PROTECTED_GROUP_ID are not both set "
                "(it would be skipped: ContainNotConfigured)"
            )
        if "ticket" in kinds and not env.get("TICKET_URL"):
            out.append(f"rule '{rule.name}': ticket, but TICKET_URL is not set (it would fail: TicketNotConfigured)")
        elif "ticket" in kinds and not (env.get("TICKET_SIGNING_SECRET") or env.get("KEY_VAULT_URL")):
            out.append(f"rule '{rule.name}': ticket, but no signing secret (TICKET_SIGNING_SECRET or Key Vault)")
        unknown = [p for p in rule.when.platforms if p.lower() not in PLATFORMS]
        if "block_domain" in kinds and (unknown or not rule.when.platforms) and not rules.allowed_block_domains:
            out.append(
                f"rule '{rule.name}': block_domain acts only on catalogued platforms' domains here; "
                "list others in allowed_block_domains"
            )
    return out


def permission_warnings(rules: RulesFile, granted: set[str]) -> list[str]:
    """``rules check``: each action (of a live rule, or of a dry run one edit away from live)
    whose permission the app is not granted."""
    out = []
    for rule in rules.rules:
        mode = "dry run" if rule.dry_run else "live"
        for kind in dict.fromkeys(a.action for a in rule.then if a.action in PERMISSION):
            if PERMISSION[kind] not in granted:
                out.append(
                    f"rule '{rule.name}' ({mode}): {kind} needs {PERMISSION[kind]}, which the app is not granted"
                )
    return out


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
