"""The reliability run: the connector as separate processes, under real faults, in real time.

A web process (the webhook) and a worker process (the queue triggers) run the dev host over real
Azurite with **on-disk persistence** and the TLS emulators. While events arrive, the run:

* kills the worker with **SIGKILL** right after it has sent a ``CreateAlertByReference`` (the
  emulator answers slowly, so the kill lands while the call is in flight: the alert exists in
  Defender and the ledger still says ``creating``) and starts a new worker;
* stops and restarts Azurite on the same ports and data folder (the webhook answers 503 and the
  sender retries, as Noxys would; the worker's storage calls fail and are retried);
* takes the token endpoint and Key Vault down for a few seconds each (tokens and secrets are
  short-lived in this run, so both are needed again during the outage);
* throws bursts of 429 with ``Retry-After`` and answers 10 % of Defender calls with 503;
* loses the answer of the first creates *after* the alert was made (a gateway's 502 or 504, a
  timeout, a connection reset), so the worker must find the alert instead of creating it again.

It then waits for every accepted event to reach a final ledger state and reports: events sent and
accepted, final ledger states, alerts, duplicates (a second ``CreateAlertByReference`` for an alert
that exists — the emulator counts Defender's silent merges — or two alerts for one event), the
create calls that made an alert (one per alert: none repeated after a lost answer), poison
messages and dead letters with their reasons, and **lost** events (accepted, yet in no final
state, no dead letter and no poison queue). Used by ``tests/integration/test_reliability.py``
(CI size) and ``bench/reliability.py`` (full size).
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import requests

from shared.webhook import sign
from tools import azurite as azurite_launcher
from tools.emulator.server import EmulatorServer
from tools.emulator.state import DefenderState

ROOT = Path(__file__).resolve().parents[1]
SECRET = "whsec_" + base64.b64encode(b"noxys-reliability-run-signing-key").decode()
IDENTITY = "5d2e6b1a-7c4f-4e39-8a1d-0b9c8d7e6f50"  # the fixture's managed identity (Key Vault reader)
HOSTS = {"ALICE-LAPTOP": "chatgpt", "BOB-WS-0042": "deepseek", "DAVE-MBP": "chatgpt", "ERIN-LAPTOP": "gemini"}
FINAL = {"alert_created", "coalesced", "no_device", "no_anchor", "dead_lettered"}
QUEUE, PRIORITY, PREFIX = "rel-events", "rel-events-priority", "Rel"


@dataclass(frozen=True)
class Plan:
    events: int = 48
    batches: int = 12
    policies: int = 2
    kills: int = 3
    azurite_restarts: int = 1
    error_rate: float = 0.1
    bursts_429: int = 2
    outage_seconds: float = 5.0
    lost_answers: int = 4  # the first creates' answers lost after the alert was made
    deadline_seconds: float = 300.0


@dataclass
class Report:
    sent: int = 0
    accepted: int = 0
    sender_retries: int = 0
    states: dict[str, int] = field(default_factory=dict)
    alerts: int = 0
    duplicates: int = 0
    creates_made: int = 0  # CreateAlertByReference calls that made an alert (whatever was answered)
    poison: int = 0
    dead_letters: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    kills: int = 0
    azurite_restarts: int = 0
    injected: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def lines(self) -> list[str]:
        return [
            f"events sent {self.sent}, accepted {self.accepted} (sender retries {self.sender_retries})",
            f"faults: worker SIGKILLs {self.kills}, Azurite restarts {self.azurite_restarts}, "
            f"emulator {dict(sorted(self.injected.items()))}",
            f"final ledger states {dict(sorted(self.states.items()))}",
            f"alerts {self.alerts}, create calls that made one {self.creates_made}, "
            f"duplicates {self.duplicates}, poison {self.poison}, "
            f"dead letters {len(self.dead_letters)}, lost {len(self.lost)}",
            *(f"  dead letter: {reason}" for reason in self.dead_letters),
            f"{self.seconds:.0f} s",
        ]


def _event(i: int, plan: Plan, now: datetime) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((ROOT / "samples" / "events" / "policy_violated.json").read_text())
    host = list(HOSTS)[i % len(HOSTS)]
    doc["id"] = f"evt_rel_{i:05d}"
    it = doc["data"]["interaction"]
    it.update(id=f"int_rel_{i:05d}", device={"hostname": host}, platform_id=HOSTS[host], platform_name=None)
    it["content_metadata"] = {}
    it["occurred_at"] = doc["created_at"] = (now - timedelta(seconds=20)).strftime("%Y-%m-%dT%H:%M:%SZ")
    policy = i // len(HOSTS) % plan.policies
    doc["data"]["policy"] = {"id": f"pol_rel_{policy}", "name": f"Reliability policy {policy}", "action": "block"}
    return doc


class Run:
    def __init__(self, plan: Plan, workdir: Path, *, log: Any = None) -> None:
        self.plan, self.workdir, self.log = plan, workdir, log or (lambda line: None)
        self.report = Report()
        self.ports = (azurite_launcher.free_port(), azurite_launcher.free_port(), azurite_launcher.free_port())
        self.store = azurite_launcher.start(location=workdir / "azurite", ports=self.ports)
        self.state = DefenderState()
        self.state.token_lifetime = 4  # tokens are needed again during the outages
        self.state.faults.latency, self.state.faults.latency_path = 1.5, "CreateAlertByReference"
        self.state.faults.error_rate = plan.error_rate
        self.state.faults.lose_answer, self.state.faults.lose_answer_as = plan.lost_answers, "502,timeout,504,reset"
        self.state.faults.lost_answer_delay = 6.0  # past the client's HTTP_TIMEOUT_SECONDS below
        self.state.vault.set("defender-client-secret", "emulator-client-secret", now=datetime.now(UTC))
        self.state.vault.set("noxys-signing-secret", SECRET, now=datetime.now(UTC))
        self.emulator = EmulatorServer(self.state, ca_file=workdir / "ca.pem").start()
        self.env = self._env()
        self.web_port = azurite_launcher.free_port()
        self.web = self._spawn("web", ["--http-port", str(self.web_port)])
        self.worker = self._spawn("worker", ["--queues", "--lock-seconds", "8"])

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DEFENDER_", "NOXYS_", "AzureWebJobs"))}
        env.update(self.emulator.connector_settings())
        env.update(
            {
                "PYTHONPATH": str(ROOT),
                "AzureWebJobsStorage": self.store.connection_string,
                "EVENTS_QUEUE_NAME": QUEUE,
                "EVENTS_PRIORITY_QUEUE_NAME": PRIORITY,
                "TABLE_PREFIX": PREFIX,
                "DEFENDER_CLIENT_SECRET": "",  # Key Vault wins
                "KEY_VAULT_URL": self.emulator.url,
                "IDENTITY_ENDPOINT": f"{self.emulator.url}/msi/token",
                "IDENTITY_HEADER": self.state.vault.identity_header,
                "AZURE_CLIENT_ID": IDENTITY,
                "SECRET_CACHE_SECONDS": "1",
                "RETRY_BASE_SECONDS": "1",
                "HTTP_TIMEOUT_SECONDS": "5",
                "ALERT_SEARCH_GRACE_SECONDS": "8",  # alerts are listed at once here
                "RETRY_MAX_SECONDS": "4",
                "DELIVERY_LEASE_SECONDS": "6",
                "COALESCE_NOTE_INTERVAL_SECONDS": "1",
                "HEALTH_SCHEDULE": "0 0 0 1 1 *",
                "HUNTING_SCHEDULE": "*/30 * * * * *",
            }
        )
        return env

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        out = (self.workdir / f"{name}.log").open("ab")
        proc = subprocess.Popen(
            [sys.executable, "-m", "tools.devhost", "--root", str(ROOT), *args],
            env=self.env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        self.log(f"{name} process started (pid {proc.pid})")
        return proc

    # ------------------------------------------------------------------ faults
    def kill_worker_mid_call(self, timeout: float = 60.0) -> bool:
        """SIGKILL the worker right after it sent CreateAlertByReference, then start a new one. Only a
        create answered 200 is a kill's target, so the kills and the lost 502/504 answers each stay
        their own fault (a worker killed while its answer is lost would never hear the 502)."""

        def answered() -> int:
            return sum(1 for c in self.state.calls_of("/api/alerts/CreateAlertByReference") if c["status"] == 200)

        seen = answered()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if answered() > seen:
                self.worker.send_signal(signal.SIGKILL)
                self.worker.wait()
                self.report.kills += 1
                self.log(f"worker SIGKILLed mid-call (kill {self.report.kills})")
                self.worker = self._spawn("worker", ["--queues", "--lock-seconds", "8"])
                return True
            time.sleep(0.05)
        return False

    def restart_azurite(self, during: list[dict[str, Any]], deadline: float) -> None:
        """Stop Azurite while a batch is being sent (the webhook answers 503, the sender retries,
        as Noxys would), then start it again on the same ports and data folder."""
        self.store.stop()
        self.log("Azurite stopped")
        sender = threading.Thread(target=self.send, args=(during, deadline), daemon=True)
        sender.start()
        time.sleep(2.0)
        self.store = azurite_launcher.start(location=self.workdir / "azurite", ports=self.ports)
        self.report.azurite_restarts += 1
        self.log("Azurite restarted on its on-disk data")
        sender.join(timeout=max(1.0, deadline - time.monotonic()))

    def outage(self, what: str) -> None:
        """Take the token endpoint or Key Vault down for a while, in the background: events keep
        arriving (the webhook re-reads its signing secret) and the worker keeps needing tokens."""
        self.log(f"{what} outage for {self.plan.outage_seconds:g} s")
        if what == "token":
            self.state.faults.token_outage = True
        else:
            self.state.vault.outage = True

        def end() -> None:
            time.sleep(self.plan.outage_seconds)
            self.state.faults.token_outage = False
            self.state.vault.outage = False

        threading.Thread(target=end, daemon=True).start()

    # ------------------------------------------------------------------ events
    def send(self, events: list[dict[str, Any]], deadline: float) -> None:
        """POST like Noxys: retry on 5xx and on no answer, until a 2xx."""
        if not events:
            return
        body = json.dumps(events).encode()
        msg_id = f"rel_{events[0]['id']}"
        self.report.sent += len(events)
        while time.monotonic() < deadline:
            ts = int(time.time())
            headers = {
                "Content-Type": "application/json",
                "webhook-id": msg_id,
                "webhook-timestamp": str(ts),
                "webhook-signature": sign(SECRET, msg_id, ts, body),
            }
            try:
                resp = requests.post(
                    f"http://127.0.0.1:{self.web_port}/api/noxys/events", data=body, headers=headers, timeout=30
                )
                if resp.status_code == 202:
                    self.report.accepted += len(resp.json()["accepted"])
                    return
                if resp.status_code < 500:
                    raise RuntimeError(f"webhook refused a valid batch: {resp.status_code} {resp.text[:200]}")
            except requests.RequestException:
                pass
            self.report.sender_retries += 1
            time.sleep(0.5)
        raise RuntimeError("the webhook never accepted a batch before the deadline")

    def run(self) -> Report:
        started = time.monotonic()
        deadline = started + self.plan.deadline_seconds
        self._wait_ready(deadline)
        now = datetime.now(UTC)
        events = [_event(i, self.plan, now) for i in range(self.plan.events)]
        size = max(1, len(events) // self.plan.batches)
        batches = [events[i : i + size] for i in range(0, len(events), size)]
        # kills first and interleaved (they need alerts still to be created), outages while events flow
        others = ["token", "vault", *(["azurite"] * self.plan.azurite_restarts), *(["429"] * self.plan.bursts_429)]
        faults: list[str] = []
        for i in range(max(self.plan.kills, len(others))):
            faults += (["kill"] if i < self.plan.kills else []) + others[i : i + 1]
        faults.reverse()  # popped from the end
        every = max(1, len(batches) // (len(faults) + 1))
        pending = list(batches)
        n = 0
        while pending:
            self.send(pending.pop(0), deadline)
            n += 1
            if n % every == 0 and faults:
                fault = faults.pop()
                if fault == "azurite":  # the next batch arrives while storage is down
                    self.restart_azurite(pending.pop(0) if pending else [], deadline)
                else:
                    self._fault(fault, deadline)
        for fault in faults:
            self._fault(fault, deadline)
        self._settle(deadline)
        self.report.seconds = time.monotonic() - started
        return self.report

    def _fault(self, fault: str, deadline: float) -> None:
        if fault == "kill":
            self.kill_worker_mid_call(timeout=max(1.0, min(60.0, deadline - time.monotonic())))
        elif fault == "azurite":
            self.restart_azurite([], deadline)
        elif fault == "429":
            self.state.faults.burst_retry_after = 2
            self.state.faults.burst_429 = 4
            self.log("429 burst (4 calls, Retry-After 2)")
        else:
            self.outage(fault)

    def _wait_ready(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            try:
                requests.get(f"http://127.0.0.1:{self.web_port}/api/health", timeout=2)
                return
            except requests.RequestException:
                time.sleep(0.2)
        raise RuntimeError("the web process did not start")

    # ------------------------------------------------------------------ the verdict
    def _table(self, name: str) -> Any:
        from azure.data.tables import TableClient

        return TableClient.from_connection_string(self.store.connection_string, f"{PREFIX}{name}")

    def _rows(self, name: str) -> list[dict[str, Any]]:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            return list(self._table(name).list_entities())
        except ResourceNotFoundError:
            return []

    def _queue_count(self, name: str) -> int:
        from azure.core.exceptions import ResourceNotFoundError
        from azure.storage.queue import QueueClient

        try:
            props = QueueClient.from_connection_string(self.store.connection_string, name).get_queue_properties()
        except ResourceNotFoundError:
            return 0
        return int(props.approximate_message_count or 0)

    def _poisoned(self) -> set[str]:
        """Event ids in the poison queues (kept, replayable: not lost)."""
        from azure.core.exceptions import ResourceNotFoundError
        from azure.storage.queue import QueueClient

        found: set[str] = set()
        for name in (f"{QUEUE}-poison", f"{PRIORITY}-poison"):
            try:
                client = QueueClient.from_connection_string(self.store.connection_string, name)
                for msg in client.peek_messages(max_messages=32):
                    doc = json.loads(base64.b64decode(msg.content))
                    if isinstance(doc, dict) and isinstance(doc.get("event"), dict):
                        found.add(str(doc["event"].get("id")))
            except ResourceNotFoundError:
                continue
        return found

    def _settle(self, deadline: float) -> None:
        ids = {f"evt_rel_{i:05d}" for i in range(self.plan.events)}
        while True:
            ledger = {str(e["event_id"]): str(e["state"]) for e in self._rows("Ledger")}
            poison = sum(self._queue_count(q) for q in (f"{QUEUE}-poison", f"{PRIORITY}-poison"))
            waiting = sum(self._queue_count(q) for q in (QUEUE, PRIORITY))
            open_ids = [i for i in ids if ledger.get(i) not in FINAL]
            if (not open_ids and waiting == 0) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        letters = self._rows("DeadLetters")
        r = self.report
        r.states = dict(Counter(ledger.get(i, "missing") for i in ids))
        r.dead_letters = [f"{e['event_id']}: {e['reason']}" for e in letters]
        r.poison = poison
        kept = {str(e["event_id"]) for e in letters} | self._poisoned()
        r.lost = sorted(i for i in open_ids if i not in kept)
        markers = Counter(
            line.removeprefix("Noxys event id: ")
            for a in self.state.alerts
            for line in str(a.get("description", "")).splitlines()
            if line.startswith("Noxys event id: ")
        )
        r.alerts = len(self.state.alerts)
        # a create that made an alert (or merged into one): 200, also when the answer then timed out
        # or the connection was reset, or the 502/504 of a lost answer (this run's 503s come before
        # the emulator acts)
        r.creates_made = sum(
            1 for c in self.state.calls_of("/api/alerts/CreateAlertByReference") if c["status"] in (200, 502, 504)
        )
        r.duplicates = sum(self.state.merged.values()) + sum(n - 1 for n in markers.values() if n > 1)
        r.injected = dict(self.state.faults.injected)

    def close(self) -> None:
        for proc in (self.web, self.worker):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self.emulator.stop()
        self.store.stop()
