"""Reading settings from the environment, in one place per service.

Each service defines one frozen dataclass of settings and builds it once in `main()` with
`Env(os.environ)`; nothing else reads the environment and nothing is built at import time.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


class SettingsError(ValueError):
    """A setting is missing or malformed; raised at start-up, before anything binds."""


@dataclass(frozen=True, slots=True)
class Env:
    """Typed accessors over an environment mapping, with the variable named in every error."""

    values: Mapping[str, str]

    def str(self, name: str, default: str | None = None) -> str:
        value = self.values.get(name)
        if value is None or value == "":
            if default is None:
                raise SettingsError(f"{name} must be set")
            return default
        return value

    def int(self, name: str, default: int) -> int:
        raw = self.values.get(name)
        if raw in (None, ""):
            return default
        try:
            return int(raw)
        except ValueError:
            raise SettingsError(f"{name} must be an integer, got {raw!r}") from None

    def float(self, name: str, default: float) -> float:
        raw = self.values.get(name)
        if raw in (None, ""):
            return default
        try:
            return float(raw)
        except ValueError:
            raise SettingsError(f"{name} must be a number, got {raw!r}") from None

    def bool(self, name: str, default: bool) -> bool:
        raw = self.values.get(name)
        if raw in (None, ""):
            return default
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        raise SettingsError(f"{name} must be true or false, got {raw!r}")
