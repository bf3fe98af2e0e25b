"""kill -9 of every process of `make run` under load, repeated: nothing acknowledged is lost.

The whole stack runs as `make run` starts it (order with two workers, routing, the
authorization server, the audit collector, Envoy; durable Postgres and NATS of its own), and
partners create orders through the gateway, each request with its own Idempotency-Key. Each
process is killed with SIGKILL `FAULT_ROUNDS` times (default 5) while the load runs; the
supervisor restarts it. Afterwards every request that failed is retried with its key, and:

- every order acknowledged with a 200 is readable, and each key made exactly one order;
- the outbox drains, and every order has exactly one `order.created` event;
- the time from each kill to the process serving again is measured (asserted under
  `MAX_RECOVERY_S`, reported by the test's output and in bench/results/faults_kill.json).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import httpx

from services import registry
from services.stack.components import free_port, wait_for_port
from tests.support import eventually, health, sample_order, stream_events

ROOT = Path(__file__).resolve().parents[2]
ROUNDS = int(os.environ.get("FAULT_ROUNDS", "5"))
# The target is 5 s, and a quiet machine meets it (worst 3.1 s in a fresh clone); on a
# shared 2-core machine the order service (migrations, two workers) took up to 8.1 s, and once
# 17.5 s while other suites ran, so 5 s cannot be the test's bound. The target stays in the
# report's pass object (`recovery_within_5s`); the test asserts 10 s.
MAX_RECOVERY_S = 10.0
CALLERS = 6
# The process names in the supervisor's tree, by what their command line runs.
TARGETS = {
    "order worker": "spawn_main",  # one of the order service's two worker processes
    "order": "services.order",
    "routing": "services.routing",
    "auth": "gateway.auth",
    "audit": "gateway.audit",
    "envoy": "envoy",
}


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def _tree(pid: int) -> set[int]:
    """The pids below `pid` (children and grandchildren: the order workers)."""
    children = _children(pid)
    return set(children) | {g for child in children for g in _children(child)}


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _find(stack_pid: int, target: str) -> int | None:
    """The pid of `target` in the supervisor's process tree (None while it is restarting)."""
    marker = TARGETS[target]
    for child in _children(stack_pid):
        line = _cmdline(child)
        if target == "order worker":
            if "-m services.order" in line:
                workers = sorted(g for g in _children(child) if "spawn_main" in _cmdline(g))
                if len(workers) == 2:
                    return workers[0]
            continue
        if target == "envoy" and "envoy" in line.split(" ")[0]:
            return child
        if f"-m {marker}" in line:
            return child
    return None


class Stack:
    def __init__(self, data: Path) -> None:
        self.data = data
        self.ports = {name: free_port() for name in
                      ("pg", "nats", "gateway", "auth", "audit", "admin")}
        self.service_ports = {entry.name: free_port() for entry in registry.SERVICES}
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, "CARTAGE_DATA_DIR": str(self.data),
               "CARTAGE_PG_PORT": str(self.ports["pg"]),
               "CARTAGE_NATS_PORT": str(self.ports["nats"]),
               "CARTAGE_GATEWAY_PORT": str(self.ports["gateway"]),
               "AUTH_HTTP_PORT": str(self.ports["auth"]),
               "AUDIT_GRPC_PORT": str(self.ports["audit"]),
               "ENVOY_ADMIN_PORT": str(self.ports["admin"]),
               "ORDER_WORKERS": "2", "LOG_LEVEL": "WARNING",
               **{registry.get(n).port_env: str(p) for n, p in self.service_ports.items()}}
        env.pop("DATABASE_URL", None)
        env.pop("NATS_URL", None)
        with open(self.data / "stack.out", "ab") as out:
            self.process = subprocess.Popen([sys.executable, "-m", "services.stack"], cwd=ROOT,
                                            env=env, stdout=out, stderr=subprocess.STDOUT)
        wait_for_port(self.ports["gateway"], timeout=180, process=self.process,
                      what="make run")
        deadline = time.monotonic() + 60  # run.json is written once Envoy is up
        while not (self.data / "run.json").exists():
            assert time.monotonic() < deadline, "make run wrote no run.json"
            time.sleep(0.1)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    @property
    def endpoints(self) -> dict[str, Any]:
        return json.loads((self.data / "run.json").read_text())

    async def serving(self, target: str) -> bool:
        """Whether `target` answers as its users need it to."""
        try:
            if target == "order worker":  # both workers, each on its own socket
                sockets = [f"unix:{self.data / 'sockets' / f'order-{i}.sock'}" for i in (0, 1)]
                return all([await health(address) == "SERVING" for address in sockets])
            if target in ("order", "routing"):
                return await health(f"127.0.0.1:{self.service_ports[target]}") == "SERVING"
            async with httpx.AsyncClient(timeout=2) as http:
                if target == "auth":
                    url = f"http://127.0.0.1:{self.ports['auth']}/healthz"
                elif target == "envoy":
                    url = f"http://127.0.0.1:{self.ports['gateway']}/healthz"
                else:  # the audit collector: its gRPC port accepts a channel
                    async with grpc.aio.insecure_channel(
                            f"127.0.0.1:{self.ports['audit']}") as channel:
                        await asyncio.wait_for(channel.channel_ready(), 2)
                    return True
                return (await http.get(url)).status_code == 200
        except (OSError, grpc.aio.AioRpcError, httpx.HTTPError, TimeoutError):
            return False


class Load:
    """Callers creating orders through the gateway, each request with its own key."""

    def __init__(self, gateway: str, token_url: str, client: tuple[str, str]) -> None:
        self.gateway = gateway
        self.token_url = token_url
        self.client = client
        self.stop = asyncio.Event()
        self.acknowledged: dict[str, str] = {}  # key -> order name
        self.failed: set[str] = set()
        self.outcomes: Counter[str] = Counter()
        self._next = 0
        self._token = ""

    async def token(self, http: httpx.AsyncClient, *, renew: bool = False) -> str:
        while renew or not self._token:
            try:
                response = await http.post(self.token_url, auth=self.client,
                                           data={"grant_type": "client_credentials"})
                if response.status_code == 200:
                    self._token = response.json()["access_token"]
                    break
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.2)
        return self._token

    async def send(self, http: httpx.AsyncClient, key: str) -> bool:
        body = {"externalReference": key, **_order_json()}
        try:
            response = await http.post(
                f"{self.gateway}/v1/orders", json=body,
                headers={"authorization": f"Bearer {await self.token(http)}",
                         "idempotency-key": key})
        except httpx.HTTPError as error:
            self.outcomes[type(error).__name__] += 1
            return False
        self.outcomes[str(response.status_code)] += 1
        if response.status_code == 200:
            self.acknowledged[key] = response.json()["name"]
            return True
        if response.status_code == 401:
            await self.token(http, renew=True)
        elif response.status_code == 429:  # the demo partner's rate limit: as a client would
            await asyncio.sleep(float(response.headers.get("retry-after", "1")))
        return False

    async def caller(self) -> None:
        async with httpx.AsyncClient(timeout=10) as http:
            while not self.stop.is_set():
                self._next += 1
                key = f"kill-{self._next}"
                if not await self.send(http, key):
                    self.failed.add(key)
                    await asyncio.sleep(0.05)

    async def settle(self) -> None:
        """Retry every failed request with its own key until it is answered 200."""
        pending = sorted(self.failed - self.acknowledged.keys())

        async def retry(http: httpx.AsyncClient) -> None:
            while pending:
                key = pending.pop()
                for _ in range(50):
                    if await self.send(http, key):
                        break
                    await asyncio.sleep(0.2)
                else:
                    raise AssertionError(f"{key} never succeeded: {self.outcomes}")

        async with httpx.AsyncClient(timeout=10) as http:
            await asyncio.gather(*(retry(http) for _ in range(CALLERS)))


def _order_json() -> dict[str, Any]:
    from google.protobuf import json_format

    order = json_format.MessageToDict(sample_order("x"))
    order.pop("externalReference", None)
    return order


async def _unpublished(database_url: str) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        return await conn.fetchval("SELECT count(*) FROM orders.outbox "
                                   "WHERE published_at IS NULL")
    finally:
        await conn.close()


async def test_kill_9_of_every_process_under_load_loses_nothing(tmp_path: Path) -> None:
    stack = Stack(tmp_path)
    stack.start()
    recovery: dict[str, list[float]] = {name: [] for name in TARGETS}
    try:
        endpoints = stack.endpoints
        load = Load(endpoints["gateway_url"], endpoints["token_url"],
                    (endpoints["demo_client_id"], endpoints["demo_client_secret"]))
        callers = [asyncio.create_task(load.caller()) for _ in range(CALLERS)]
        await eventually(lambda: _count(load, 50), seconds=60)
        for _ in range(ROUNDS):
            for target in TARGETS:
                pid = await eventually(lambda t=target: _pid(stack, t), seconds=30)
                workers = _children(pid) if target == "order" else []
                os.kill(pid, signal.SIGKILL)
                killed = time.monotonic()

                async def back(target: str = target, old: int = pid) -> bool:
                    now = _find(stack.process.pid, target)  # type: ignore[union-attr]
                    tree = _tree(stack.process.pid)  # type: ignore[union-attr]
                    return (now is not None and old not in tree
                            and await stack.serving(target))

                try:
                    await eventually(back, seconds=60, interval=0.05)
                except AssertionError as error:
                    raise AssertionError(f"{target} did not come back: {error}") from None
                recovery[target].append(round(time.monotonic() - killed, 2))
                # The killed service's workers went with it (none left serving its port).
                await eventually(lambda w=workers: _alive(w), seconds=10, until=lambda a: not a)
                before = len(load.acknowledged)
                await eventually(lambda n=before: _count(load, n + 20), seconds=60)
        load.stop.set()
        await asyncio.gather(*callers)
        await load.settle()

        # Every acknowledged order is there, and each key made exactly one.
        database_url = endpoints["database_url"]
        conn = await asyncpg.connect(database_url)
        try:
            rows = await conn.fetch("SELECT id, external_reference FROM orders.orders")
        finally:
            await conn.close()
        by_reference = Counter(row["external_reference"] for row in rows)
        names = {f"orders/{row['id']}" for row in rows}
        assert max(by_reference.values()) == 1
        assert set(load.acknowledged.values()) <= names
        # Every key sent was answered 200 in the end, and each made the one order it names.
        assert set(by_reference) == set(load.acknowledged)
        # Every committed order has exactly one event.
        await eventually(lambda: _unpublished(database_url), seconds=60,
                         until=lambda n: n == 0)
        events = await stream_events(endpoints["nats_url"])
        created = Counter(e.order.name for subject, e, _ in events
                          if subject == "order.created")
        assert all(created[name] == 1 for name in names), [
            n for n in names if created[n] != 1][:5]
        assert sum(created.values()) == len(names)
    finally:
        stack.stop()
    report = {target: {"kills": len(times), "median_s": round(statistics.median(times), 2),
                       "max_s": max(times), "seconds": times}
              for target, times in recovery.items() if times}
    worst = max(r["max_s"] for r in report.values())
    report["requests"] = dict(load.outcomes)
    report["orders"] = len(load.acknowledged)
    report["targets"] = {"recovery_max_s": 5.0, "asserted_recovery_max_s": MAX_RECOVERY_S}
    # Written only once the loss checks above held; recovery against the 5 s target.
    report["pass"] = {"nothing_lost": True, "recovery_within_5s": worst <= 5.0}
    report["pass"]["all"] = all(report["pass"].values())
    results = ROOT / "bench" / "results"
    results.mkdir(parents=True, exist_ok=True)
    (results / "faults_kill.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    slow = {t: recovery[t] for t in recovery if recovery[t] and max(recovery[t]) > MAX_RECOVERY_S}
    assert not slow, slow


async def _count(load: Load, n: int) -> bool:
    return len(load.acknowledged) >= n


async def _pid(stack: Stack, target: str) -> int | None:
    return _find(stack.process.pid, target)  # type: ignore[union-attr]


async def _alive(pids: list[int]) -> list[int]:
    return _living(pids)


def _living(pids: list[int]) -> list[int]:
    alive = []
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
        except OSError:
            continue
        if state != "Z":
            alive.append(pid)
    return alive
