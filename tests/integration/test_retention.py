"""Retention of the state tables on real Azurite: expired rows go, live ones stay, table by table,
and a second run finds nothing more to do."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import pytest

from shared import jobs, retention, status, wiring
from shared.clock import ManualClock
from shared.config import ConfigError, load_settings
from shared.counters import Counters
from shared.delivery.coalesce import Groups
from shared.delivery.deadletter import DeadLetter, DeadLetters
from shared.delivery.devicecache import DeviceCache
from shared.delivery.hold import Held
from shared.delivery.ledger import Ledger
from shared.delivery.patterns import Observation, PatternStore
from shared.events import Device, parse_events
from shared.response.store import ActionRow, ResponseStore
from shared.tasks import QueuedEvent
from tests.support import Env, observed, sample

pytestmark = pytest.mark.integration


def _keys(env: Env, name: str) -> set[str]:
    return {f"{e['PartitionKey']}/{e['RowKey']}" for e in env.table(name).list_entities()}


def _seed(env: Env, now: datetime) -> dict[str, Any]:
    old, recent = now - timedelta(days=400), now - timedelta(hours=1)
    ledger = Ledger(wiring.table("Ledger"))
    for event_id, at, final in (
        ("evt_old_final", old, True),
        ("evt_new_final", recent, True),
        ("evt_old_live", old, False),
    ):
        entry = ledger.claim(event_id, "interaction.policy_violated", at.timestamp(), 300)
        if final:
            ledger.mark_created(entry, f"da_{event_id}", None)
    groups = Groups(wiring.table("Groups"))
    groups.lead_or_join("g-old", "evt_a", old.timestamp())
    groups.join("g-old", "evt_a2", old.timestamp())  # a member: purged with its group's age
    groups.lead_or_join("g-new", "evt_b", recent.timestamp())
    groups.join("g-new", "evt_b2", recent.timestamp())
    groups.lead_or_join("g-old-note-pending", "evt_c", old.timestamp())
    groups.update("g-old-note-pending", note_scheduled=True)  # as a pending note would
    legacy = {"PartitionKey": "group", "RowKey": "g-legacy", "leader": "evt_l", "count": 3}  # before member rows
    wiring.table("Groups").create_entity({**legacy, "last_event_at": old.timestamp(), "note_scheduled": False})
    devices = DeviceCache(wiring.table("Devices"))
    devices.put(Device(hostname="OLD-PC"), "m1", "hostname", old.timestamp(), 60)
    devices.put(Device(hostname="NEW-PC"), "m2", "hostname", recent.timestamp(), 6 * 3600)
    counters = Counters(wiring.table("Counters"))
    counters.add("ingest.accepted", old, 3)
    counters.add("ingest.accepted", recent, 2)
    counters.mark("last_alert_at", old.isoformat())
    dead = DeadLetters(wiring.table("DeadLetters"))
    for event_id, at in (("evt_dead_old", old), ("evt_dead_new", recent)):
        dead.put(DeadLetter(event_id, "r", "", "", at.timestamp(), env.queue, "{}"))
    (event,) = parse_events(sample("high_risk"))
    Held(wiring.table("Held")).keep(QueuedEvent.new(event, old), env.queue)
    patterns = PatternStore(wiring.table("Patterns"))
    for event_id, at in (("evt_seen_old", old), ("evt_seen_new", recent)):  # a pack a partition each (two buckets)
        patterns.record(Observation(event_id, at.timestamp(), "alice-laptop", "alice@acme.fr", "ChatGPT", "EMAIL"))
    patterns.flush()
    responses = ResponseStore(wiring.table("Responses"))
    for event_id, at in (("evt_acted_old", old), ("evt_acted_new", recent)):
        responses.save(ActionRow(event_id, "r00a00", "rule", "isolate", "Succeeded", at=at.timestamp()))
    responses.take_cooldown("m" * 40, "evt_acted_old", old.timestamp(), 3600)  # a guard row: never purged
    return {"old": old, "recent": recent}


def test_expired_rows_go_and_live_ones_stay(env: Env, clock: ManualClock) -> None:
    now = clock.now()
    _seed(env, now)
    removed = jobs.purge_state(wiring.settings(), wiring.table, now)
    assert removed == {
        "Ledger": 1, "Groups": 3, "Devices": 1, "Counters": 1, "DeadLetters": 1, "Responses": 1, "Patterns": 2,
    }  # fmt: skip
    assert sorted(event_id for _, event_id in observed(env)) == ["evt_seen_new"] * 2  # device's and user's window
    assert {e["PartitionKey"] for e in env.table("Responses").list_entities()} == {"evt_acted_new", "guard"}
    ledger = {e["event_id"]: e["state"] for e in env.table("Ledger").list_entities()}
    assert ledger == {"evt_new_final": "alert_created", "evt_old_live": "received"}  # live entries are never purged
    assert _keys(env, "Groups") == {"g-new/group", "g-new/m-evt_b2", "g-old-note-pending/group"}
    assert {e["device"] for e in env.table("Devices").list_entities()} == {"||new-pc|"}  # aad|fqdn|host|ip
    counters = list(env.table("Counters").list_entities())
    assert {e["PartitionKey"] for e in counters} == {now.replace(hour=17).strftime("%Y%m%d%H"), "marks"}
    assert [e["event_id"] for e in env.table("DeadLetters").list_entities()] == ["evt_dead_new"]
    assert len(list(env.table("Held").list_entities())) == 1  # held events stay until released
    # idempotent: a second run has nothing left to do
    assert set(jobs.purge_state(wiring.settings(), wiring.table, now).values()) == {0}


def test_a_run_deletes_at_most_the_limit_per_table(env: Env, clock: ManualClock) -> None:
    now = clock.now()
    counters = Counters(wiring.table("Counters"))
    for hours in range(24 * 60, 24 * 60 + 150):  # 150 expired hourly partitions
        counters.add("ingest.accepted", now - timedelta(hours=hours), 1)
    rules = [r for r in retention.rules(wiring.settings(), now) if r.table == "Counters"]
    assert retention.purge(wiring.table("Counters"), rules[0], limit=100) == 100
    assert retention.purge(wiring.table("Counters"), rules[0], limit=100) == 50


def test_status_shows_table_sizes_and_the_oldest_row(env: Env, clock: ManualClock) -> None:
    _seed(env, clock.now())
    tables = status._table_stats(wiring.status_deps())
    assert tables["Ledger"]["rows"] == 3 and tables["Held"]["rows"] == 1
    assert tables["Ledger"]["oldest"] is not None
    assert json.dumps(tables)  # stored as JSON in the health record


def test_retention_must_outlive_every_retry() -> None:
    with pytest.raises(ConfigError) as err:
        load_settings({"LEDGER_RETENTION_DAYS": "1", "MAX_EVENT_AGE_HOURS": "48"})
    assert err.value.setting == "LEDGER_RETENTION_DAYS" and "MAX_EVENT_AGE_HOURS" in str(err.value)
