"""Putting a message back on a queue for later: the seam between delivery and the clock.

In Azure a delay is the message's visibility timeout (at most 7 days). The benchmark and the
simulated-time tests substitute a sender that holds delayed messages until *their* clock reaches
the due time and then writes them to the same real queue, which is exactly what a visibility
timeout does, without waiting real minutes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Protocol

MAX_VISIBILITY = 7 * 24 * 3600 - 1


class QueueSender(Protocol):
    def send(self, queue: str, text: str, delay: float) -> None: ...


def visibility_for(delay: float) -> int | None:
    """A delay in seconds as a visibility timeout (whole seconds, capped at the queue's 7 days)."""
    return min(MAX_VISIBILITY, math.ceil(delay)) if delay > 0 else None


class StorageQueueSender:
    """Sends through ``enqueue(queue, text, visibility_timeout=...)`` (``shared.wiring.enqueue``)."""

    def __init__(self, enqueue: Callable[..., object]) -> None:
        self._enqueue = enqueue

    def send(self, queue: str, text: str, delay: float) -> None:
        self._enqueue(queue, text, visibility_timeout=visibility_for(delay))
