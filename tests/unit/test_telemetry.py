"""The telemetry module's pure parts: the vocabulary, counter → metric, the health record's numbers,
and that without a connection string nothing of OpenTelemetry is even imported."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from datetime import UTC, datetime
from typing import get_args

from shared import telemetry
from shared.response.rules import ActionKind
from tests.support import ROOT

NOW = datetime(2026, 3, 20, 12, 0, tzinfo=UTC)


def test_values_outside_the_vocabulary_become_other() -> None:
    assert telemetry.attribute("outcome", "alert_created") == "alert_created"
    assert telemetry.attribute("outcome", "alice@acme.fr") == "other"
    assert telemetry.attribute("api", "/api/machines/ce860c41") == "other"
    assert telemetry.attribute("status", 429) == "429"
    assert telemetry.attribute("status", "12345") == "other"
    assert telemetry.attribute("state", "TimeOut") == "timeout"
    assert telemetry.attribute("nonsense", "anything") == "other"


def test_every_response_action_kind_is_in_the_vocabulary() -> None:
    assert set(get_args(ActionKind)) <= set(telemetry.ACTIONS)


def test_table_counters_map_to_their_metric() -> None:
    assert telemetry.measure("ingest.accepted") == ("noxys.events.received", {"outcome": "accepted"})
    assert telemetry.measure("ingest.ignored.unknown") == ("noxys.events.received", {"outcome": "ignored"})
    assert telemetry.measure("ingest.refused.signature") == (
        "noxys.events.received",
        {"outcome": "refused", "reason": "signature"},
    )
    assert telemetry.measure("outcome.created") == ("noxys.events.delivered", {"outcome": "alert_created"})
    assert telemetry.measure("outcome.retry_after") is None  # not a delivery's end: status only
    assert telemetry.measure("ingest.refused.from-a-sender") == (
        "noxys.events.received",
        {"outcome": "refused", "reason": "other"},
    )


def test_every_refusal_of_the_webhook_contract_has_a_reason() -> None:
    documented = (ROOT / "docs" / "webhook.md").read_text()
    for error in telemetry.REFUSAL_REASONS:
        assert f"`{error}`" in documented


def test_health_record_as_numbers() -> None:
    record = {
        "connection": {"ok": True},
        "expiry": [{"level": logging.WARNING, "message": "expires in 20 days"}],
        "queues": {"waiting": 3, "poison": 1},
        "secret_expires_on": {
            "the Defender client secret (Key Vault defender-secret)": "2026-04-09T12:00:00+00:00",
            "the Entra app's client secret": "2026-03-25T00:00:00+00:00",
        },
    }
    found = telemetry.health_figures(record, NOW)
    assert found == telemetry.HealthFigures(True, 3, 1, {"key_vault": 20.0, "entra": 4.5})
    expiring = {**record, "expiry": [{"level": logging.ERROR, "message": "expires in 4 days"}]}
    assert not telemetry.health_figures(expiring, NOW).ok
    assert not telemetry.health_figures({"connection": {"ok": False}}, NOW).ok
    assert telemetry.health_figures({}, NOW) == telemetry.HealthFigures(False, None, None, {})
    tripped = {"ok": False, "connection": {"ok": True}, "problems": ["response circuit open: hourly cap on isolate"]}
    assert telemetry.health_figures(tripped, NOW) == telemetry.HealthFigures(False, None, None, {}, 1)


def test_entra_authentication_string() -> None:
    assert telemetry.aad_client("ClientId=5d2e;Authorization=AAD") == (True, "5d2e")
    assert telemetry.aad_client("Authorization=AAD") == (True, None)
    assert telemetry.aad_client(None) == (False, None)


def test_off_without_a_connection_string_and_nothing_imported() -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in (telemetry.CONNECTION_STRING, telemetry.OTLP_ENDPOINT, telemetry.LOCAL_SWITCH)
    }
    script = (
        "import sys\n"
        "from datetime import UTC, datetime\n"
        "from shared import telemetry\n"
        "import shared.intake\n"
        "telemetry.Tally(lambda *a: None, lambda: datetime.now(UTC)).count('ingest.accepted')\n"
        "with telemetry.span('x', 'server', route='POST /x') as s:\n"
        "    telemetry.mark(s, outcome='accepted', status=202)\n"
        "telemetry.defender_call('alerts', 200)\n"
        "assert telemetry.traceparent() is None and telemetry.carried('{}') == (None, None)\n"
        "loaded = sorted(m for m in sys.modules if m.startswith(('opentelemetry', 'azure.monitor')))\n"
        "print(telemetry.enabled(), loaded)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "False []"


def test_what_a_queue_message_carries_never_breaks_a_delivery() -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.trace import TracerProvider

    telemetry.install(TracerProvider(), MeterProvider())
    try:
        parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        good = f'{{"kind":"event","trace":"{parent}","first_received_at":"2026-03-20T12:00:00Z"}}'
        assert telemetry.carried(good) == (parent, NOW)
        bundle = f'{{"kind":"bundle","first_received_at":"2026-03-20T12:00:00Z","events":[{{"trace":"{parent}"}}]}}'
        assert telemetry.carried(bundle) == (parent, NOW)
        for hostile in ("not json", "[]", '{"kind":"bundle","events":[]}', '{"first_received_at":"2026-03-20T12:00"}',
                        '{"first_received_at":"yesterday","trace":7}', '{"trace":"00-zz"}'):  # fmt: skip
            trace, when = telemetry.carried(hostile)
            assert when is None and trace in (None, "00-zz")
        with telemetry.span("noxys.deliver", "consumer", "00-zz") as span:  # a malformed parent: a new trace
            assert span is not None
    finally:
        telemetry.reset()
