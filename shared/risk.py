"""The combined risk score (pure): the event, the patterns around it, and Defender's view of the
device, as one score in [0, 1] with the factors that made it.

Noxys scores each interaction alone; what an analyst weighs is the pattern — the fifth violation
on one laptop in an hour, a user pasting five kinds of personal data into three AI platforms in a
day, a platform that user has never used, a device Defender already rates High. The score starts
from Noxys' own ``risk_score`` and *adds* an explained amount per factor, so it can raise the
alert's severity but never lower what the event alone gives (the integration page: don't
override what was determined upstream). Each factor becomes a readable term of the line written
into the alert (``Combined risk 0.93 = Noxys 0.80 + 5 violations on this device in 1 h (+0.08) +
Defender device risk High (+0.05)``) and a ``{factor, value, weight}`` entry of the hunting row —
types and counts, never a PII value.

The weights and thresholds are one validated model (:class:`RiskConfig`), with defaults; a JSON
file named by ``RISK_CONFIG_FILE`` overrides any of them and is refused at start, naming the
field, when it is wrong.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.config import ConfigError
from shared.configfile import FileProblem, first_error, read_strict
from shared.events import Envelope
from shared.mapping import Severity, at_least, severity_from_risk
from shared.pii import type_codes

Weight = Annotated[float, Field(ge=0, le=1)]  # finite, in [0, 1]: a weight of -inf or 1e308 is a typo
Label = Annotated[str, Field(min_length=1, max_length=64)]
Weights = Annotated[dict[Label, Weight], Field(max_length=50)]


class _Strict(BaseModel):
    """Strict: ``"0.1"`` is not a number; NaN and infinities are refused."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class Threshold(_Strict):
    """A count factor: ``weight`` once the count reaches ``from_count``, plus ``step`` for each
    one beyond, at most ``cap`` in all."""

    from_count: int = Field(ge=1, le=100000)
    weight: Weight
    step: Weight = 0.0
    cap: Weight = 1.0

    def amount(self, count: int) -> float:
        if count < self.from_count:
            return 0.0
        return min(self.cap, self.weight + self.step * (count - self.from_count))


class RiskConfig(_Strict):
    noxys_score_when_missing: Weight = 0.5
    device_violations_1h: Threshold = Threshold(from_count=3, weight=0.04, step=0.02, cap=0.12)
    user_violations_24h: Threshold = Threshold(from_count=5, weight=0.05, step=0.01, cap=0.10)
    user_pii_types_24h: Threshold = Threshold(from_count=3, weight=0.04, step=0.01, cap=0.08)
    user_platforms_24h: Threshold = Threshold(from_count=3, weight=0.03, step=0.01, cap=0.06)
    new_platform_for_user: Weight = 0.03
    pii_types_in_event: Threshold = Threshold(from_count=2, weight=0.01, step=0.01, cap=0.04)
    classification_level: dict[Label, Weight] = Field(
        max_length=50, default_factory=lambda: {"restricted": 0.05, "confidential": 0.02}
    )
    policy_action: Weights = Field(default_factory=lambda: {"block": 0.02})
    defender_risk: Weights = Field(default_factory=lambda: {"High": 0.05, "Medium": 0.02})
    defender_exposure: dict[Label, Weight] = Field(
        max_length=50, default_factory=lambda: {"High": 0.03, "Medium": 0.01}
    )


class RiskConfigError(ConfigError):
    """The risk configuration file is unusable; the message names the field."""

    def __init__(self, problem: str) -> None:
        super().__init__("RISK_CONFIG_FILE", problem)


def load_config(path: str | None) -> RiskConfig:
    """The weights (the defaults when no file is named); :class:`RiskConfigError` naming the file
    and the field when the file cannot be used — the caller then scores with the defaults."""
    if not path:
        return RiskConfig()
    try:
        return RiskConfig.model_validate(read_strict(path))
    except FileProblem as exc:
        raise RiskConfigError(str(exc)) from None
    except ValidationError as exc:
        raise RiskConfigError(first_error(exc, path)) from None


@dataclass(frozen=True)
class Patterns:
    """What the windows around an event say (this event included). ``available`` is False when
    the pattern store could not be read: the score is then the event's alone, and ``why`` says so."""

    device_seen: tuple[float, ...] = ()  # times of the device's events in the last 24 h
    user_seen: tuple[float, ...] = ()
    user_pii_types: frozenset[str] = frozenset()
    user_platforms: frozenset[str] = frozenset()
    new_platform: bool = False
    available: bool = True
    why: str = ""

    def count(self, per: str, within_seconds: float, now: float) -> int:
        seen = self.device_seen if per == "device" else self.user_seen
        return sum(1 for t in seen if now - within_seconds <= t <= now + 1)


@dataclass(frozen=True)
class DeviceView:
    """Defender's own view of the machine, from the record device resolution already fetched."""

    risk_score: str = ""
    exposure_level: str = ""
    tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class Factor:
    name: str  # stable key for the hunting table and queries
    value: float | int | str
    weight: float
    text: str  # how it reads in the alert


@dataclass(frozen=True)
class Assessment:
    noxys: float
    score: float
    severity: Severity
    factors: tuple[Factor, ...] = field(default_factory=tuple)
    note: str = ""

    def line(self) -> str:
        terms = [f"Noxys {self.noxys:.2f}", *(f"{f.text} (+{f.weight:.2f})" for f in self.factors)]
        return f"Combined risk {self.score:.2f} = " + " + ".join(terms) + (f" ({self.note})" if self.note else "")

    def factors_json(self) -> str:
        return json.dumps([{"factor": f.name, "value": f.value, "weight": round(f.weight, 4)} for f in self.factors])


def _event_factors(event: Envelope, cfg: RiskConfig) -> list[Factor]:
    it = event.data.interaction if event.kind == "interaction" else None
    out: list[Factor] = []
    level = ((it.classification_level if it else None) or "").lower()
    if cfg.classification_level.get(level):
        out.append(Factor("classification", level, cfg.classification_level[level], f"classified {level}"))
    action = ((event.data.policy.action if event.data.policy else None) or "").lower()
    if cfg.policy_action.get(action):
        out.append(Factor("policy_action", action, cfg.policy_action[action], f"policy action {action}"))
    kinds = len(type_codes(it.classifications)) if it else 0
    if amount := cfg.pii_types_in_event.amount(kinds):
        out.append(Factor("pii_types_in_event", kinds, amount, f"{kinds} PII types in this prompt"))
    return out


def _pattern_factors(p: Patterns, cfg: RiskConfig, now: float) -> list[Factor]:
    device_1h, user_24h = p.count("device", 3600, now), p.count("user", 86400, now)
    counts = (
        ("device_violations_1h", device_1h, cfg.device_violations_1h, "{} violations on this device in 1 h"),
        ("user_violations_24h", user_24h, cfg.user_violations_24h, "{} violations by this user in 24 h"),
        ("user_pii_types_24h", len(p.user_pii_types), cfg.user_pii_types_24h, "{} PII types from this user in 24 h"),
        ("user_platforms_24h", len(p.user_platforms), cfg.user_platforms_24h, "{} AI platforms used in 24 h"),
    )
    out = [Factor(name, n, amount, text.format(n)) for name, n, rule, text in counts if (amount := rule.amount(n))]
    if p.new_platform and cfg.new_platform_for_user:
        out.append(Factor("new_platform", 1, cfg.new_platform_for_user, "a platform this user never used before"))
    return out


def _device_factors(d: DeviceView, cfg: RiskConfig) -> list[Factor]:
    out = []
    if cfg.defender_risk.get(d.risk_score):
        w = cfg.defender_risk[d.risk_score]
        out.append(Factor("defender_device_risk", d.risk_score, w, f"Defender device risk {d.risk_score}"))
    if cfg.defender_exposure.get(d.exposure_level):
        w = cfg.defender_exposure[d.exposure_level]
        out.append(Factor("defender_exposure", d.exposure_level, w, f"Defender exposure {d.exposure_level}"))
    return out


def assess(
    event: Envelope, patterns: Patterns, device: DeviceView, cfg: RiskConfig, *, base: Severity, now: float
) -> Assessment:
    """The combined score and the severity it gives, never below ``base`` (the event alone)."""
    noxys = event.risk_score if event.risk_score is not None else cfg.noxys_score_when_missing
    factors = _event_factors(event, cfg) + (_pattern_factors(patterns, cfg, now) if patterns.available else [])
    factors += _device_factors(device, cfg)
    score = round(min(1.0, noxys + sum(f.weight for f in factors)), 4)
    raised = severity_from_risk(score)
    severity = at_least(raised, base)
    note = "" if patterns.available else f"patterns unavailable: {patterns.why}"
    return Assessment(noxys, score, severity, tuple(factors), note)
