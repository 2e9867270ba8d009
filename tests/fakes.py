"""Fakes of the delivery's ports, for unit tests that run in milliseconds without Azurite.

* :class:`FakeTable` — a Table with what the stores rely on: real ETags and conditional writes
  (``IfNotModified`` → ``ResourceModifiedError``), insert (``ResourceExistsError``), read
  (``ResourceNotFoundError``), merge/replace, delete (silent when the row is gone, as the SDK),
  all-or-nothing transactions, an entity's size limits (a 64 KiB string, 1 MiB in all), and
  ``query_entities`` over the OData subset the product writes (``eq``/``ne``/``ge``/``gt``/``le``/
  ``lt``, ``and``/``or``, parentheses, ``datetime'…'``, ``@name``).
* :class:`FakeMde` — Defender for Endpoint as the emulator enforces it for what delivery calls:
  the machines lookup, hunting rows for the anchor, ``CreateAlertByReference``'s required fields
  and its 404 for an unknown machine/report/time triple, the merge of an open alert with the same
  title on the same machine, and ``list_alerts`` with ``alertCreationTime ge``. A test can make a
  call fail before it acts (a 5xx, a 429, a timeout), after it acts (the answer lost) or crash
  the process right after it (:class:`Crash`).
* :class:`FakeSender` — the queue writes, kept in order.

They are test doubles of the adapters behind ``shared.delivery.ports``, so the same rules hold as
in ``tests/integration`` against Azurite and the emulator (and must be kept in step with them).
"""

from __future__ import annotations

import dataclasses
import itertools
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import TableEntity, TableTransactionError, UpdateMode
from azure.data.tables._serialize import _parameter_filter_substitution  # the client's own, private

from shared.clock import Clock, ManualClock
from shared.config import Settings, load_settings
from shared.defender.errors import DefenderError
from shared.delivery.coalesce import Groups
from shared.delivery.deadletter import DeadLetters
from shared.delivery.devicecache import DeviceCache
from shared.delivery.forward import Delivery
from shared.delivery.hold import Held, Switch
from shared.delivery.ledger import Ledger
from shared.delivery.ports import Deps


class Crash(BaseException):
    """The worker process dies here. A ``BaseException``, so no ``except Exception`` in the code
    under test can treat it as a handled failure: the lease stays held, as after a real kill."""


# ---------------------------------------------------------------------------------- the table
_TOKEN = re.compile(r"\s*(?:(\()|(\))|datetime'([^']*)'|'((?:[^']|'')*)'|(-?\d+(?:\.\d+)?)|(@\w+)|(\w+))")
_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "eq": lambda a, b: a == b,
    "ne": lambda a, b: a != b,
    "ge": lambda a, b: a is not None and a >= b,
    "gt": lambda a, b: a is not None and a > b,
    "le": lambda a, b: a is not None and a <= b,
    "lt": lambda a, b: a is not None and a < b,
}


def _tokens(text: str) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    pos = 0
    while pos < len(text.rstrip()):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise ValueError(f"cannot read the filter at {text[pos:]!r}")
        pos = m.end()
        opened, closed, moment, string, number, param, word = m.groups()
        if opened or closed:
            out.append(("paren", opened or closed))
        elif moment is not None:
            out.append(("value", _time(moment)))
        elif string is not None:
            out.append(("value", string.replace("''", "'")))
        elif number is not None:
            out.append(("value", float(number) if "." in number else int(number)))
        elif param is not None:
            out.append(("param", param[1:]))
        elif word in ("true", "false"):
            out.append(("value", word == "true"))
        else:
            out.append(("word", word))
    return out


def odata_filter(text: str, parameters: dict[str, Any] | None = None) -> Callable[[dict[str, Any]], bool]:
    """A predicate for ``text``: ``and`` binds tighter than ``or``, as in OData."""
    tokens = _tokens(text)
    at = 0

    def peek() -> tuple[str, Any] | None:
        return tokens[at] if at < len(tokens) else None

    def take() -> tuple[str, Any]:
        nonlocal at
        at += 1
        return tokens[at - 1]

    def value(token: tuple[str, Any]) -> Any:
        return (parameters or {})[token[1]] if token[0] == "param" else token[1]

    def primary() -> Callable[[dict[str, Any]], bool]:
        if peek() == ("paren", "("):
            take()
            inner = disjunction()
            assert take() == ("paren", ")"), text
            return inner
        name, op, literal = take(), take(), take()
        assert name[0] == "word" and op[0] == "word" and op[1] in _COMPARE, text
        compare, wanted = _COMPARE[op[1]], value(literal)
        return lambda row: compare(row.get(name[1]), wanted)

    def conjunction() -> Callable[[dict[str, Any]], bool]:
        parts = [primary()]
        while peek() == ("word", "and"):
            take()
            parts.append(primary())
        return lambda row: all(p(row) for p in parts)

    def disjunction() -> Callable[[dict[str, Any]], bool]:
        parts = [conjunction()]
        while peek() == ("word", "or"):
            take()
            parts.append(conjunction())
        return lambda row: any(p(row) for p in parts)

    found = disjunction()
    assert at == len(tokens), f"unread filter tail in {text!r}"
    return found


class Pages:
    """What ``query_entities``/``list_entities`` return: iterable, and by pages."""

    def __init__(self, rows: list[TableEntity], per_page: int | None) -> None:
        self._rows, self._per_page = rows, per_page or 1000

    def __iter__(self) -> Iterator[TableEntity]:
        return iter(self._rows)

    def by_page(self) -> Iterator[Iterator[TableEntity]]:
        for i in range(0, len(self._rows), self._per_page):
            yield iter(self._rows[i : i + self._per_page])


class FakeTable:
    """An Azure Table in a dict, with ETags and conditional writes as the service has them."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], TableEntity] = {}
        self.transactions = 0
        self.requests = 0
        self.down: Exception | None = None  # set: every call raises it (storage unreachable)
        self.faults: dict[str, list[BaseException]] = {}  # method -> what its next calls raise
        self._etags = itertools.count(1)

    def fail(self, method: str, *errors: BaseException) -> None:
        """The next calls of ``method`` raise these, one each, before touching a row."""
        self.faults.setdefault(method, []).extend(errors)

    # ------------------------------------------------------------------ internals
    def _call(self, method: str) -> None:
        self.requests += 1
        if self.down is not None:
            raise self.down
        if self.faults.get(method):
            raise self.faults[method].pop(0)

    @staticmethod
    def _check_size(entity: dict[str, Any]) -> None:
        """Azure's limits on an entity: a string property of at most 64 KiB (32K UTF-16 units),
        at most 252 properties of its own, 1 MiB in all (counted here as UTF-16, as the service)."""
        from azure.core.exceptions import HttpResponseError

        sizes = [len(str(v).encode("utf-16-le")) for v in entity.values()]
        too_long = any(isinstance(v, str) and n > 65536 for v, n in zip(entity.values(), sizes, strict=True))
        if too_long or len(entity) > 255 or sum(sizes) > 1 << 20:
            raise HttpResponseError("The property value exceeds the maximum allowed size (64KB).")

    def _store(self, entity: dict[str, Any]) -> dict[str, Any]:
        self._check_size(entity)
        row = TableEntity({k: v for k, v in entity.items()})
        etag = f"W/\"datetime'{next(self._etags)}'\""
        row._metadata = {"etag": etag, "timestamp": datetime.now(UTC)}  # the service stamps real time
        self.rows[(str(entity["PartitionKey"]), str(entity["RowKey"]))] = row
        return {"etag": etag}

    @staticmethod
    def _copy(row: TableEntity, select: list[str] | None = None) -> TableEntity:
        out = TableEntity({k: v for k, v in row.items() if select is None or k in select})
        out._metadata = dict(row.metadata)  # type: ignore[assignment]
        return out

    def _check_etag(self, key: tuple[str, str], etag: str | None, match_condition: Any) -> None:
        if match_condition == MatchConditions.IfNotModified and self.rows[key].metadata["etag"] != etag:
            raise ResourceModifiedError("The update condition specified in the request was not satisfied.")

    # ------------------------------------------------------------------ the TableClient slice
    def get_entity(self, partition_key: str, row_key: str, **kwargs: Any) -> TableEntity:
        self._call("get_entity")
        if (partition_key, row_key) not in self.rows:
            raise ResourceNotFoundError("The specified resource does not exist.")
        return self._copy(self.rows[(partition_key, row_key)], kwargs.get("select"))

    def create_entity(self, entity: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        self._call("create_entity")
        if (str(entity["PartitionKey"]), str(entity["RowKey"])) in self.rows:
            raise ResourceExistsError("The specified entity already exists.")
        return self._store(entity)

    def update_entity(
        self,
        entity: dict[str, Any],
        mode: UpdateMode = UpdateMode.MERGE,
        *,
        etag: str | None = None,
        match_condition: Any = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        self._call("update_entity")
        key = (str(entity["PartitionKey"]), str(entity["RowKey"]))
        if key not in self.rows:
            raise ResourceNotFoundError("The specified resource does not exist.")
        self._check_etag(key, etag, match_condition)
        return self._store({**self.rows[key], **entity} if mode == UpdateMode.MERGE else entity)

    def upsert_entity(self, entity: dict[str, Any], mode: UpdateMode = UpdateMode.MERGE, **kwargs: Any) -> Any:
        self._call("upsert_entity")
        key = (str(entity["PartitionKey"]), str(entity["RowKey"]))
        merged = {**self.rows[key], **entity} if mode == UpdateMode.MERGE and key in self.rows else entity
        return self._store(merged)

    def delete_entity(self, partition_key: str, row_key: str, **kwargs: Any) -> None:
        """Like the SDK: a row already gone is not an error; a stale ETag is."""
        self._call("delete_entity")
        key = (partition_key, row_key)
        there = key in self.rows
        if there:
            self._check_etag(key, kwargs.get("etag"), kwargs.get("match_condition"))
            del self.rows[key]
        if kwargs.get("raw_response_hook"):  # the pipeline shows every answer to it, a 404 too
            answer = SimpleNamespace(http_response=SimpleNamespace(status_code=204 if there else 404))
            kwargs["raw_response_hook"](answer)

    def submit_transaction(self, operations: Iterable[Any], **kwargs: Any) -> None:
        """All or nothing, one partition, at most 100 operations, as Azure documents."""
        self._call("submit_transaction")
        ops = [(str(op[0]), op[1], op[2] if len(op) > 2 else {}) for op in operations]
        assert 0 < len(ops) <= 100 and len({e["PartitionKey"] for _, e, _ in ops}) == 1
        self.transactions += 1
        keys = [(str(e["PartitionKey"]), str(e["RowKey"])) for _, e, _ in ops]
        for (kind, entity, _), key in zip(ops, keys, strict=True):
            if (kind == "delete" and key not in self.rows) or (kind == "create" and key in self.rows):
                raise TableTransactionError(message="0:The specified resource does not exist.")
            if kind != "delete":
                self._check_size(entity)  # before any row is written: all or nothing
        for (kind, entity, options), key in zip(ops, keys, strict=True):
            if kind == "delete":
                del self.rows[key]
            elif kind == "upsert" and options.get("mode", UpdateMode.MERGE) == UpdateMode.MERGE and key in self.rows:
                self._store({**self.rows[key], **entity})
            else:
                self._store(entity)

    def query_entities(self, query_filter: str, **kwargs: Any) -> Pages:
        self._call("query_entities")
        # the SDK's own substitution (whole words only, its quoting), as the real client sends it
        keep = odata_filter(_parameter_filter_substitution(kwargs.get("parameters"), query_filter))
        rows = [
            self._copy(row, kwargs.get("select"))
            for row in (self.rows[k] for k in sorted(self.rows))
            if keep({**row, "Timestamp": row.metadata["timestamp"]})  # the service's own property
        ]
        return Pages(rows, kwargs.get("results_per_page"))

    def list_entities(self, **kwargs: Any) -> Pages:
        self._call("list_entities")
        rows = [self._copy(self.rows[k], kwargs.get("select")) for k in sorted(self.rows)]
        return Pages(rows, kwargs.get("results_per_page"))


# ---------------------------------------------------------------------------------- Defender
ALERT_FIELDS = (
    "machineId",
    "reportId",
    "eventTime",
    "severity",
    "title",
    "description",
    "recommendedAction",
    "category",
)
SEVERITIES = ("Informational", "Low", "Medium", "High")


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@dataclass
class Fault:
    """What the next call of ``method`` does instead of (or after) acting."""

    status: int  # 0: no HTTP answer (``code`` says which: Timeout, ConnectionLost, Unreachable)
    code: str = "ServerError"
    after: bool = False  # True: the call acted, then its answer was lost
    retry_after: float | None = None


@dataclass
class FakeMde:
    """Defender for Endpoint as delivery sees it (the ``MdeApi`` Protocol)."""

    clock: Clock
    machines: list[dict[str, Any]] = field(default_factory=list)
    network_events: list[dict[str, Any]] = field(default_factory=list)
    alerts: list[dict[str, Any]] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)
    merged: int = 0  # creates answered with an open alert of the same title on the machine
    faults: dict[str, list[Fault | BaseException]] = field(default_factory=dict)
    crash_after: set[str] = field(default_factory=set)  # methods after which the process dies

    # ------------------------------------------------------------------ test set-up
    def add_machine(self, machine_id: str, hostname: str, **extra: Any) -> None:
        machine = {"id": machine_id, "computerDnsName": hostname.lower(), "healthStatus": "Active"}
        self.machines.append({**machine, "lastSeen": "2026-03-20T17:00:00Z", **extra})

    def add_connection(self, machine_id: str, domain: str, at: datetime, report_id: int) -> None:
        stamp = at.strftime("%Y-%m-%dT%H:%M:%S.123456Z")  # hunting's precision, passed back as is
        row = {"Timestamp": stamp, "ReportId": report_id, "DeviceId": machine_id, "RemoteUrl": domain}
        self.network_events.append(row)

    def fail(self, method: str, *faults: Fault | BaseException) -> None:
        """The next calls of ``method``: a :class:`Fault`, or an exception raised before acting."""
        self.faults.setdefault(method, []).extend(faults)

    # ------------------------------------------------------------------ the call frame
    def _call(self, method: str, act: Callable[[], Any]) -> Any:
        self.calls.append(method)
        fault = self.faults[method].pop(0) if self.faults.get(method) else None
        if isinstance(fault, BaseException):
            raise fault
        if fault is not None and not fault.after:
            raise DefenderError(fault.status, fault.code, "injected before acting", retry_after=fault.retry_after)
        result = act()
        if fault is not None:
            raise DefenderError(fault.status, fault.code, "injected: the answer was lost")
        if method in self.crash_after:
            self.crash_after.discard(method)
            raise Crash(f"process killed after {method}")
        return result

    # ------------------------------------------------------------------ MdeApi
    def list_machines(self, odata_filter: str | None = None, top: int | None = None) -> list[dict[str, Any]]:
        def act() -> list[dict[str, Any]]:
            m = re.fullmatch(r"(?:startswith\((\w+),'(.*)'\)|(\w+) eq '(.*)')", odata_filter or "")
            assert m, f"machines $filter the emulator does not take: {odata_filter!r}"
            if m.group(1):
                return [dict(x) for x in self.machines if str(x.get(m.group(1), "")).startswith(m.group(2))]
            return [dict(x) for x in self.machines if str(x.get(m.group(3), "")).lower() == m.group(4).lower()]

        return list(self._call("list_machines", act))

    def find_machines_by_ip(self, ip: str, when: datetime) -> list[dict[str, Any]]:
        return list(self._call("find_machines_by_ip", lambda: [dict(m) for m in self.machines if m.get("ip") == ip]))

    def run_hunting_query(self, query: str) -> list[dict[str, Any]]:
        """The anchor query: rows of the machine in the time window, on one of the domains."""

        def act() -> list[dict[str, Any]]:
            device = re.search(r'DeviceId == "([0-9a-f]{40})"', query)
            between = re.search(r"between \(datetime\((\S+)\) \.\. datetime\((\S+)\)\)", query)
            domains = re.search(r"RemoteUrl has_any \(([^)]*)\)", query)
            assert device and between and domains, "not the anchor query"
            lo, hi = _time(between.group(1)), _time(between.group(2))
            wanted = [d.strip().strip('"') for d in domains.group(1).split(",")]
            return [
                dict(r)
                for r in self.network_events
                if r["DeviceId"] == device.group(1)
                and lo <= _time(r["Timestamp"]) <= hi
                and any(w in r["RemoteUrl"] for w in wanted)
            ]

        return list(self._call("run_hunting_query", act))

    def create_alert_by_reference(self, alert: dict[str, Any]) -> dict[str, Any]:
        return dict(self._call("create_alert_by_reference", lambda: self._create(alert)))

    def _create(self, body: dict[str, Any]) -> dict[str, Any]:
        for name in ALERT_FIELDS:
            if body.get(name) in (None, ""):
                raise DefenderError(400, "MissingRequiredParameter", f"Missing required parameter '{name}'.")
        if body["severity"] not in SEVERITIES:
            raise DefenderError(400, "InvalidInput", f"Invalid value '{body['severity']}' for severity")
        known = any(
            r["DeviceId"] == body["machineId"]
            and str(r["ReportId"]) == str(body["reportId"])
            and _time(r["Timestamp"]) == _time(str(body["eventTime"]))
            for r in self.network_events
        )
        if not any(m["id"] == body["machineId"] for m in self.machines) or not known:
            why = "No event was found for the given machineId, reportId and eventTime."
            raise DefenderError(404, "ResourceNotFound", why)
        for existing in self.alerts:
            if existing["machineId"] == body["machineId"] and existing["title"] == body["title"]:
                self.merged += 1  # Defender's merge rule: an open alert with this title on this machine
                return dict(existing)
        now = self.clock.now()
        made = {
            **{k: body[k] for k in ALERT_FIELDS},
            "id": f"da{len(self.alerts) + 1:06d}",
            "incidentId": None,
            "status": "New",
            "alertCreationTime": now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "comments": [],
        }
        self.alerts.append(made)
        return dict(made)

    def list_alerts(self, odata_filter: str, top: int = 1000) -> list[dict[str, Any]]:
        def act() -> list[dict[str, Any]]:
            m = re.fullmatch(r"alertCreationTime ge (\S+)(?: and alertCreationTime le (\S+))?", odata_filter)
            assert m, f"alerts $filter not supported: {odata_filter!r}"
            since, until = _time(m.group(1)), _time(m.group(2)) if m.group(2) else None
            made = [a for a in self.alerts if _time(a["alertCreationTime"]) >= since]
            return [dict(a) for a in made if until is None or _time(a["alertCreationTime"]) <= until][:top]

        return list(self._call("list_alerts", act))

    def comment_alert(self, alert_id: str, comment: str) -> dict[str, Any]:
        def act() -> dict[str, Any]:
            alert = self._alert(alert_id)
            stamp = self.clock.now().strftime("%Y-%m-%dT%H:%M:%SZ")
            alert["comments"].append({"comment": comment, "createdBy": "API", "createdTime": stamp})
            return dict(alert)

        return dict(self._call("comment_alert", act))

    def get_alert(self, alert_id: str) -> dict[str, Any]:
        return dict(self._call("get_alert", lambda: dict(self._alert(alert_id))))

    def _alert(self, alert_id: str) -> dict[str, Any]:
        for a in self.alerts:
            if a["id"] == alert_id:
                return a
        raise DefenderError(404, "ResourceNotFound", f"Alert {alert_id} was not found.")


# ---------------------------------------------------------------------------------- the queue
@dataclass
class FakeSender:
    """The queue writes a delivery makes, in order: (queue, text, delay in seconds)."""

    sent: list[tuple[str, str, float]] = field(default_factory=list)
    down: Exception | None = None

    def send(self, queue: str, text: str, delay: float) -> None:
        if self.down is not None:
            raise self.down
        self.sent.append((queue, text, delay))


# ---------------------------------------------------------------------------------- a delivery
@dataclass
class World:
    """One :class:`~shared.delivery.forward.Delivery` built on fakes, as ``shared.wiring`` builds
    the real one, with what a test needs to drive it (the clock) and to look at (the rows)."""

    settings: Settings
    clock: ManualClock
    mde: FakeMde
    sender: FakeSender
    tables: dict[str, FakeTable]
    deps: Deps
    delivery: Delivery
    ledger: Ledger  # the concrete stores behind ``deps`` (its members are Protocols), to look at
    dead: DeadLetters
    held: Held

    def ledger_row(self, event_id: str) -> dict[str, Any]:
        entry = self.ledger.get(event_id)
        assert entry is not None, f"no ledger entry for {event_id}"
        fields = dataclasses.asdict(entry).items()  # the parts (dicts) flattened, as in the row
        return {
            k: v for name, value in fields for k, v in (value.items() if isinstance(value, dict) else [(name, value)])
        }

    def requeued(self, queue: str) -> list[tuple[str, float]]:
        return [(text, delay) for q, text, delay in self.sender.sent if q == queue]


def world(env: dict[str, str] | None = None, *, start: datetime) -> World:
    settings = load_settings({"INCIDENT_TAGGING": "off", "RISK_PATTERNS": "false", **(env or {})})
    clock = ManualClock(start)
    mde, sender = FakeMde(clock), FakeSender()
    tables = {name: FakeTable() for name in ("Ledger", "Groups", "Devices", "DeadLetters", "Held", "Switch")}
    ledger, dead = Ledger(tables["Ledger"]), DeadLetters(tables["DeadLetters"])
    held = Held(tables["Held"], Switch(tables["Switch"], settings.integration_setting, clock))
    deps = Deps(
        settings=settings,
        mde=mde,
        ledger=ledger,
        groups=Groups(tables["Groups"]),
        devices=DeviceCache(tables["Devices"]),
        dead=dead,
        held=held,
        sender=sender,
        clock=clock,
    )
    return World(settings, clock, mde, sender, tables, deps, Delivery(deps), ledger, dead, held)
