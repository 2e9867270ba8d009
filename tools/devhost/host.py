"""A small local Functions host for development and end-to-end tests.

Azure Functions Core Tools cannot be installed everywhere (its install downloads the .NET host).
This host imports ``function_app`` and reproduces the documented host behaviours the connector
relies on — and nothing more:

* HTTP: routes under ``/api`` (``extensions.http.routePrefix``), methods, route parameters.
  Like ``func start``, auth levels are not enforced locally.
* Queue triggers: poll with back-off up to ``maxPollingInterval``, ``batchSize`` messages per
  poll processed concurrently, each message base64-decoded (``messageEncoding``) — a message
  that is not base64 goes straight to ``<queue>-poison``; on failure the message becomes visible
  again after ``visibilityTimeout`` and, once its dequeue count reaches ``maxDequeueCount``, is
  moved to ``<queue>-poison``. Settings are read from host.json.
* Timer triggers: six-field NCRONTAB schedules, ``%SETTING%`` resolved from the environment.

:meth:`DevHost.poll_once` and :meth:`DevHost.drain` run the same polling code synchronously, so
tests wait for work to be *done* instead of sleeping.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import functools
import json
import logging
import os
import re
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import azure.functions as func
from azure.functions.queue import QueueMessage
from azure.functions.timer import TimerRequest

from shared.storage import AZURITE_CONNECTION

log = logging.getLogger("devhost")
LOCK_SECONDS = 600  # the host keeps a message invisible while it runs (and renews); 10 min here


class HostError(Exception):
    """The app cannot be hosted as configured (an unresolved %SETTING%, a bad host.json)."""


def timespan(text: str) -> float:
    """host.json TimeSpan 'hh:mm:ss' (optionally 'd.hh:mm:ss') to seconds."""
    days = 0
    if text.count(".") and text.index(".") < text.index(":"):
        d, text = text.split(".", 1)
        days = int(d)
    h, m, s = text.split(":")
    return days * 86400 + int(h) * 3600 + int(m) * 60 + float(s)


IDLE_ROUNDS_MAX = 8  # drain(): rounds an empty queue waits between polls at most


@dataclass(frozen=True)
class QueueSettings:
    batch_size: int = 16
    new_batch_threshold: int = 8
    max_dequeue_count: int = 5
    visibility_timeout: float = 0.0
    max_polling_interval: float = 60.0
    message_encoding: str = "base64"

    @classmethod
    def from_host_json(cls, host: Mapping[str, Any]) -> QueueSettings:
        q = host.get("extensions", {}).get("queues", {})
        batch = int(q.get("batchSize", 16))
        return cls(
            batch_size=batch,
            new_batch_threshold=int(q.get("newBatchThreshold", batch // 2)),
            max_dequeue_count=int(q.get("maxDequeueCount", 5)),
            visibility_timeout=timespan(q.get("visibilityTimeout", "00:00:00")),
            max_polling_interval=timespan(q.get("maxPollingInterval", "00:01:00")),
            message_encoding=str(q.get("messageEncoding", "base64")).lower(),
        )


@dataclass
class HttpFunction:
    name: str
    pattern: re.Pattern[str]
    methods: set[str]
    arg_name: str
    fn: Callable[..., Any]


@dataclass
class QueueFunction:
    name: str
    queue: str
    connection: str
    arg_name: str
    fn: Callable[..., Any]


@dataclass
class TimerFunction:
    name: str
    schedule: str
    arg_name: str
    fn: Callable[..., Any]


_INDEXED: dict[int, list[Any]] = {}


def index_functions(app: func.FunctionApp) -> list[Any]:
    """``app.get_functions()`` once per app, as the worker indexes once per process (a second
    call raises "does not have a unique function name")."""
    if id(app) not in _INDEXED:
        _INDEXED[id(app)] = app.get_functions()
    return _INDEXED[id(app)]


def _route_regex(route: str) -> re.Pattern[str]:
    out = ""
    for part in route.strip("/").split("/"):
        m = re.fullmatch(r"\{(\w+)(?::[^}?]*)?(\?)?\}", part)
        if m:
            out += f"(?:/(?P<{m.group(1)}>[^/]+))" + ("?" if m.group(2) else "")
        else:
            out += "/" + re.escape(part)
    return re.compile(out + "/?$", re.IGNORECASE)


class DevHost:
    def __init__(
        self,
        app: func.FunctionApp,
        *,
        root: Path,
        env: Mapping[str, str] | None = None,
        http_port: int = 7071,
        lock_seconds: float = LOCK_SECONDS,
    ) -> None:
        self.env = env if env is not None else os.environ
        host_json = json.loads((root / "host.json").read_text())
        self.queue_settings = QueueSettings.from_host_json(host_json)
        if self.queue_settings.message_encoding not in ("base64", "none"):
            raise HostError(f"host.json messageEncoding {self.queue_settings.message_encoding!r} is not base64 or none")
        self.route_prefix = host_json.get("extensions", {}).get("http", {}).get("routePrefix", "api")
        self.http: list[HttpFunction] = []
        self.queues: list[QueueFunction] = []
        self.timers: list[TimerFunction] = []
        for f in index_functions(app):
            self._register(f)
        self.http_port = http_port
        self.lock_seconds = lock_seconds  # the real host: 10 min, renewed; shorter only to test crashes
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._server: ThreadingHTTPServer | None = None
        self._clients: dict[tuple[str, str], Any] = {}
        self._pool = ThreadPoolExecutor(
            max_workers=self.queue_settings.batch_size + self.queue_settings.new_batch_threshold,
            thread_name_prefix="devhost-queue",
        )

    # ------------------------------------------------------------------ indexing
    def resolve(self, value: str) -> str:
        """'%NAME%' → the app setting, failing like the host does when it is not set."""

        def sub(m: re.Match[str]) -> str:
            name = m.group(1)
            if not self.env.get(name):
                raise HostError(f"'%{name}%' does not resolve to a value (set the app setting {name})")
            return self.env[name]

        return re.sub(r"%([^%]+)%", sub, value)

    def _register(self, f: Any) -> None:
        trigger = f.get_trigger()
        spec = trigger.get_dict_repr()
        name, fn = f.get_function_name(), f.get_user_function()
        kind = spec["type"]
        if kind == "httpTrigger":
            route = spec.get("route") or name
            methods = {str(getattr(m, "value", m)).upper() for m in spec.get("methods") or ["GET", "POST"]}
            self.http.append(
                HttpFunction(name, _route_regex(f"{self.route_prefix}/{route}"), methods, spec["name"], fn)
            )
        elif kind == "queueTrigger":
            self.queues.append(
                QueueFunction(
                    name,
                    self.resolve(spec["queueName"]),
                    spec.get("connection") or "AzureWebJobsStorage",
                    spec["name"],
                    fn,
                )
            )
        elif kind == "timerTrigger":
            schedule = self.resolve(spec["schedule"])
            if len(schedule.split()) != 6:
                raise HostError(f"function {name}: schedule {schedule!r} is not a six-field NCRONTAB expression")
            self.timers.append(TimerFunction(name, schedule, spec["name"], fn))
        else:
            raise HostError(f"function {name}: trigger {kind} is not supported by the dev host")

    # ------------------------------------------------------------------ lifecycle
    def start(self, *, http: bool = True, queues: bool = True, timers: bool = True) -> DevHost:
        if http:
            self._server = ThreadingHTTPServer(("127.0.0.1", self.http_port), _handler(self))
            self.http_port = self._server.server_port
            self._spawn("devhost-http", functools.partial(self._server.serve_forever, poll_interval=0.05))
        if queues:
            for qf in self.queues:
                self._spawn(f"devhost-poll-{qf.name}", functools.partial(self._poll_loop, qf))
        if timers:
            for tf in self.timers:
                self._spawn(f"devhost-timer-{tf.name}", functools.partial(self._timer_loop, tf))
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._server:
            self._server.shutdown()
            self._server.server_close()
        for t in self._threads:
            t.join(timeout=10)
        self._pool.shutdown(wait=True)

    def _spawn(self, name: str, target: Callable[[], None]) -> None:
        t = threading.Thread(target=target, name=name, daemon=True)
        t.start()
        self._threads.append(t)

    # ------------------------------------------------------------------ HTTP
    def handle_http(
        self, method: str, target: str, headers: Mapping[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        parts = urlsplit(target)
        for hf in self.http:
            m = hf.pattern.match(parts.path)
            if not m:
                continue
            if method.upper() not in hf.methods:
                return 405, {"Content-Type": "text/plain"}, b"method not allowed"
            req = func.HttpRequest(
                method.upper(),
                f"http://127.0.0.1:{self.http_port}{target}",
                headers=dict(headers),
                params=dict(parse_qsl(parts.query)),
                route_params={k: v for k, v in m.groupdict().items() if v is not None},
                body=body,
            )
            try:
                resp = hf.fn(**{hf.arg_name: req})
            except Exception:
                log.exception("function %s failed", hf.name)
                return 500, {"Content-Type": "text/plain"}, b"function failed (see host log)"
            out = {k: v for k, v in resp.headers.items()}
            if resp.mimetype:
                out.setdefault("Content-Type", f"{resp.mimetype}; charset={resp.charset or 'utf-8'}")
            return resp.status_code, out, resp.get_body()
        return 404, {"Content-Type": "text/plain"}, b"no function for this route"

    # ------------------------------------------------------------------ queues
    def _client(self, connection: str, queue: str) -> Any:
        from azure.storage.queue import QueueClient

        key = (connection, queue)
        if key not in self._clients:
            conn = self.env.get(connection)
            if not conn:
                raise HostError(f"connection setting {connection} is not set")
            if conn.strip().rstrip(";").lower() == "usedevelopmentstorage=true":
                conn = AZURITE_CONNECTION
            # Raw client (no encode/decode policy): the host itself decodes base64, as Azure does.
            self._clients[key] = QueueClient.from_connection_string(conn, queue, use_env_settings=False)
        return self._clients[key]

    def poll_once(self, qf: QueueFunction) -> int:
        """Receive one batch and run it to completion; returns how many messages were handled."""
        from azure.core.exceptions import ResourceNotFoundError

        client = self._client(qf.connection, qf.queue)
        try:
            pages = client.receive_messages(
                messages_per_page=self.queue_settings.batch_size, visibility_timeout=int(self.lock_seconds)
            ).by_page()
            batch = list(next(pages, []))
        except ResourceNotFoundError:
            return 0
        list(self._pool.map(lambda m: self._dispatch(qf, client, m), batch))
        return len(batch)

    def drain(self, *, max_rounds: int = 1000) -> int:
        """Poll every queue function until all report an empty poll; returns messages handled.

        As the host does, a queue found empty is polled less often (every 2, 4, then 8 rounds)
        until it has messages again; the drain ends only after a round that polled every queue
        and found nothing."""
        total, skip, backoff = 0, dict.fromkeys(range(len(self.queues)), 0), dict.fromkeys(range(len(self.queues)), 1)
        for _ in range(max_rounds):
            handled, everyone = 0, True
            for i, qf in enumerate(self.queues):
                if skip[i]:
                    skip[i], everyone = skip[i] - 1, False
                    continue
                n = self.poll_once(qf)
                handled += n
                skip[i], backoff[i] = (0, 1) if n else (backoff[i], min(backoff[i] * 2, IDLE_ROUNDS_MAX))
            total += handled
            if handled == 0:
                if everyone:
                    return total
                skip = dict.fromkeys(skip, 0)  # nothing anywhere: look at every queue before saying so
        raise HostError(f"queues still not empty after {max_rounds} polls")

    def _dispatch(self, qf: QueueFunction, client: Any, msg: Any) -> None:
        count = int(msg.dequeue_count or 1)
        raw = msg.content
        if self.queue_settings.message_encoding == "base64":
            try:
                body = base64.b64decode(raw, validate=True)
            except (binascii.Error, ValueError, TypeError):
                log.error("%s: message %s is not valid base64; moving it to %s-poison", qf.name, msg.id, qf.queue)
                self._poison(qf, client, msg)
                return
        else:
            body = raw.encode("utf-8") if isinstance(raw, str) else raw
        if count > self.queue_settings.max_dequeue_count:
            self._poison(qf, client, msg)
            return
        message = QueueMessage(
            id=msg.id,
            body=body,
            dequeue_count=count,
            pop_receipt=msg.pop_receipt,
            insertion_time=msg.inserted_on,
            expiration_time=msg.expires_on,
            time_next_visible=msg.next_visible_on,
        )
        try:
            qf.fn(**{qf.arg_name: message})
        except Exception as exc:
            if count >= self.queue_settings.max_dequeue_count:
                log.error(
                    "%s: message %s failed %d times (%s); moving it to %s-poison", qf.name, msg.id, count, exc, qf.queue
                )
                self._poison(qf, client, msg)
            else:
                log.warning(
                    "%s: message %s failed (try %d of %d): %s",
                    qf.name,
                    msg.id,
                    count,
                    self.queue_settings.max_dequeue_count,
                    exc,
                )
                client.update_message(msg, visibility_timeout=int(self.queue_settings.visibility_timeout))
            return
        client.delete_message(msg)

    def _poison(self, qf: QueueFunction, client: Any, msg: Any) -> None:
        from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError

        poison = self._client(qf.connection, f"{qf.queue}-poison")
        try:
            poison.send_message(msg.content)
        except ResourceNotFoundError:
            with contextlib.suppress(ResourceExistsError):
                poison.create_queue()
            poison.send_message(msg.content)
        client.delete_message(msg)

    def _poll_loop(self, qf: QueueFunction) -> None:
        delay = 0.1
        while not self._stop.is_set():
            try:
                handled = self.poll_once(qf)
            except Exception as exc:  # storage down: keep polling, as the host does
                log.warning("%s: polling %s failed: %s", qf.name, qf.queue, exc.__class__.__name__)
                handled = 0
            delay = 0.1 if handled else min(delay * 2, self.queue_settings.max_polling_interval)
            self._stop.wait(0 if handled else delay)

    # ------------------------------------------------------------------ timers
    def next_fire(self, tf: TimerFunction, after: datetime) -> datetime:
        from croniter import croniter

        result: datetime = croniter(tf.schedule, after, second_at_beginning=True).get_next(datetime)
        return result

    def fire_timer(self, tf: TimerFunction, *, past_due: bool = False) -> None:
        tf.fn(**{tf.arg_name: TimerRequest(past_due=past_due)})

    def _timer_loop(self, tf: TimerFunction) -> None:
        while not self._stop.is_set():
            now = datetime.now(UTC)
            due = self.next_fire(tf, now)
            if self._stop.wait((due - now).total_seconds()):
                return
            try:
                self.fire_timer(tf)
            except Exception:
                log.exception("timer %s failed", tf.name)


MAX_REQUEST_BYTES = 100 * 1024 * 1024  # the Functions host's request limit (100 MB)


class BadRequestBody(Exception):
    """The body cannot be read as the request framing says (the host answers 400 or 413)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


def read_chunked(rfile: Any, limit: int = MAX_REQUEST_BYTES) -> bytes:
    """A ``Transfer-Encoding: chunked`` body (RFC 9112 §7.1), de-chunked as the Functions host
    does before the function sees it: Noxys (or any client streaming its body) may send one, and
    the signature is over the de-chunked bytes. Chunk extensions and trailers are read and dropped."""
    body = bytearray()
    while True:
        line = rfile.readline(1024)
        try:
            size = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise BadRequestBody(400, "malformed chunk size") from None
        if size < 0:
            raise BadRequestBody(400, "malformed chunk size")
        if len(body) + size > limit:
            raise BadRequestBody(413, f"request body over {limit} bytes")
        if size == 0:
            while rfile.readline(8192) not in (b"\r\n", b"\n", b""):
                pass  # trailer fields
            return bytes(body)
        chunk = rfile.read(size)
        if len(chunk) != size or rfile.readline(3) not in (b"\r\n", b"\n"):
            raise BadRequestBody(400, "truncated chunk")
        body += chunk


def request_body(transfer_encoding: str | None, content_length: str | None, rfile: Any) -> bytes:
    """The request's body as the function sees it, by its framing (chunked or Content-Length)."""
    coding = (transfer_encoding or "").split(",")[-1].strip().lower()
    if coding == "chunked":
        return read_chunked(rfile)
    if coding:
        raise BadRequestBody(501, f"Transfer-Encoding {coding} is not supported")
    try:
        length = int(content_length or 0)
    except ValueError:
        raise BadRequestBody(400, "malformed Content-Length") from None
    if length > MAX_REQUEST_BYTES:
        raise BadRequestBody(413, f"request body over {MAX_REQUEST_BYTES} bytes")
    return bytes(rfile.read(length)) if length > 0 else b""


def _handler(host: DevHost) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            try:
                body = request_body(
                    self.headers.get("Transfer-Encoding"), self.headers.get("Content-Length"), self.rfile
                )
            except BadRequestBody as exc:
                self.close_connection = True  # the framing is lost: the connection cannot be reused
                error = {"error": "bad_request_body", "message": str(exc)}
                self._reply(exc.status, {"Content-Type": "application/json"}, json.dumps(error).encode())
                return
            headers = {k: v for k, v in self.headers.items() if k.lower() != "transfer-encoding"}
            self._reply(*host.handle_http(self.command, self.path, headers, body))

        def _reply(self, status: int, headers: Mapping[str, str], payload: bytes) -> None:
            self.send_response(status)
            for k, v in headers.items():
                if k.lower() != "content-length":
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

        def log_message(self, format: str, *args: Any) -> None:
            log.info("http %s", format % args)

    return Handler
