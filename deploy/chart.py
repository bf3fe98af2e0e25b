"""Chart-build time for the Helm chart in deploy/k8s (`make chart`).

    python -m deploy.chart build          write deploy/k8s/files/envoy.yaml and cartage.binpb
    python -m deploy.chart check-values   exit 1 if values.yaml's services differ from the registry
    python -m deploy.chart sync-values    rewrite values.yaml's generated services block

`build` generates the edge gateway's config with the same generator as `make run`
(gateway.envoy_config.build) from the same contracts (build/cartage.binpb, which it ships next
to the config: Envoy's transcoder reads it from the ConfigMap, so config and descriptors always
come from one build). Upstreams are the services' Kubernetes DNS names (headless Services, one
address per pod, which Envoy resolves and balances over); the release's name, namespace,
cluster domain and token issuer are known only at install time, so they are written as
placeholders (`@@FULLNAME@@` …) that the chart's ConfigMap template replaces. Both files are
generated and git-ignored.

The chart's list of services, in values.yaml between the BEGIN/END markers, is generated from
services.registry: `check-values` (a test runs it) fails when a registry service is missing
there or differs, `sync-values` rewrites the block.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

from services import registry

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "deploy" / "k8s"
FILES = CHART / "files"
VALUES = CHART / "values.yaml"

# Ports inside the pods (the Services expose the same); services use their registry port.
GATEWAY_PORT = 8080
ENVOY_ADMIN_PORT = 9901  # loopback only: the admin API can stop Envoy
ENVOY_STATS_PORT = 9902  # /stats/prometheus only, for scraping
AUTH_PORT = 8090
AUDIT_PORT = 8091
DESCRIPTOR_MOUNT = "/etc/cartage/envoy/cartage.binpb"

PLACEHOLDERS = ("@@FULLNAME@@", "@@NAMESPACE@@", "@@CLUSTER_DOMAIN@@", "@@ISSUER@@")
BEGIN = "  # BEGIN generated from services/registry.py: python -m deploy.chart sync-values"
END = "  # END services"


def host(component: str) -> str:
    return f"@@FULLNAME@@-{component}.@@NAMESPACE@@.svc.@@CLUSTER_DOMAIN@@"


def envoy_config() -> dict[str, Any]:
    from gateway.envoy_config import GatewayConfig, build

    config = GatewayConfig(
        listen_port=GATEWAY_PORT, admin_port=ENVOY_ADMIN_PORT,
        auth_address=f"{host('auth')}:{AUTH_PORT}", issuer="@@ISSUER@@",
        upstreams={s.name: f"{host(s.name)}:{s.default_port}" for s in registry.SERVICES},
        audit_address=f"{host('audit')}:{AUDIT_PORT}",
        listen_address="0.0.0.0", descriptor_path=DESCRIPTOR_MOUNT)
    bootstrap = build(config)
    # Prometheus reads Envoy's stats from a listener of their own that serves that one path
    # from the admin API (which stays on loopback).
    resources = bootstrap["static_resources"]
    resources["clusters"].append({
        "name": "envoy_admin", "type": "STATIC", "connect_timeout": "1s",
        "load_assignment": {"cluster_name": "envoy_admin", "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": {"socket_address": {
                "address": "127.0.0.1", "port_value": ENVOY_ADMIN_PORT}}}}]}]}})
    resources["listeners"].append({
        "name": "stats",
        "address": {"socket_address": {"address": "0.0.0.0", "port_value": ENVOY_STATS_PORT}},
        "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network."
                         "http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": "stats",
                "route_config": {"virtual_hosts": [{
                    "name": "stats", "domains": ["*"],
                    "routes": [{"match": {"path": "/stats/prometheus"},
                                "route": {"cluster": "envoy_admin"}}]}]},
                "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3."
                             "Router"}}],
            }}]}],
    })
    return bootstrap


def build_files(out: Path = FILES) -> list[Path]:
    from gateway import contracts

    out.mkdir(parents=True, exist_ok=True)
    envoy = out / "envoy.yaml"
    # JSON is YAML; Envoy picks the parser by the file name.
    envoy.write_text(json.dumps(envoy_config(), indent=1) + "\n")
    descriptors = out / "cartage.binpb"
    shutil.copyfile(contracts.DESCRIPTOR_SET, descriptors)
    return [envoy, descriptors]


def services_block() -> str:
    lines = [BEGIN]
    for entry in registry.SERVICES:
        lines += [f"  {entry.name}:",
                  f"    module: {entry.package}",
                  f"    envPrefix: {entry.env_prefix}",
                  f"    port: {entry.default_port}"]
    lines.append(END)
    return "\n".join(lines)


def current_block(text: str) -> str:
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise SystemExit(f"{VALUES}: the generated services block (BEGIN/END markers) is missing")
    return text[start:end + len(END)]


def check_values(path: Path = VALUES) -> list[str]:
    """What differs between values.yaml's services and the registry (empty: nothing)."""
    block = current_block(path.read_text())
    wanted = services_block()
    if block == wanted:
        return []
    problems = [f"service {e.name!r} of services.registry is missing in {path.name}"
                for e in registry.SERVICES if f"\n  {e.name}:\n" not in block]
    return problems or [f"{path.name}: the services block differs from services.registry"]


def sync_values(path: Path = VALUES) -> None:
    text = path.read_text()
    path.write_text(text.replace(current_block(text), services_block()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.chart")
    parser.add_argument("command", choices=["build", "check-values", "sync-values"])
    args = parser.parse_args(argv)
    if args.command == "build":
        for path in build_files():
            print(f"wrote {path.relative_to(ROOT)}")
    elif args.command == "sync-values":
        sync_values()
        print(f"updated {VALUES.relative_to(ROOT)}")
    else:
        problems = check_values()
        for problem in problems:
            print(problem, file=sys.stderr)
        if problems:
            print("run: python -m deploy.chart sync-values", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
