"""Typed settings, read from the environment once.

Azure Functions exposes app settings (and ``local.settings.json`` ``Values`` locally) as
environment variables, so one pydantic-settings model is the single place where every setting
name, default and format lives. A bad value raises :class:`ConfigError` naming the setting and
what was expected, so an operator never has to read a traceback to fix a typo.

Settings that only some functions need (the Defender credentials, say) are optional here and
required by the code that uses them (:meth:`Settings.require`): a missing Defender secret must
not stop the webhook from accepting and queueing events.
"""

from __future__ import annotations

import base64
import functools
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, cast

from pydantic import Field, PrivateAttr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from shared.platforms import registrable

DEFAULT_FORWARD_EVENT_TYPES = (
    "interaction.policy_violated",
    "interaction.high_risk",
    "alert.severity_critical",
    "alert.severity_high",
)
KNOWN_EVENT_TYPES = (*DEFAULT_FORWARD_EVENT_TYPES, "interaction.created")

DEFENDER_SCOPE_PUBLIC = "https://api.securitycenter.microsoft.com/.default"


@dataclass(frozen=True)
class Cloud:
    api_url: str
    authority_host: str
    scope: str
    graph_url: str = "https://graph.microsoft.com"
    security_url: str = "https://api.security.microsoft.com"


_PUBLIC = "https://login.microsoftonline.com"
# docs/reference/defender-api.md §1. GCC High's token scope host is unconfirmed: DEFENDER_SCOPE overrides it.
CLOUDS: dict[str, Cloud] = {
    "global": Cloud("https://api.securitycenter.microsoft.com", _PUBLIC, DEFENDER_SCOPE_PUBLIC),
    **{
        region: Cloud(f"https://{region}.api.security.microsoft.com", _PUBLIC, DEFENDER_SCOPE_PUBLIC)
        for region in ("us", "eu", "uk", "au", "swa", "ina", "aea")
    },
    "gcc": Cloud(
        "https://api-gcc.securitycenter.microsoft.us",
        _PUBLIC,
        "https://api-gcc.securitycenter.microsoft.us/.default",
        security_url="https://api-gcc.security.microsoft.us",
    ),
    "gcc-high": Cloud(
        "https://api-gov.securitycenter.microsoft.us",
        "https://login.microsoftonline.us",
        "https://api-gov.securitycenter.microsoft.us/.default",
        graph_url="https://graph.microsoft.us",
        security_url="https://api-gov.security.microsoft.us",
    ),
}


class ConfigError(Exception):
    """A setting is missing or malformed; the message names it and says what is expected."""

    def __init__(self, setting: str, problem: str) -> None:
        super().__init__(f"setting {setting}: {problem}")
        self.setting = setting
        self.problem = problem


APP_ROOT = Path(__file__).resolve().parents[1]
GUID = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"  # an Entra object id


def app_file(path: str) -> Path:
    """A file setting (rules, risk weights): as given, else relative to the app's root — where it
    is deployed with the code (the worker's working directory is not guaranteed to be that root)."""
    given = Path(path)
    return given if given.is_absolute() or given.exists() else APP_ROOT / given


def signing_secret_ok(secret: str) -> bool:
    """whsec_ + base64 (padding optional, like the standardwebhooks library)."""
    body = secret.removeprefix("whsec_")
    well_formed = secret.startswith("whsec_") and re.fullmatch(r"[A-Za-z0-9+/]+={0,2}", body)
    return bool(well_formed and base64.b64decode(body + "=="))


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON setting whose key is given twice is refused: one of the values would silently lose."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _split(value: Any, sep: str | None) -> Any:
    if isinstance(value, str):
        return [part.strip() for part in value.split(sep) if part.strip()]
    return value


class Settings(BaseSettings):
    """Every setting the connector reads. Field aliases are the exact app-setting names."""

    model_config = SettingsConfigDict(case_sensitive=True, extra="ignore", populate_by_name=False)
    # response-only settings that were refused and set aside (load_settings): response is off
    _set_aside: list[str] = PrivateAttr(default_factory=list)

    @property
    def response_problems(self) -> list[str]:
        return self._set_aside

    # --- webhook (ingest) ---
    noxys_signing_secrets: Annotated[list[str], NoDecode] = Field(default_factory=list, alias="NOXYS_SIGNING_SECRET")
    noxys_bearer_token: str | None = Field(default=None, alias="NOXYS_BEARER_TOKEN")
    forward_event_types: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: list(DEFAULT_FORWARD_EVENT_TYPES), alias="FORWARD_EVENT_TYPES"
    )
    events_queue_name: str = Field(default="noxys-events", alias="EVENTS_QUEUE_NAME")
    event_max_past_days: int = Field(default=90, ge=1, le=3650, alias="EVENT_MAX_PAST_DAYS")
    event_max_future_hours: int = Field(default=24, ge=0, le=168, alias="EVENT_MAX_FUTURE_HOURS")

    # --- storage (the same account the Functions host uses) ---
    storage_connection: str | None = Field(default=None, alias="AzureWebJobsStorage")
    storage_queue_service_uri: str | None = Field(default=None, alias="AzureWebJobsStorage__queueServiceUri")
    storage_table_service_uri: str | None = Field(default=None, alias="AzureWebJobsStorage__tableServiceUri")
    # the host's own blob leases; the infra sets all three from the cloud's storage suffix
    storage_blob_service_uri: str | None = Field(default=None, alias="AzureWebJobsStorage__blobServiceUri")
    storage_account_name: str | None = Field(default=None, alias="AzureWebJobsStorage__accountName")
    storage_client_id: str | None = Field(default=None, alias="AzureWebJobsStorage__clientId")

    # --- Defender ---
    defender_cloud: str = Field(default="global", alias="DEFENDER_CLOUD")
    defender_tenant_id: str | None = Field(default=None, alias="DEFENDER_TENANT_ID")
    defender_client_id: str | None = Field(default=None, alias="DEFENDER_CLIENT_ID")
    defender_client_secret: str | None = Field(default=None, alias="DEFENDER_CLIENT_SECRET")
    defender_api_url: str = Field(default="https://api.securitycenter.microsoft.com", alias="DEFENDER_API_URL")
    defender_authority_host: str = Field(default="https://login.microsoftonline.com", alias="DEFENDER_AUTHORITY_HOST")
    defender_scope: str = Field(default=DEFENDER_SCOPE_PUBLIC, alias="DEFENDER_SCOPE")
    http_timeout_seconds: float = Field(default=30.0, gt=0, le=230, alias="HTTP_TIMEOUT_SECONDS")

    # --- mapping ---
    # The operator's own AI platforms and domains, e.g. {"internal-llm": ["llm.acme.internal"],
    # "chatgpt": ["chatgpt.acme-proxy.com"]}: added to the catalogue's domains for anchoring. An
    # event's own URL never adds one (shared/platforms.py).
    platform_domains: dict[str, list[str]] = Field(default_factory=dict, alias="PLATFORM_DOMAINS")
    anchor_window_minutes: int = Field(
        default=10,
        ge=1,
        le=720,
        alias="ANCHOR_WINDOW_MINUTES",
    )

    # --- delivery core: queues, pacing, retries ---
    events_priority_queue_name: str = Field(default="noxys-events-priority", alias="EVENTS_PRIORITY_QUEUE_NAME")
    alert_rate_per_minute: int = Field(default=15, ge=1, le=15, alias="ALERT_RATE_PER_MINUTE")
    priority_reserved_per_minute: int = Field(default=2, ge=0, le=14, alias="PRIORITY_RESERVED_PER_MINUTE")
    alerts_api_rate_per_minute: int = Field(default=100, ge=1, alias="ALERTS_API_RATE_PER_MINUTE")
    machines_rate_per_minute: int = Field(default=100, ge=1, alias="MACHINES_RATE_PER_MINUTE")
    machines_rate_per_hour: int = Field(default=1500, ge=1, alias="MACHINES_RATE_PER_HOUR")
    hunting_rate_per_minute: int = Field(default=45, ge=1, alias="HUNTING_RATE_PER_MINUTE")
    hunting_rate_per_hour: int = Field(default=1500, ge=1, alias="HUNTING_RATE_PER_HOUR")
    graph_rate_per_minute: int = Field(default=60, ge=1, alias="GRAPH_RATE_PER_MINUTE")
    incidents_rate_per_minute: int = Field(default=50, ge=1, alias="INCIDENTS_RATE_PER_MINUTE")
    max_event_age_hours: float = Field(default=24, gt=0, le=168, alias="MAX_EVENT_AGE_HOURS")
    delivery_lease_seconds: int = Field(default=300, ge=5, le=600, alias="DELIVERY_LEASE_SECONDS")
    max_delivery_errors: int = Field(default=5, ge=1, le=50, alias="MAX_DELIVERY_ERRORS")
    # After a create whose answer was lost, how long Defender may take to list the alert it made
    # before we conclude it made none and create (docs/lifecycle.md, "An answer that was lost").
    alert_search_grace_seconds: int = Field(default=300, ge=0, le=3600, alias="ALERT_SEARCH_GRACE_SECONDS")
    retry_base_seconds: int = Field(default=30, ge=1, alias="RETRY_BASE_SECONDS")
    retry_max_seconds: int = Field(default=900, ge=1, le=86400, alias="RETRY_MAX_SECONDS")
    coalesce_window_minutes: int = Field(default=15, ge=0, le=1440, alias="COALESCE_WINDOW_MINUTES")
    coalesce_note_interval_seconds: int = Field(default=300, ge=0, alias="COALESCE_NOTE_INTERVAL_SECONDS")
    device_cache_ttl_minutes: int = Field(default=360, ge=0, alias="DEVICE_CACHE_TTL_MINUTES")
    device_cache_negative_ttl_minutes: int = Field(default=15, ge=0, alias="DEVICE_CACHE_NEGATIVE_TTL_MINUTES")
    alert_fallback: Literal["none", "graph"] = Field(default="none", alias="ALERT_FALLBACK")
    incident_tagging: Literal["graph", "legacy", "off"] = Field(default="graph", alias="INCIDENT_TAGGING")
    incident_tags: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["Noxys", "AI Firewall"], alias="INCIDENT_TAGS"
    )
    audit_retention_days: int = Field(default=90, ge=1, le=3650, alias="AUDIT_RETENTION_DAYS")
    ledger_retention_days: int = Field(default=30, ge=1, le=3650, alias="LEDGER_RETENTION_DAYS")
    groups_retention_days: int = Field(default=8, ge=1, le=3650, alias="GROUPS_RETENTION_DAYS")
    counters_retention_days: int = Field(default=30, ge=2, le=3650, alias="COUNTERS_RETENTION_DAYS")
    dead_letter_retention_days: int = Field(default=180, ge=1, le=3650, alias="DEAD_LETTER_RETENTION_DAYS")
    patterns_retention_days: int = Field(default=2, ge=2, le=3650, alias="PATTERNS_RETENTION_DAYS")
    risk_patterns: bool = Field(default=True, alias="RISK_PATTERNS")
    risk_config_file: str | None = Field(default=None, alias="RISK_CONFIG_FILE")
    response_rules_file: str | None = Field(default=None, alias="RESPONSE_RULES_FILE")
    release_on_false_positive: bool = Field(default=True, alias="RELEASE_ON_FALSE_POSITIVE")
    ticket_url: str | None = Field(default=None, alias="TICKET_URL")
    ticket_signing_secret: str | None = Field(default=None, alias="TICKET_SIGNING_SECRET")
    ticket_signing_secret_name: str = Field(default="ticket-signing-secret", alias="TICKET_SIGNING_SECRET_NAME")
    notify_sender: str | None = Field(default=None, max_length=320, alias="NOTIFY_SENDER")
    notify_template_file: str | None = Field(default=None, alias="NOTIFY_TEMPLATE_FILE")
    notify_contact: str = Field(default="", max_length=200, alias="NOTIFY_CONTACT")
    contain_group_id: str | None = Field(default=None, pattern=GUID, alias="CONTAIN_GROUP_ID")
    protected_group_id: str | None = Field(default=None, pattern=GUID, alias="PROTECTED_GROUP_ID")
    review_schedule: str = Field(
        default="Mon 06:00",
        pattern=r"^(?i:mon|tue|wed|thu|fri|sat|sun)[A-Za-z]* ([01]?[0-9]|2[0-3]):[0-5][0-9]$",
        alias="REVIEW_SCHEDULE",
    )  # a day and a UTC time: the hourly health timer runs the review then (shared.suppress)
    suppress_false_positive_rate: float | None = Field(default=None, gt=0, le=1, alias="SUPPRESS_FALSE_POSITIVE_RATE")
    suppress_min_classified: int = Field(default=20, ge=1, le=100_000, alias="SUPPRESS_MIN_CLASSIFIED")
    purge_limit_per_table: int = Field(default=5000, ge=100, le=100_000, alias="PURGE_LIMIT_PER_TABLE")
    table_prefix: str = Field(default="Noxys", pattern=r"^[A-Za-z][A-Za-z0-9]{0,40}$", alias="TABLE_PREFIX")
    graph_api_url: str = Field(default="https://graph.microsoft.com", alias="GRAPH_API_URL")
    graph_scope: str = Field(default="https://graph.microsoft.com/.default", alias="GRAPH_SCOPE")
    security_api_url: str = Field(default="https://api.security.microsoft.com", alias="SECURITY_API_URL")
    security_scope: str = Field(default="https://api.security.microsoft.com/.default", alias="SECURITY_SCOPE")

    # --- secrets (Key Vault wins over plain settings when KEY_VAULT_URL is set) ---
    key_vault_url: str | None = Field(default=None, alias="KEY_VAULT_URL")
    defender_client_secret_name: str = Field(default="defender-client-secret", alias="DEFENDER_CLIENT_SECRET_NAME")
    noxys_signing_secret_name: str = Field(default="noxys-signing-secret", alias="NOXYS_SIGNING_SECRET_NAME")
    secret_cache_seconds: int = Field(default=300, ge=0, le=86400, alias="SECRET_CACHE_SECONDS")
    azure_client_id: str | None = Field(default=None, alias="AZURE_CLIENT_ID")

    # --- the switch (its state lives in Table Storage: shared.delivery.hold), health and status ---
    integration_enabled: bool = Field(default=True, alias="INTEGRATION_ENABLED")
    expiry_alert: bool = Field(default=False, alias="SECRET_EXPIRY_ALERT")

    # --- hunting table (Logs Ingestion API) ---
    hunting_ingestion_endpoint: str | None = Field(default=None, alias="HUNTING_INGESTION_ENDPOINT")
    hunting_dcr_immutable_id: str | None = Field(default=None, alias="HUNTING_DCR_IMMUTABLE_ID")
    hunting_stream_name: str = Field(default="Custom-NoxysInteractions", alias="HUNTING_STREAM_NAME")
    hunting_event_types: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: list(DEFAULT_FORWARD_EVENT_TYPES), alias="HUNTING_EVENT_TYPES"
    )
    hunting_queue_name: str = Field(default="noxys-hunting", alias="HUNTING_QUEUE_NAME")
    hunting_schedule: str = Field(default="*/30 * * * * *", alias="HUNTING_SCHEDULE")
    hunting_enrich_wait_minutes: int = Field(default=15, ge=0, le=1440, alias="HUNTING_ENRICH_WAIT_MINUTES")

    # --- health ---
    health_schedule: str = Field(default="0 0 * * * *", alias="HEALTH_SCHEDULE")

    @field_validator("noxys_signing_secrets", mode="before")
    @classmethod
    def _split_secrets(cls, value: Any) -> Any:
        return _split(value, None)

    @field_validator("noxys_signing_secrets")
    @classmethod
    def _check_secrets(cls, value: list[str]) -> list[str]:
        if not all(signing_secret_ok(secret) for secret in value):
            raise ValueError("expected one or more space-separated secrets of the form whsec_<base64>")
        return value

    @field_validator("forward_event_types", "hunting_event_types", mode="before")
    @classmethod
    def _split_types(cls, value: Any) -> Any:
        return _split(value, ",")

    @field_validator("forward_event_types", "hunting_event_types")
    @classmethod
    def _check_types(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - set(KNOWN_EVENT_TYPES))
        if unknown:
            raise ValueError(
                f"unknown event type(s) {', '.join(unknown)}; expected a comma-separated list of "
                f"{', '.join(KNOWN_EVENT_TYPES)}"
            )
        return value

    @field_validator("platform_domains", mode="before")
    @classmethod
    def _parse_platform_domains(cls, value: Any) -> Any:
        if isinstance(value, str):
            return json.loads(value, object_pairs_hook=_no_duplicate_keys) if value.strip() else {}
        return value

    @field_validator("platform_domains")
    @classmethod
    def _check_platform_domains(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for platform, domains in value.items():
            for d in domains:
                if registrable(d.strip().lower()) is None:
                    raise ValueError(f"{platform}: {d!r} is not a domain name (e.g. llm.acme.internal)")
            out[platform.strip().lower()] = [d.strip().lower().rstrip(".") for d in domains]
        return out

    @field_validator("ticket_url")
    @classmethod
    def _check_ticket_url(cls, value: str | None) -> str | None:
        if value and not value.startswith("https://"):
            raise ValueError("must be an https:// URL (the ticket carries the user's name and device)")
        return value

    @field_validator("defender_cloud")
    @classmethod
    def _check_cloud(cls, value: str) -> str:
        if value.lower() not in CLOUDS:
            raise ValueError(f"unknown cloud {value!r}; expected one of {', '.join(CLOUDS)}")
        return value.lower()

    @model_validator(mode="after")
    def _apply_cloud(self) -> Settings:
        """The cloud sets API URL, authority and scope together; explicit settings still win."""
        cloud = CLOUDS[self.defender_cloud]
        for name, value in (
            ("defender_api_url", cloud.api_url),
            ("defender_authority_host", cloud.authority_host),
            ("defender_scope", cloud.scope),
            ("graph_api_url", cloud.graph_url),
            ("graph_scope", cloud.graph_url + "/.default"),
            ("security_api_url", cloud.security_url),
            ("security_scope", cloud.security_url + "/.default"),
        ):
            if name not in self.model_fields_set:
                object.__setattr__(self, name, value)
        return self

    @field_validator("key_vault_url")
    @classmethod
    def _check_vault(cls, value: str | None) -> str | None:
        if value and not value.startswith("https://"):
            raise ValueError("expected the vault's https:// URL, e.g. https://kv-noxys.vault.azure.net")
        return value.rstrip("/") if value else None

    @field_validator("incident_tags", mode="before")
    @classmethod
    def _split_tags(cls, value: Any) -> Any:
        return _split(value, ",")

    @model_validator(mode="after")
    def _check_retention(self) -> Settings:
        """A ledger entry or a coalescing group must outlive every retry of its event, or a late
        retry would find no record and make a second alert."""
        for name, days in (
            ("LEDGER_RETENTION_DAYS", self.ledger_retention_days),
            ("GROUPS_RETENTION_DAYS", self.groups_retention_days),
        ):
            if days * 24 <= self.max_event_age_hours:
                raise ValueError(
                    f"{name} ({days} days) must be longer than MAX_EVENT_AGE_HOURS ({self.max_event_age_hours:g} h)"
                )
        return self

    @model_validator(mode="after")
    def _check_reserve(self) -> Settings:
        if self.priority_reserved_per_minute >= self.alert_rate_per_minute:
            raise ValueError(
                "PRIORITY_RESERVED_PER_MINUTE must be smaller than ALERT_RATE_PER_MINUTE "
                "(the normal lane needs at least one alert a minute)"
            )
        return self

    @field_validator("defender_api_url", "defender_authority_host", "graph_api_url", "security_api_url")
    @classmethod
    def _check_https(cls, value: str) -> str:
        if not value.startswith("https://"):
            raise ValueError("expected an https:// URL")
        return value.rstrip("/")

    @field_validator("hunting_ingestion_endpoint")
    @classmethod
    def _check_endpoint(cls, value: str | None) -> str | None:
        if value and not value.startswith("https://"):
            raise ValueError("expected the Data Collection Endpoint's (or DCR's) https:// logs ingestion URL")
        return value.rstrip("/") if value else None

    @property
    def integration_setting(self) -> bool | None:
        """``INTEGRATION_ENABLED`` as given, or None when absent — what every provision leaves, so
        that the switch's stored state (``shared.delivery.hold.decide``) is never overridden by it."""
        return self.integration_enabled if "integration_enabled" in self.model_fields_set else None

    @field_validator("noxys_bearer_token")
    @classmethod
    def _check_bearer(cls, value: str | None) -> str | None:
        # An unresolvable Key Vault reference reaches the app as its own text: accepting that as the
        # token would make a guessable string the credential. Refused, the webhook answers 503.
        if value and value.startswith("@Microsoft.KeyVault("):
            raise ValueError(
                "is a Key Vault reference the platform could not resolve: store the secret "
                "noxys-bearer-token in the vault (docs/deploy.md) or turn requireBearerToken off"
            )
        return value

    @property
    def hunting_configured(self) -> bool:
        return bool(self.hunting_ingestion_endpoint and self.hunting_dcr_immutable_id)

    @field_validator("health_schedule", "hunting_schedule")
    @classmethod
    def _check_schedule(cls, value: str) -> str:
        if len(value.split()) != 6:
            raise ValueError(
                "expected a six-field NCRONTAB expression (second minute hour day month weekday), "
                "e.g. '0 0 * * * *' for hourly"
            )
        return value

    def require(self, *fields: str) -> None:
        """Raise ConfigError naming the first of ``fields`` (attribute names) that is unset."""
        for name in fields:
            if not getattr(self, name):
                alias = type(self).model_fields[name].alias or name
                raise ConfigError(alias, "is required for this operation and is not set")

    @property
    def signing_configured(self) -> bool:
        return bool(self.noxys_signing_secrets)


class _Given(Settings):
    """Settings from a given mapping only (never the process environment)."""

    @classmethod
    def settings_customise_sources(cls, settings_cls: Any, init_settings: Any, *_: Any, **__: Any) -> tuple[Any, ...]:
        return (init_settings,)


# Settings only automated response, notification, containment and review read: a bad value turns
# that feature off (named by status, the health record, test-connection and command 1) and never
# stops the webhook or the alerts, as a bad rules file does not.
RESPONSE_SETTINGS = frozenset(
    {
        "RELEASE_ON_FALSE_POSITIVE",
        "TICKET_URL",
        "TICKET_SIGNING_SECRET_NAME",
        "NOTIFY_SENDER",
        "NOTIFY_CONTACT",
        "CONTAIN_GROUP_ID",
        "PROTECTED_GROUP_ID",
        "REVIEW_SCHEDULE",
        "SUPPRESS_FALSE_POSITIVE_RATE",
        "SUPPRESS_MIN_CLASSIFIED",
    }
)


def _alias_of(loc: tuple[int | str, ...]) -> str:
    name = str(loc[0]) if loc else ""
    return str(Settings.model_fields[name].alias or name) if name in Settings.model_fields else name


def _build(env: dict[str, str] | None, without: frozenset[str] = frozenset()) -> Settings:
    if env is None and not without:
        return Settings()
    given = dict(os.environ) if env is None else env
    return _Given(**cast(dict[str, Any], {k: v for k, v in given.items() if k not in without}))


def load_settings(env: dict[str, str] | None = None) -> Settings:
    """Build Settings from ``env`` (default: the process environment), naming any bad setting. Bad
    response-only settings (:data:`RESPONSE_SETTINGS`) are set aside instead: the settings load
    with their defaults and ``response_problems`` names them (response is then off)."""
    try:
        return _build(env)
    except ValidationError as exc:
        bad = frozenset(_alias_of(e["loc"]) for e in exc.errors())
        if bad <= RESPONSE_SETTINGS:
            try:
                settings = _build(env, bad)
            except ValidationError:
                pass  # something else is wrong too: named below
            else:
                settings._set_aside = [
                    f"{_alias_of(e['loc'])}: {e['msg'].removeprefix('Value error, ')}" for e in exc.errors()
                ]
                return settings
        first = exc.errors()[0]
        if not first["loc"]:  # a rule across settings: its message starts with the setting's name
            message = first["msg"].removeprefix("Value error, ")
            raise ConfigError(message.split()[0], message) from None
        loc = first["loc"][0]
        alias = Settings.model_fields[str(loc)].alias if str(loc) in Settings.model_fields else str(loc)
        raise ConfigError(str(alias or loc), first["msg"].removeprefix("Value error, ")) from None


@functools.cache
def get_settings() -> Settings:
    """The process-wide settings, validated on first use (not at import time)."""
    return load_settings()


def reset_settings() -> None:
    """Forget the cached settings (tests and the dev host change the environment)."""
    get_settings.cache_clear()
