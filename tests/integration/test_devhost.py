"""The dev host reproduces the Functions host semantics the connector relies on."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import azure.functions as func
import pytest
import requests

from tests.support import ROOT, sample, signed_headers
from tools.azurite import Azurite
from tools.devhost.host import DevHost, HostError, QueueSettings, timespan
from tools.simulation import Simulation

pytestmark = pytest.mark.integration


def make_app(calls: list[int], fail: bool) -> func.FunctionApp:
    app = func.FunctionApp()

    @app.queue_trigger(arg_name="msg", queue_name="%Q%", connection="STORE")
    def worker(msg: func.QueueMessage) -> None:
        calls.append(msg.dequeue_count or 0)
        assert msg.get_body() == b'{"hello": "world"}'
        if fail:
            raise RuntimeError("boom")

    @app.route(route="items/{item_id}", methods=["GET"])
    def item(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse(
            json.dumps({"id": req.route_params["item_id"], "q": req.params.get("q")}), mimetype="application/json"
        )

    @app.timer_trigger(arg_name="t", schedule="%SCHED%", run_on_startup=False)
    def tick(t: func.TimerRequest) -> None:
        calls.append(-1)

    return app


@pytest.fixture
def root(tmp_path: Path) -> Path:
    host = json.loads((ROOT / "host.json").read_text())
    host["extensions"]["queues"]["visibilityTimeout"] = "00:00:00"  # retry at once, no waiting in tests
    (tmp_path / "host.json").write_text(json.dumps(host))
    return tmp_path


@pytest.fixture
def hostenv(azurite: Azurite) -> dict[str, str]:
    return {"STORE": azurite.connection_string, "Q": f"q-{uuid.uuid4().hex[:10]}", "SCHED": "0 */5 * * * *"}


@pytest.fixture
def qclient(azurite: Azurite, hostenv: dict[str, str]) -> Any:
    from azure.storage.queue import QueueClient, TextBase64EncodePolicy

    c = QueueClient.from_connection_string(
        azurite.connection_string, hostenv["Q"], message_encode_policy=TextBase64EncodePolicy()
    )
    c.create_queue()
    return c


def poison_contents(azurite: Azurite, queue: str) -> list[str]:
    from azure.storage.queue import QueueClient

    return [
        m.content
        for m in QueueClient.from_connection_string(azurite.connection_string, f"{queue}-poison").peek_messages(
            max_messages=10
        )
    ]


def test_host_json_settings_are_read() -> None:
    s = QueueSettings.from_host_json(json.loads((ROOT / "host.json").read_text()))
    assert (s.batch_size, s.new_batch_threshold, s.max_dequeue_count, s.message_encoding) == (4, 2, 5, "base64")
    assert (s.visibility_timeout, s.max_polling_interval) == (30, 2)
    assert timespan("1.02:03:04") == 93784


def test_successful_message_is_deleted(root: Path, hostenv: dict[str, str], qclient: Any, azurite: Azurite) -> None:
    calls: list[int] = []
    host = DevHost(make_app(calls, fail=False), root=root, env=hostenv)
    qclient.send_message('{"hello": "world"}')
    assert host.drain() == 1 and calls == [1]
    assert qclient.get_queue_properties().approximate_message_count == 0


def test_failing_message_tried_max_dequeue_count_times_then_poisoned(
    root: Path, hostenv: dict[str, str], qclient: Any, azurite: Azurite
) -> None:
    calls: list[int] = []
    host = DevHost(make_app(calls, fail=True), root=root, env=hostenv)
    qclient.send_message('{"hello": "world"}')
    host.drain()
    assert calls == [1, 2, 3, 4, 5]
    assert qclient.get_queue_properties().approximate_message_count == 0
    # moved as stored (still base64), so a replay re-enqueues it unchanged
    assert poison_contents(azurite, hostenv["Q"]) == [base64.b64encode(b'{"hello": "world"}').decode()]


def test_message_that_is_not_base64_goes_straight_to_poison(
    root: Path, hostenv: dict[str, str], azurite: Azurite, qclient: Any
) -> None:
    from azure.storage.queue import QueueClient

    calls: list[int] = []
    host = DevHost(make_app(calls, fail=False), root=root, env=hostenv)
    raw = QueueClient.from_connection_string(azurite.connection_string, hostenv["Q"])  # no encode policy
    raw.send_message('{"hello": "world"}')
    host.drain()
    assert calls == []
    assert poison_contents(azurite, hostenv["Q"]) == ['{"hello": "world"}']


def test_http_routes_params_and_methods(root: Path, hostenv: dict[str, str]) -> None:
    host = DevHost(make_app([], fail=False), root=root, env=hostenv, http_port=0).start(queues=False, timers=False)
    try:
        base = f"http://127.0.0.1:{host.http_port}"
        assert requests.get(f"{base}/api/items/42?q=x", timeout=10).json() == {"id": "42", "q": "x"}
        assert requests.post(f"{base}/api/items/42", timeout=10).status_code == 405
        assert requests.get(f"{base}/api/nothing", timeout=10).status_code == 404
    finally:
        host.stop()


def test_timer_schedule_is_ncrontab_with_seconds(root: Path, hostenv: dict[str, str]) -> None:
    calls: list[int] = []
    host = DevHost(make_app(calls, fail=False), root=root, env=hostenv)
    (tick,) = host.timers
    assert host.next_fire(tick, datetime(2026, 1, 1, 10, 7, 30, tzinfo=UTC)) == datetime(2026, 1, 1, 10, 10, tzinfo=UTC)
    host.fire_timer(tick)
    assert calls == [-1]


def test_unresolved_setting_fails_like_the_host(root: Path, hostenv: dict[str, str]) -> None:
    with pytest.raises(HostError, match="%SCHED%"):
        DevHost(make_app([], fail=False), root=root, env={k: v for k, v in hostenv.items() if k != "SCHED"})


def test_a_signed_chunked_request_is_de_chunked_like_the_azure_host(sim: Simulation) -> None:
    """Used to be a 401: the dev host read no body (no Content-Length) and the signature failed."""
    body = sample("policy_violated")
    url = f"http://127.0.0.1:{sim.host.http_port}/api/noxys/events"
    pieces = iter([body[:50], body[50:300], body[300:]])  # requests sends a generator chunked
    resp = requests.post(url, data=pieces, headers=signed_headers(body), timeout=30)
    assert resp.request.headers.get("Transfer-Encoding") == "chunked" and "Content-Length" not in resp.request.headers
    assert resp.status_code == 202, resp.text


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"zz\r\nabc\r\n0\r\n\r\n", 400),  # not a hexadecimal size
        (b"10\r\nabc", 400),  # shorter than announced, then the connection ends
        (b"7fffffff\r\n", 413),  # over the host's 100 MB
    ],
)
def test_a_malformed_chunked_body_is_a_clear_4xx(sim: Simulation, raw: bytes, status: int) -> None:
    import socket

    request = (
        b"POST /api/noxys/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n" + raw
    )
    with socket.create_connection(("127.0.0.1", sim.host.http_port), timeout=10) as conn:
        conn.sendall(request)
        conn.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    head, _, payload = answer.partition(b"\r\n\r\n")
    assert head.split()[1] == str(status).encode()
    assert json.loads(payload)["error"] == "bad_request_body"
