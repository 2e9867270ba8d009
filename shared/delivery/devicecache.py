"""Device → machine resolutions cached in Table Storage, shared by all instances.

A storm of 10,000 events from 200 laptops should cost about 200 machine lookups, not 10,000
(the machines API allows 100 a minute). "Not found" is cached too, for a shorter time, so an
unknown device does not burn the budget on every event, yet a newly onboarded one is found soon.

The cache is keyed by the device's *normalised* identifiers (:func:`shared.devices.ids_of`), so
an event padding or mis-casing a name reaches the same row as the real device and is resolved
like it, instead of caching "no machine" under its identity. "Not found" is kept only for an
event about the present (:data:`NEGATIVE_FRESH_SECONDS`): a back-dated event's answer is about
its own time (the IP lookup is), and must not stand for the device's events now.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from shared.devices import ids_of
from shared.events import Device
from shared.risk import DeviceView
from shared.storage import Codec, EntityTable

PARTITION = "device"


NEGATIVE_FRESH_SECONDS = 900.0  # an event older (or newer) than this never caches "not found"


def identity(device: Device) -> str:
    return ids_of(device).key()


@dataclass(frozen=True)
class Cached:
    machine_id: str | None
    resolved_by: str
    view: DeviceView = field(default_factory=DeviceView)


def view_of(machine: dict[str, Any] | None) -> DeviceView:
    """Defender's own risk, exposure and tags, from the machine record resolution fetched."""
    if not machine:
        return DeviceView()
    tags = machine.get("machineTags") or []
    return DeviceView(
        str(machine.get("riskScore") or ""),
        str(machine.get("exposureLevel") or ""),
        tuple(str(t) for t in tags) if isinstance(tags, list) else (),
    )


@dataclass(frozen=True)
class _Row:
    """The stored row (its property names are the table's)."""

    key: str
    machine_id: str = ""  # "" : looked up, not found (a negative entry)
    resolved_by: str = ""
    expires_at: float = 0.0
    device: str = ""  # the identity it was resolved from
    risk_score: str = ""
    exposure_level: str = ""
    tags: str = ""  # newline-separated


_CODEC = Codec(_Row, lambda r: (PARTITION, r.key), in_key=("key",))
MEMO_SECONDS = 60.0  # how long an instance trusts "not found" it read from the table without reading again
MEMO_FOUND_SECONDS = 300.0  # … and a machine found (a device is not re-onboarded from one minute to the next)
MEMO_MAX = 4096  # devices an instance remembers at most (the oldest are forgotten first)


def _memo_seconds(found: Cached) -> float:
    return MEMO_FOUND_SECONDS if found.machine_id else MEMO_SECONDS


class DeviceCache:
    """The table is the cache every instance shares; each instance also remembers what it read (a
    machine for five minutes, "not found" for one; never beyond the row's own expiry), so a storm's
    followers on one device cost no round trip for their device. A device onboarded meanwhile is
    found a minute later at most."""

    def __init__(self, table: EntityTable) -> None:
        self._table = table
        self._memo: dict[str, tuple[float, Cached | None]] = {}

    @staticmethod
    def _key(device: Device) -> str:
        return hashlib.sha256(identity(device).encode()).hexdigest()[:40]

    def get(self, device: Device, now: float) -> Cached | None:
        from azure.core.exceptions import ResourceNotFoundError

        key = self._key(device)
        remembered = self._memo.get(key)
        if remembered is not None and remembered[0] > now:
            return remembered[1]
        try:
            e = self._table.get_entity(PARTITION, key)
        except ResourceNotFoundError:
            return None
        row = _CODEC.record(e, key=key)
        if row.expires_at <= now:
            return None
        tags = tuple(t for t in row.tags.split("\n") if t)
        found = Cached(row.machine_id or None, row.resolved_by, DeviceView(row.risk_score, row.exposure_level, tags))
        self._remember(key, min(row.expires_at, now + _memo_seconds(found)), found)
        return found

    def _remember(self, key: str, until: float, found: Cached | None) -> None:
        """Bounded: a fleet of 100,000 devices must not grow one instance's memory for ever."""
        self._memo.pop(key, None)  # re-inserted last: the newest
        self._memo[key] = (until, found)
        for old in list(self._memo)[: max(0, len(self._memo) - MEMO_MAX)]:
            self._memo.pop(old, None)

    def put(
        self,
        device: Device,
        machine_id: str | None,
        resolved_by: str,
        now: float,
        ttl_seconds: float,
        view: DeviceView | None = None,
        observed_at: float | None = None,
    ) -> None:
        """Keep a resolution; "not found" (``machine_id`` None) only when ``observed_at`` — the
        event's own time — is the present, give or take :data:`NEGATIVE_FRESH_SECONDS`."""
        from azure.data.tables import UpdateMode

        if ttl_seconds <= 0:
            return
        if machine_id is None and observed_at is not None and abs(now - observed_at) > NEGATIVE_FRESH_SECONDS:
            return
        view = view or DeviceView()
        cached = Cached(machine_id, resolved_by, view)
        self._remember(self._key(device), now + min(ttl_seconds, _memo_seconds(cached)), cached)
        row = _Row(
            self._key(device),
            machine_id or "",
            resolved_by,
            now + ttl_seconds,
            identity(device),
            view.risk_score,
            view.exposure_level,
            "\n".join(view.tags),
        )
        self._table.upsert_entity(_CODEC.entity(row), mode=UpdateMode.REPLACE)
