"""The response rules and risk weights files, loaded so that they can never stop an alert.

Alerts never depend on either file. A file that is missing, unreadable, invalid or hostile
leaves delivery exactly as without it — response off, the risk score with its defaults — and
becomes a :class:`ConfigProblem` naming the setting, the file and the field, which the health
record, ``status``, ``test-connection`` and command 1 all show. (Before, a bad
``RESPONSE_RULES_FILE`` made every queued event fail five times and go to poison.)
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from shared.config import ConfigError, load_settings
from shared.response.notify import load_template
from shared.response.rules import RulesFile, load_rules
from shared.risk import RiskConfig, load_config

log = logging.getLogger(__name__)


class FileSettings(Protocol):
    @property
    def response_rules_file(self) -> str | None: ...
    @property
    def risk_config_file(self) -> str | None: ...
    @property
    def notify_template_file(self) -> str | None: ...
    @property
    def response_problems(self) -> list[str]: ...


@dataclass(frozen=True)
class ConfigProblem:
    setting: str  # RESPONSE_RULES_FILE, RISK_CONFIG_FILE or NOTIFY_TEMPLATE_FILE
    message: str  # the file and the field, e.g. "rules.json: rules[0].dry_run: Input should be a valid boolean"
    consequence: str

    def line(self) -> str:
        return f"{self.setting}: {self.message} — {self.consequence}"


def rules_or_off(settings: FileSettings) -> tuple[RulesFile | None, ConfigProblem | None]:
    """The rules, or None (response off) with the problem when the file — or a setting only
    response reads (``config.RESPONSE_SETTINGS``, set aside by ``load_settings``) — cannot be used."""
    if settings.response_problems:
        setting, _, message = settings.response_problems[0].partition(": ")
        return None, ConfigProblem(setting, message, "automated response is OFF; alerts are delivered as usual")
    try:
        return load_rules(settings.response_rules_file), None
    except ConfigError as exc:
        return None, ConfigProblem(
            "RESPONSE_RULES_FILE", exc.problem, "automated response is OFF; alerts are delivered as usual"
        )


def risk_or_defaults(settings: FileSettings) -> tuple[RiskConfig, ConfigProblem | None]:
    """The risk weights, or the defaults with the problem when the file cannot be used."""
    try:
        return load_config(settings.risk_config_file), None
    except ConfigError as exc:
        return RiskConfig(), ConfigProblem(
            "RISK_CONFIG_FILE", exc.problem, "the combined risk score uses the default weights"
        )


def template_problem(settings: FileSettings) -> ConfigProblem | None:
    """``NOTIFY_TEMPLATE_FILE`` refused (placeholders checked when it loads): no mail is sent."""
    if not settings.notify_template_file:
        return None
    try:
        load_template(settings.notify_template_file)
    except ConfigError as exc:
        return ConfigProblem(
            "NOTIFY_TEMPLATE_FILE", exc.problem, "notify_user sends no mail; alerts are delivered as usual"
        )
    return None


def problems(settings: FileSettings) -> list[ConfigProblem]:
    """Every problem with the files, read now (cheap: small local files)."""
    found = [rules_or_off(settings)[1], risk_or_defaults(settings)[1], template_problem(settings)]
    return [p for p in found if p is not None]


def log_problems(settings: FileSettings) -> list[ConfigProblem]:
    found = problems(settings)
    for p in found:
        log.error("configuration: %s", p.line())
    return found


@dataclass(frozen=True)
class Files:
    response_rules_file: str | None = None
    risk_config_file: str | None = None
    notify_template_file: str | None = None
    response_problems: list[str] = field(default_factory=list)


def start_warnings(environ: Mapping[str, str]) -> list[str]:
    """What command 1 prints before anything runs: each file problem, from the environment alone
    (no other setting needs to be valid for this)."""
    try:
        set_aside = load_settings(dict(environ)).response_problems
    except ConfigError:  # another setting is wrong: the host names it when it starts
        set_aside = []
    files = Files(
        environ.get("RESPONSE_RULES_FILE") or None,
        environ.get("RISK_CONFIG_FILE") or None,
        environ.get("NOTIFY_TEMPLATE_FILE") or None,
        set_aside,
    )
    return [f"⚠ {p.line()}" for p in problems(files)]
