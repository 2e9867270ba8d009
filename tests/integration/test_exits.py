"""Privacy and hostile data at every exit of a seeded run: what is stored (tables, queues, blobs),
logged, sent (Defender, Log Analytics) and written by the operator commands (exports, reports,
data-subject requests). Real Azurite, the real delivery and CLI, the emulator."""

from __future__ import annotations

import json
import logging
import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ops.cli import main
from shared import wiring
from shared.functions.hunting import ship_rows
from tests.integration.test_hunting import hunting  # noqa: F401  (the fixture: hunting configured)
from tests.support import SAMPLE_DAY, Env, critical, observed, violation
from tools.emulator.server import EmulatorServer
from tools.simulation import Arrival, Simulation

pytestmark = pytest.mark.integration
PROMPT = "mysalaryis93kcanary"  # prompt text, as a platform puts it in a URL
SINCE, UNTIL = "2026-03-19T00:00:00Z", "2026-03-22T00:00:00Z"


def _person(doc: dict[str, Any], email: str | None, user_id: str, url: str) -> dict[str, Any]:
    it = doc["data"]["interaction"]
    it.update(user_email=email, user_id=user_id, content_metadata={"url": url, "text": PROMPT})
    return doc


@pytest.fixture
def seeded(hunting: Simulation, env: Env, emulator: EmulatorServer) -> Simulation:  # noqa: F811
    """Alice, Kate, an event whose Noxys user id is Alice's e-mail but whose e-mail is Bob's, and one
    with that user id and no e-mail (its risk window is keyed like Alice's);
    every URL carries the prompt in its path, query and fragment; one event is dead-lettered."""
    alert = critical(9, SAMPLE_DAY)
    alert["data"]["interaction"] = {"user_id": "uid-alice", "content_metadata": {"url": f"https://x.ai/?q={PROMPT}"}}
    hunting.run(
        [
            Arrival(
                0,
                [
                    _person(
                        violation(1), "alice@acme.fr", "uid-alice", f"https://chatgpt.com/search?q={PROMPT}#{PROMPT}"
                    ),
                    _person(
                        violation(2, platform="mistral"),
                        "Alice@ACME.fr",
                        "uid-alice",
                        f"https://u:{PROMPT}@chat.mistral.ai:8443/chat/{PROMPT}?prompt={PROMPT}",
                    ),
                    _person(violation(3, host="BOB-WS-0042"), "kate@acme.fr", "uid-kate", f"chatgpt.com/?q={PROMPT}"),
                    _person(
                        violation(4, host="BOB-WS-0042"),
                        "bob@acme.fr",
                        "alice@acme.fr",
                        f"https://chatgpt.com/{PROMPT}",
                    ),
                    _person(
                        violation(6, host="BOB-WS-0042"), None, "alice@acme.fr", f"https://chatgpt.com/?q={PROMPT}"
                    ),
                    alert,
                ],
            )
        ]
    )
    app = emulator.state.clients[(next(iter(emulator.state.tenants)), env.values["DEFENDER_CLIENT_ID"])]
    roles, app.roles = app.roles, ["Machine.Read.All"]  # hunting refused: dead-lettered
    wiring.reset()
    wiring.use(clock=hunting.clock, sender=hunting.sender)
    hunting.run([Arrival(0, [_person(violation(5), "alice@acme.fr", "uid-alice", f"https://chatgpt.com/?q={PROMPT}")])])
    app.roles = roles
    wiring.reset()
    wiring.use(clock=hunting.clock, sender=hunting.sender)
    return hunting


def _storage(env: Env) -> Iterator[str]:
    """Every table row and queue message of this run, as text. (The connector keeps no blobs: the
    Functions host's own lease blobs hold no event data, and this Azurite serves no blobs at all.)"""
    from azure.data.tables import TableServiceClient
    from azure.storage.queue import QueueServiceClient

    conn = env.azurite.connection_string
    tables = TableServiceClient.from_connection_string(conn)
    for table in tables.list_tables():
        if table.name.startswith(env.values["TABLE_PREFIX"]):
            for row in tables.get_table_client(table.name).list_entities():
                yield json.dumps(dict(row), default=str, ensure_ascii=False)
    for queue in QueueServiceClient.from_connection_string(conn).list_queues():
        if queue.name.startswith(env.queue):
            yield from env.queued_texts(queue.name)


def test_prompt_text_placed_in_urls_reaches_no_exit(
    seeded: Simulation,
    env: Env,
    emulator: EmulatorServer,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    before = list(_storage(env))  # the hunting rows still in their outbox and queue
    assert ship_rows().sent == 7
    exports = []
    for argv in (
        ["export-audit", "--since", SINCE, "--until", UNTIL, "--format", "csv"],
        ["export-audit", "--since", SINCE, "--until", UNTIL],
        ["subject", "export", "--user", "alice@acme.fr"],
        ["subject", "export", "--user-id", "alice@acme.fr"],
        ["correlation", "--since", SINCE, "--until", UNTIL, "--json"],
        ["status", "--json"],
        *(["report", "--since", SINCE, "--until", UNTIL, "--format", f] for f in ("md", "json", "html")),
    ):
        assert main(argv) == 0, argv
        exports.append(capsys.readouterr().out)
    assert main(["report", "--since", SINCE, "--until", UNTIL, "--output", str(tmp_path / "r.html")]) == 0
    exports.append((tmp_path / "r.html").read_text())
    sent = json.dumps([emulator.state.alerts, emulator.state.logs.rows], default=str)
    logged = "\n".join(r.getMessage() for r in caplog.records) + capsys.readouterr().err
    everything = {"storage before shipping": before, "storage": list(_storage(env)), "exports": exports}
    everything |= {"defender and log analytics": [sent], "logs": [logged]}
    assert len(everything["storage"]) > 30 and "chat.mistral.ai" in sent  # the exits were really read
    leaks = {name: [t for t in texts if PROMPT in t.lower()] for name, texts in everything.items()}
    assert {name: found for name, found in leaks.items() if found} == {}


def _ledger_users(env: Env) -> dict[str, tuple[str, str]]:
    return {str(e["event_id"]): (e.get("email"), e.get("user_id")) for e in env.table("Ledger").list_entities()}


def test_an_erasure_by_email_spares_namesakes_and_look_alikes(
    seeded: Simulation, env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["subject", "export", "--user-id", "ALICE@acme.fr"]) == 0
    by_id = json.loads(capsys.readouterr().out)
    assert sorted(r["event_id"] for r in by_id["tables"]["Ledger"]) == ["evt_sim_00004", "evt_sim_00006"]
    assert 'EventId in ("evt_sim_00004", "evt_sim_00006")' in by_id["hunting_query"]

    with pytest.raises(SystemExit) as refused:  # U+212A KELVIN SIGN: .lower() made it kate@acme.fr
        main(["subject", "erase", "--user", "\u212aate@acme.fr", "--yes"])
    assert refused.value.code == 2 and "U+212A" in capsys.readouterr().err

    namesake = [o for o in observed(env) if o[1] == "evt_sim_00006"]
    assert main(["subject", "erase", "--user", "alice@acme.fr", "--yes"]) == 0
    left = _ledger_users(env)
    assert sorted(left) == ["evt_sim_00003", "evt_sim_00004", "evt_sim_00006"]
    # in the risk window keyed alice@acme.fr too, but not hers: its observations stay
    kept = [o for o in observed(env) if o[1] == "evt_sim_00006"]
    assert len(namesake) == 2 and len(kept) == 2
    assert left["evt_sim_00004"] == ("bob@acme.fr", "alice@acme.fr") and left["evt_sim_00003"][0] == "kate@acme.fr"


def test_a_subject_export_is_readable_private_and_never_follows_a_link(
    seeded: Simulation, env: Env, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("someone else's file\n")
    out = tmp_path / "alice.json"
    out.symlink_to(victim)
    assert main(["subject", "export", "--user", "alice@acme.fr", "--output", str(out)]) == 0
    assert victim.read_text() == "someone else's file\n"  # the link was replaced, not followed
    assert not out.is_symlink() and stat.S_IMODE(out.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".part")] == []
    doc = json.loads(out.read_text())
    text = json.dumps(doc)
    for internal in ("lease_owner", "lease_until", "PartitionKey", "RowKey", '"message"', '"task"'):
        assert internal not in text
    ledger = doc["tables"]["Ledger"]
    assert len(ledger) == 4 and all(re.fullmatch(r"2026-03-2\dT[\d:.]+Z", r["received_at"]) for r in ledger)
    (dead,) = doc["tables"]["DeadLetters"]
    assert dead["event"]["data"]["interaction"]["user_email"] == "alice@acme.fr"
    assert re.fullmatch(r"2026-03-2\dT[\d:.]+Z", dead["dead_at"])
    assert doc["subject"] == {"email": "alice@acme.fr"}


@pytest.mark.parametrize(
    "argv",
    [
        ["report", "--since", SINCE, "--output"],
        ["subject", "export", "--user", "alice@acme.fr", "--output"],
        ["export-audit", "--since", SINCE, "--output"],
    ],
)
def test_a_bad_output_path_is_one_line_before_any_defender_call(
    env: Env, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, argv: list[str]
) -> None:
    def no_defender() -> None:
        raise AssertionError("Defender was called before the output was checked")

    monkeypatch.setattr(wiring, "defender_client", no_defender)
    for path, says in ((tmp_path / "missing" / "out.json", "does not exist"), (tmp_path, "is a folder")):
        assert main([*argv, str(path)]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and says in err and "Traceback" not in err


def test_a_wrong_confirmation_says_so_and_erases_nothing(
    seeded: Simulation, env: Env, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    monkeypatch.setattr("builtins.input", lambda _prompt: "kate@acme.fr")
    before = _ledger_users(env)
    assert main(["subject", "erase", "--user", "alice@acme.fr"]) == 2
    assert "that is not alice@acme.fr: nothing was erased" in capsys.readouterr().err
    assert _ledger_users(env) == before
    monkeypatch.setattr("builtins.input", lambda _prompt: " ALICE@acme.FR ")  # the same mailbox
    assert main(["subject", "erase", "--user", "alice@acme.fr"]) == 0


def test_every_since_and_until_reads_relative_times(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    """export-audit used to fail on ``7d`` ("Invalid isoformat string") where report took it."""
    assert main(["export-audit", "--since", "7d", "--until", "1h"]) == 0
    assert main(["export-audit", "--since", "yesterday"]) == 2
    assert "--since 'yesterday' is not a time: use 7d, 24h" in capsys.readouterr().err
    assert main(["correlation", "--since", "2w", "--until", "soon"]) == 2
    assert "--until 'soon' is not a time" in capsys.readouterr().err
    assert os.environ["TABLE_PREFIX"] == env.values["TABLE_PREFIX"]  # the commands read this run's tables
