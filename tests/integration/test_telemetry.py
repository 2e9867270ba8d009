"""Telemetry through the real pipeline: webhook → Azurite queue → delivery → hunting, with the
OpenTelemetry SDK's in-memory exporters; and the Azure Monitor exporter's real HTTP traffic to the
emulator's Application Insights ingestion endpoint (``/v2.1/track``)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, NumberDataPoint
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from shared import telemetry, wiring
from shared.functions.hunting import ship_rows
from tests.support import EMULATOR_CLIENT, EMULATOR_TENANT, ROOT, Env, sample, signed_headers, violation
from tools.emulator.server import EmulatorServer
from tools.simulation import Arrival, Simulation

pytestmark = pytest.mark.integration

MI = "5d2e6b1a-7c4f-4e39-8a1d-0b9c8d7e6f50"  # the app's identity in the emulator's fixture
CANARIES = ("canary-user-31c9@private.example", "CANARY-HOST-77", "evt_CANARY0000000000000001", "canary-pii-value")


@pytest.fixture
def recorded(
    env: Env, emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch, sim: Simulation
) -> Iterator[tuple[Simulation, InMemorySpanExporter, InMemoryMetricReader]]:
    """The pipeline with hunting on, its telemetry kept in memory."""
    monkeypatch.setenv("IDENTITY_ENDPOINT", f"{emulator.url}/msi/token")
    monkeypatch.setenv("IDENTITY_HEADER", emulator.state.vault.identity_header)
    monkeypatch.setenv("AZURE_CLIENT_ID", MI)
    monkeypatch.setenv("HUNTING_INGESTION_ENDPOINT", emulator.url)
    monkeypatch.setenv("HUNTING_DCR_IMMUTABLE_ID", emulator.state.logs.dcr_id)
    monkeypatch.setenv("HUNTING_EVENT_TYPES", "interaction.policy_violated,interaction.created")
    monkeypatch.setenv("HUNTING_QUEUE_NAME", f"{env.queue}-hunting")
    rewire(sim)
    spans, reader = InMemorySpanExporter(), InMemoryMetricReader()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    telemetry.install(tracer_provider, MeterProvider(metric_readers=[reader]))
    yield sim, spans, reader
    telemetry.reset()


def rewire(sim: Simulation) -> None:
    """The settings changed: build the app again, on the simulation's clock and sender."""
    wiring.reset()
    wiring.use(clock=sim.clock, sender=sim.sender)


def points(reader: InMemoryMetricReader) -> dict[tuple[str, frozenset[tuple[str, Any]]], Any]:
    """Every data point: (metric, attributes) → value (a histogram: its count)."""
    out: dict[tuple[str, frozenset[tuple[str, Any]]], Any] = {}
    data = reader.get_metrics_data()
    for rm in data.resource_metrics if data else []:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                for p in metric.data.data_points:
                    value = p.value if isinstance(p, NumberDataPoint) else p.count
                    out[(metric.name, frozenset((p.attributes or {}).items()))] = value
    return out


def of(found: dict[tuple[str, frozenset[tuple[str, Any]]], Any], name: str) -> dict[frozenset[tuple[str, Any]], Any]:
    return {attrs: v for (metric, attrs), v in found.items() if metric == name}


def test_pipeline_metrics_and_one_trace_from_webhook_to_alert(
    recorded: tuple[Simulation, InMemorySpanExporter, InMemoryMetricReader], emulator: EmulatorServer
) -> None:
    sim, spans, reader = recorded
    events = [json.loads(sample("policy_violated")), json.loads(sample("created_not_forwarded"))]
    sim.run([Arrival(0, events)])
    assert ship_rows().sent == 2
    assert len(emulator.state.alerts) == 1
    found = points(reader)

    assert of(found, "noxys.events.received") == {
        frozenset({("outcome", "accepted")}): 1,
        frozenset({("outcome", "ignored")}): 1,
    }
    assert of(found, "noxys.events.delivered") == {frozenset({("outcome", "alert_created")}): 1}
    assert of(found, "noxys.alerts.created") == {frozenset(): 1}
    assert of(found, "noxys.delivery.latency") == {frozenset(): 1}  # one observation
    assert of(found, "noxys.hunting.rows_shipped") == {frozenset(): 2}
    calls = of(found, "noxys.defender.calls")
    assert calls[frozenset({("api", "alerts.create"), ("status", "200")})] == 1
    assert calls[frozenset({("api", "hunting"), ("status", "200")})] >= 1
    assert sum(calls.values()) == len(emulator.state.calls)  # every call counted, none twice

    finished: list[ReadableSpan] = list(spans.get_finished_spans())
    (webhook,) = [s for s in finished if s.kind == SpanKind.SERVER]
    (delivery,) = [s for s in finished if s.name == "noxys.deliver"]
    defender = [s for s in finished if s.kind == SpanKind.CLIENT]
    assert webhook.context is not None and delivery.context is not None and delivery.parent is not None
    assert delivery.context.trace_id == webhook.context.trace_id  # one trace, through the queue message
    assert delivery.parent.span_id == webhook.context.span_id
    assert {s.name for s in defender} >= {"defender alerts.create", "defender hunting"}
    assert all(s.parent is not None and s.parent.span_id == delivery.context.span_id for s in defender)
    assert dict(delivery.attributes or {})["noxys.outcome"] == "alert_created"
    latency = dict(delivery.attributes or {})["noxys.latency"]
    assert isinstance(latency, float) and latency >= 0
    assert dict(webhook.attributes or {})["noxys.outcome"] == "accepted"


def test_refusals_are_counted_by_reason_and_delivery_outcomes_by_kind(
    recorded: tuple[Simulation, InMemorySpanExporter, InMemoryMetricReader],
) -> None:
    import requests

    sim, _, reader = recorded
    body = sample("policy_violated")
    url = f"http://127.0.0.1:{sim.host.http_port}/api/noxys/events"
    bad = signed_headers(body, secret="whsec_" + "QUJD" * 8)
    assert requests.post(url, data=body, headers=bad, timeout=30).status_code == 401
    assert requests.post(url, data=b"{}", headers={"Content-Type": "text/plain"}, timeout=30).status_code == 415
    no_device = json.loads(sample("coach_no_device"))
    sim.run([Arrival(0, [no_device])])
    found = points(reader)
    assert of(found, "noxys.events.received") == {
        frozenset({("outcome", "refused"), ("reason", "signature")}): 1,
        frozenset({("outcome", "refused"), ("reason", "media_type")}): 1,
        frozenset({("outcome", "accepted")}): 1,
    }
    assert of(found, "noxys.events.delivered") == {frozenset({("outcome", "no_device")}): 1}
    assert wiring.counters().totals(sim.clock.now())["ingest.refused.media_type"] == 1  # status sees it too


def test_coalesced_and_held_outcomes(
    recorded: tuple[Simulation, InMemorySpanExporter, InMemoryMetricReader], monkeypatch: pytest.MonkeyPatch
) -> None:
    sim, _, reader = recorded
    sim.run([Arrival(i * 10.0, [violation(i, policy="storm")]) for i in range(3)])  # one device, one policy
    monkeypatch.setenv("INTEGRATION_ENABLED", "false")
    rewire(sim)
    sim.run([Arrival(0, [violation(9)])])
    assert of(points(reader), "noxys.events.delivered") == {
        frozenset({("outcome", "alert_created")}): 1,
        frozenset({("outcome", "coalesced")}): 2,
        frozenset({("outcome", "held")}): 1,
    }
    assert of(points(reader), "noxys.alerts.created") == {frozenset(): 1}


def test_a_dead_letter_is_counted_and_defender_failures_by_status(
    recorded: tuple[Simulation, InMemorySpanExporter, InMemoryMetricReader],
    emulator: EmulatorServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sim, _, reader = recorded
    monkeypatch.setenv("MAX_EVENT_AGE_HOURS", "1")
    rewire(sim)
    emulator.state.faults.error_rate = 1.0  # Defender answers 503 to everything until the event is given up
    sim.run([Arrival(0, [violation(1)])])
    found = points(reader)
    assert of(found, "noxys.events.delivered") == {frozenset({("outcome", "dead_letter")}): 1}
    calls = of(found, "noxys.defender.calls")
    assert set(calls) == {frozenset({("api", "machines"), ("status", "503")})}
    assert calls[frozenset({("api", "machines"), ("status", "503")})] == emulator.state.faults.injected["503"]


def test_response_actions_by_action_and_state(
    recorded: tuple[Simulation, InMemorySpanExporter, InMemoryMetricReader],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    sim, _, reader = recorded
    rule = {
        "name": "Tag and isolate on a violation",
        "when": {"event_types": ["interaction.policy_violated"]},
        "then": [{"action": "tag_device", "tag": "NoxysRisk"}, {"action": "isolate", "isolation_type": "Selective"}],
        "dry_run": False,
    }
    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps({"rules": [rule], "limits": {"max_isolations_per_hour": 5}}))
    monkeypatch.setenv("RESPONSE_RULES_FILE", str(rules))
    rewire(sim)
    strong = {"hostname": "ALICE-LAPTOP", "fqdn": "alice-laptop.acme.local"}  # isolation needs two identifiers
    sim.run([Arrival(0, [violation(1, device=strong)])])
    actions = of(points(reader), "noxys.response.actions")
    assert actions[frozenset({("action", "tag_device"), ("state", "done")})] == 1
    assert actions[frozenset({("action", "isolate"), ("state", "sent")})] == 1
    assert actions[frozenset({("action", "isolate"), ("state", "succeeded")})] == 1  # followed to its end


def test_quota_waits_are_timed_per_api(recorded: tuple[Simulation, InMemorySpanExporter, InMemoryMetricReader]) -> None:
    sim, _, reader = recorded
    sim.run([Arrival(0, [violation(i, policy=str(i)) for i in range(20)])])  # over 15 alerts a minute
    waits = of(points(reader), "noxys.quota.wait")
    assert waits.get(frozenset({("api", "alerts.create")}), 0) >= 5
    delivered = of(points(reader), "noxys.events.delivered")
    assert delivered == {frozenset({("outcome", "alert_created")}): 20}  # waits are not outcomes


def test_the_health_timer_sends_its_numbers(
    recorded: tuple[Simulation, InMemorySpanExporter, InMemoryMetricReader],
    emulator: EmulatorServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sim, _, reader = recorded
    (timer,) = [t for t in sim.host.timers if t.name == "health_check"]
    sim.host.fire_timer(timer)
    found = points(reader)
    assert of(found, "noxys.health.checks") == {frozenset({("result", "ok")}): 1}
    assert of(found, "noxys.queue.depth") == {frozenset(): 0}
    assert of(found, "noxys.poison.depth") == {frozenset(): 0}
    assert of(found, "noxys.response.circuits_open") == {frozenset(): 0}
    expires = emulator.state.clients[(EMULATOR_TENANT, EMULATOR_CLIENT)].secret_expires
    assert expires is not None
    days = round((expires - sim.clock.now()).total_seconds() / 86400, 2)  # what Graph says, as the check saw it
    assert of(found, "noxys.secret.days_left") == {frozenset({("secret", "entra")}): days}
    monkeypatch.setenv("DEFENDER_CLIENT_SECRET", "a-wrong-secret")  # Entra refuses the app: the check fails
    rewire(sim)
    sim.host.fire_timer(timer)
    checks = of(points(reader), "noxys.health.checks")  # the in-memory reader sums since the start
    assert checks == {frozenset({("result", "ok")}): 1, frozenset({("result", "failing")}): 1}


def test_no_attribute_carries_a_user_device_id_or_pii(
    recorded: tuple[Simulation, InMemorySpanExporter, InMemoryMetricReader], emulator: EmulatorServer
) -> None:
    sim, spans, reader = recorded
    user, host, event_id, value = CANARIES
    doc = json.loads(sample("policy_violated"))
    doc["id"] = event_id
    interaction = doc["data"]["interaction"]
    interaction["user_email"], interaction["device"]["hostname"] = user, host
    interaction["classifications"][0]["value"] = value
    sim.run([Arrival(0, [doc])])
    ship_rows()
    assert emulator.state.logs.rows  # the canaries did travel through the pipeline
    exported = [repr(sorted(attrs)) for (_, attrs) in points(reader)]
    for s in spans.get_finished_spans():
        exported += [s.name, repr(dict(s.attributes or {})), repr([dict(e.attributes or {}) for e in s.events])]
    text = "\n".join(exported)
    (alert,) = emulator.state.alerts
    ids = [alert["id"], alert["machineId"], str(alert["incidentId"]), interaction["device"]["aad_device_id"]]
    assert any(str(alert["incidentId"]) in c["path"] for c in emulator.state.calls)  # an id did reach a URL
    tokens = set(re.findall(r"[\w@.-]+", text))
    for canary in (*CANARIES, *ids):
        assert canary not in tokens  # a number (the incident id) only as a whole token: 0.1001 s is no leak
        assert canary.isdigit() or canary not in text


def test_the_exporters_real_traffic_reaches_application_insights(env: Env, emulator: EmulatorServer) -> None:
    """The distro, configured only from the app settings the infra sets, sends the webhook's
    request, its Defender calls and the metrics to /v2.1/track with a managed-identity token."""
    insights = emulator.state.insights
    child_env = {
        **os.environ,
        **env.values,
        "APPLICATIONINSIGHTS_CONNECTION_STRING": insights.connection_string(emulator.url),
        "APPLICATIONINSIGHTS_AUTHENTICATION_STRING": f"ClientId={MI};Authorization=AAD",
        "IDENTITY_ENDPOINT": f"{emulator.url}/msi/token",
        "IDENTITY_HEADER": emulator.state.vault.identity_header,
        # no calls to Microsoft's own endpoints from a test (SDK statistics, dynamic configuration)
        "APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL": "true",
        "APPLICATIONINSIGHTS_SDKSTATS_DISABLED": "true",
        "APPLICATIONINSIGHTS_CONTROLPLANE_DISABLED": "true",
    }
    body = sample("policy_violated")
    script = (
        "import json, sys\n"
        "from shared import telemetry, wiring\n"
        "from shared.functions import forward, ingest\n"
        "headers = json.loads(sys.argv[1])\n"
        "body = sys.stdin.buffer.read()\n"
        "assert ingest.handle(body, headers).status_code == 202\n"
        "q = wiring.queue(wiring.settings().events_queue_name)\n"
        "for m in q.receive_messages():\n"
        "    forward.process(m.content)\n"
        "telemetry.flush()\n"
        "print(telemetry.enabled())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, json.dumps(signed_headers(body))],
        input=body,
        env=child_env,
        cwd=ROOT,
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    assert done.stdout.decode().strip() == "True"
    assert insights.calls and all(c["accepted"] == c["items"] for c in insights.calls)

    (request,) = [r for r in insights.of_type("RequestData") if r["name"] == "POST /api/noxys/events"]
    assert request["properties"]["noxys.outcome"] == "accepted" and request["responseCode"] == "202"
    consumer = [r for r in insights.of_type("RequestData") if r["name"] == "noxys.deliver"]
    dependencies = insights.of_type("RemoteDependencyData")
    assert {d["name"] for d in dependencies} >= {"defender alerts.create"}
    operations = {i["tags"]["ai.operation.id"] for i in insights.items if i["data"]["baseType"] != "MetricData"}
    assert len(operations) == 1 and len(consumer) == 1  # one operation: the webhook, its delivery, its calls
    assert float(consumer[0]["properties"]["noxys.latency"]) >= 0  # what the workbook's p50 / p95 read
    metrics = {
        (m["name"], json.dumps(d.get("properties", {}), sort_keys=True)): m["value"]
        for d in insights.of_type("MetricData")
        for m in d["metrics"]
    }
    assert metrics[("noxys.events.received", '{"outcome": "accepted"}')] == 1
    assert metrics[("noxys.events.delivered", '{"outcome": "alert_created"}')] == 1
    assert metrics[("noxys.alerts.created", "{}")] == 1


def test_the_stand_in_refuses_what_application_insights_refuses(emulator: EmulatorServer) -> None:
    import requests

    insights = emulator.state.insights
    url, ca = f"{emulator.url}/v2.1/track", str(emulator.ca_file)
    item = {"name": "x", "time": "2026-03-20T14:00:00Z", "iKey": insights.instrumentation_key,
            "data": {"baseType": "EventData", "baseData": {"name": "x"}}}  # fmt: skip
    assert requests.post(url, json=[item], timeout=30, verify=ca).status_code == 401  # local auth is off
    token = requests.get(
        f"{emulator.url}/msi/token",
        params={"resource": "https://monitor.azure.com", "client_id": MI, "api-version": "2019-08-01"},
        headers={"X-IDENTITY-HEADER": emulator.state.vault.identity_header},
        timeout=30,
        verify=ca,
    ).json()["access_token"]
    auth = {"Authorization": f"Bearer {token}"}
    wrong_key = {**item, "iKey": "00000000-0000-0000-0000-000000000000"}
    answer = requests.post(url, json=[item, wrong_key], headers=auth, timeout=30, verify=ca)
    assert answer.status_code == 206
    assert answer.json()["errors"] == [{"index": 1, "statusCode": 400, "message": "Invalid instrumentation key"}]
    assert requests.post(url, json=[wrong_key], headers=auth, timeout=30, verify=ca).status_code == 400
    assert insights.items == [item]


LOCAL_SCRIPT = (
    "from datetime import UTC, datetime\n"
    "from shared import telemetry\n"
    "with telemetry.span('POST /api/noxys/events', 'server', route='POST /api/noxys/events') as s:\n"
    "    telemetry.Tally(lambda *a: None, lambda: datetime.now(UTC)).count('ingest.accepted')\n"
    "telemetry.flush()\n"
    "print('enabled', telemetry.enabled())\n"
)


def _local_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != telemetry.CONNECTION_STRING}
    return {**env, **extra}


def test_command_1_prints_spans_and_metrics_to_the_console() -> None:
    done = subprocess.run(
        [sys.executable, "-c", LOCAL_SCRIPT],
        env=_local_env(NOXYS_TELEMETRY="console"),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "enabled True" in done.stdout
    assert '"name": "POST /api/noxys/events"' in done.stdout and '"name": "noxys.events.received"' in done.stdout


def test_command_1_sends_to_a_local_otlp_endpoint() -> None:
    """What the OTLP exporter really sends (protobuf over HTTP) to ``OTEL_EXPORTER_OTLP_ENDPOINT``."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from threading import Thread

    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    received: list[tuple[str, str, bytes]] = []

    class Collector(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((self.path, self.headers["Content-Type"], body))
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Collector)
    Thread(target=server.serve_forever, daemon=True).start()
    try:
        endpoint = f"http://127.0.0.1:{server.server_address[1]}"
        subprocess.run(
            [sys.executable, "-c", LOCAL_SCRIPT],
            env=_local_env(OTEL_EXPORTER_OTLP_ENDPOINT=endpoint),
            cwd=ROOT,
            capture_output=True,
            timeout=60,
            check=True,
        )
    finally:
        server.shutdown()
    by_path = {path: (kind, body) for path, kind, body in received}
    assert by_path["/v1/traces"][0] == by_path["/v1/metrics"][0] == "application/x-protobuf"
    traces = ExportTraceServiceRequest.FromString(by_path["/v1/traces"][1])
    spans = [s for r in traces.resource_spans for ss in r.scope_spans for s in ss.spans]
    assert [s.name for s in spans] == ["POST /api/noxys/events"]
    metrics = ExportMetricsServiceRequest.FromString(by_path["/v1/metrics"][1])
    names = {m.name for r in metrics.resource_metrics for sm in r.scope_metrics for m in sm.metrics}
    assert "noxys.events.received" in names
