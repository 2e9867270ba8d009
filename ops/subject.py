"""Data-subject requests (GDPR art. 15 and 17): everything the connector keeps about one person,
to export it or to erase it.

Where a person appears in the connector's own state:

* **Ledger** — one row per event, with the user (``shared.facts``): the index of everything else.
* **Held** and **DeadLetters** — the redacted queue message of an event, which names the user;
  found by reading each message (an event can be held before it ever reaches the ledger).
* **Groups** — the storm-coalescing groups those events led or joined (no identity of their own,
  but tied to the person's events).
* **Patterns** — the risk windows: the person's own partition (their recent events, platforms
  and PII types) and their events' observations in their devices' partitions. Observations are
  packed, many events to a row (``shared.delivery.patterns``): one found is one observation, and
  erasing it rewrites its row without it (a device's pack holds other people's events too).
* **Responses** — the automated response actions taken (or recorded) for those events.
* **Audit** — the Defender calls made for those events (event ids only).
* **HuntingOutbox** — hunting rows not yet shipped to Log Analytics (found by their user).

Not personal data, so not searched: the device cache (machine ids by device name), counters,
pacing and the health record. Messages still in a queue are not searchable; ``not_searched`` says
how many there are, and a second run after they drain finds them in the ledger. The hunting
table lives in Log Analytics: the export gives the KQL query, and the erasure prints the purge
request for an operator who holds *Data Purger* (deliberately not the connector's identity).

Erasure deletes the ledger rows last: they are how the other rows are found, so an interrupted
erasure is finished by running it again (resumable), and the pace is bounded so that a large
erasure never competes with live delivery.
"""

from __future__ import annotations

import contextlib
import json
import shlex
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from shared.delivery.coalesce import ROW, member_row
from shared.delivery.hunting_outbox import TASK_PROPERTIES
from shared.delivery.patterns import observations, partition, without
from shared.events import identifier
from shared.facts import fold
from shared.hunting import TABLE as HUNTING_TABLE
from shared.storage import EntityTable
from shared.tasks import QueuedEvent

SEARCHED = ("Ledger", "Held", "DeadLetters", "HuntingOutbox", "Groups", "Patterns", "Responses", "Audit")
ERASE_ORDER = (
    "Audit",
    "Responses",
    "Patterns",
    "Held",
    "DeadLetters",
    "HuntingOutbox",
    "Groups",
    "Ledger",
)  # the index last


@dataclass(frozen=True)
class Subject:
    """Whom a request is about: an e-mail or a Noxys user id — two namespaces, never mixed, so an
    event whose user id is ``alice@acme.fr`` but whose e-mail is Bob's is Bob's by e-mail, and
    Alice's erasure leaves it alone. ``value`` is in the folded form the ledger keeps."""

    kind: Literal["email", "user_id"]
    value: str
    typed: str  # as the operator typed it (for the export and the purge request)

    @classmethod
    def of(cls, kind: Literal["email", "user_id"], text: str) -> Subject:
        """Refuses what the webhook refuses (a look-alike the fold would turn into someone else)."""
        typed = text.strip()
        if not typed:  # a blank user would match every row that names none
            raise ValueError("a data-subject request needs a user (an e-mail or a Noxys user id)")
        identifier(typed)
        return cls(kind, fold(typed), typed)

    def names(self, email: str | None, user_id: str | None) -> bool:
        """Whether an event with this e-mail and user id is about this subject."""
        return fold((email if self.kind == "email" else user_id) or "") == self.value


def is_subject(message: str, subject: Subject) -> bool:
    """Whether a stored queue message is about ``subject``."""
    try:
        event = QueuedEvent.model_validate_json(message).event
    except ValueError:
        return False
    user_id = event.data.interaction.user_id if event.data.interaction else None
    return subject.names(event.user_email, user_id)


def _row_is_about(row: Any, subject: Subject) -> bool:
    """A ledger or outbox row: by its ``email`` or ``user_id``. Rows written before the two were
    kept apart have no ``email``; their ``user`` is the e-mail only when it differs from the id."""
    if subject.kind == "user_id":
        return fold(str(row.get("user_id") or "")) == subject.value
    if row.get("email") is not None:
        return str(row["email"]) == subject.value
    user, user_id = str(row.get("user") or ""), str(row.get("user_id") or "")
    return fold(user) == subject.value and user != user_id


def _plain(entity: Any) -> dict[str, Any]:
    """A Table entity as JSON-ready properties (keys included, metadata left out)."""
    return {k: (v if isinstance(v, str | int | float | bool) or v is None else str(v)) for k, v in entity.items()}


@dataclass
class Findings:
    subject: Subject
    rows: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: {name: [] for name in SEARCHED})

    @property
    def event_ids(self) -> set[str]:
        return {
            str(r["event_id"]) for name in ("Ledger", "Held", "DeadLetters", "HuntingOutbox") for r in self.rows[name]
        }

    @property
    def alert_ids(self) -> list[str]:
        return sorted({str(r["alert_id"]) for r in self.rows["Ledger"] if r.get("alert_id")})

    def counts(self) -> dict[str, int]:
        return {name: len(rows) for name, rows in self.rows.items()}


def _hunting_filter(found: Findings) -> tuple[str, dict[str, Any]]:
    """The hunting table names a person by e-mail only: a request by Noxys user id finds the
    rows by the ids of the events the connector found."""
    if found.subject.kind == "email":
        user = found.subject.typed
        purge: dict[str, Any] = {"column": "UserPrincipalName", "operator": "==", "value": user}
        return f"UserPrincipalName =~ {json.dumps(user)}", purge
    ids = sorted(found.event_ids)
    purge = {"column": "EventId", "operator": "in", "value": ids}
    return f"EventId in ({', '.join(json.dumps(i) for i in ids)})", purge


# How the connector finds and manages a row, not what it keeps about the person.
INTERNAL = frozenset(
    {"PartitionKey", "RowKey", "etag", "lease_owner", "lease_until", "attempts", "errors", "intent_at", "group_role",
     "note_scheduled", "noted", "message", *TASK_PROPERTIES}
)  # fmt: skip


def _when(key: str, value: Any) -> Any:
    """Times are kept as epoch seconds; a person reads ISO 8601 (UTC)."""
    timed = key == "at" or key.endswith("_at") or key == "window_start"
    if timed and isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, UTC).isoformat().replace("+00:00", "Z")
    return value


def _stored_event(row: dict[str, Any]) -> dict[str, Any] | None:
    """The event a Held, DeadLetters or HuntingOutbox row keeps, as the person's data (parsed)."""
    text = str(row.get("message") or "") or "".join(str(row.get(p) or "") for p in TASK_PROPERTIES)
    try:
        return QueuedEvent.model_validate_json(text).event.model_dump(mode="json", exclude_none=True)
    except ValueError:
        return None


def export_view(found: Findings) -> dict[str, list[dict[str, Any]]]:
    """What a data subject is owed (GDPR art. 15): their data and what was done with it, with
    readable times — without the connector's bookkeeping (leases, keys, retry counters)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for name, rows in found.rows.items():
        out[name] = []
        for row in rows:
            view = {k: _when(k, v) for k, v in row.items() if k not in INTERNAL and v not in (None, "")}
            if name in ("Held", "DeadLetters", "HuntingOutbox") and (event := _stored_event(row)) is not None:
                view["event"] = event
            out[name].append(view)
    return out


def hunting_query(found: Findings) -> str:
    return f"{HUNTING_TABLE}\n| where {_hunting_filter(found)[0]}\n| order by TimeGenerated asc"


def purge_request(found: Findings) -> str:
    """The Log Analytics purge, as an ``az rest`` command for an operator with Data Purger. The
    body is shell-quoted: a user such as ``o'neil@…`` must not end the quoted argument."""
    body = {"table": HUNTING_TABLE, "filters": [_hunting_filter(found)[1]]}
    return (
        "az rest --method post --url 'https://management.azure.com/subscriptions/<subscription>/resourceGroups/"
        "<resource-group>/providers/Microsoft.OperationalInsights/workspaces/<workspace>/purge?api-version=2020-08-01'"
        f" --body {shlex.quote(json.dumps(body))}"
    )


class SubjectRequests:
    """Finds, exports and erases one person's rows; ``table`` gives a state table by name."""

    def __init__(self, table: Callable[[str], EntityTable], pace: Callable[[], None] = lambda: None) -> None:
        self._table = table
        self._pace = pace

    def find(self, subject: Subject, progress: Callable[[str], None] = lambda _: None) -> Findings:
        found = Findings(subject)
        # the server narrows by exact value (the folded one, and as typed for older rows); the
        # namespace rule is then applied to each row
        # (values go as parameters, which the SDK quotes; it substitutes ``@name`` only as a whole
        # word, hence the spaces inside the parentheses)
        values = {f"v{i}": v for i, v in enumerate(sorted({subject.value, subject.typed, subject.typed.lower()}))}
        columns = ("email", "user") if subject.kind == "email" else ("user_id",)
        who = "( " + " or ".join(f"{c} eq @{v}" for c in columns for v in values) + " )"
        progress("Ledger")
        rows = self._table("Ledger").query_entities(f"RowKey eq 'event' and {who}", parameters=values)
        found.rows["Ledger"] = [_plain(e) for e in rows if _row_is_about(e, subject)]
        for name, kept_in in (("Held", "held"), ("DeadLetters", "deadletter")):
            progress(name)
            rows = self._table(name).query_entities("PartitionKey eq @kept", parameters={"kept": kept_in})
            found.rows[name] = [_plain(e) for e in rows if is_subject(str(e.get("message") or ""), subject)]
        progress("HuntingOutbox")
        outbox = self._table("HuntingOutbox").query_entities(who, parameters=values)
        found.rows["HuntingOutbox"] = [_plain(e) for e in outbox if _row_is_about(e, subject)]
        progress("Groups")
        found.rows["Groups"] = list(self._groups(found))
        progress("Patterns")
        found.rows["Patterns"] = list(self._patterns(subject, found.event_ids))
        progress("Responses")
        responses = self._table("Responses").list_entities(results_per_page=1000)
        found.rows["Responses"] = [_plain(e) for e in responses if str(e.get("event_id")) in found.event_ids]
        progress("Audit")
        ids = found.event_ids
        audit = self._table("Audit").list_entities(results_per_page=1000)
        found.rows["Audit"] = [_plain(e) for e in audit if e.get("event_id") and str(e["event_id"]) in ids]
        return found

    def _patterns(self, subject: Subject, ids: set[str]) -> Iterator[dict[str, Any]]:
        """The person's observations, by their events' ids (in their own and their devices'
        windows), one each with the keys of the row that holds it, and the rows of their own
        window that hold no observation (its platforms).

        An observation in their window is theirs only by its event: the window is keyed by the
        e-mail, else the Noxys user id, so an event with no e-mail whose user id is this person's
        address lands in it too, and is not theirs (nor is a pack's row, which holds others')."""
        own = {partition("u", subject.value), partition("u", subject.typed.lower()), partition("u", subject.typed)}
        for e in self._table("Patterns").list_entities(results_per_page=1000):
            seen = observations(e)
            if not seen and e["PartitionKey"] in own:
                yield _plain(e)
            keys = {"PartitionKey": e["PartitionKey"], "RowKey": e["RowKey"]}
            yield from ({**keys, **s._asdict()} for s in seen if s.event_id in ids)

    def _groups(self, found: Findings) -> Iterator[dict[str, Any]]:
        """The groups this person's events led, and their events' member rows in any group (a
        group someone else led is theirs, not this person's; the membership row is this one's)."""
        from azure.core.exceptions import ResourceNotFoundError

        ids = found.event_ids
        seen: set[tuple[str, str]] = set()
        for r in found.rows["Ledger"]:
            if not r.get("group_key"):
                continue
            for key in ((str(r["group_key"]), ROW), (str(r["group_key"]), member_row(str(r["event_id"])))):
                if key in seen:
                    continue
                seen.add(key)
                try:
                    row = self._table("Groups").get_entity(*key)
                except ResourceNotFoundError:
                    continue  # already purged by retention (or the event led: no member row)
                if str(row.get("leader" if key[1] == ROW else "event_id")) in ids:
                    yield _plain(row)

    def erase(self, found: Findings, progress: Callable[[str], None] = lambda _: None, keep_audit: bool = False) -> int:
        """Delete every row of ``found`` (paced); a row already gone counts as erased."""
        from azure.core.exceptions import ResourceNotFoundError

        erased = 0
        for name in ERASE_ORDER:
            if name == "Audit" and keep_audit:
                continue
            if name == "Patterns":  # observations, several perhaps in one row: each row once
                rows: dict[tuple[str, str], set[str]] = {}
                for r in found.rows[name]:
                    rows.setdefault((str(r["PartitionKey"]), str(r["RowKey"])), set()).add(str(r.get("event_id") or ""))
                for (pk, rk), ids in rows.items():
                    self._pace()
                    self._drop_observations(pk, rk, ids - {""})
                    erased += len(ids)  # (one id per observation found; the platforms row has none)
                    progress(name)
                continue
            for row in found.rows[name]:
                self._pace()
                with contextlib.suppress(ResourceNotFoundError):
                    self._table(name).delete_entity(row["PartitionKey"], row["RowKey"])
                erased += 1
                progress(name)
        return erased

    def _drop_observations(self, pk: str, rk: str, ids: set[str]) -> None:
        """Delete the Patterns row ``pk``/``rk``, or, when it holds observations of other events,
        write it back without those of ``ids`` (conditional on its ETag: retried if it changed
        meanwhile). A row already gone is erased."""
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError
        from azure.data.tables import UpdateMode

        table = self._table("Patterns")
        for _ in range(5):
            try:
                row = table.get_entity(pk, rk)
                rest = without(row, ids) if ids else None
                unchanged = {"etag": row.metadata["etag"], "match_condition": MatchConditions.IfNotModified}
                if rest is None:
                    table.delete_entity(pk, rk, **unchanged)
                else:
                    table.update_entity(rest, mode=UpdateMode.REPLACE, **unchanged)
                return
            except ResourceNotFoundError:
                return
            except ResourceModifiedError:
                continue
        raise RuntimeError(f"Patterns row {rk} kept changing while it was erased: run the erasure again")
