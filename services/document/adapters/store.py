"""The content store: content-addressed (SHA-256), written atomically, a local directory.

`put` writes the bytes to a temporary file in the same directory, fsyncs it, renames it to
`objects/ab/cdef…` (the hex SHA-256) and fsyncs the directory, so a crash leaves either the
whole object or none (a stray temporary file at worst, which `put` never reads and
`sweep_temporary` removes). Identical content has one name, so it is stored once.
An S3-compatible store would implement the same `ContentStore` port (use_cases.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import tempfile
from pathlib import Path

from services.document.domain.model import StoredContent

TEMP_PREFIX = ".tmp-"


class LocalContentStore:
    def __init__(self, root: str | Path, *, crash_before_rename: bool = False) -> None:
        self.root = Path(root)
        self._objects = self.root / "objects"
        # Test-only fail point: stop between the temporary file and its rename.
        self._crash_before_rename = crash_before_rename

    def path_of(self, sha256: str) -> Path:
        return self._objects / sha256[:2] / sha256[2:]

    def put_sync(self, data: bytes, content_type: str) -> StoredContent:
        digest = hashlib.sha256(data).hexdigest()
        target = self.path_of(digest)
        stored = StoredContent(digest, len(data), content_type)
        if target.exists():
            return stored  # content-addressed: the same bytes are already there
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            if self._crash_before_rename:
                raise SimulatedCrash(temp)
            os.replace(temp, target)
        except BaseException:
            if not self._crash_before_rename:
                Path(temp).unlink(missing_ok=True)
            raise
        _fsync_dir(target.parent)
        return stored

    def get_sync(self, sha256: str) -> bytes:
        return self.path_of(sha256).read_bytes()

    async def put(self, data: bytes, content_type: str) -> StoredContent:
        return await asyncio.to_thread(self.put_sync, data, content_type)

    async def get(self, sha256: str) -> bytes:
        return await asyncio.to_thread(self.get_sync, sha256)

    def objects(self) -> list[Path]:
        """Every stored object (not the temporary files)."""
        if not self._objects.exists():
            return []
        return sorted(p for p in self._objects.glob("*/*") if not p.name.startswith(TEMP_PREFIX))

    def sweep_temporary(self) -> int:
        """Remove temporary files a crash left behind; how many."""
        removed = 0
        for path in self._objects.glob(f"*/{TEMP_PREFIX}*") if self._objects.exists() else []:
            path.unlink(missing_ok=True)
            removed += 1
        return removed


class SimulatedCrash(RuntimeError):
    """Raised by the test-only fail point in place of a process dying."""


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
