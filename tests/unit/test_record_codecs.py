"""Every store's rows go through one typed :class:`shared.storage.Codec` now; these tests pin the
rows the hand-written mappers wrote before. Each builds an old row by hand, exactly as the previous
code wrote it, and proves that (1) it reads back identically through the store, and (2) a row the
store writes now has the same property names and the same value types (an ``int`` written where a
``float`` was is a different Edm type on the service, and ``0 == 0.0`` in Python, so types are
compared explicitly)."""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

from azure.data.tables import UpdateMode

from shared.audit import FIELDS, AuditTrail
from shared.counters import Counters
from shared.defender.errors import CallRecord
from shared.delivery.deadletter import DeadLetters
from shared.delivery.hold import Held
from shared.delivery.hunting_outbox import CHUNK, HuntingOutbox, Waiting, partition_of
from shared.delivery.pacing import BudgetState, Pacer, Quota, _dump, _load
from shared.events import parse_events
from shared.facts import facts
from shared.response.store import ActionRow, ResponseStore
from shared.status import _HEALTH, HealthRow, read_record
from shared.storage import table_key
from shared.suppress import Suppressions
from shared.tasks import QueuedEvent
from tests.fakes import FakeTable
from tests.support import SAMPLE_DAY, violation

T = 1_773_000_000.25  # an epoch time with a fraction: stored as a double


def _shape(row: dict[str, Any]) -> dict[str, tuple[type, Any]]:
    """A row's properties with each value's type: what the service stores (Edm type and value)."""
    return {k: (type(v), v) for k, v in row.items()}


def _stored(table: FakeTable, pk: str, rk: str) -> dict[str, tuple[type, Any]]:
    return _shape(dict(table.rows[(pk, rk)]))


def _old(table: FakeTable, row: dict[str, Any]) -> None:
    table.create_entity(dict(row))


def _task(i: int = 1) -> QueuedEvent:
    (event,) = parse_events(json.dumps(violation(i)).encode())
    return QueuedEvent.new(event, SAMPLE_DAY)


# ------------------------------------------------------------------ hunting outbox
def _old_outbox_row(task: QueuedEvent, text: str) -> dict[str, Any]:
    """What ``hunting_outbox.entity`` wrote before the codec (an empty chunk left out)."""
    kept = facts(task.event)
    row: dict[str, Any] = {
        "PartitionKey": partition_of(task.received_at), "RowKey": table_key(task.event.id),
        "event_id": task.event.id, "user": kept.user, "user_id": kept.user_id, "email": kept.email,
    }  # fmt: skip
    for i, name in enumerate(("task", "task1", "task2")):
        if text[i * CHUNK : (i + 1) * CHUNK]:
            row[name] = text[i * CHUNK : (i + 1) * CHUNK]
    return row


def test_hunting_outbox_rows_keep_their_properties_and_old_rows_read_back() -> None:
    short = _task(1)
    long = _task(2)
    padded = long.to_text()[:-1] + ', "pad": "' + "y" * 40_000 + '"}'  # two chunks
    for task, text in ((short, short.to_text()), (long, padded)):
        old = _old_outbox_row(task, text)
        assert set(old) >= {"task"} and ("task1" in old) == (text is padded)
        written = FakeTable()
        HuntingOutbox(written).put([(task, text)])
        assert _stored(written, old["PartitionKey"], old["RowKey"]) == _shape(old)  # same names, same types
        before = FakeTable()
        _old(before, old)
        (back,) = HuntingOutbox(before).read()
        assert back == Waiting(old["PartitionKey"], old["RowKey"], QueuedEvent.model_validate_json(text))


# ------------------------------------------------------------------ response store
def _old_action_row(row: ActionRow) -> dict[str, Any]:
    """What ``ResponseStore._entity`` wrote before the codec."""
    return {
        "PartitionKey": table_key(row.event_id), "RowKey": row.key, "event_id": row.event_id, "rule": row.rule[:200],
        "action": row.action, "state": row.state, "machine_id": row.machine_id, "action_id": row.action_id,
        "detail": row.detail[:1000], "at": row.at, "dry_run": row.dry_run, "alert_id": row.alert_id,
        "undo": row.undo, "release_at": row.release_at, "released": row.released[:500],
    }  # fmt: skip


def test_response_action_rows_keep_their_properties_and_old_rows_read_back() -> None:
    row = ActionRow(
        "evt/1", "r00-isolate", "R" * 300, "isolate", "sent", "m1", "a1", "d" * 1200, T, False, "da1",
        "tag:NoxysRisk", T + 3600, "x" * 600,
    )  # fmt: skip
    old = _old_action_row(row)
    written = FakeTable()
    ResponseStore(written).save(row)
    assert _stored(written, old["PartitionKey"], old["RowKey"]) == _shape(old)
    before = FakeTable()
    _old(before, old)
    cut = ActionRow(**{**row.__dict__, "rule": "R" * 200, "detail": "d" * 1000, "released": "x" * 500})
    assert ResponseStore(before).get("evt/1", "r00-isolate") == cut
    assert ResponseStore(before).find("action_id eq @id", {"id": "a1"}) == [cut]
    # a row written before release_at/released/undo/alert_id existed, with the state left empty
    older = {k: v for k, v in old.items() if k not in ("alert_id", "undo", "release_at", "released")}
    before.upsert_entity({**older, "state": ""}, mode=UpdateMode.REPLACE)
    back = ResponseStore(before).get("evt/1", "r00-isolate")
    assert back is not None and (back.state, back.alert_id, back.release_at, back.released) == ("intended", "", 0.0, "")


def test_response_guard_rows_keep_their_properties_and_old_rows_read_back() -> None:
    old_rows: list[dict[str, Any]] = [
        {"PartitionKey": "guard", "RowKey": "device-m1", "until": T + 600, "owner": "evt_1"},
        {"PartitionKey": "guard", "RowKey": "circuit-isolate", "reason": "r" * 500, "tripped_at": T},
        {"PartitionKey": "guard", "RowKey": f"comment-{table_key('da/1')}-03", "said": "fp", "skipped": 2},
    ]
    before = FakeTable()
    for old in old_rows:
        _old(before, old)
    store = ResponseStore(before)
    assert store.cooldown("m1") == (T + 600, "evt_1")
    assert store.open_circuits(T + 10) == ["r" * 500] and store.open_circuits(T + 3601) == []
    assert store.comment_state("da/1", 3) == ("fp", 2)
    written = FakeTable()
    store = ResponseStore(written)
    assert store.take_cooldown("m1", "evt_1", T, 600.0) == (T + 600, "evt_1")
    store.trip("isolate", "r" * 700, T)
    store.set_comment_state("da/1", 3, "fp", 2)
    for old in old_rows:
        assert _stored(written, old["PartitionKey"], old["RowKey"]) == _shape(old)


def test_a_response_cap_row_keeps_its_json_list_and_an_old_one_counts() -> None:
    holder = "evt_1"
    hashed = hashlib.sha256(holder.encode()).hexdigest()[:16]
    old = {"PartitionKey": "guard", "RowKey": "cap-isolate", "recent": json.dumps([(T - 10, "someone"), (T, hashed)])}
    before = FakeTable()
    _old(before, old)
    assert ResponseStore(before).take_slot("isolate", holder, T + 1, limit=2)  # it already holds a place
    assert not ResponseStore(before).take_slot("isolate", "evt_2", T + 1, limit=2)  # the two places are taken
    written = FakeTable()
    assert ResponseStore(written).take_slot("isolate", holder, T, limit=2)
    assert _stored(written, "guard", "cap-isolate") == _shape(
        {"PartitionKey": "guard", "RowKey": "cap-isolate", "recent": json.dumps([(T, hashed)])}
    )


# ------------------------------------------------------------------ pacer
def test_a_budget_row_keeps_its_properties_and_an_old_row_reads_back() -> None:
    old = {"PartitionKey": "budget", "RowKey": "alerts", "calls": json.dumps([T - 1.5, T]), "tail": T - 0.5,
           "blocked_until": 0.0}  # fmt: skip
    assert _load(old) == BudgetState([T - 1.5, T], T - 0.5, 0.0)
    assert _load({"PartitionKey": "budget", "RowKey": "alerts", "calls": ""}) == BudgetState()  # empty: no calls
    assert _shape(_dump("alerts", BudgetState([T - 1.5, T], T - 0.5, 0.0))) == _shape(old)
    clock = SimpleNamespace(now=lambda: datetime.fromtimestamp(T + 1, UTC))
    table = FakeTable()
    _old(table, old)
    Pacer(table, {"alerts": Quota(((60, 100),))}, clock).acquire("alerts")
    assert _stored(table, "budget", "alerts") == _shape({**old, "calls": json.dumps([T - 1.5, T, T + 1])})


# ------------------------------------------------------------------ audit
def test_audit_rows_keep_their_properties_and_old_rows_export_the_same() -> None:
    call = CallRecord(T, "defender", "POST", "/api/alerts/" + "p" * 1200, 201, 12.5, "c1", None, "evt_1", 1)
    when = datetime.fromtimestamp(T, UTC)
    old = {
        "PartitionKey": "2026-03-08", "RowKey": "200000.250000-0123abcd", "time": "2026-03-08T20:00:00.250000Z",
        "service": "defender", "method": "POST", "path": call.path[:1000], "status": 201, "latency_ms": 12.5,
        "event_id": "evt_1", "correlation_id": "c1", "attempt": 1, "error_code": "",
    }  # fmt: skip
    assert when.strftime("%Y-%m-%d") == old["PartitionKey"]
    written = FakeTable()
    trail = AuditTrail(written)
    trail.record(call)
    trail.record_erasure(when, 3)  # latency 0 stays an int, as it always was
    rows = sorted(written.rows.values(), key=lambda e: str(e["path"]))
    (first, erasure) = rows  # "/api/…" sorts before "data-subject…"
    assert re.fullmatch(r"200000\.250000-[0-9a-f]{8}", str(first["RowKey"]))
    assert _shape({**first, "RowKey": old["RowKey"]}) == _shape(old)
    assert type(erasure["latency_ms"]) is int and erasure["event_id"] == "" and erasure["method"] == "ERASE"
    before = FakeTable()
    _old(before, old)
    exported = list(AuditTrail(before).rows(when - timedelta(seconds=1), when + timedelta(seconds=1)))
    assert exported == [{k: old[k] for k in FIELDS}]
    assert AuditTrail(before).purge(when + timedelta(days=2), 1) == 1 and before.rows == {}


# ------------------------------------------------------------------ held events, dead letters
def test_held_rows_keep_their_properties_and_old_rows_are_released() -> None:
    task = _task(3)
    old = {
        "PartitionKey": "held", "RowKey": f"{task.first_received_at:%Y%m%dT%H%M%S.%f}-{table_key(task.event.id)}",
        "event_id": task.event.id, "queue": "events", "message": task.to_text(),
    }  # fmt: skip
    written = FakeTable()
    Held(written).keep(task, "events")
    assert _stored(written, "held", old["RowKey"]) == _shape(old)
    before = FakeTable()
    _old(before, old)
    _old(before, {**old, "PartitionKey": "other"})  # another partition is not held
    sent: list[tuple[str, str]] = []
    held = Held(before)
    assert held.count() == 1
    assert held.release(lambda q, text: sent.append((q, text)), SAMPLE_DAY + timedelta(hours=1)) == 1
    ((queue, text),) = sent
    assert queue == "events" and QueuedEvent.model_validate_json(text).event == task.event
    assert held.count() == 0


def test_dead_letters_are_selected_by_their_partition_through_a_parameter() -> None:
    table = FakeTable()
    old = {"PartitionKey": "deadletter", "RowKey": "evt_1", "event_id": "evt_1", "reason": "why", "dead_at": T}
    _old(table, old)
    _old(table, {**old, "PartitionKey": "deadletter2"})
    letters = DeadLetters(table)
    assert letters.count() == 1 and [(d.event_id, d.reason, d.dead_at) for d in letters.all()] == [("evt_1", "why", T)]


# ------------------------------------------------------------------ counters
def test_counter_and_mark_rows_keep_their_properties_and_old_rows_read_back() -> None:
    now = datetime(2026, 3, 8, 20, 30, tzinfo=UTC)
    before = FakeTable()
    _old(before, {"PartitionKey": "2026030820", "RowKey": "accepted|3", "name": "accepted", "count": 4})
    _old(before, {"PartitionKey": "2026030819", "RowKey": "accepted|1", "name": "accepted", "count": 2})
    _old(before, {"PartitionKey": "marks", "RowKey": "last_event", "value": "2026-03-08T20:00:00Z"})
    counters = Counters(before)
    assert counters.totals(now, hours=2) == {"accepted": 6} and counters.totals(now, hours=1) == {"accepted": 4}
    assert counters.marks() == {"last_event": "2026-03-08T20:00:00Z"}
    written = FakeTable()
    counters = Counters(written)
    counters.add("accepted", now, 2)
    counters.mark("last_event", "2026-03-08T20:00:00Z")
    (count,) = [k for k in written.rows if k[0] != "marks"]
    assert re.fullmatch(r"accepted\|[0-7]", count[1])
    assert _stored(written, *count) == _shape({"PartitionKey": "2026030820", "RowKey": count[1], "name": "accepted",
                                               "count": 2})  # fmt: skip
    counters.add("accepted", now, 3)  # read, added to, written back (its shard or another)
    assert sum(int(e["count"]) for k, e in written.rows.items() if k[0] != "marks") == 5
    assert _stored(written, "marks", "last_event") == _shape(
        {"PartitionKey": "marks", "RowKey": "last_event", "value": "2026-03-08T20:00:00Z"}
    )


# ------------------------------------------------------------------ suppressions, health
def test_suppression_rows_keep_their_properties_and_old_rows_read_back() -> None:
    now = datetime(2026, 3, 9, 6, 0, tzinfo=UTC)
    old_suppressed = {"PartitionKey": "suppressed", "RowKey": table_key("pol/1"), "policy_id": "pol/1",
                      "name": "Chat", "reason": "too many", "since": now.isoformat()}  # fmt: skip
    until = (now + timedelta(days=7)).timestamp()
    old_override = {"PartitionKey": "override", "RowKey": table_key("pol/2"), "until": until}
    summary = {"at": now.isoformat(), "alerts": 3, "classified": 1, "suggestions": []}
    old_review = {"PartitionKey": "review", "RowKey": "latest", "summary": json.dumps(summary)}
    before = FakeTable()
    for old in (old_suppressed, old_override, old_review):
        _old(before, old)
    store = Suppressions(before)
    assert store.active() == {"pol/1": {"name": "Chat", "reason": "too many", "since": now.isoformat()}}
    assert store.latest() == summary
    assert store.apply({"pol/1": ("Chat", "too many"), "pol/2": ("Mail", "too many")}, now) == []  # pol/2 held off
    written = FakeTable()
    store = Suppressions(written)
    store.apply({"pol/1": ("Chat", "too many")}, now)
    assert _stored(written, "suppressed", table_key("pol/1")) == _shape(old_suppressed)
    store.unsuppress("pol/1", now)
    assert _stored(written, "override", table_key("pol/1")) == _shape({**old_override, "RowKey": table_key("pol/1")})
    review = SimpleNamespace(since="s", until="u", alerts=3, classified=1, suggestions=[])
    store.keep(review, [], now)  # type: ignore[arg-type]
    kept = {"at": now.isoformat(), "since": "s", "until": "u", "alerts": 3, "classified": 1, "suggestions": [],
            "changes": []}  # fmt: skip
    assert _stored(written, "review", "latest") == _shape({**old_review, "summary": json.dumps(kept)})


def test_the_health_row_keeps_its_property_and_an_old_row_reads_back() -> None:
    record = {"ok": True, "problems": [], "queues": {"events": 0}}
    old = {"PartitionKey": "health", "RowKey": "latest", "record": json.dumps(record)}
    assert _shape(_HEALTH.entity(HealthRow(json.dumps(record)))) == _shape(old)
    table = FakeTable()
    _old(table, old)
    deps = SimpleNamespace(table=lambda name: table)
    assert read_record(deps) == record  # type: ignore[arg-type]
