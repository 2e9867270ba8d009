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

from shared import wiring
from shared.cli import main
from tests.support import SAMPLE_DAY, Env, violation
from tools.emulator.server import EmulatorServer
from tools.simulation import Arrival, Simulation

pytestmark = pytest.mark.integration
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


def test_review_over_a_seeded_week_gives_the_rates_and_the_suggestions(
    sim: Simulation, env: Env, emulator: EmulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
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
