"""Putting a message back on a queue for later: the seam between delivery and the clock.

In Azure a delay is the message's visibility timeout (at most 7 days). The benchmark and the
simulated-time tests substitute a sender that holds delayed messages until *their* clock reaches
the due time and then writes them to the same real queue, which is exactly what a visibility
timeout does, without waiting real minutes.
"""

from __future__ import annotations

import math
from typing import Protocol

from shared.config import Settings

MAX_VISIBILITY = 7 * 24 * 3600 - 1


class QueueSender(Protocol):
    def send(self, queue: str, text: str, delay: float) -> None: ...


class AzureQueueSender:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    def send(self, queue: str, text: str, delay: float) -> None:
        from shared.storage import enqueue

        visibility = min(MAX_VISIBILITY, math.ceil(delay)) if delay > 0 else None
        enqueue(self._settings, queue, text, visibility_timeout=visibility)
