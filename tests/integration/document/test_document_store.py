"""The content store on a real directory: identical content stored once, and a crash between
the temporary file and its rename leaves no object (only a temporary file, swept later)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from services.document.adapters.store import LocalContentStore, SimulatedCrash


async def test_identical_content_is_stored_once(tmp_path: Path) -> None:
    store = LocalContentStore(tmp_path)
    first = await store.put(b"%PDF-1.4 same", "application/pdf")
    second = await store.put(b"%PDF-1.4 same", "application/pdf")
    other = await store.put(b"%PDF-1.4 other", "application/pdf")
    assert first == second and first.sha256 == hashlib.sha256(b"%PDF-1.4 same").hexdigest()
    assert other.sha256 != first.sha256
    assert len(store.objects()) == 2
    assert await store.get(first.sha256) == b"%PDF-1.4 same"
    assert store.path_of(first.sha256).name == first.sha256[2:]


def test_a_crash_before_the_rename_leaves_no_partial_object(tmp_path: Path) -> None:
    crashing = LocalContentStore(tmp_path, crash_before_rename=True)
    data = b"x" * 100_000
    with pytest.raises(SimulatedCrash):
        crashing.put_sync(data, "application/pdf")
    store = LocalContentStore(tmp_path)
    digest = hashlib.sha256(data).hexdigest()
    assert store.objects() == [] and not store.path_of(digest).exists()
    assert store.sweep_temporary() == 1  # the temporary file, never taken for the object
    stored = store.put_sync(data, "application/pdf")  # the retry stores it whole
    assert store.get_sync(stored.sha256) == data and store.objects() == [store.path_of(digest)]
