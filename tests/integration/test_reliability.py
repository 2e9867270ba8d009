"""The reliability run at CI size: separate web and worker processes over real Azurite on disk and
the emulators, with the worker SIGKILLed mid-delivery, Azurite restarted, token and Key Vault
outages, 429 bursts, 10 % 5xx, and creates whose answer is lost after the alert was made (502, 504,
a timeout, a reset). Target: nothing lost, nothing duplicated.
``bench/reliability.py`` runs the same at full size."""

from __future__ import annotations

from pathlib import Path

import pytest

from tools.reliability import Plan, Run

pytestmark = [pytest.mark.integration, pytest.mark.reliability]


def test_nothing_lost_nothing_duplicated_under_real_faults(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plan = Plan()
    run = Run(plan, tmp_path)
    try:
        report = run.run()
    finally:
        run.close()
    with capsys.disabled():
        print("\nreliability run (CI size):\n  " + "\n  ".join(report.lines()))  # noqa: T201 - the figures, in the CI log
    assert report.accepted == plan.events
    assert report.kills == plan.kills and report.azurite_restarts == plan.azurite_restarts
    assert {"token_outage", "vault_outage", "429", "503", "latency"} <= set(report.injected)
    lost = {"lost answer 502", "lost answer timeout", "lost answer 504", "lost answer reset"}
    assert lost <= set(report.injected), report.injected
    assert report.lost == [] and report.duplicates == 0
    assert report.poison == 0 and report.dead_letters == []
    assert sum(report.states.values()) == plan.events and "missing" not in report.states
    # one alert per device and policy: the storm was coalesced, not lost or repeated
    assert report.alerts == report.states.get("alert_created") == 4 * plan.policies
    assert report.creates_made == report.alerts  # no create repeated after a lost answer
