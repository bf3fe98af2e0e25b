"""A new service is its domain and little else: the smallest one the kit can run, started as
`python -m` with two workers, migrated, healthy, and stopped by SIGTERM. Its size is the
skeleton a new service writes before its own domain."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from services.stack.components import free_port, wait_for_port
from tests.support import eventually, health

SAMPLE = Path(__file__).resolve().parents[1] / "sample_service"
ROOT = SAMPLE.parents[1]


def _start(env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    with open(log_path, "wb") as log:
        return subprocess.Popen([sys.executable, "-m", "tests.sample_service"], cwd=ROOT,
                                env=env, stdout=log, stderr=subprocess.STDOUT)


def test_the_skeleton_of_a_service_is_small() -> None:
    lines = sum(len(p.read_text().splitlines()) for p in SAMPLE.rglob("*.py"))
    assert lines < 80, lines


async def test_the_smallest_service_runs_with_workers_and_stops_on_sigterm(
        stack, fresh_database, tmp_path) -> None:
    port = free_port()
    env = {**os.environ, "DATABASE_URL": fresh_database, "NATS_URL": stack.nats_url,
           "SAMPLE_GRPC_ADDRESS": f"127.0.0.1:{port}", "SAMPLE_WORKERS": "2",
           "LOG_LEVEL": "WARNING"}
    process = _start(env, tmp_path / "sample.log")
    try:
        wait_for_port(port, timeout=60, process=process, what="sample service")

        async def serving() -> bool:
            return await health(f"127.0.0.1:{port}") == "SERVING"

        assert await eventually(serving, seconds=30)
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
