"""Fixtures: real PostgreSQL and NATS JetStream from the same wheels `make run` uses."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from cryptography.fernet import Fernet

from services.stack.components import Nats, Postgres, free_port, wait_for_port
from tests.support import RunningService

if TYPE_CHECKING:
    from services.order.settings import Settings
    from services.routing.settings import Settings as RoutingSettings

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Stack:
    postgres: Postgres
    nats: Nats
    tmp: Path

    @property
    def database_url(self) -> str:
        return self.postgres.url

    @property
    def nats_url(self) -> str:
        return self.nats.url


def _stack(tmp: Path, *, durable: bool) -> Iterator[Stack]:
    postgres = Postgres(tmp / "pg", free_port(), durable=durable)
    nats_server = Nats(tmp / "js", free_port())
    postgres.start()
    nats_server.start()
    try:
        yield Stack(postgres, nats_server, tmp)
    finally:
        nats_server.stop()
        postgres.stop()


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Postgres without fsync (fast; its data does not survive a crash of Postgres itself)."""
    yield from _stack(tmp_path_factory.mktemp("stack"), durable=False)


@pytest.fixture(scope="session")
def durable_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A Postgres that keeps its promises (fsync, synchronous commit, full page writes, as in
    production) and a NATS of its own: for the kill, crash and restart tests only. On `stack`
    a commit is acknowledged before it is on disk, so a crash test there proves nothing."""
    yield from _stack(tmp_path_factory.mktemp("durable"), durable=True)


async def new_database(stack: Stack) -> str:
    """A database of its own on `stack`'s server."""
    import asyncpg

    name = f"t_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(stack.database_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return stack.database_url.rsplit("/", 1)[0] + f"/{name}"


@pytest.fixture
async def fresh_database(stack: Stack) -> str:
    """A database of its own on the shared server: its outbox is seen by no other relay."""
    return await new_database(stack)


@pytest.fixture
async def durable_database(durable_stack: Stack) -> str:
    """A database of its own on the durable server."""
    return await new_database(durable_stack)


# The services' apps are imported where a fixture starts them, so that unit tests import none.
def order_settings(stack: Stack, **overrides: object) -> Settings:
    from services.order.settings import Settings

    base = Settings(database_url=stack.database_url, nats_url=stack.nats_url,
                    grpc_address="127.0.0.1:0", log_level="WARNING")
    return replace(base, **overrides)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
async def order_address(stack: Stack) -> AsyncIterator[str]:
    """The order service, in this process, on a free port."""
    from services.order.app import DEFINITION

    async with RunningService(DEFINITION, order_settings(stack)) as running:
        yield running.address


def routing_settings(stack: Any, **overrides: Any) -> RoutingSettings:
    """Settings of a routing service on the session's Postgres and NATS (1 s solves)."""
    from services.routing.settings import Settings as RoutingSettings

    base = RoutingSettings(database_url=stack.database_url, nats_url=stack.nats_url,
                    grpc_address="127.0.0.1:0", log_level="WARNING", default_time_limit=1.0)
    return replace(base, **overrides)


def RunningRouting(settings: RoutingSettings) -> RunningService:
    """A routing service started in this process (see RunningService)."""
    from services.routing.app import DEFINITION

    return RunningService(DEFINITION, settings)


@pytest.fixture(scope="session")
async def routing_address(stack: Any, order_address: str) -> AsyncIterator[str]:
    """The routing service for the whole session (one per database: two would share the event
    consumers and both solve every plan), next to the order service that declares ORDER."""
    running = await RunningRouting(routing_settings(stack)).start()
    yield running.address
    await running.stop()


def carrier_settings(stack: Any, **overrides: Any) -> Any:
    """Settings of a carrier service on the session's Postgres and NATS (fast deadline and EDI
    inbox polls; the EDI directories under the session's directory)."""
    from services.carrier.settings import Settings as CarrierSettings

    base = CarrierSettings(database_url=stack.database_url, nats_url=stack.nats_url,
                           grpc_address="127.0.0.1:0", log_level="WARNING",
                           deadline_poll_s=0.1, edi_poll_s=0.2,
                           edi_outbox_dir=str(stack.tmp / "carrier-edi" / "outbox"),
                           edi_inbox_dir=str(stack.tmp / "carrier-edi" / "inbox"))
    return replace(base, **overrides)


def tracking_settings(stack: Any, **overrides: Any) -> Any:
    """Settings of a tracking service on the session's Postgres and NATS (fast watches)."""
    from services.tracking.settings import Settings as TrackingSettings

    base = TrackingSettings(database_url=stack.database_url, nats_url=stack.nats_url,
                            grpc_address="127.0.0.1:0", log_level="WARNING",
                            watch_interval_s=0.2, link_secret="x" * 32,
                            # Webhooks to the tests' loopback receivers, a compressed schedule
                            # (5 s -> 0.5 ms, 10 h -> 3.6 s: ~10 s in all), a key made for this run.
                            webhook_allow_loopback=True, webhook_schedule_scale=0.0001,
                            webhook_secret_key=Fernet.generate_key().decode(),
                            webhook_poll_s=0.05)
    return replace(base, **overrides)


# The document service's signing key for this test session (made at test time, never stored).
DOCUMENT_TEST_KEY = os.urandom(32).hex()


def document_settings(stack: Any, **overrides: Any) -> Any:
    """Settings of a document service on the session's Postgres and NATS, its content store
    under the session's directory and the session's signing key."""
    from services.document.settings import Settings as DocumentSettings

    base = DocumentSettings(database_url=stack.database_url, nats_url=stack.nats_url,
                            grpc_address="127.0.0.1:0", log_level="WARNING",
                            store_dir=str(stack.tmp / "documents"),
                            signing_key=DOCUMENT_TEST_KEY)
    return replace(base, **overrides)


@pytest.fixture(scope="session")
async def carrier_address(stack: Any, order_address: str) -> AsyncIterator[str]:
    """The carrier service for the whole session, next to the order service (which declares
    the ORDER stream whose order.released it consumes)."""
    from services.carrier.app import DEFINITION

    async with RunningService(DEFINITION, carrier_settings(stack)) as running:
        yield running.address


@pytest.fixture(scope="session")
async def tracking_address(stack: Any, order_address: str) -> AsyncIterator[str]:
    """The tracking service for the whole session (one per database, like routing), next to
    the order service whose orders it tracks."""
    from services.tracking.app import DEFINITION

    async with RunningService(DEFINITION, tracking_settings(stack)) as running:
        yield running.address


@pytest.fixture(scope="session")
async def document_address(stack: Stack) -> AsyncIterator[str]:
    """The document service, in this process, on a free port."""
    from services.document.app import DEFINITION

    async with RunningService(DEFINITION, document_settings(stack)) as running:
        yield running.address


@pytest.fixture
async def channel(order_address: str) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(
        order_address, options=[("grpc.max_send_message_length", 32 * 1024 * 1024)]
    ) as ch:
        yield ch


class OrderProcess:
    """The order service as a real child process (for kill -9 and crash tests)."""

    def __init__(self, stack: Stack, log_dir: Path, **env: str) -> None:
        self.port = free_port()
        self.env = {
            **os.environ,
            "DATABASE_URL": stack.database_url,
            "NATS_URL": stack.nats_url,
            "ORDER_GRPC_ADDRESS": f"127.0.0.1:{self.port}",
            "LOG_LEVEL": "WARNING",
            **env,
        }
        self.log = log_dir / f"order-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> OrderProcess:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "services.order"], cwd=ROOT, env=self.env,
                stdout=log, stderr=subprocess.STDOUT,
            )
        wait_for_port(self.port, timeout=60, process=self.process, what="order service")
        return self

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def wait(self, timeout: float) -> int:
        assert self.process is not None
        return self.process.wait(timeout)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


def _order_processes(stack: Stack, log_dir: Path) -> Iterator[type[OrderProcess]]:
    started: list[OrderProcess] = []

    class Tracked(OrderProcess):
        def __init__(self, **env: str) -> None:
            super().__init__(stack, log_dir, **env)
            started.append(self)

    yield Tracked
    for process in started:
        process.stop()


@pytest.fixture
def order_process(stack: Stack, tmp_path: Path) -> Iterator[type[OrderProcess]]:
    yield from _order_processes(stack, tmp_path)


@pytest.fixture
def durable_order_process(durable_stack: Stack, tmp_path: Path
                          ) -> Iterator[type[OrderProcess]]:
    """Order service processes on the durable stack (kill and crash tests)."""
    yield from _order_processes(durable_stack, tmp_path)
