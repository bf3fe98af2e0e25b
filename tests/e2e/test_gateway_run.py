"""`make run` with the edge: the README's session (token, create, read back) works at once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from authlib.integrations.httpx_client import OAuth2Client

from services import registry
from services.stack.components import free_port, wait_for_port
from tests.conftest import ROOT

pytestmark = [pytest.mark.integration,
              pytest.mark.filterwarnings("ignore:The httpx module is deprecated")]


def test_make_run_serves_the_demo_partner_through_the_gateway(tmp_path: Path) -> None:
    gateway_port = free_port()
    env = {**os.environ, "CARTAGE_DATA_DIR": str(tmp_path),
           "CARTAGE_PG_PORT": str(free_port()), "CARTAGE_NATS_PORT": str(free_port()),
           "AUTH_HTTP_PORT": str(free_port()),
           "CARTAGE_GATEWAY_PORT": str(gateway_port), "ENVOY_ADMIN_PORT": str(free_port()),
           "AUDIT_GRPC_PORT": str(free_port()),
           **{entry.port_env: str(free_port()) for entry in registry.SERVICES}}
    env.pop("DATABASE_URL", None)
    env.pop("NATS_URL", None)
    process = subprocess.Popen([sys.executable, "-m", "services.stack"], cwd=ROOT, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_for_port(gateway_port, timeout=120, process=process, what="make run")
        for _ in range(100):
            if (tmp_path / "run.json").exists():
                break
            time.sleep(0.1)
        run = json.loads((tmp_path / "run.json").read_text())
        assert run["gateway_url"] == f"http://127.0.0.1:{gateway_port}"
        with OAuth2Client(run["demo_client_id"], run["demo_client_secret"]) as oauth:
            token = oauth.fetch_token(run["token_url"], grant_type="client_credentials")
        assert set(token["scope"].split()) >= {"orders.read", "orders.write"}
        headers = {"authorization": f"Bearer {token['access_token']}"}
        body = json.loads((tmp_path / "demo-order.json").read_text())
        with httpx.Client(base_url=run["gateway_url"], headers=headers, timeout=30) as http:
            created = http.post("/v1/orders", json=body, headers={"idempotency-key": "demo-1"})
            assert created.status_code == 200, created.text
            fetched = http.get(f"/v1/{created.json()['name']}")
            assert fetched.json() == created.json()
        verified = ""
        for _ in range(50):  # Envoy flushes the audit stream every 0.2 s
            verified = subprocess.run(
                [sys.executable, "-m", "gateway.audit", "verify"], cwd=ROOT, text=True,
                env={**os.environ, "DATABASE_URL": run["database_url"]},
                capture_output=True, timeout=60).stdout
            if verified.startswith("ok: 2 records"):
                break
            time.sleep(0.2)
        assert verified.startswith("ok: 2 records"), verified
        # make run made the anchor key pair in the data directory: anchor the head on demand
        # (the collector does so every AUDIT_ANCHOR_SECONDS), verify with the public key.
        anchor_env = {**os.environ, "DATABASE_URL": run["database_url"],
                      "AUDIT_ANCHOR_KEY_FILE": str(tmp_path / "audit-anchor.key"),
                      "AUDIT_ANCHOR_FILE": str(tmp_path / "audit-anchors.jsonl")}
        anchored = subprocess.run([sys.executable, "-m", "gateway.audit", "anchor"], cwd=ROOT,
                                  text=True, env=anchor_env, capture_output=True, timeout=60)
        assert anchored.stdout.startswith("anchored record"), anchored
        assert "AUDIT_ANCHOR_PUBLIC_KEY_FILE=" in run["audit_verify"]
        verified = subprocess.run(
            [sys.executable, "-m", "gateway.audit", "verify"], cwd=ROOT, text=True,
            env={**anchor_env, "AUDIT_ANCHOR_KEY_FILE": "",
                 "AUDIT_ANCHOR_PUBLIC_KEY_FILE": str(tmp_path / "audit-anchor.pub")},
            capture_output=True, timeout=60).stdout
        assert verified.startswith("ok: ") and "anchored up to record" in verified, verified
    finally:
        process.send_signal(signal.SIGINT)
        output = process.communicate(timeout=60)[0].decode()
    assert process.returncode == 0, output
    assert "curl" in output and "stopped." in output
