"""The compliance report's HTML passes axe-core (the engine behind most accessibility audits) in
headless Chromium with no violation: a seeded day's report, loaded from a file as an officer
opens it, checked against WCAG 2.x A and AA and axe's best practices."""

from __future__ import annotations

import html
import json
import re
import subprocess
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from ops.cli import main
from tests.integration.test_compliance import SINCE, UNTIL, _chromium, day
from tests.integration.test_response import STORM_RULE, _rules, _storm, _use
from tests.support import Env
from tools.emulator.server import EmulatorServer
from tools.simulation import Simulation

pytestmark = pytest.mark.integration
__all__ = ["day"]  # the seeded day the report covers
AXE = Path(__file__).resolve().parents[2] / "tools" / "axe" / "node_modules" / "axe-core" / "axe.min.js"
RUNNER = """
<script src="{axe}"></script>
<script>
axe.run(document, {{runOnly: {{type: "tag", values: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "best-practice"]}}}})
  .then(r => {{ const out = document.createElement("pre"); out.id = "axe-result";
               out.textContent = JSON.stringify({{violations: r.violations, passes: r.passes.length}});
               document.documentElement.appendChild(out); }});
</script>
"""


def axe_violations(page: Path, tmp_path: Path) -> dict[str, Any]:
    """axe-core's result for ``page`` in headless Chromium. The runner is added after the page's
    own content, so it checks exactly what an officer sees; the page's Content-Security-Policy,
    which forbids every script (the report runs none), is left out of the copy checked."""
    assert AXE.is_file(), "axe-core is missing: scripts/bootstrap.sh installs it (npm ci in tools/axe)"
    checked = tmp_path / "checked.html"
    text = re.sub(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "", page.read_text())  # it forbids scripts
    checked.write_text(text.replace("</body>", RUNNER.format(axe=AXE.as_uri()) + "</body>"))
    flags = [
        "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--allow-file-access-from-files",
        f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=20000",
    ]  # fmt: skip
    dom = subprocess.run(
        [_chromium(), *flags, "--dump-dom", checked.as_uri()], capture_output=True, text=True, timeout=180, check=True
    ).stdout
    found = re.search(r'<pre id="axe-result">(.*?)</pre>', dom, re.S)
    assert found, "axe-core did not finish in Chromium"
    return dict(json.loads(html.unescape(found.group(1))))


def test_the_report_passes_axe_core_with_no_violation(day: Simulation, tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    assert main(["report", "--since", SINCE, "--until", UNTIL, "--output", str(page)]) == 0
    result = axe_violations(page, tmp_path)
    said = [
        f"{v['id']} ({v['impact']}): {v['help']} — {[n['target'] for n in v['nodes']][:3]}"
        for v in result["violations"]
    ]
    assert said == []
    assert result["passes"] > 10  # the engine ran its rules (not an empty page)


def test_the_response_section_is_summarised_for_an_officer_and_stays_accessible(
    sim: Simulation, env: Env, emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    dry = STORM_RULE | {"name": "Would isolate (dry run)", "dry_run": True}
    _use(sim, env, emulator, monkeypatch, _rules(tmp_path, STORM_RULE, dry, isolations=1))
    sim.run(_storm(1, 5, "ALICE-LAPTOP", strong=True))
    page = tmp_path / "report.html"
    since, until = (sim.clock.now() - timedelta(days=1)).isoformat(), (sim.clock.now() + timedelta(hours=1)).isoformat()
    assert main(["report", "--since", since, "--until", until, "--output", str(page)]) == 0
    text = page.read_text()
    taken = text.index("Actions taken, by rule, action and final state")
    assert taken < text.index("<details><summary>") and "dry run(s): recorded, nothing sent</summary>" in text
    assert "action(s) skipped by a guardrail</summary>" in text  # the storm's cooldown skips, as a count
    assert "<td>isolate</td><td>Succeeded</td><td>1</td>" in text[taken : text.index("<details>")]
    assert "Email address (" in text and "EMAIL" not in text  # PII types in words
    assert "What the outcomes mean</h2><dl><dt>forwarded</dt>" in text and "(not reported)&quot; stands for" in text
    assert 'aria-label="Events per AI platform: ChatGPT 5"' in text  # the chart in words
    result = axe_violations(page, tmp_path)
    assert [v["id"] for v in result["violations"]] == []
