"""A sample event as if it happened now: the one rule ``send-sample``, ``explain`` and ``rules
try`` share, so that what they judge is what the live connector does with the same file.

The samples are dated months ago. Advanced hunting keeps 30 days and the webhook's date window
90, so a sample sent as it is can never find its anchor (or is refused); moved to now, with the
gaps between its timestamps kept, it behaves like an event that just happened.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

STAMP_KEYS = ("created_at", "occurred_at")


def stamps(node: Any) -> list[datetime]:
    if isinstance(node, dict):
        return [
            found
            for k, v in node.items()
            for found in (
                [datetime.fromisoformat(v.replace("Z", "+00:00"))]
                if k in STAMP_KEYS and isinstance(v, str)
                else stamps(v)
            )
        ]
    if isinstance(node, list):
        return [found for v in node for found in stamps(v)]
    return []


def _shifted(node: Any, delta: timedelta) -> Any:
    if isinstance(node, dict):
        return {
            k: (
                (datetime.fromisoformat(v.replace("Z", "+00:00")) + delta).strftime("%Y-%m-%dT%H:%M:%SZ")
                if k in STAMP_KEYS and isinstance(v, str)
                else _shifted(v, delta)
            )
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_shifted(v, delta) for v in node]
    return node


def shift_to_now(doc: Any, now: datetime) -> Any:
    """Move every timestamp of a sample so that the newest one is ``now`` (keeps the gaps).

    Advanced hunting keeps 30 days of data, so a sample dated months ago can never find its
    anchor event; shifted, it behaves like an event that just happened.
    """
    found = stamps(doc)
    return _shifted(doc, now - max(found)) if found else doc


def as_if_now(doc: Any, now: datetime) -> Any:
    """``doc`` with its newest timestamp a few seconds before ``now`` (the clock of the connector
    that judges it: inside every window, never ahead of it)."""
    return shift_to_now(doc, now.astimezone(UTC).replace(microsecond=0) - timedelta(seconds=5))
