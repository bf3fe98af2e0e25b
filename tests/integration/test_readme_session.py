"""The README's REST session ("Running it"), run exactly as written with bash against a started
stack (`python -m services.stack`, as `make run` starts it): a partner who types it gets an
order created, released, planned, approved and exported (issue 13)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from services import registry
from services.stack.components import free_port, wait_for_port
from tests.conftest import ROOT

pytestmark = pytest.mark.integration


def session() -> str:
    """The README's shell block that starts from run.json."""
    readme = (ROOT / "README.md").read_text()
    running = readme[readme.index("## Running it"):readme.index("\n## ", readme.index(
        "## Running it") + 1)]
    blocks = re.findall(r"```sh\n(.*?)```", running, re.S)
    [block] = [b for b in blocks if "RUN=.cartage/run.json" in b]
    assert "…" not in block and "..." not in block  # nothing to fill in by hand
    return block


@pytest.mark.skipif(shutil.which("jq") is None or shutil.which("curl") is None,
                    reason="the session uses curl and jq")
def test_the_readme_session_works_as_typed(tmp_path: Path) -> None:
    data = tmp_path / "data"
    ports = [free_port() for _ in range(7)]
    env = {**os.environ, "CARTAGE_DATA_DIR": str(data),
           "CARTAGE_PG_PORT": str(ports[0]), "CARTAGE_NATS_PORT": str(ports[1]),
           "CARTAGE_GATEWAY_PORT": str(ports[2]), "AUTH_HTTP_PORT": str(ports[3]),
           "AUDIT_GRPC_PORT": str(ports[4]), "ENVOY_ADMIN_PORT": str(ports[5]),
           **{e.port_env: str(free_port()) for e in registry.SERVICES}}
    env.pop("DATABASE_URL", None)
    env.pop("NATS_URL", None)
    stack = subprocess.Popen([sys.executable, "-m", "services.stack"], cwd=ROOT, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             start_new_session=True)
    try:
        wait_for_port(ports[2], timeout=180, process=stack, what="the stack")
        for _ in range(100):
            if (data / "run.json").exists():
                break
            time.sleep(0.1)
        # The session runs where `make run` does, which keeps its data in .cartage/.
        workdir = tmp_path / "checkout"
        workdir.mkdir()
        (workdir / ".cartage").symlink_to(data)
        script = "set -euo pipefail\n" + session()
        done = subprocess.run(["bash", "-c", script], cwd=workdir, capture_output=True,
                              text=True, timeout=180,
                              env={k: v for k, v in os.environ.items()
                                   if k not in ("DATABASE_URL", "NATS_URL")})
        assert done.returncode == 0, done.stdout + done.stderr
        out = done.stdout.splitlines()
        assert "STATE_RELEASED" in out and "STATE_APPLIED" in out, done.stdout
        plan = json.loads(done.stdout[done.stdout.index("{"):done.stdout.rindex("}") + 1])
        assert plan["state"] == "STATE_ACTIVE", plan
        assert plan["totals"]["shipmentsPlanned"] == 1, plan
        assert plan["totals"]["shipmentsUnassigned"] == 0, plan
        geojson = json.loads((workdir / "plan.geojson").read_text())
        assert geojson["type"] == "FeatureCollection" and geojson["features"]
    finally:
        os.killpg(stack.pid, signal.SIGINT)
        output = stack.communicate(timeout=90)[0].decode()
    assert stack.returncode == 0, output
