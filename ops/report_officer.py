"""The parts of the compliance report's HTML that make it readable by a data-protection officer,
not only by the SOC (pure): the response section summarised by rule → action → final state (real
actions first; dry runs and guardrail skips as counts, their details collapsed), a glossary of the
outcomes, what "(not reported)" means, and PII types in words."""

from __future__ import annotations

import html
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Protocol

from shared import pii

GLOSSARY = (
    ("forwarded", "the event was sent on to Defender: it raised an alert or joined one."),
    ("alert raised", "Defender for Endpoint received a new alert for the event, on the user's own device."),
    ("coalesced", "the event was added to an alert raised a few minutes earlier for the same device and "
                  "policy, so a burst of events is one alert, not many."),
    ("no device", "the device Noxys named could not be found in Defender, so no alert could be placed on it."),
    ("no anchor", "the device was found, but not its connection to the AI service at that time, which an "
                  "alert must point to."),
    ("failed", "the event could not be delivered after every retry; it is kept for an operator to replay."),
    ("pending", "the event is still being delivered."),
    ("dry run", "a response rule that only records what it would have done; nothing was sent."),
    ("skipped", "a guardrail stopped the action (a cooldown, an hourly cap, a protected device or person)."),
)  # fmt: skip
NOT_REPORTED = (
    '"(not reported)" stands for a user, device or platform the event did not name (Noxys left the field '
    "empty), not for a hidden value."
)


class Action(Protocol):
    @property
    def rule(self) -> str: ...
    @property
    def action(self) -> str: ...
    @property
    def state(self) -> str: ...
    @property
    def dry_run(self) -> bool: ...


def pii_in_words(counts: Mapping[str, int]) -> str:
    """``{"EMAIL": 4}`` → "Email address (4)"; never a value."""
    return ", ".join(f"{pii.label(code)} ({n})" for code, n in sorted(counts.items())) or "—"


def glossary_html() -> str:
    items = "".join(f"<dt>{html.escape(term)}</dt><dd>{html.escape(meaning)}</dd>" for term, meaning in GLOSSARY)
    return f"<h2>What the outcomes mean</h2><dl>{items}</dl><p>{html.escape(NOT_REPORTED)}</p>"


def _table(caption: str, rows: Counter[tuple[str, str, str]], table_id: str = "") -> str:
    body = "".join(
        f"<tr><td>{html.escape(r)}</td><td>{html.escape(a)}</td><td>{html.escape(s)}</td><td>{n}</td></tr>"
        for (r, a, s), n in sorted(rows.items())
    )
    head = "".join(f"<th scope='col'>{h}</th>" for h in ("rule", "action", "final state", "count"))
    ident = f' id="{table_id}"' if table_id else ""
    cap = f"<caption>{html.escape(caption)}</caption>"
    return f"<table{ident}>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def response_summary_html(actions: Iterable[Action]) -> str:
    """By rule → action → final state: what was really done first, then dry runs and skips as
    counts (each list collapsed in ``<details>``)."""
    real: Counter[tuple[str, str, str]] = Counter()
    dry: Counter[tuple[str, str, str]] = Counter()
    skipped: Counter[tuple[str, str, str]] = Counter()
    for a in actions:
        key = (a.rule, a.action, a.state)
        (dry if a.dry_run or a.state == "dry_run" else skipped if a.state in ("skipped", "excluded") else real)[
            key
        ] += 1
    out = "<h2>Response actions</h2>"
    out += (
        _table("Actions taken, by rule, action and final state", real, "actions")
        if real
        else "<p>No action was taken.</p>"
    )
    for label, rows in (("dry run(s): recorded, nothing sent", dry), ("action(s) skipped by a guardrail", skipped)):
        if rows:
            out += (f"<details><summary>{sum(rows.values())} {html.escape(label)}</summary>"
                    f"{_table(label.capitalize(), rows)}</details>")  # fmt: skip
    return out


def timelines_html(timelines: Mapping[str, list[dict[str, str]]]) -> str:
    """A section per alert: its device's timeline (``report --timeline``), in time order."""
    if not timelines:
        return ""
    out = "<h2>Timelines of the alerts</h2>"
    for alert_id, items in timelines.items():
        rows = (
            "".join(
                f"<tr><td>{html.escape(i['time'])}</td><td>{html.escape(i['source'])}</td><td>{html.escape(i['kind'])}</td>"
                f"<td>{html.escape(i['summary'])}</td></tr>"
                for i in items
            )
            or "<tr><td colspan='4'>nothing on the device in the window</td></tr>"
        )
        head = "".join(f"<th scope='col'>{h}</th>" for h in ("time (UTC)", "source", "kind", "what happened"))
        caption = "<caption>The device, 30 minutes either side of the alert</caption>"
        table = f"<table>{caption}<thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"
        out += f"<section><h3>Alert {html.escape(alert_id)}</h3>{table}</section>"
    return out
