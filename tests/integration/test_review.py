"""``review`` over a seeded week, through the real webhook, Azurite and the emulator: alerts of two
Noxys policies and one response rule, classified by an analyst in Defender, give the right counts,
false-positive rates, median time to classification and suggestions, in JSON, Markdown and HTML."""

from __future__ import annotations

import json
import statistics
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from azure.functions.timer import TimerRequest

from ops.cli import main
from shared import wiring
from shared.functions.health import health_check
from tests.integration.test_hunting import hunting
from tests.support import SAMPLE_DAY, Env, violation
from tools.emulator.server import EmulatorServer
from tools.simulation import Arrival, Simulation

pytestmark = pytest.mark.integration
__all__ = ["hunting"]  # the fixture that configures the hunting table
hourly_timer = health_check.build().get_user_function()
HOURS = 8  # one event every 8 h: each raises its own alert (nothing to coalesce with)


def _week() -> list[Arrival]:
    """21 events over a week: 14 of policy 'Block PII on ChatGPT', 7 of 'Coach on DeepSeek'."""
    out = []
    for i in range(21):
        at = SAMPLE_DAY + timedelta(hours=HOURS * i)
        doc = violation(100 + i, host="ALICE-LAPTOP" if i % 3 else "DAVE-MBP", at=at, policy="x")
        doc["data"]["policy"] = (
            {"id": "pol_coach", "name": "Coach on DeepSeek", "action": "coach"}
            if i % 3 == 0
            else {"id": "pol_pii", "name": "Block PII on ChatGPT", "action": "block"}
        )
        out.append(Arrival(HOURS * 3600.0 * i, [doc]))
    return out


def _policy_alerts(emulator: EmulatorServer, name: str) -> list[dict[str, Any]]:
    return sorted((a for a in emulator.state.alerts if name in a["title"]), key=lambda a: a["alertCreationTime"])


def _seed(sim: Simulation, emulator: EmulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> datetime:
    """The week, a tagging rule on `block` actions, and the analyst's verdicts six hours after the
    last alert: 'Block PII on ChatGPT' 9 FP, 2 TP, 1 informational, 2 unclassified; 'Coach on
    DeepSeek' 5 TP, 2 unclassified. The simulation's start."""
    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps({"rules": [{"name": "Tag PII on ChatGPT", "when": {"policy_actions": ["block"]},
                                            "then": [{"action": "tag_device", "tag": "NoxysPII"}]}]}))  # fmt: skip
    monkeypatch.setenv("RESPONSE_RULES_FILE", str(rules))
    wiring.reset()
    wiring.use(clock=sim.clock, sender=sim.sender)
    start = sim.clock.now()

    def resolve(_: datetime) -> None:  # the SOC closes each alert the same day (Defender merges into open ones)
        for alert in emulator.state.alerts:
            alert["status"] = "Resolved"

    sim.on_step = resolve
    sim.run(_week())
    pii, coach = _policy_alerts(emulator, "Block PII on ChatGPT"), _policy_alerts(emulator, "Coach on DeepSeek")
    assert (len(pii), len(coach)) == (14, 7)
    sim.clock.set(sim.clock.now() + timedelta(hours=6))  # the analyst's day: every verdict at this moment
    verdicts = ["FalsePositive"] * 9 + ["TruePositive"] * 2 + ["InformationalExpectedActivity"]  # 12 of 14
    for alert, verdict in zip(pii, verdicts, strict=False):
        emulator.state.update_alert(alert["id"], {"classification": verdict})
    for alert in coach[:5]:
        emulator.state.update_alert(alert["id"], {"classification": "TruePositive"})
    return start


def test_review_over_a_seeded_week_gives_the_rates_and_the_suggestions(
    sim: Simulation, env: Env, emulator: EmulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    start = _seed(sim, emulator, tmp_path, monkeypatch)
    pii = _policy_alerts(emulator, "Block PII on ChatGPT")
    out = tmp_path / "review.json"
    since, until = start.isoformat(), (sim.clock.now() + timedelta(hours=1)).isoformat()
    base = ["review", "--since", since, "--until", until, "--quiet"]
    assert main([*base, "--format", "json", "--output", str(out)]) == 0
    doc = json.loads(out.read_text())
    policies = {p["id"]: p for p in doc["policies"]}
    p = policies["pol_pii"]
    assert (p["name"], p["alerts"], p["classified"], p["false_positives"]) == ("Block PII on ChatGPT", 14, 12, 9)
    assert p["false_positive_rate"] == 0.75 and p["unclassified"] == 2
    assert [n for _, n in p["devices"]] == [14] and p["users"] == [["alice@acme.fr", 14]]  # most involved
    verdict_at = sim.clock.now()
    hours = [(verdict_at - datetime.fromisoformat(a["alertCreationTime"].replace("Z", "+00:00"))).total_seconds() / 3600
             for a in pii[:12]]  # fmt: skip
    assert p["median_hours_to_classification"] == round(statistics.median(hours), 2)
    c = policies["pol_coach"]
    assert (c["alerts"], c["classified"], c["false_positives"], c["false_positive_rate"]) == (7, 5, 0, 0.0)
    (rule,) = doc["rules"]
    assert (rule["name"], rule["alerts"], rule["classified"], rule["false_positives"]) == (
        "Tag PII on ChatGPT",
        14,
        12,
        9,
    )
    assert (
        "policy 'Block PII on ChatGPT': 9 of 12 classified alerts were false positives (75 %) — consider tuning"
        in doc["suggestions"][0]
    )
    assert any(s.startswith("rule 'Tag PII on ChatGPT': it acted on 14 alert(s); 9 of 12") for s in doc["suggestions"])
    assert not any("Coach on DeepSeek" in s for s in doc["suggestions"])  # 0 % false positives: nothing to change
    assert main([*base, "--format", "md"]) == 0
    md = capsys.readouterr().out
    assert "| Block PII on ChatGPT | 14 | 12 | 9 | 75 % |" in md
    assert main([*base, "--format", "html"]) == 0
    page = capsys.readouterr().out
    assert "<main>" in page and "<th scope='row'>Block PII on ChatGPT</th><td>14</td><td>12</td><td>9</td>" in page
    reads = [
        c for c in emulator.state.calls if c["path"].startswith("/api/alerts?") or c["path"].startswith("/api/alerts/")
    ]
    assert reads  # read back from Defender (not from the connector's memory)


def test_a_policy_above_the_rate_is_suppressed_by_the_scheduled_review_and_an_operator_re_enables_it(
    hunting: Simulation, env: Env, emulator: EmulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    sim = hunting  # hunting configured: a suppressed policy's events must still reach the hunting table
    monkeypatch.setenv("SUPPRESS_FALSE_POSITIVE_RATE", "0.6")
    monkeypatch.setenv("SUPPRESS_MIN_CLASSIFIED", "10")
    _seed(sim, emulator, tmp_path, monkeypatch)
    hourly_timer(TimerRequest(past_due=False))  # Monday 06:00 has passed since the last review (none): it runs
    assert main(["status"]) == 0
    said = capsys.readouterr().out
    assert "! policy 'Block PII on ChatGPT' (pol_pii) SUPPRESSED since" in said and "9 of 12 classified" in said
    assert "last review" in said and "Coach on DeepSeek" not in said.split("last review")[1].split("\n")[0]
    sim.clock.advance(3600)
    hourly_timer(TimerRequest(past_due=False))  # the next hour's record (written before the review part)
    health = wiring.status_deps().table("Health").get_entity("health", "latest")
    assert "pol_pii" in health["record"]  # visible in the health record too
    alerts, kept = len(emulator.state.alerts), wiring.hunting_outbox().count()

    def more(i: int, policy: dict[str, str]) -> Arrival:
        doc = violation(i, host="ALICE-LAPTOP", at=sim.clock.now(), policy="x")
        doc["data"]["policy"] = policy
        return Arrival(0, [doc])

    pii = {"id": "pol_pii", "name": "Block PII on ChatGPT", "action": "block"}
    sim.run([more(500, pii)])
    assert len(emulator.state.alerts) == alerts  # no alert for the suppressed policy …
    assert wiring.hunting_outbox().count() > kept  # … but its event still goes to hunting
    sim.run([more(501, {"id": "pol_coach", "name": "Coach on DeepSeek", "action": "coach"})])
    assert len(emulator.state.alerts) == alerts + 1  # other policies are untouched
    hourly_timer(TimerRequest(past_due=False))  # judged again: still 9 of 12, still suppressed
    assert "pol_pii" in wiring.suppressions().active()
    assert main(["review", "unsuppress", "Block PII on ChatGPT"]) == 0
    assert "re-enabled" in capsys.readouterr().out
    assert main(["review", "unsuppress", "pol_pii"]) == 1  # nothing suppressed by that name any more
    sim.clock.advance(120)  # the webhook reads the suppressed set at most once a minute
    sim.run([more(502, pii)])
    assert len(emulator.state.alerts) == alerts + 2  # reversible


def test_a_suppressed_policy_is_lifted_within_the_hour_its_rate_falls(
    hunting: Simulation, env: Env, emulator: EmulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SUPPRESS_FALSE_POSITIVE_RATE", "0.6")
    monkeypatch.setenv("SUPPRESS_MIN_CLASSIFIED", "10")
    _seed(hunting, emulator, tmp_path, monkeypatch)
    hourly_timer(TimerRequest(past_due=False))
    assert set(wiring.suppressions().active()) == {"pol_pii"}
    for alert in _policy_alerts(emulator, "Block PII on ChatGPT")[:3]:  # the analyst revises three verdicts
        emulator.state.update_alert(alert["id"], {"classification": "TruePositive"})
    hunting.clock.advance(3600)
    hourly_timer(TimerRequest(past_due=False))  # 6 of 12 = 50 %: no longer above 60 %
    assert wiring.suppressions().active() == {}
