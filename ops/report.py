"""The compliance report (pure): what the connector did over a period, per AI platform, per user
and per device, with Defender's own view of each alert it raised.

Built from ledger entries (one per event, with its outcome and the facts of ``shared.facts``)
and from the alerts read back from Defender; nothing here does I/O. Rendered three ways: JSON
for machines, Markdown for tickets and wikis, and one self-contained HTML file an auditor can
open offline — inline CSS and SVG, a Content-Security-Policy that forbids loading anything, every
value escaped. PII appears only as type codes; the report names users and devices because that
is what it is for, and it is written only where the operator asks.
"""

from __future__ import annotations

import html
import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from ops.report_officer import glossary_html, pii_in_words, response_summary_html, timelines_html
from shared.delivery.ledger import Entry, LedgerState
from shared.events import INVISIBLE

OUTCOMES = ("alert_created", "coalesced", "no_device", "no_anchor", "dead_lettered", "pending")
DEFENDER_FIELDS = ("status", "classification", "determination", "incidentId", "severity")


@dataclass
class Line:
    """One platform, user or device over the period."""

    name: str
    events: int = 0
    outcomes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    alert_ids: list[str] = field(default_factory=list)
    pii_types: dict[str, int] = field(default_factory=dict)
    actions: int = 0  # response actions taken (not dry runs, not skipped)

    @property
    def forwarded(self) -> int:
        return self.outcomes["alert_created"] + self.outcomes["coalesced"]


@dataclass
class AlertLine:
    alert_id: str
    created_at: str
    platform: str
    user: str
    device: str
    events: int  # its own event plus those coalesced into it
    defender: dict[str, Any]  # status, classification, determination, incidentId — or an "error"


@dataclass
class ActionLine:
    """One response action (or dry run, or skip) of an event in the period."""

    at: str
    event_id: str
    device: str
    user: str
    rule: str
    action: str
    state: str
    detail: str
    dry_run: bool


TAKEN = frozenset({"sent", "done", "Succeeded", "Failed", "TimeOut", "Cancelled"})


@dataclass
class Report:
    since: str
    until: str
    generated_at: str
    totals: Line
    platforms: list[Line]
    users: list[Line]
    devices: list[Line]
    alerts: list[AlertLine]
    response_actions: str
    actions: list[ActionLine] = field(default_factory=list)
    timelines: dict[str, list[dict[str, str]]] = field(default_factory=dict)  # report --timeline (shared.timeline)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _outcome(e: Entry) -> str:
    return e.state.value if e.final else "pending"


def _add(line: Line, e: Entry) -> None:
    line.events += 1
    line.outcomes[_outcome(e)] += 1
    if e.state == LedgerState.ALERT_CREATED and e.alert_id and e.alert_id not in line.alert_ids:
        line.alert_ids.append(e.alert_id)
    for code in filter(None, (e.facts.pii_types or "").split(",")):
        line.pii_types[code] = line.pii_types.get(code, 0) + 1


def _lines(entries: list[Entry], key: Any, taken: Counter[str]) -> list[Line]:
    by: dict[str, Line] = {}
    for e in entries:
        name = key(e) or "(not reported)"
        line = by.setdefault(name, Line(name))
        _add(line, e)
        line.actions += taken.get(e.event_id, 0)
    return sorted(by.values(), key=lambda line: (-line.events, line.name))


def _actions(entries: list[Entry], rows: Iterable[Mapping[str, Any]]) -> list[ActionLine]:
    by_id = {e.event_id: e for e in entries}
    out = []
    for row in rows:
        e = by_id.get(str(row.get("event_id")))
        when = datetime.fromtimestamp(float(row.get("at") or 0), UTC).strftime("%Y-%m-%d %H:%MZ")
        device = (e.facts.device_name if e else None) or str(row.get("machine_id") or "")
        out.append(
            ActionLine(
                when,
                str(row.get("event_id")),
                device,
                (e.facts.user if e else None) or "",
                str(row.get("rule") or ""),
                str(row.get("action") or ""),
                str(row.get("state") or ""),
                str(row.get("detail") or ""),
                bool(row.get("dry_run")),
            )
        )
    return sorted(out, key=lambda a: (a.at, a.event_id, a.action))


def _summary(actions: list[ActionLine], configured: bool) -> str:
    if not actions and not configured:
        return "automated response is not configured: no action was taken on any device"
    taken = sum(1 for a in actions if a.state in TAKEN and not a.dry_run)
    dry = sum(1 for a in actions if a.dry_run)
    skipped = sum(1 for a in actions if a.state == "skipped")
    return f"{taken} action(s) taken on devices, {dry} recorded as dry runs, {skipped} skipped by a guardrail"


def _alert_of(e: Entry, leaders: Mapping[str, str]) -> str | None:
    """The alert an event went into: its own, or (coalesced before that alert existed) its leader's."""
    into = e.coalesced_into or ""
    return e.alert_id or (leaders.get(into.removeprefix("event ")) if into.startswith("event ") else None)


def _alerts(entries: list[Entry], defender: Mapping[str, dict[str, Any]]) -> list[AlertLine]:
    leaders = {e.event_id: e.alert_id for e in entries if e.state == LedgerState.ALERT_CREATED and e.alert_id}
    joined = Counter(_alert_of(e, leaders) for e in entries if e.state == LedgerState.COALESCED)
    out = []
    for e in entries:
        if e.state != LedgerState.ALERT_CREATED or not e.alert_id:
            continue
        seen = defender.get(e.alert_id, {"error": "not read back"})
        out.append(
            AlertLine(
                e.alert_id,
                datetime.fromtimestamp(e.alert_at or e.updated_at, UTC).strftime("%Y-%m-%d %H:%MZ"),
                e.facts.platform or "",
                e.facts.user or "",
                e.facts.device_name or "",
                1 + joined.get(e.alert_id, 0),
                {k: seen.get(k) for k in ("error", *DEFENDER_FIELDS) if k in seen},
            )
        )
    return sorted(out, key=lambda a: a.created_at)


def build(
    entries: Iterable[Entry],
    defender: Mapping[str, dict[str, Any]],
    *,
    since: datetime,
    until: datetime,
    now: datetime,
    actions: Iterable[Mapping[str, Any]] = (),
    response_configured: bool = False,
) -> Report:
    """The report over ``entries``; ``defender`` is each alert as Defender returned it, by id;
    ``actions`` the response rows (``shared.response.store``) of the period."""
    chosen = list(entries)
    acted = _actions(chosen, actions)
    taken = Counter(a.event_id for a in acted if a.state in TAKEN and not a.dry_run)
    totals = Line("all")
    for e in chosen:
        _add(totals, e)
    totals.actions = sum(taken.values())
    return Report(
        since=since.astimezone(UTC).isoformat(),
        until=until.astimezone(UTC).isoformat(),
        generated_at=now.astimezone(UTC).isoformat(),
        totals=totals,
        platforms=_lines(chosen, lambda e: e.facts.platform, taken),
        users=_lines(chosen, lambda e: e.facts.user, taken),
        devices=_lines(chosen, lambda e: e.facts.device_name, taken),
        alerts=_alerts(chosen, defender),
        response_actions=_summary(acted, response_configured),
        actions=acted,
    )


# ---------------------------------------------------------------------- renderers
def render_json(report: Report) -> str:
    return json.dumps(report.as_dict(), indent=2, ensure_ascii=False)


HEADINGS = (
    "events", "forwarded", "alerts", "coalesced", "no device", "no anchor", "failed", "pending", "actions", "PII types",
)  # fmt: skip
ACTION_HEADINGS = ("at", "event", "device", "user", "rule", "action", "state", "detail")


def _cells(line: Line) -> list[str]:
    o = line.outcomes
    pii = pii_in_words(line.pii_types)  # types in words ("Email address (4)"), never a value
    return [
        str(line.events),
        str(line.forwarded),
        str(o["alert_created"]),
        str(o["coalesced"]),
        str(o["no_device"]),
        str(o["no_anchor"]),
        str(o["dead_lettered"]),
        str(o["pending"]),
        str(line.actions),
        pii,
    ]


def _action_cells(a: ActionLine) -> list[str]:
    state = f"{a.state} (dry run)" if a.dry_run and a.state != "dry_run" else a.state
    return [a.at, a.event_id, a.device, a.user, a.rule, a.action, state, a.detail]


def _defender_cells(a: AlertLine) -> list[str]:
    d = a.defender
    if "error" in d:
        return [str(d["error"]), "", "", ""]
    return [str(d.get(k) if d.get(k) is not None else "—") for k in ("status", "classification", "determination")] + [
        str(d.get("incidentId") or "—")
    ]


ALERT_HEADINGS: tuple[str, ...] = ("alert", "created", "platform", "user", "device", "events")
ALERT_HEADINGS += ("status", "classification", "determination", "incident")


def _alert_cells(a: AlertLine) -> list[str]:
    return [a.alert_id, a.created_at, a.platform, a.user, a.device, str(a.events), *_defender_cells(a)]


MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()<>!|~&])")


def _shown(text: object) -> str:
    """A name as a reader may see it: invisible characters (bidi overrides, zero-width spaces,
    written before the webhook refused them in identifiers) are removed, line breaks become spaces."""
    return INVISIBLE.sub("", " ".join(str(text).splitlines()))


def _md(text: object) -> str:
    """A Markdown cell that stays text: every character Markdown or HTML could act on is
    backslash-escaped (CommonMark), so ``<img onerror=…>`` or ``[x](javascript:…)`` in a user,
    device or platform name renders as those characters, never as markup or a link."""
    return MARKDOWN_SPECIAL.sub(r"\\\1", _shown(text))


def _md_table(first: str, heads: Iterable[str], rows: Iterable[list[str]]) -> list[str]:
    heads = [first, *heads]
    out = ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    out += ["| " + " | ".join(_md(c) for c in row) + " |" for row in rows]
    return out


def render_markdown(r: Report) -> str:
    t = r.totals
    out = [
        f"# Noxys → Defender compliance report, {r.since[:19]}Z – {r.until[:19]}Z",
        "",
        f"Generated {r.generated_at[:19]}Z. {t.events} event(s); {t.forwarded} forwarded to Defender "
        f"({t.outcomes['alert_created']} alert(s), {t.outcomes['coalesced']} coalesced into them); "
        f"{t.outcomes['no_device']} without a device, {t.outcomes['no_anchor']} without an anchor, "
        f"{t.outcomes['dead_lettered']} failed, {t.outcomes['pending']} still in delivery.",
        "",
        f"Response actions: {r.response_actions}.",
        "PII is listed by type only; the connector never receives or keeps a PII value.",
    ]
    for title, lines in (("AI platform", r.platforms), ("User", r.users), ("Device", r.devices)):
        out += [
            "",
            f"## By {title if title.startswith('AI') else title.lower()}",
            "",
            *_md_table(title, HEADINGS, ([x.name, *_cells(x)] for x in lines)),
        ]
    out += ["", "## Alerts and Defender's view of them", ""]
    out += _md_table(ALERT_HEADINGS[0], ALERT_HEADINGS[1:], (_alert_cells(a) for a in r.alerts))
    if r.actions:
        out += ["", "## Response actions", ""]
        out += _md_table(ACTION_HEADINGS[0], ACTION_HEADINGS[1:], (_action_cells(a) for a in r.actions))
    return "\n".join(out) + "\n"


CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem;color:#1b1f24}
h1{font-size:1.4rem}h2{font-size:1.1rem;margin-top:2rem}
table{border-collapse:collapse;margin:.5rem 0;min-width:40%}
th,td{border:1px solid #d0d7de;padding:.3rem .6rem;text-align:left;vertical-align:top}
th{background:#f3f5f7}td.n{text-align:right;font-variant-numeric:tabular-nums}
.summary{display:flex;gap:1rem;flex-wrap:wrap}.card{border:1px solid #d0d7de;border-radius:6px;padding:.6rem 1rem}
.card b{display:block;font-size:1.4rem}.note{color:#57606a}
svg{vertical-align:top;margin-right:1rem}svg text{font:12px system-ui,sans-serif}
.summary{margin-bottom:1rem}
"""


def _e(text: object) -> str:
    return html.escape(_shown(text), quote=True)


def _html_table(first: str, heads: Iterable[str], rows: Iterable[list[str]], table_id: str) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in (first, *heads))
    body = "".join(
        "<tr>" + "".join(f"<td{' class=n' if c.isdigit() else ''}>{_e(c)}</td>" for c in row) + "</tr>" for row in rows
    )
    return f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _bars(title: str, values: list[tuple[str, int]]) -> str:
    """A horizontal bar chart as inline SVG (no script, no external asset)."""
    values = values[:10]
    top = max((v for _, v in values), default=0) or 1
    height = 24 * len(values) + 30
    bars = "".join(
        f'<text x="0" y="{40 + 24 * i}">{_e(name[:28])}</text>'
        f'<rect x="200" y="{27 + 24 * i}" width="{max(1, round(300 * v / top))}" height="16" fill="#0969da"/>'
        f'<text x="{208 + round(300 * v / top)}" y="{40 + 24 * i}">{v}</text>'
        for i, (name, v) in enumerate(values)
    )
    label = f"{title}: " + (", ".join(f"{name} {v}" for name, v in values) or "none")  # the chart, in words
    return (
        f'<svg role="img" aria-label="{_e(label)}" width="560" height="{height}" viewBox="0 0 560 {height}">'
        f'<text x="0" y="14" font-weight="bold">{_e(title)}</text>{bars}</svg>'
    )


def render_html(r: Report) -> str:
    t = r.totals
    cards = "".join(
        f'<div class="card"><b>{n}</b>{_e(label)}</div>'
        for label, n in (
            ("events", t.events),
            ("alerts raised", t.outcomes["alert_created"]),
            ("coalesced", t.outcomes["coalesced"]),
            ("no device", t.outcomes["no_device"]),
            ("no anchor", t.outcomes["no_anchor"]),
            ("failed", t.outcomes["dead_lettered"]),
        )
    )
    sections = "".join(
        f"<h2>By {_e(title if title.startswith('AI') else title.lower())}</h2>"
        + _html_table(title, HEADINGS, ([x.name, *_cells(x)] for x in lines), f"by-{title.split()[-1].lower()}")
        for title, lines in (("AI platform", r.platforms), ("User", r.users), ("Device", r.devices))
    )
    charts = _bars("Events per AI platform", [(p.name, p.events) for p in r.platforms]) + _bars(
        "Outcomes", [(k.replace("_", " "), v) for k, v in t.outcomes.items() if v]
    )
    alerts = _html_table(ALERT_HEADINGS[0], ALERT_HEADINGS[1:], (_alert_cells(a) for a in r.alerts), "alerts")
    if r.actions:
        alerts += response_summary_html(r.actions)  # by rule → action → final state; dry runs and skips collapsed
    title = f"Noxys → Defender compliance report, {r.since[:19]}Z – {r.until[:19]}Z"
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">"
        f"<title>{_e(title)}</title><style>{CSS}</style></head><body><main>"
        f"<h1>{_e(title)}</h1><p class=note>Generated {_e(r.generated_at[:19])}Z. Response actions: "
        f"{_e(r.response_actions)}. PII is listed by type only; no PII value is received or kept.</p>"
        f'<div class="summary">{cards}</div><div>{charts}</div>{sections}'
        f"<h2>Alerts and Defender's view of them</h2>{alerts}{timelines_html(r.timelines)}{glossary_html()}"
        "</main></body></html>\n"
    )


RENDERERS = {"json": render_json, "md": render_markdown, "html": render_html}
