"""Noxys envelope models and the pure parser from request bytes to validated events.

Privacy by construction: the models have no field for a classification ``value`` nor for
``content_metadata.text`` (nor any other free-form metadata key), so a parsed event *cannot*
carry the PII on. Everything downstream — the queue message, Defender, logs, hunting rows —
is built from these models, never from the raw body.

Unknown fields are ignored (forward compatibility, as the contract asks); known fields with a
wrong type are errors naming their path, e.g. ``[2].data.interaction.risk_score``.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator

MAX_EVENTS_PER_REQUEST = 100


def _as_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


UtcDatetime = Annotated[datetime, AfterValidator(_as_utc)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class Device(_Model):
    hostname: str | None = None
    fqdn: str | None = None
    aad_device_id: str | None = None
    ip_address: str | None = None
    os: str | None = None

    @property
    def display_name(self) -> str:
        return self.fqdn or self.hostname or self.aad_device_id or self.ip_address or "unknown"


class Classification(_Model):
    """One PII finding: its type and confidence. The PII value itself is deliberately absent."""

    type: str = Field(min_length=1, max_length=64)
    score: float | None = Field(default=None, ge=0, le=1)


class ContentMetadata(_Model):
    """Only the keys known to be free of prompt content are kept (an allowlist, not a denylist)."""

    url: str | None = None
    model: str | None = None


class Policy(_Model):
    id: str | None = None
    name: str | None = None
    action: str | None = None


class Interaction(_Model):
    id: str | None = None
    platform_id: str | None = None
    platform_name: str | None = None
    interaction_type: str | None = None
    content_hash: str | None = None
    content_metadata: ContentMetadata | None = None
    classifications: list[Classification] = Field(default_factory=list)
    classification_level: str | None = None
    risk_score: float | None = Field(default=None, ge=0, le=1)
    direction: str | None = None
    source: str | None = None
    user_id: str | None = None
    user_email: str | None = None
    device: Device | None = None
    occurred_at: UtcDatetime | None = None


class NoxysAlert(_Model):
    id: str | None = None
    title: str | None = None
    severity: str | None = None
    description: str | None = None
    risk_score: float | None = Field(default=None, ge=0, le=1)
    user_email: str | None = None
    device: Device | None = None
    platform_id: str | None = None
    interaction_ids: list[str] = Field(default_factory=list)
    created_at: UtcDatetime | None = None


class EventData(_Model):
    interaction: Interaction | None = None
    policy: Policy | None = None
    alert: NoxysAlert | None = None


class Envelope(_Model):
    id: str = Field(min_length=1, max_length=200)
    type: str = Field(min_length=1, max_length=100)
    created_at: UtcDatetime
    tenant_id: str | None = None
    data: EventData

    @field_validator("id")
    @classmethod
    def _printable_id(cls, value: str) -> str:
        if not value.isprintable():
            raise ValueError("must be printable text")
        return value

    def missing_payload(self) -> str | None:
        """The ``data`` member this event type needs but lacks, if any."""
        if self.type.startswith("interaction.") and self.data.interaction is None:
            return "interaction"
        if self.type.startswith("alert.") and self.data.alert is None:
            return "alert"
        return None

    # ---- a uniform view over interaction and alert events, for mapping and resolution ----
    @property
    def kind(self) -> Literal["interaction", "alert", "other"]:
        if self.data.alert is not None and self.type.startswith("alert."):
            return "alert"
        if self.data.interaction is not None:
            return "interaction"
        return "other"

    @property
    def device(self) -> Device | None:
        if self.kind == "alert" and self.data.alert:
            return self.data.alert.device
        return self.data.interaction.device if self.data.interaction else None

    @property
    def platform_id(self) -> str | None:
        if self.kind == "alert" and self.data.alert:
            return self.data.alert.platform_id
        return self.data.interaction.platform_id if self.data.interaction else None

    @property
    def user_email(self) -> str | None:
        if self.kind == "alert" and self.data.alert:
            return self.data.alert.user_email
        return self.data.interaction.user_email if self.data.interaction else None

    @property
    def risk_score(self) -> float | None:
        if self.kind == "alert" and self.data.alert:
            return self.data.alert.risk_score
        return self.data.interaction.risk_score if self.data.interaction else None

    @property
    def occurred_at(self) -> datetime:
        """When the user acted: the anchor search is centred here."""
        if self.kind == "alert" and self.data.alert and self.data.alert.created_at:
            return self.data.alert.created_at
        if self.data.interaction and self.data.interaction.occurred_at:
            return self.data.interaction.occurred_at
        return self.created_at


class FieldError(_Model):
    field: str
    message: str


class InvalidEvents(Exception):
    """The body is not acceptable; ``errors`` name each failing field (never echo its value)."""

    def __init__(self, errors: list[FieldError]) -> None:
        super().__init__("; ".join(f"{e.field}: {e.message}" for e in errors))
        self.errors = errors


def _path(prefix: str, loc: tuple[int | str, ...]) -> str:
    out = prefix
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "body"


def parse_events(body: bytes) -> list[Envelope]:
    """Parse one envelope or a JSON array of up to 100 into validated Envelopes.

    Raises InvalidEvents naming every failing field. Duplicate ids in one request are kept once.
    """
    try:
        doc = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidEvents([FieldError(field="body", message=f"invalid JSON ({exc.__class__.__name__})")]) from None
    batch = isinstance(doc, list)
    items = doc if batch else [doc]
    if not items:
        raise InvalidEvents([FieldError(field="body", message="empty array: expected 1 to 100 events")])
    if len(items) > MAX_EVENTS_PER_REQUEST:
        raise InvalidEvents(
            [FieldError(field="body", message=f"{len(items)} events: at most {MAX_EVENTS_PER_REQUEST} per request")]
        )
    events: list[Envelope] = []
    errors: list[FieldError] = []
    seen: set[str] = set()
    for index, item in enumerate(items):
        prefix = f"[{index}]" if batch else ""
        if not isinstance(item, dict):
            errors.append(FieldError(field=prefix or "body", message="expected a JSON object (an event envelope)"))
            continue
        try:
            event = Envelope.model_validate(item)
        except ValidationError as exc:
            for err in exc.errors(include_input=False, include_url=False):
                msg = err["msg"].removeprefix("Value error, ")
                errors.append(FieldError(field=_path(prefix, tuple(err["loc"])), message=msg))
            continue
        missing = event.missing_payload()
        if missing:
            field = f"{prefix}.data.{missing}" if prefix else f"data.{missing}"
            errors.append(FieldError(field=field, message=f"required for {event.type}"))
            continue
        if event.id not in seen:
            seen.add(event.id)
            events.append(event)
    if errors:
        raise InvalidEvents(errors)
    return events
