"""The import contracts in pyproject.toml hold, and they do fail on a dependency pointing out."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LINT = Path(sys.executable).with_name("lint-imports")


def _lint(tree: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT), "--no-cache", "--config", str(tree / "pyproject.toml")],
        cwd=tree, env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=120, check=False)


def _copy(tmp_path: Path) -> Path:
    tree = tmp_path / "tree"
    for part in ("services", "gateway", "bench"):
        shutil.copytree(ROOT / part, tree / part, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tree / "pyproject.toml")
    return tree


def test_the_contracts_hold_for_the_code_as_it_is(tmp_path: Path) -> None:
    result = _lint(_copy(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_domain_module_importing_the_api_breaks_the_build(tmp_path: Path) -> None:
    tree = _copy(tmp_path)
    model = tree / "services" / "order" / "domain" / "model.py"
    model.write_text(model.read_text() + "\nfrom services.order.api import servicer  # noqa\n")
    result = _lint(tree)
    assert result.returncode == 1
    assert "Each service's dependencies point inward BROKEN" in result.stdout


def test_a_service_importing_another_breaks_the_build(tmp_path: Path) -> None:
    tree = _copy(tmp_path)
    cases = tree / "services" / "order" / "use_cases.py"
    cases.write_text(cases.read_text() + "\nimport services.routing.settings  # noqa\n")
    result = _lint(tree)
    assert result.returncode == 1
    assert "Services never import each other BROKEN" in result.stdout


def test_every_registered_service_is_under_the_contracts() -> None:
    """A service added to the registry but not to the import contracts would be unchecked."""
    import tomllib

    from services.registry import SERVICES

    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    by_type = {c["type"]: c for c in contracts["contracts"]}
    packages = {entry.package for entry in SERVICES}
    assert set(by_type["independence"]["modules"]) == packages
    assert set(by_type["layers"]["containers"]) == packages
