"""The locks that let workers of one instance share the lookup of a new device are bounded: a
connector that has seen a hundred thousand devices keeps the same few locks as on its first day."""

from __future__ import annotations

from shared.delivery.forward import DEVICE_LOCK_STRIPES
from shared.outcome import Kind
from tests.unit.test_delivery_outcomes import QUEUE, message, ready


def test_many_devices_share_a_bounded_set_of_locks() -> None:
    w = ready()
    hosts = [f"PC-{i:04d}" for i in range(3 * DEVICE_LOCK_STRIPES)]
    outcomes = {w.delivery.handle(message(w, i, host=h), queue=QUEUE).kind for i, h in enumerate(hosts)}
    assert outcomes == {Kind.NO_DEVICE} and w.mde.calls.count("list_machines") == len(hosts)
    assert len(w.delivery._device_locks) <= DEVICE_LOCK_STRIPES


def test_one_device_always_takes_the_same_lock() -> None:
    first, again = ready().delivery, ready().delivery
    for key in ("alice-laptop", "bob-ws-0042", "aad:0f0f"):
        assert first._device_locks.index(first._device_lock(key)) == again._device_locks.index(again._device_lock(key))
