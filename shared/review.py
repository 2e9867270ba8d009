"""The weekly review (pure): how analysts classified the alerts the connector raised, per Noxys
policy and per response rule, and what to change — "Review incidents weekly — adjust rules if too
many false positives", with the numbers behind every suggestion.

Inputs are what the command read: the ledger entries of the period (which event raised which
alert, under which policy, for whom, on which device), the alerts as Defender has them now (their
``classification``, ``alertCreationTime`` and ``lastUpdateTime``) and the response action rows
(which rule acted for which alert). Nothing here does I/O.

* **classified** = TruePositive + FalsePositive + InformationalExpectedActivity; an alert with no
  classification (or one Defender no longer has) is *unclassified*;
* **false-positive rate** = false positives ÷ classified (None when nothing is classified: a rate of
  0 % out of 0 would read as good news);
* **time to classification** = ``lastUpdateTime`` minus ``alertCreationTime`` of a classified alert
  (Defender keeps no separate classification time; an update after the verdict makes it longer,
  never shorter — said so in the output).
"""

from __future__ import annotations

import html
import json
import statistics
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from shared.delivery.ledger import Entry

CLASSIFIED = ("TruePositive", "FalsePositive", "InformationalExpectedActivity")
MIN_CLASSIFIED_FOR_A_SUGGESTION = 5
HIGH_FP_RATE = 0.5
TOP = 5


@dataclass
class Line:
    """One policy or one response rule over the period."""

    id: str
    name: str
    alerts: int = 0
    classified: int = 0
    true_positives: int = 0
    false_positives: int = 0
    informational: int = 0
    unclassified: int = 0
    false_positive_rate: float | None = None
    median_hours_to_classification: float | None = None
    devices: list[list[Any]] = field(default_factory=list)  # [[name, alerts], …] most involved first
    users: list[list[Any]] = field(default_factory=list)


@dataclass
class Review:
    since: str
    until: str
    policies: list[Line]
    rules: list[Line]
    suggestions: list[str]
    alerts: int
    classified: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _time(text: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None


def _line(key: str, name: str, alert_ids: set[str], alerts: Mapping[str, Mapping[str, Any]],
          who: Mapping[str, tuple[str, str]]) -> Line:  # fmt: skip
    line = Line(key, name, alerts=len(alert_ids))
    hours: list[float] = []
    devices: Counter[str] = Counter()
    users: Counter[str] = Counter()
    for alert_id in alert_ids:
        a = alerts.get(alert_id) or {}
        verdict = str(a.get("classification") or "")
        device, user = who.get(alert_id, ("", ""))
        devices[device or "(unknown device)"] += 1
        users[user or "(unknown user)"] += 1
        if verdict not in CLASSIFIED:
            line.unclassified += 1
            continue
        line.classified += 1
        line.true_positives += verdict == "TruePositive"
        line.false_positives += verdict == "FalsePositive"
        line.informational += verdict == "InformationalExpectedActivity"
        created, updated = _time(a.get("alertCreationTime")), _time(a.get("lastUpdateTime"))
        if created and updated and updated >= created:
            hours.append((updated - created).total_seconds() / 3600)
    if line.classified:
        line.false_positive_rate = round(line.false_positives / line.classified, 4)
    if hours:
        line.median_hours_to_classification = round(statistics.median(hours), 2)
    line.devices = [[n, c] for n, c in devices.most_common(TOP)]
    line.users = [[n, c] for n, c in users.most_common(TOP)]
    return line


def build(
    entries: Iterable[Entry],
    alerts: Mapping[str, Mapping[str, Any]],
    actions: Iterable[Mapping[str, Any]],
    *,
    since: datetime,
    until: datetime,
) -> Review:
    by_policy: dict[str, set[str]] = {}
    names: dict[str, str] = {}
    who: dict[str, tuple[str, str]] = {}
    for e in entries:
        if not e.alert_id or e.via == "graph":
            continue
        key = e.facts.policy_id or e.facts.policy_name or "(no policy)"
        names.setdefault(key, e.facts.policy_name or e.facts.policy_id or "(events without a policy)")
        by_policy.setdefault(key, set()).add(e.alert_id)
        who.setdefault(e.alert_id, (e.facts.device_name or "", e.facts.user or ""))
    by_rule: dict[str, set[str]] = {}
    for row in actions:
        if row.get("alert_id") and row.get("rule"):
            by_rule.setdefault(str(row["rule"]), set()).add(str(row["alert_id"]))
    policies = [_line(k, names[k], ids, alerts, who) for k, ids in by_policy.items()]
    rules = [_line(k, k, ids, alerts, who) for k, ids in by_rule.items()]
    policies.sort(key=lambda x: (-x.alerts, x.name))
    rules.sort(key=lambda x: (-x.alerts, x.name))
    ours = set().union(*by_policy.values()) if by_policy else set()
    classified = sum(1 for i in ours if str((alerts.get(i) or {}).get("classification") or "") in CLASSIFIED)
    return Review(
        since.strftime("%Y-%m-%dT%H:%M:%SZ"), until.strftime("%Y-%m-%dT%H:%M:%SZ"), policies, rules,
        suggestions(policies, rules, len(ours), classified), len(ours), classified,
    )  # fmt: skip


def _pct(rate: float | None) -> str:
    return f"{round((rate or 0) * 100)} %"


def suggestions(policies: list[Line], rules: list[Line], alerts: int, classified: int) -> list[str]:
    """Plain-language advice, each with the numbers that support it."""
    out = []
    for p in policies:
        if p.classified >= MIN_CLASSIFIED_FOR_A_SUGGESTION and (p.false_positive_rate or 0) >= HIGH_FP_RATE:
            out.append(
                f"policy '{p.name}': {p.false_positives} of {p.classified} classified alerts were false positives "
                f"({_pct(p.false_positive_rate)}) — consider tuning the policy in Noxys, acting only on `block` "
                "actions (`when.policy_actions`), or `min_combined_risk` 0.8 in the response rules"
            )
    for r in rules:
        if r.classified >= MIN_CLASSIFIED_FOR_A_SUGGESTION and (r.false_positive_rate or 0) >= HIGH_FP_RATE:
            out.append(
                f"rule '{r.name}': it acted on {r.alerts} alert(s); {r.false_positives} of {r.classified} classified "
                f"were false positives ({_pct(r.false_positive_rate)}) — consider a higher `repeat.count`, a "
                "`min_severity`, or `dry_run: true` until the rate falls"
            )
    if alerts and classified * 2 < alerts:
        out.append(
            f"{alerts - classified} of {alerts} alerts are not classified yet — classify them in Defender "
            "(TruePositive, FalsePositive, InformationalExpectedActivity) so this review can learn from them"
        )
    if not out and classified:
        out.append(
            f"no change suggested: {classified} classified alert(s), "
            f"no policy or rule at ≥ {_pct(HIGH_FP_RATE)} false positives"
        )
    return out


# ---------------------------------------------------------------------- renderers
COLUMNS = ("alerts", "classified", "true_positives", "false_positives", "informational", "unclassified")
NOTE = (
    "False-positive rate = false positives ÷ classified alerts (TruePositive, FalsePositive and "
    "InformationalExpectedActivity count as classified). Time to classification is measured to the "
    "alert's last update, so it is an upper bound."
)


def _hours(v: float | None) -> str:
    return "—" if v is None else f"{v:g} h"


def _rate(v: float | None) -> str:
    return "— (none classified)" if v is None else _pct(v)


def render_json(r: Review) -> str:
    return json.dumps(r.as_dict(), indent=2, ensure_ascii=False) + "\n"


def render_md(r: Review) -> str:
    out = [f"# Weekly review: {r.since} – {r.until}", "", f"{r.alerts} alert(s), {r.classified} classified.", ""]
    out += ["## Suggestions", "", *(f"- {s}" for s in r.suggestions or ["(none)"]), ""]
    for title, lines in (("Per Noxys policy", r.policies), ("Per response rule", r.rules)):
        out += [f"## {title}", "", "| Name | Alerts | Classified | FP | FP rate | Median to classification |",
                "|---|---|---|---|---|---|"]  # fmt: skip
        out += [
            f"| {x.name.replace('|', '/')} | {x.alerts} | {x.classified} | {x.false_positives} | "
            f"{_rate(x.false_positive_rate)} | {_hours(x.median_hours_to_classification)} |"
            for x in lines
        ] or ["| (none) | | | | | |"]
        out.append("")
    return "\n".join([*out, NOTE, ""])


def render_html(r: Review) -> str:
    e = html.escape

    def table(caption: str, lines: list[Line]) -> str:
        head = "".join(f"<th scope='col'>{h}</th>" for h in ("Name", "Alerts", "Classified", "False positives",
                                                             "False-positive rate", "Median to classification",
                                                             "Devices most involved"))  # fmt: skip
        rows = (
            "".join(
                f"<tr><th scope='row'>{e(x.name)}</th><td>{x.alerts}</td><td>{x.classified}</td>"
                f"<td>{x.false_positives}</td><td>{e(_rate(x.false_positive_rate))}</td>"
                f"<td>{e(_hours(x.median_hours_to_classification))}</td>"
                f"<td>{e(', '.join(f'{n} ({c})' for n, c in x.devices))}</td></tr>"
                for x in lines
            )
            or "<tr><td colspan='7'>(none)</td></tr>"
        )
        return f"<table><caption>{e(caption)}</caption><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"

    tips = "".join(f"<li>{e(s)}</li>" for s in r.suggestions) or "<li>(none)</li>"
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>Noxys weekly review</title></head>"
        f"<body><main><h1>Weekly review: {e(r.since)} – {e(r.until)}</h1>"
        f"<p>{r.alerts} alert(s), {r.classified} classified.</p><h2>Suggestions</h2><ul>{tips}</ul>"
        f"<h2>Per Noxys policy</h2>{table('Alerts and analyst classifications per Noxys policy', r.policies)}"
        f"<h2>Per response rule</h2>{table('Alerts and analyst classifications per response rule', r.rules)}"
        f"<p>{e(NOTE)}</p></main></body></html>\n"
    )


RENDERERS = {"json": render_json, "md": render_md, "html": render_html}
