"""Noxys envelope models and the pure parser from request bytes to validated events.

Privacy by construction: the models have no field for a classification ``value`` nor for
``content_metadata.text`` (nor any other free-form metadata key), so a parsed event *cannot*
carry the PII on. Everything downstream — the queue message, Defender, logs, hunting rows —
is built from these models, never from the raw body.

Unknown fields are ignored (forward compatibility, as the contract asks); known fields with a
wrong type are errors naming their path, e.g. ``[2].data.interaction.risk_score``.

Hostile input is refused here, before anything is queued, so that no correctly signed body can
reach a 500 or an event that loops later: every kept string has a maximum length (the table in
``docs/webhook.md``), identifiers may not contain control characters (a hostname with a newline
would forge log lines), display text has its control characters replaced, lone surrogates are
refused (they cannot be serialised onto the queue), and timestamps must lie in a window around now.
"""

from __future__ import annotations

import json
import re
import unicodedata
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, ValidationError

MAX_EVENTS_PER_REQUEST = 100
# Lists are bounded as a whole, so that the longest valid event fits one queue message (64 KiB):
# the field limits of docs/webhook.md add up, in four-byte characters, to less than that.
MAX_CLASSIFICATIONS = 100
MAX_INTERACTION_IDS_CHARS = 3000
MAX_URL = 8192  # as received; only its scheme and host (at most 253 characters) are kept
# Timestamps outside [now - past, now + future] are impossible for a live event (defaults; the
# settings EVENT_MAX_PAST_DAYS / EVENT_MAX_FUTURE_HOURS change them).
DEFAULT_MAX_PAST = timedelta(days=90)
DEFAULT_MAX_FUTURE = timedelta(hours=24)


def _as_utc(value: datetime) -> datetime:
    try:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00:00+14:00 has no UTC equivalent
        raise ValueError("date out of range once converted to UTC") from None


UtcDatetime = Annotated[datetime, AfterValidator(_as_utc)]

_SURROGATE = re.compile(r"[\ud800-\udfff]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_CONTROL_BUT_NEWLINE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]")
# Characters that change how text *looks* without being seen: bidi controls (U+202E turns
# "gpj.exe" into "exe.jpg"), zero-width characters, the soft hyphen, the BOM, and the tag
# characters that can smuggle text no one sees. In a name they are never legitimate.
INVISIBLE = re.compile(
    "[\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u202a-\u202e"
    "\u2060-\u206f\u3164\ufe00-\ufe0f\ufeff\uffa0\ufff9-\ufffb\U000e0000-\U000e0fff]"
)
# A URL host the anchor search accepts: a DNS name (in its ASCII form) or an IPv4 address.
_HOST = re.compile(r"(?=[a-z0-9.-]*[a-z0-9])[a-z0-9.-]{1,253}")


def _no_surrogate(value: str) -> str:
    if _SURROGATE.search(value):
        raise ValueError("contains an unpaired surrogate (not valid Unicode text)")
    return value


def identifier(value: str) -> str:
    """Identifiers end up in log lines, table keys, alerts and reports, and a person is found by
    them: a control character is never legitimate, an invisible one disguises what is shown, and
    a compatibility character (U+212A KELVIN SIGN, fullwidth letters) is a look-alike that
    NFKC folds into another person's name — so each is refused rather than silently changed."""
    if _CONTROL.search(_no_surrogate(value)):
        raise ValueError("must not contain control characters")
    if found := INVISIBLE.search(value):
        raise ValueError(f"must not contain invisible or bidirectional characters (U+{ord(found.group()):04X})")
    if unicodedata.normalize("NFKC", value) != value:
        odd = next(c for c in value if unicodedata.normalize("NFKC", c) != c)
        raise ValueError(
            f"must be in Unicode normal form NFKC (U+{ord(odd):04X} is a compatibility character "
            "that stands for another one)"
        )
    return value


def _label(value: str) -> str:
    """Display text (a policy name, a title): control characters become spaces and invisible ones
    are removed, never an error (a policy name with a stray tab is still forwarded)."""
    return INVISIBLE.sub("", _CONTROL.sub(" ", _no_surrogate(value)))


def _prose(value: str) -> str:
    """Multi-line text (a description): newlines and tabs stay, other controls become spaces."""
    return INVISIBLE.sub("", _CONTROL_BUT_NEWLINE.sub(" ", _no_surrogate(value)))


def _site(value: str) -> str:
    """Where the user went, never what they typed: ``https://chatgpt.com/search?q=<prompt>`` is
    kept as ``https://chatgpt.com``. The path, query, fragment, user name and port are dropped
    here, before anything is queued, because a platform may put the prompt in any of them (the
    host is all that matching a platform and anchoring an alert use). The host must be one the
    anchor search can use — an event that cannot be delivered is refused now (400), not
    dead-lettered after five tries."""
    text = value.strip()
    try:
        parts = urlsplit(text if "//" in text else f"//{text}")
        host = parts.hostname
    except ValueError:
        raise ValueError("is not a URL") from None
    if "\\" in parts.netloc or not host:
        raise ValueError("has no host name")
    try:
        host = host.encode("idna").decode("ascii")
    except UnicodeError:
        raise ValueError("host is not a valid DNS name") from None
    if not _HOST.fullmatch(host):
        raise ValueError(
            "host must be a DNS name or an IPv4 address: letters, digits, hyphens and dots only "
            "(no '_', '%', space or IPv6 literal), at most 253 characters"
        )
    scheme = parts.scheme.lower()
    return f"{scheme}://{host}" if scheme else host


def _total(limit: int) -> AfterValidator:
    """A list bound on its total length, so that the longest valid event fits a queue message."""

    def check(items: list[str]) -> list[str]:
        if sum(len(i) for i in items) > limit:
            raise ValueError(f"at most {limit} characters in all")
        return items

    return AfterValidator(check)


ID, LABEL, PROSE, SITE = (
    AfterValidator(identifier),
    AfterValidator(_label),
    AfterValidator(_prose),
    AfterValidator(_site),
)


def Max(n: int) -> StringConstraints:
    return StringConstraints(max_length=n)


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class Device(_Model):
    hostname: Annotated[str, Max(255), ID] | None = None
    fqdn: Annotated[str, Max(255), ID] | None = None
    aad_device_id: Annotated[str, Max(64), ID] | None = None
    ip_address: Annotated[str, Max(45), ID] | None = None
    os: Annotated[str, Max(100), LABEL] | None = None

    @property
    def display_name(self) -> str:
        return self.fqdn or self.hostname or self.aad_device_id or self.ip_address or "unknown"


class Classification(_Model):
    """One PII finding: its type and confidence. The PII value itself is deliberately absent."""

    type: Annotated[str, StringConstraints(min_length=1, max_length=64), ID]
    score: float | None = Field(default=None, ge=0, le=1)


class ContentMetadata(_Model):
    """Only the keys known to be free of prompt content are kept (an allowlist, not a denylist)."""

    # Scheme and host only, cut before the identifier checks: what is dropped is not judged.
    url: Annotated[str, Max(MAX_URL), SITE, ID] | None = None
    model: Annotated[str, Max(100), LABEL] | None = None


class Policy(_Model):
    id: Annotated[str, Max(200), ID] | None = None
    name: Annotated[str, Max(1024), LABEL] | None = None
    action: Annotated[str, Max(32), ID] | None = None


class Interaction(_Model):
    id: Annotated[str, Max(200), ID] | None = None
    platform_id: Annotated[str, Max(64), ID] | None = None
    platform_name: Annotated[str, Max(100), LABEL] | None = None
    interaction_type: Annotated[str, Max(32), ID] | None = None
    content_hash: Annotated[str, Max(128), ID] | None = None
    content_metadata: ContentMetadata | None = None
    classifications: list[Classification] = Field(default_factory=list, max_length=MAX_CLASSIFICATIONS)
    classification_level: Annotated[str, Max(32), ID] | None = None
    risk_score: float | None = Field(default=None, ge=0, le=1)
    direction: Annotated[str, Max(16), ID] | None = None
    source: Annotated[str, Max(32), ID] | None = None
    user_id: Annotated[str, Max(200), ID] | None = None
    user_email: Annotated[str, Max(320), ID] | None = None
    device: Device | None = None
    occurred_at: UtcDatetime | None = None


class NoxysAlert(_Model):
    id: Annotated[str, Max(200), ID] | None = None
    title: Annotated[str, Max(500), LABEL] | None = None
    severity: Annotated[str, Max(16), ID] | None = None
    description: Annotated[str, Max(4000), PROSE] | None = None
    risk_score: float | None = Field(default=None, ge=0, le=1)
    user_email: Annotated[str, Max(320), ID] | None = None
    device: Device | None = None
    platform_id: Annotated[str, Max(64), ID] | None = None
    interaction_ids: Annotated[
        list[Annotated[str, Max(200), ID]], Field(max_length=100), _total(MAX_INTERACTION_IDS_CHARS)
    ] = Field(default_factory=list)
    created_at: UtcDatetime | None = None


class EventData(_Model):
    interaction: Interaction | None = None
    policy: Policy | None = None
    alert: NoxysAlert | None = None


class Envelope(_Model):
    id: Annotated[str, StringConstraints(min_length=1, max_length=200), ID]
    type: Annotated[str, StringConstraints(min_length=1, max_length=100), ID]
    created_at: UtcDatetime
    tenant_id: Annotated[str, Max(200), ID] | None = None
    data: EventData

    def timestamps(self) -> list[tuple[str, datetime]]:
        """Every timestamp the delivery computes with, by field path (for the window check)."""
        found = [("created_at", self.created_at)]
        if self.data.interaction and self.data.interaction.occurred_at:
            found.append(("data.interaction.occurred_at", self.data.interaction.occurred_at))
        if self.data.alert and self.data.alert.created_at:
            found.append(("data.alert.created_at", self.data.alert.created_at))
        return found

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

    def __init__(self, errors: list[FieldError], status: int = 400) -> None:
        super().__init__("; ".join(f"{e.field}: {e.message}" for e in errors))
        self.errors = errors
        self.status = status


def _path(prefix: str, loc: tuple[int | str, ...]) -> str:
    out = prefix
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "body"


def _decode(body: bytes) -> Any:
    """JSON text to Python, with every way the decoder can fail named as a body error."""
    try:
        return json.loads(body)
    except RecursionError:
        problem = "nested too deeply"
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        problem = f"invalid JSON ({exc.__class__.__name__})"
    except ValueError:  # Python's int-digit limit (a number of thousands of digits)
        problem = "a number has too many digits"
    raise InvalidEvents([FieldError(field="body", message=problem)])


def _outside_window(
    event: Envelope, prefix: str, now: datetime, max_past: timedelta, max_future: timedelta
) -> list[FieldError]:
    errors: list[FieldError] = []
    for path, when in event.timestamps():
        if not now - max_past <= when <= now + max_future:
            errors.append(
                FieldError(
                    field=f"{prefix}.{path}" if prefix else path,
                    message=f"must lie between {max_past.days} days before and "
                    f"{max_future.total_seconds() / 3600:g} hours after the receiver's clock",
                )
            )
    return errors


def parse_events(
    body: bytes,
    *,
    now: datetime | None = None,
    max_past: timedelta = DEFAULT_MAX_PAST,
    max_future: timedelta = DEFAULT_MAX_FUTURE,
) -> list[Envelope]:
    """Parse one envelope or a JSON array of up to 100 into validated Envelopes.

    Raises InvalidEvents naming every failing field. Duplicate ids in one request are kept once.
    With ``now``, every timestamp must also lie in ``[now - max_past, now + max_future]``: an
    event dated year 9999 is refused at the door instead of failing later in the delivery.
    """
    doc = _decode(body)
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
    for index, item in enumerate(items):
        event, problems = _one(item, f"[{index}]" if batch else "", now, max_past, max_future)
        errors += problems
        if event is not None and event.id not in {e.id for e in events}:
            events.append(event)
    if errors:
        raise InvalidEvents(errors)
    return events


def _one(
    item: Any, prefix: str, now: datetime | None, max_past: timedelta, max_future: timedelta
) -> tuple[Envelope | None, list[FieldError]]:
    """One envelope, or the errors naming its fields (``prefix`` is its place in a batch)."""
    if not isinstance(item, dict):
        return None, [FieldError(field=prefix or "body", message="expected a JSON object (an event envelope)")]
    try:
        event = Envelope.model_validate(item)
    except ValidationError as exc:
        return None, [
            FieldError(field=_path(prefix, tuple(err["loc"])), message=err["msg"].removeprefix("Value error, "))
            for err in exc.errors(include_input=False, include_url=False)
        ]
    missing = event.missing_payload()
    if missing:
        field = f"{prefix}.data.{missing}" if prefix else f"data.{missing}"
        return None, [FieldError(field=field, message=f"required for {event.type}")]
    if now is not None and (late := _outside_window(event, prefix, now, max_past, max_future)):
        return None, late
    return _kept(event), []


def _kept(event: Envelope) -> Envelope:
    """Only the payload of the event's own kind is kept: an alert event keeps of an interaction
    its ``user_id`` (the person), an interaction event no alert. Nothing downstream reads the
    rest, and without it the longest valid event of either kind fits a queue message."""
    if event.kind == "alert":
        it = event.data.interaction
        slim = Interaction(user_id=it.user_id) if it and it.user_id else None
        return event.model_copy(update={"data": event.data.model_copy(update={"interaction": slim})})
    if event.data.alert is not None:
        return event.model_copy(update={"data": event.data.model_copy(update={"alert": None})})
    return event
