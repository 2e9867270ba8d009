"""What the current outbound call is for: set by the forwarder, read by pacing and the audit.

A contextvar rather than parameters, so the one-method-per-API client stays free of delivery
concepts, and every call made while handling an event is attributed to it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass


@dataclass(frozen=True)
class CallContext:
    event_id: str | None = None
    attempt: int = 0
    priority: bool = False
    tickets: frozenset[str] = frozenset()  # budgets whose reserved slot has come


_NONE = CallContext()
_current: ContextVar[CallContext | None] = ContextVar("noxys_call_context", default=None)


def current() -> CallContext:
    return _current.get() or _NONE


@contextmanager
def calls_for(ctx: CallContext) -> Iterator[None]:
    token = _current.set(ctx)
    try:
        yield
    finally:
        _current.reset(token)
