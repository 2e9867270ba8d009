"""The device cache's per-instance memory is bounded, and keeps the devices used most recently."""

from __future__ import annotations

import pytest

from shared.delivery import devicecache as module
from shared.delivery.devicecache import DeviceCache
from shared.events import Device
from tests.support import AzureLikeTable


def test_the_memo_forgets_the_oldest_devices_beyond_its_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(module, "MEMO_MAX", 5)
    table = AzureLikeTable()
    cache = DeviceCache(table)
    for i in range(8):
        cache.put(Device(hostname=f"PC-{i}"), f"m{i}", "hostname", 1000.0, 3600)
    table.down = RuntimeError("no table reads expected for remembered devices")
    assert [cache.get(Device(hostname=f"PC-{i}"), 1001.0).machine_id for i in range(3, 8)] == [  # type: ignore[union-attr]
        f"m{i}" for i in range(3, 8)
    ]
    with pytest.raises(RuntimeError):  # forgotten: read from the table again
        cache.get(Device(hostname="PC-0"), 1001.0)
