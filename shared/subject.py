"""Data-subject requests (GDPR art. 15 and 17): everything the connector keeps about one person,
to export it or to erase it.

Where a person appears in the connector's own state:

* **Ledger** — one row per event, with the user (``shared.facts``): the index of everything else.
* **Held** and **DeadLetters** — the redacted queue message of an event, which names the user;
  found by reading each message (an event can be held before it ever reaches the ledger).
* **Groups** — the storm-coalescing groups those events led or joined (no identity of their own,
  but tied to the person's events).
* **Patterns** — the risk windows: the person's own partition (their recent events, platforms
  and PII types) and their events' rows in their devices' partitions.
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
from typing import Any

from shared.delivery.message import QueuedEvent
from shared.delivery.patterns import partition
from shared.hunting import TABLE as HUNTING_TABLE
from shared.storage import EntityTable

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


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def is_subject(message: str, user: str) -> bool:
    """Whether a stored queue message is about ``user`` (e-mail, case-insensitive, or Noxys user id)."""
    try:
        event = QueuedEvent.model_validate_json(message).event
    except ValueError:
        return False
    user_id = event.data.interaction.user_id if event.data.interaction else None
    return (event.user_email or "").lower() == user.lower() or (user_id or "") == user


def _plain(entity: Any) -> dict[str, Any]:
    """A Table entity as JSON-ready properties (keys included, metadata left out)."""
    return {k: (v if isinstance(v, str | int | float | bool) or v is None else str(v)) for k, v in entity.items()}


@dataclass
class Findings:
    user: str
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


def hunting_query(user: str) -> str:
    return f"{HUNTING_TABLE}\n| where UserPrincipalName =~ {json.dumps(user)}\n| order by TimeGenerated asc"


def purge_request(user: str) -> str:
    """The Log Analytics purge, as an ``az rest`` command for an operator with Data Purger. The
    body is shell-quoted: a user such as ``o'neil@…`` must not end the quoted argument."""
    body = {"table": HUNTING_TABLE, "filters": [{"column": "UserPrincipalName", "operator": "==", "value": user}]}
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

    def find(self, user: str, progress: Callable[[str], None] = lambda _: None) -> Findings:
        if not user.strip():  # a blank user would match every row that names none
            raise ValueError("a data-subject request needs a user")
        found = Findings(user)
        wanted = _literal(user.lower()), _literal(user)
        progress("Ledger")
        who = f"(user eq {wanted[0]} or user eq {wanted[1]} or user_id eq {wanted[1]})"
        found.rows["Ledger"] = [_plain(e) for e in self._table("Ledger").query_entities(f"RowKey eq 'event' and {who}")]
        for name, kept_in in (("Held", "held"), ("DeadLetters", "deadletter")):
            progress(name)
            rows = self._table(name).query_entities(f"PartitionKey eq {_literal(kept_in)}")
            found.rows[name] = [_plain(e) for e in rows if is_subject(str(e.get("message") or ""), user)]
        progress("HuntingOutbox")
        found.rows["HuntingOutbox"] = [_plain(e) for e in self._table("HuntingOutbox").query_entities(who)]
        progress("Groups")
        found.rows["Groups"] = list(self._groups(found))
        progress("Patterns")
        found.rows["Patterns"] = list(self._patterns(user, found.event_ids))
        progress("Responses")
        responses = self._table("Responses").list_entities(results_per_page=1000)
        found.rows["Responses"] = [_plain(e) for e in responses if str(e.get("event_id")) in found.event_ids]
        progress("Audit")
        ids = found.event_ids
        audit = self._table("Audit").list_entities(results_per_page=1000)
        found.rows["Audit"] = [_plain(e) for e in audit if e.get("event_id") and str(e["event_id"]) in ids]
        return found

    def _patterns(self, user: str, ids: set[str]) -> Iterator[dict[str, Any]]:
        own = {partition("u", user.lower()), partition("u", user)}
        for e in self._table("Patterns").list_entities(results_per_page=1000):
            if e["PartitionKey"] in own or (e.get("event_id") and str(e["event_id"]) in ids):
                yield _plain(e)

    def _groups(self, found: Findings) -> Iterator[dict[str, Any]]:
        from azure.core.exceptions import ResourceNotFoundError

        keys = sorted({str(r["group_key"]) for r in found.rows["Ledger"] if r.get("group_key")})
        ids = found.event_ids
        for key in keys:
            try:
                group = self._table("Groups").get_entity("group", key)
            except ResourceNotFoundError:
                continue  # already purged by retention
            if str(group.get("leader")) in ids:  # a group someone else led is theirs, not this person's
                yield _plain(group)

    def erase(self, found: Findings, progress: Callable[[str], None] = lambda _: None, keep_audit: bool = False) -> int:
        """Delete every row of ``found`` (paced); a row already gone counts as erased."""
        from azure.core.exceptions import ResourceNotFoundError

        erased = 0
        for name in ERASE_ORDER:
            if name == "Audit" and keep_audit:
                continue
            for row in found.rows[name]:
                self._pace()
                with contextlib.suppress(ResourceNotFoundError):
                    self._table(name).delete_entity(row["PartitionKey"], row["RowKey"])
                erased += 1
                progress(name)
        return erased
