"""The container image (deploy/Containerfile) and its entry point (deploy/entrypoint.py).

There is no container engine here, so the image itself is never built in the tests: hadolint
checks the Containerfile in `make lint`, and these tests check that the entry point starts
every component of the suite (each registry service, the authorization server, the audit
collector, Envoy) and what the Containerfile promises.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from deploy import entrypoint
from services import registry

ROOT = Path(__file__).resolve().parents[2]
CONTAINERFILE = ROOT / "deploy" / "Containerfile"


def test_the_entry_point_knows_every_component() -> None:
    known = set(entrypoint.components())
    assert {*registry.names(), "auth", "audit", "envoy"} <= known


@pytest.mark.parametrize("name", [*registry.names(), "auth", "audit", "clients"])
def test_each_component_starts_through_the_entry_point(name: str) -> None:
    # `--help` gets as far as the component's own argument parser: its module imports and its
    # command line is there, without a database.
    result = subprocess.run([sys.executable, "-m", "deploy.entrypoint", name, "--help"],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "usage:" in result.stdout
    expected = registry.get(name).package if registry.find(name) else \
        entrypoint.GATEWAY_MODULES[name]
    assert f"python -m {expected}" in result.stdout or name in result.stdout


def test_envoy_starts_through_the_entry_point() -> None:
    result = subprocess.run([sys.executable, "-m", "deploy.entrypoint", "envoy", "--version"],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "envoy" in result.stdout.lower()


def test_an_unknown_component_is_refused_with_the_list() -> None:
    result = subprocess.run([sys.executable, "-m", "deploy.entrypoint", "nope"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "unknown component 'nope'" in result.stderr
    for name in registry.names():
        assert name in result.stderr


def _stages(text: str) -> list[str]:
    return re.split(r"(?m)^FROM ", text)[1:]


def test_the_containerfile_is_multi_stage_pinned_and_unprivileged() -> None:
    text = CONTAINERFILE.read_text()
    stages = _stages(text)
    assert len(stages) >= 2
    for stage in stages:
        image = stage.split()[0]
        assert re.search(r":3\.11[.\w-]*slim[\w-]*@sha256:[0-9a-f]{64}$", image), image
    final = stages[-1]
    assert re.search(r"(?m)^USER 10001", final)
    # No build tools in the final stage: nothing is installed there, nothing compiled.
    for tool in ("apt-get", "gcc", "build-essential", "pip install"):
        assert tool not in final
    assert "--only-binary=:all:" in stages[0]
    assert "proto/generate.py" in stages[0]
    assert 'ENTRYPOINT ["python", "-m", "deploy.entrypoint"]' in final
