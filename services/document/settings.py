"""The document service's settings, read once in main() (`DOCUMENT_*`, see kit.app)."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from services.kit.app import ServiceSettings
from services.kit.config import Env, SettingsError

MIN_KEY_BYTES = 32


@dataclass(frozen=True)
class Settings(ServiceSettings):
    ENV_PREFIX: ClassVar[str] = "DOCUMENT"

    grpc_address: str = "127.0.0.1:50055"
    # The content store: a local directory (content-addressed, see adapters/store.py).
    store_dir: str = ".cartage/documents"
    # An S3-compatible store instead of the directory: its endpoint (empty: AWS itself when a
    # bucket is set), bucket and region; credentials come from the AWS_* environment.
    s3_endpoint: str = ""
    s3_bucket: str = ""
    s3_region: str = "us-east-1"
    # The key that signs download links and the chain heads (hex, >= 32 bytes). Empty: the key
    # file below is used, made with a random key on first start (never a built-in default).
    signing_key: str = ""
    signing_key_file: str = ""
    # Download links live this long unless the request asks for less (or more, up to a day).
    link_ttl_s: int = 900
    # The gateway path signed links point at (`{prefix}/{token}`).
    link_prefix: str = "/v1/downloads"

    @classmethod
    def own(cls, env: Env) -> dict[str, Any]:
        data = env.str("CARTAGE_DATA_DIR", ".cartage")
        store = env.str("DOCUMENT_STORE_DIR", str(Path(data) / "documents"))
        return {
            "store_dir": store,
            "signing_key": env.str("DOCUMENT_SIGNING_KEY", ""),
            "signing_key_file": env.str("DOCUMENT_SIGNING_KEY_FILE",
                                        str(Path(data) / "document-signing-key")),
            "link_ttl_s": env.int("DOCUMENT_LINK_TTL_S", cls.link_ttl_s),
            "s3_endpoint": env.str("DOCUMENT_S3_ENDPOINT", ""),
            "s3_bucket": env.str("DOCUMENT_S3_BUCKET", ""),
            "s3_region": env.str("DOCUMENT_S3_REGION", cls.s3_region),
        }

    def check(self) -> None:
        if not 60 <= self.link_ttl_s <= 86_400:
            raise SettingsError("DOCUMENT_LINK_TTL_S must be between 60 and 86400 seconds")
        if self.s3_endpoint and not self.s3_bucket:
            raise SettingsError("DOCUMENT_S3_ENDPOINT needs DOCUMENT_S3_BUCKET")
        if self.signing_key:
            _parse_key(self.signing_key, "DOCUMENT_SIGNING_KEY")

    def key(self) -> bytes:
        """The signing key: the setting, else the key file (created on first use, mode 0600)."""
        if self.signing_key:
            return _parse_key(self.signing_key, "DOCUMENT_SIGNING_KEY")
        if not self.signing_key_file:
            raise SettingsError("set DOCUMENT_SIGNING_KEY or DOCUMENT_SIGNING_KEY_FILE")
        path = Path(self.signing_key_file)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:  # another worker made it first
                pass
            else:
                with os.fdopen(fd, "w") as file:
                    file.write(secrets.token_hex(MIN_KEY_BYTES))
        return _parse_key(path.read_text().strip(), str(path))


def _parse_key(value: str, where: str) -> bytes:
    try:
        key = bytes.fromhex(value)
    except ValueError:
        raise SettingsError(f"{where} must be hex") from None
    if len(key) < MIN_KEY_BYTES:
        raise SettingsError(f"{where} must hold at least {MIN_KEY_BYTES} bytes")
    return key
