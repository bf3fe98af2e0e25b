"""The container image (deploy/Containerfile) and its entry point (deploy/entrypoint.py).

There is no container engine here, so the image itself is never built in the tests: hadolint
checks the Containerfile in `make lint`, and these tests check that the entry point starts
every component of the suite (each registry service, the authorization server, the audit
collector, Envoy) and what the Containerfile promises.
"""

from __future__ import annotations

import os
import re
import shutil
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


def _copies(stage: str) -> list[tuple[list[str], str]]:
    """The COPY instructions of a stage: (sources, destination)."""
    copies = []
    for line in stage.splitlines():
        if line.startswith("COPY "):
            *sources, dest = line.split()[1:]
            copies.append(([s for s in sources if not s.startswith("--")], dest))
    return copies


def _copy(source: Path, dest: Path) -> None:
    if source.is_dir():
        shutil.copytree(source, dest, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("__pycache__"))
    else:
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, dest)


def test_the_image_layout_runs_every_component(tmp_path: Path) -> None:
    """The Containerfile's COPY lines replayed into directories (no engine here): the build
    stage's sources, its code generation, then what the final stage takes from it. Every
    component must start from that tree alone, so a directory missing from a COPY fails."""
    build, final = _stages(CONTAINERFILE.read_text())
    src, app = tmp_path / "src", tmp_path / "app"
    for sources, dest in _copies(build):
        target = src / dest
        for source in sources:
            into = target / Path(source).name if dest.endswith("/") and not \
                source.endswith("/") else target
            _copy(ROOT / source, into)
    generated = subprocess.run([sys.executable, "proto/generate.py"], cwd=src,
                               capture_output=True, text=True, timeout=120)
    assert generated.returncode == 0, generated.stderr
    for sources, dest in _copies(final):
        for source in sources:
            if source.startswith("/src/"):
                _copy(src / source.removeprefix("/src/"), app / dest.removeprefix("/app/"))
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(app), "PYTHONDONTWRITEBYTECODE": "1",
           "HOME": str(tmp_path)}
    where = subprocess.run(
        [sys.executable, "-c", "import cartage, deploy, gateway, services; "
         "from gateway import contracts; "
         "print(contracts.DESCRIPTOR_SET.is_file(), services.__file__, cartage.__file__, "
         "gateway.__file__, deploy.__file__)"],
        cwd=app, env=env, capture_output=True, text=True, timeout=60)
    assert where.returncode == 0, where.stderr
    descriptors, *packages = where.stdout.split()
    assert descriptors == "True"
    # From the copied tree, not from the checkout (which the editable install also puts on
    # sys.path, after PYTHONPATH): a package missing from a COPY line shows here.
    for package in packages:
        assert package.startswith(str(app)), package
    for name in [*registry.names(), "auth", "audit"]:
        result = subprocess.run([sys.executable, "-m", "deploy.entrypoint", name, "--help"],
                                cwd=app, env=env, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, f"{name}: {result.stderr}"
    # Nothing the tests or the tools need came along.
    assert not (app / "tests").exists() and not (app / "bench").exists()
    assert not (app / "deploy" / "chart.py").exists()
