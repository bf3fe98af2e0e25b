"""`make run`'s supervisor: starts everything, writes run.json, serves, stops cleanly, and a
second run continues with the first run's data."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time

import httpx

from gateway.auth.clients import ClientRegistry
from gateway.policy import all_scopes
from services import registry
from services.kit.db import create_engine
from services.stack.__main__ import DEMO_CLIENT
from services.stack.components import free_port, wait_for_port
from tests.conftest import ROOT


def _start(data_dir, ports, service_ports) -> subprocess.Popen[bytes]:
    env = {**os.environ, "CARTAGE_DATA_DIR": str(data_dir),
           "CARTAGE_PG_PORT": str(ports[0]), "CARTAGE_NATS_PORT": str(ports[1]),
           "CARTAGE_GATEWAY_PORT": str(ports[3]),
           "AUTH_HTTP_PORT": str(ports[4]), "AUDIT_GRPC_PORT": str(ports[5]),
           "ENVOY_ADMIN_PORT": str(ports[6]),
           **{registry.get(name).port_env: str(port) for name, port in service_ports.items()}}
    env.pop("DATABASE_URL", None)
    env.pop("NATS_URL", None)
    process = subprocess.Popen([sys.executable, "-m", "services.stack"], cwd=ROOT, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    # Envoy starts last, once the services, the authorization server and the demo client are.
    wait_for_port(ports[3], timeout=120, process=process, what="make run")
    return process


def _demo(data_dir) -> str:
    env = {**os.environ, "CARTAGE_DATA_DIR": str(data_dir)}
    done = subprocess.run([sys.executable, "-m", "services.stack", "demo"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


async def _registry(database_url: str, scopes: list[str] | None = None) -> tuple[str, ...]:
    """The demo client's scopes, after replacing them with `scopes` if given."""
    engine = create_engine(database_url, pool_size=1, max_overflow=0)
    try:
        registry = ClientRegistry(engine)
        if scopes is not None:
            await registry.set_scopes(DEMO_CLIENT, scopes)
        client = await registry.get(DEMO_CLIENT)
        assert client is not None
        return client.scopes
    finally:
        await engine.dispose()


def test_run_serves_stops_cleanly_and_keeps_data(tmp_path) -> None:
    ports = tuple(free_port() for _ in range(7))
    # Every registered service is started, on the port its {PREFIX}_GRPC_PORT names.
    service_ports = {entry.name: free_port() for entry in registry.SERVICES}
    first = _start(tmp_path, ports, service_ports)
    try:
        for _ in range(100):
            if (tmp_path / "run.json").exists():
                break
            time.sleep(0.1)
        endpoints = json.loads((tmp_path / "run.json").read_text())
        assert endpoints["services"] == {name: f"127.0.0.1:{port}"
                                         for name, port in service_ports.items()}
        assert set(endpoints["services"]) >= {"order", "routing", "tracking"}
        assert endpoints["database_url"].startswith("postgresql://postgres@127.0.0.1:")
        first_demo = _demo(tmp_path)
        assert "has 1 order(s)" in first_demo
        # Through the gateway as the README shows it: Envoy reaches the order service on its
        # worker's own socket.
        assert (tmp_path / "sockets" / "order-0.sock").is_socket()
        token = httpx.post(endpoints["token_url"], data={"grant_type": "client_credentials"},
                           auth=(endpoints["demo_client_id"], endpoints["demo_client_secret"]))
        assert token.status_code == 200, token.text
        listed = httpx.get(endpoints["gateway_url"] + "/v1/orders", headers={
            "authorization": f"Bearer {token.json()['access_token']}"})
        assert listed.status_code == 200, listed.text
        assert len(listed.json()["orders"]) == 1
        # Two demo carriers are seeded for the demo partner; the demo carrier's own client
        # may list its tenders (none yet).
        carriers = httpx.get(endpoints["gateway_url"] + "/v1/carriers", headers={
            "authorization": f"Bearer {token.json()['access_token']}"})
        assert carriers.status_code == 200, carriers.text
        assert len(carriers.json()["carriers"]) == 2
        carrier_token = httpx.post(
            endpoints["token_url"], data={"grant_type": "client_credentials"},
            auth=(endpoints["demo_carrier_client_id"], endpoints["demo_carrier_client_secret"]))
        assert carrier_token.status_code == 200, carrier_token.text
        tenders = httpx.get(endpoints["gateway_url"] + "/v1/tenders", headers={
            "authorization": f"Bearer {carrier_token.json()['access_token']}"})
        assert tenders.status_code == 200, tenders.text
        # Every service's Prometheus metrics, where run.json (and the banner) says, counted
        # the demo's calls; Envoy's stats from its admin endpoint.
        assert set(endpoints["metrics"]) == {*registry.names(), "auth", "audit", "envoy"}
        auth_metrics = httpx.get(endpoints["metrics"]["auth"]).text
        assert 'cartage_http_requests_total{code="200",route="/oauth/token"}' in auth_metrics

        def audited() -> float:
            for line in httpx.get(endpoints["metrics"]["audit"]).text.splitlines():
                if line.startswith("cartage_audit_records_total "):
                    return float(line.split()[1])
            return 0.0

        for _ in range(50):  # Envoy flushes its audit stream every 0.2 s
            if audited() >= 1:
                break
            time.sleep(0.2)
        assert audited() >= 1
        scraped = httpx.get(endpoints["metrics"]["order"]).text
        assert ('cartage_rpc_handled_total{grpc_code="OK",grpc_method="CreateOrder",'
                'grpc_service="cartage.order.v1.OrderService"}') in scraped
        for name in registry.names():
            assert "cartage_rpc_duration_seconds" in httpx.get(endpoints["metrics"][name]).text
        assert "envoy_server_live" in httpx.get(endpoints["metrics"]["envoy"]).text
        # ... and the routing service planned it on the demo truck: pickup, then delivery.
        assert "PROPOSED" in first_demo and "0 unassigned" in first_demo, first_demo
        assert "vehicles/demo-truck: pickup" in first_demo and ", delivery" in first_demo
        # As if the demo partner had been created by an older Cartage with fewer RPCs.
        assert asyncio.run(_registry(endpoints["database_url"], ["orders.read"])) == (
            "orders.read",)
    finally:
        first.send_signal(signal.SIGINT)
        output = first.communicate(timeout=60)[0].decode()
    assert first.returncode == 0, output
    assert "stopped." in output

    second = _start(tmp_path, ports, service_ports)
    try:
        assert "has 2 order(s)" in _demo(tmp_path)
        again = json.loads((tmp_path / "run.json").read_text())
        token = httpx.post(again["token_url"], data={"grant_type": "client_credentials"},
                           auth=(again["demo_client_id"], again["demo_client_secret"]))
        carriers = httpx.get(again["gateway_url"] + "/v1/carriers", headers={
            "authorization": f"Bearer {token.json()['access_token']}"})
        assert len(carriers.json()["carriers"]) == 2  # seeded once, not per run
        # The second run gave the demo partner every scope of the current policy again.
        assert set(asyncio.run(_registry(endpoints["database_url"]))) == set(all_scopes())
    finally:
        second.send_signal(signal.SIGINT)
        second.communicate(timeout=60)


def test_ctrl_c_on_make_run_stops_services_then_nats_then_postgres(tmp_path) -> None:
    """Ctrl-C in a terminal sends SIGINT to the whole foreground process group: `make` and the
    supervisor. The services, NATS and Postgres are in groups of their own, so the supervisor
    stops them, in order, and nothing logs a traceback."""
    ports = tuple(free_port() for _ in range(7))
    service_ports = {entry.name: free_port() for entry in registry.SERVICES}
    env = {**os.environ, "CARTAGE_DATA_DIR": str(tmp_path),
           "CARTAGE_PG_PORT": str(ports[0]), "CARTAGE_NATS_PORT": str(ports[1]),
           "CARTAGE_GATEWAY_PORT": str(ports[3]), "AUTH_HTTP_PORT": str(ports[4]),
           "AUDIT_GRPC_PORT": str(ports[5]), "ENVOY_ADMIN_PORT": str(ports[6]),
           **{registry.get(name).port_env: str(port) for name, port in service_ports.items()}}
    env.pop("DATABASE_URL", None)
    env.pop("NATS_URL", None)
    # Its own session, as a terminal's job: the SIGINT below goes to make and its children
    # exactly as a Ctrl-C would.
    make = subprocess.Popen(["make", "--no-print-directory", "run"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        wait_for_port(ports[3], timeout=180, process=make, what="make run")
        for _ in range(100):
            if (tmp_path / "run.json").exists():
                break
            time.sleep(0.1)
        endpoints = json.loads((tmp_path / "run.json").read_text())
        token = httpx.post(endpoints["token_url"], data={"grant_type": "client_credentials"},
                           auth=(endpoints["demo_client_id"], endpoints["demo_client_secret"]))
        assert token.status_code == 200, token.text
        # Something for the services to hold connections for when the stop comes.
        listed = httpx.get(endpoints["gateway_url"] + "/v1/orders", headers={
            "authorization": f"Bearer {token.json()['access_token']}"})
        assert listed.status_code == 200, listed.text
    finally:
        os.killpg(make.pid, signal.SIGINT)
        output = make.communicate(timeout=90)[0].decode()
    lines = output.splitlines()
    order = [lines.index(line) for line in ("stopped the gateway and the services",
                                            "stopped NATS", "stopped PostgreSQL", "stopped.")]
    assert order == sorted(order), output
    assert "Traceback" not in output, output
    # make itself dies of the SIGINT, as after any Ctrl-C; the supervisor under it stopped
    # cleanly (it printed the lines above in order and no error).
    assert make.returncode in (0, -signal.SIGINT, 2, 130), (make.returncode, output)
    for log in (tmp_path / "logs").glob("*.log"):
        text = log.read_text(errors="replace")
        assert "Traceback" not in text, (log.name, text[-3000:])
    assert "exited with code" not in output, output  # nothing died and was restarted
