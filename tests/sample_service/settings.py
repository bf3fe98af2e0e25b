from dataclasses import dataclass
from typing import ClassVar

from services.kit.app import ServiceSettings


@dataclass(frozen=True)
class Settings(ServiceSettings):
    ENV_PREFIX: ClassVar[str] = "SAMPLE"
