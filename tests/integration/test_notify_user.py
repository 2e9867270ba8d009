"""``notify_user`` through the real webhook, Azurite and the emulator's Graph: a storm on one user,
across two devices, sends one mail from the configured mailbox, in words and without a PII value or
the prompt; a dry run sends nothing and records the exact mail; the emulator refuses what Graph
refuses; ``test-connection`` names a missing ``Mail.Send``."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import requests

from ops.cli import main
from shared import wiring
from shared.response.notify import MailTemplate, render
from shared.response.rules import Situation
from tests.integration.test_emulator import provider, trust_emulator
from tests.support import LIMITED_CLIENT, Env, violation
from tools.emulator.server import EmulatorServer
from tools.simulation import Arrival, Simulation

pytestmark = pytest.mark.integration
__all__ = ["trust_emulator"]
SENDER = "noxys-alerts@acme.fr"
NOTIFY_RULE: dict[str, Any] = {
    "name": "Tell the user about repeated violations",
    "when": {
        "event_types": ["interaction.policy_violated"],
        "repeat": {"count": 2, "within_minutes": 60, "per": "user"},
    },
    "then": [{"action": "notify_user"}],
    "dry_run": False,
}


def _use(
    sim: Simulation, emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, rule: dict[str, Any]
) -> None:
    path = tmp_path / "rules.json"
    path.write_text(json.dumps({"rules": [rule]}))
    monkeypatch.setenv("RESPONSE_RULES_FILE", str(path))
    monkeypatch.setenv("NOTIFY_SENDER", SENDER)
    monkeypatch.setenv("NOTIFY_CONTACT", "the security team (soc@acme.fr)")
    wiring.reset()
    wiring.use(clock=sim.clock, sender=sim.sender)


def _storm(n: int, *, start: int = 1) -> list[Arrival]:
    """One user (the sample's alice@acme.fr) on two devices, a violation a minute."""
    hosts = ("ALICE-LAPTOP", "DAVE-MBP")
    return [Arrival(i * 60.0, [violation(start + i, host=hosts[i % 2], policy="pii")]) for i in range(n)]


def _rows(env: Env) -> list[dict[str, Any]]:
    return [dict(e) for e in env.table("Responses").list_entities() if e.get("action") == "notify_user"]


def test_a_storm_on_one_user_across_two_devices_sends_one_mail_in_words(
    sim: Simulation, env: Env, emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _use(sim, emulator, monkeypatch, tmp_path, NOTIFY_RULE)
    sim.run(_storm(8))
    (mail,) = emulator.state.identity.mails
    assert mail["from"] == SENDER
    message = mail["message"]
    assert message["toRecipients"] == [{"emailAddress": {"address": "alice@acme.fr"}}]
    content = message["body"]["content"]
    assert "Policy pii" in content and "Email address" in content and "the security team (soc@acme.fr)" in content
    assert "alice@acme.fr" not in content and "summarise the contract" not in content  # no PII value, no prompt
    states = [r["state"] for r in _rows(env)]
    assert states.count("done") == 1
    skipped = [r["detail"] for r in _rows(env) if r["state"] == "skipped"]
    assert skipped and all("e-mailed less than 60 min ago" in d or d.startswith("device cooldown") for d in skipped)
    assert any("e-mailed less than 60 min ago" in d for d in skipped)  # the other device's events: the user's cooldown
    audit = [dict(e) for e in env.table("Audit").list_entities() if e["service"] == "graph"]
    assert [a["status"] for a in audit if a["path"].endswith("/sendMail")] == [202]
    assert not any("alice@acme.fr" in str(e.get("path")) for e in env.table("Audit").list_entities())
    assert env.queued_texts(f"{env.queue}-poison") == []


def test_a_dry_run_sends_nothing_and_records_the_exact_mail(
    sim: Simulation, env: Env, emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _use(sim, emulator, monkeypatch, tmp_path, NOTIFY_RULE | {"dry_run": True})
    sim.run(_storm(3))
    assert emulator.state.identity.mails == []
    (first, *_) = sorted((r for r in _rows(env) if r["state"] == "dry_run"), key=lambda r: r["event_id"])
    when = re.search(r"On (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) \(UTC\)", first["detail"])
    assert when is not None  # the event's own time (the simulation moves the sample's), to the second
    s = Situation(
        "interaction.policy_violated", "High", 0.0, "chatgpt", "ChatGPT", "block",
        policy_name="Policy pii", pii_types=("EMAIL",), occurred_at=when.group(1).replace(" ", "T") + "Z",
    )  # fmt: skip
    expected = render(MailTemplate(), "alice@acme.fr", s, "the security team (soc@acme.fr)")
    assert first["detail"] == "would send:\n" + expected.preview()
    comments = [c["comment"] for a in emulator.state.alerts for c in a["comments"]]
    assert any("would e-mail the user ('Security notice: your use of ChatGPT was flagged')" in c for c in comments)


def test_a_missing_template_file_sends_no_mail_and_never_stops_an_alert(
    sim: Simulation, env: Env, emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    monkeypatch.setenv("NOTIFY_TEMPLATE_FILE", str(tmp_path / "absent.json"))
    _use(sim, emulator, monkeypatch, tmp_path, NOTIFY_RULE)
    sim.run(_storm(3))
    assert emulator.state.identity.mails == [] and emulator.state.alerts
    skipped = [r["detail"] for r in _rows(env) if r["state"] == "skipped"]
    assert any("NOTIFY_TEMPLATE_FILE" in d and "cannot be read" in d for d in skipped)
    assert env.queued_texts(f"{env.queue}-poison") == []
    assert main(["status"]) == 0  # said where an operator looks first
    assert "! CONFIGURATION: NOTIFY_TEMPLATE_FILE:" in capsys.readouterr().out


def connection_without(emulator: EmulatorServer, env: Env, role: str, capsys: pytest.CaptureFixture[str]) -> str:
    """``test-connection``'s output once the connector's app lost ``role`` (it still passes: the
    alert path works, the rule's loss is a warning)."""
    app = emulator.state.clients[(next(iter(emulator.state.tenants)), env.values["DEFENDER_CLIENT_ID"])]
    app.roles = [r for r in app.roles if r != role]
    wiring.reset()
    assert main(["test-connection"]) == 0
    return capsys.readouterr().out


def _graph(emulator: EmulatorServer, **kw: Any) -> dict[str, str]:
    token = provider(emulator, scope="https://graph.microsoft.com/.default", **kw).token()
    return {"Authorization": f"Bearer {token}"}


def test_the_emulator_refuses_what_graph_refuses_for_send_mail(emulator: EmulatorServer) -> None:
    url = f"{emulator.url}/v1.0/users/{SENDER}/sendMail"
    good = render(MailTemplate(), "alice@acme.fr", Situation("t", "High", 0.5, "chatgpt", "ChatGPT", "")).graph_body()
    assert requests.post(url, json=good, headers=_graph(emulator), timeout=10).status_code == 202
    for broken, field in (
        ({"message": {**good["message"], "subject": ""}}, "message.subject"),
        ({"message": {**good["message"], "body": {"contentType": "Markdown", "content": "x"}}}, "contentType"),
        ({"message": {**good["message"], "toRecipients": [{"emailAddress": {}}]}}, "toRecipients[0]"),
    ):
        refused = requests.post(url, json=broken, headers=_graph(emulator), timeout=10)
        assert refused.status_code == 400 and field in refused.json()["error"]["message"]
    unknown = requests.post(
        f"{emulator.url}/v1.0/users/nobody@acme.fr/sendMail", json=good, headers=_graph(emulator), timeout=10
    )
    assert unknown.status_code == 404
    limited = requests.post(
        url, json=good, headers=_graph(emulator, client=LIMITED_CLIENT[0], secret=LIMITED_CLIENT[1]), timeout=10
    )
    assert limited.status_code == 403 and "Mail.Send" in limited.json()["error"]["message"]
    assert len(emulator.state.identity.mails) == 1


def test_test_connection_names_a_missing_mail_send(
    sim: Simulation, env: Env, emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    _use(sim, emulator, monkeypatch, tmp_path, NOTIFY_RULE)
    out = connection_without(emulator, env, "Mail.Send", capsys)
    assert "Mail.Send" in out and "Tell the user about repeated violations" in out
    assert main(["test-connection", "--strict"]) == 1


def test_rules_check_reads_the_graph_permissions_from_the_graph_token(
    sim: Simulation, env: Env, emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    _use(sim, emulator, monkeypatch, tmp_path, NOTIFY_RULE)
    assert main(["rules", "check", str(tmp_path / "rules.json")]) == 0
    out = capsys.readouterr().out
    assert "needs Mail.Send (for Tell the user about repeated violations)" in out
    assert "which the app is not granted" not in out  # granted on Graph: not reported missing
    out = connection_without(emulator, env, "Mail.Send", capsys)
    assert main(["rules", "check", str(tmp_path / "rules.json")]) == 0
    assert "notify_user needs Mail.Send, which the app is not granted" in capsys.readouterr().out
