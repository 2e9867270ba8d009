"""Simulated time over the real stack, for the delivery tests and the storm benchmark.

Everything is real — the webhook over HTTP, Azurite queues and tables, the dev host's polling,
the Defender emulator's rules and quotas — except time: one :class:`ManualClock` drives the
connector and the emulator, and a message re-enqueued with a delay is held by
:class:`VirtualDelaySender` until that clock reaches its due time, then written to the real
queue (what a visibility timeout does, minus the waiting). The loop advances the clock to the
next thing that can happen — an arrival or a due message — whenever the queues are empty.
"""

from __future__ import annotations

import heapq
import itertools
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import requests

from shared import wiring
from shared.clock import ManualClock
from shared.delivery.sender import QueueSender
from shared.webhook import sign


class VirtualDelaySender:
    """Delayed sends wait in memory for the simulated clock; immediate ones go straight out."""

    def __init__(self, real: QueueSender, clock: ManualClock) -> None:
        self._real = real
        self._clock = clock
        self._heap: list[tuple[float, int, str, str]] = []
        self._seq = itertools.count()
        self.sent_delayed = 0

    def send(self, queue: str, text: str, delay: float) -> None:
        if delay <= 0:
            self._real.send(queue, text, 0)
            return
        due = self._clock.now().timestamp() + delay
        heapq.heappush(self._heap, (due, next(self._seq), queue, text))
        self.sent_delayed += 1

    @property
    def pending(self) -> int:
        return len(self._heap)

    def next_due(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def release_due(self) -> int:
        now = self._clock.now().timestamp() + 0.001  # datetime keeps microseconds; floats do not round-trip
        released = 0
        while self._heap and self._heap[0][0] <= now:
            _, _, queue, text = heapq.heappop(self._heap)
            self._real.send(queue, text, 0)
            released += 1
        return released


@dataclass
class Arrival:
    at: float  # seconds after the simulation starts
    events: list[dict[str, Any]]


@dataclass
class Simulation:
    host: Any  # tools.devhost.host.DevHost, serving HTTP
    clock: ManualClock
    sender: VirtualDelaySender
    secret: str
    on_step: Callable[[datetime], None] | None = None
    posted: int = 0
    steps: int = 0
    messages: int = 0
    arrived_at: dict[str, datetime] = field(default_factory=dict)

    def post(self, events: list[dict[str, Any]]) -> None:
        body = json.dumps(events if len(events) > 1 else events[0]).encode()
        ts = int(self.clock.now().timestamp())  # Noxys signs at the time the app lives in
        msg_id = f"delivery_{self.posted}"
        resp = requests.post(
            f"http://127.0.0.1:{self.host.http_port}/api/noxys/events",
            data=body,
            timeout=60,
            headers={
                "Content-Type": "application/json",
                "webhook-id": msg_id,
                "webhook-timestamp": str(ts),
                "webhook-signature": sign(self.secret, msg_id, ts, body),
            },
        )
        if resp.status_code != 202:
            raise RuntimeError(f"webhook answered {resp.status_code}: {resp.text[:300]}")
        now = self.clock.now()
        for e in events:
            self.arrived_at.setdefault(str(e["id"]), now)
        self.posted += 1

    def run(self, arrivals: Iterable[Arrival], *, max_steps: int = 20_000, horizon: timedelta | None = None) -> None:
        """Feed the arrivals at their times and run until nothing is left to do."""
        start = self.clock.now()
        pending = sorted(arrivals, key=lambda a: a.at)
        i = 0
        for _ in range(max_steps):
            now = self.clock.now()
            while i < len(pending) and start + timedelta(seconds=pending[i].at) <= now:
                self.post(pending[i].events)
                i += 1
            self.sender.release_due()
            self.messages += self.host.drain()
            self.steps += 1
            if self.on_step:
                self.on_step(self.clock.now())
            candidates = []
            if i < len(pending):
                candidates.append((start + timedelta(seconds=pending[i].at)).timestamp())
            if self.sender.next_due() is not None:
                candidates.append(float(self.sender.next_due() or 0))
            if not candidates or (horizon and min(candidates) > (start + horizon).timestamp()):
                wiring.flush()  # settled: what the app keeps in memory for a moment is written too
                return
            target = max(min(candidates) + 0.001, now.timestamp())
            self.clock.set(datetime.fromtimestamp(target, now.tzinfo))
        raise RuntimeError(f"simulation did not settle within {max_steps} steps")
