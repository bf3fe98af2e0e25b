"""The karrio split holds: builders, parsers and the code table do no I/O and know no service."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CHANNELS = Path(__file__).resolve().parents[3] / "services" / "carrier" / "channels"
PURE = ["model.py", "codes.py", "x12_envelope.py", "edi_x12.py", "http_api.py"]
ALLOWED = {"__future__", "collections", "dataclasses", "datetime", "decimal", "json", "re",
           "typing", "unicodedata", "services.carrier.channels"}


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


@pytest.mark.parametrize("name", PURE)
def test_a_pure_channel_module_imports_only_the_standard_library_and_the_model(name: str) -> None:
    for module in _imports(CHANNELS / name):
        assert any(module == ok or module.startswith(ok + ".") for ok in ALLOWED), (
            f"{name} imports {module}")
