"""Device → machine resolutions cached in Table Storage, shared by all instances.

A storm of 10,000 events from 200 laptops should cost about 200 machine lookups, not 10,000
(the machines API allows 100 a minute). "Not found" is cached too, for a shorter time, so an
unknown device does not burn the budget on every event, yet a newly onboarded one is found soon.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from shared.events import Device
from shared.storage import EntityTable

PARTITION = "device"


def identity(device: Device) -> str:
    parts = [device.aad_device_id or "", device.fqdn or "", device.hostname or "", device.ip_address or ""]
    return "|".join(p.strip().lower() for p in parts)


@dataclass(frozen=True)
class Cached:
    machine_id: str | None
    resolved_by: str


class DeviceCache:
    def __init__(self, table: EntityTable) -> None:
        self._table = table

    @staticmethod
    def _key(device: Device) -> str:
        return hashlib.sha256(identity(device).encode()).hexdigest()[:40]

    def get(self, device: Device, now: float) -> Cached | None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            e = self._table.get_entity(PARTITION, self._key(device))
        except ResourceNotFoundError:
            return None
        if float(e.get("expires_at") or 0) <= now:
            return None
        return Cached(e.get("machine_id") or None, str(e.get("resolved_by") or ""))

    def put(self, device: Device, machine_id: str | None, resolved_by: str, now: float, ttl_seconds: float) -> None:
        from azure.data.tables import UpdateMode

        if ttl_seconds <= 0:
            return
        self._table.upsert_entity(
            {
                "PartitionKey": PARTITION,
                "RowKey": self._key(device),
                "machine_id": machine_id or "",
                "resolved_by": resolved_by,
                "expires_at": now + ttl_seconds,
                "device": identity(device),
            },
            mode=UpdateMode.REPLACE,
        )
