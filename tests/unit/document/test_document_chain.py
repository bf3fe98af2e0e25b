"""The hash chain finds every kind of tampering, and signed links refuse alteration and age."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta

import pytest

from services.document.domain import chain, links
from services.kit.errors import PermissionDenied

KEY = bytes(range(32))
CLIENT = "client-a"
T0 = datetime(2030, 1, 1, tzinfo=UTC)


def _chain(n: int = 5, key: bytes = KEY) -> tuple[list[chain.Record], chain.Head, dict[str, str]]:
    records: list[chain.Record] = []
    head: chain.Head | None = None
    hashes = {}
    for i in range(n):
        doc = f"{i:032x}"
        hashes[doc] = f"{i:064x}"
        rec = chain.next_record(head, CLIENT, "generated", doc, hashes[doc],
                                T0 + timedelta(seconds=i))
        records.append(rec)
        head = chain.Head(rec.seq, rec.hash, chain.sign_head(key, CLIENT, rec.seq, rec.hash))
    assert head is not None
    return records, head, hashes


def _resigned(records: list[chain.Record]) -> chain.Head:
    last = records[-1]
    return chain.Head(last.seq, last.hash, chain.sign_head(KEY, CLIENT, last.seq, last.hash))


def test_an_intact_chain_verifies() -> None:
    records, head, hashes = _chain()
    assert chain.verify(KEY, CLIENT, records, head, hashes) == chain.Verdict(True, 5)


def test_an_edited_record_is_named() -> None:
    records, head, hashes = _chain()
    body = json.loads(records[2].record)
    body["document"] = "f" * 32
    records[2] = dataclasses.replace(records[2], record=json.dumps(body).encode())
    verdict = chain.verify(KEY, CLIENT, records, head, hashes)
    assert (verdict.valid, verdict.first_broken) == (False, 3)
    assert "edited" in verdict.problem


def test_an_edited_document_hash_is_named_at_its_record() -> None:
    records, head, hashes = _chain()
    hashes[f"{3:032x}"] = "0" * 64
    verdict = chain.verify(KEY, CLIENT, records, head, hashes)
    assert (verdict.valid, verdict.first_broken) == (False, 4)


def test_a_deleted_record_is_named() -> None:
    records, head, hashes = _chain()
    del records[1]
    verdict = chain.verify(KEY, CLIENT, records, head, hashes)
    assert (verdict.valid, verdict.first_broken) == (False, 2)


def test_reordered_records_are_named() -> None:
    records, head, hashes = _chain()
    records[1], records[2] = records[2], records[1]
    verdict = chain.verify(KEY, CLIENT, records, head, hashes)
    assert (verdict.valid, verdict.first_broken) == (False, 2)


def test_an_inserted_record_is_named() -> None:
    records, head, hashes = _chain()
    fake = chain.next_record(chain.Head(records[1].seq, records[1].hash, ""), CLIENT,
                             "generated", "e" * 32, "e" * 64, T0)
    hashes["e" * 32] = "e" * 64  # even naming a document that exists
    records.insert(2, fake)
    verdict = chain.verify(KEY, CLIENT, records, head, hashes)
    # the inserted record links; the one after it now sits at the wrong position
    assert not verdict.valid and verdict.first_broken == 3
    assert "missing, inserted or out of order" in verdict.problem


def test_a_truncated_chain_is_found_by_its_signed_head() -> None:
    records, head, hashes = _chain()
    verdict = chain.verify(KEY, CLIENT, records[:3], head, hashes)
    assert not verdict.valid and "ends at 3" in verdict.problem


def test_a_whole_chain_rewrite_without_the_key_is_found() -> None:
    rewritten, forged_head, hashes = _chain(key=b"x" * 32)  # every hash recomputed
    verdict = chain.verify(KEY, CLIENT, rewritten, forged_head, hashes)
    assert not verdict.valid and "rewritten" in verdict.problem


def test_links_verify_until_they_expire() -> None:
    now = int(T0.timestamp())
    token = links.sign(KEY, links.Link(CLIENT, "a" * 32, now + 900))
    assert links.verify(KEY, token, now + 899) == links.Link(CLIENT, "a" * 32, now + 900)
    with pytest.raises(PermissionDenied, match="expired"):
        links.verify(KEY, token, now + 900)


@pytest.mark.parametrize("alter", [
    lambda t: t.replace("a" * 32, "b" * 32),  # another document
    lambda t: t.rsplit(".", 2)[0] + f".{int(T0.timestamp()) + 99999}." + t.rsplit(".", 1)[1],
    lambda t: t[:-2] + ("AA" if not t.endswith("AA") else "BB"),  # signature
    lambda t: "Y2xpZW50LWI" + t[t.index("."):],  # another client
    lambda t: t + ".x",
    lambda t: "garbage",
])
def test_altered_links_are_refused(alter) -> None:
    token = links.sign(KEY, links.Link(CLIENT, "a" * 32, int(T0.timestamp()) + 900))
    with pytest.raises(PermissionDenied):
        links.verify(KEY, alter(token), int(T0.timestamp()))


def test_a_link_signed_with_another_key_is_refused() -> None:
    token = links.sign(b"k" * 32, links.Link(CLIENT, "a" * 32, int(T0.timestamp()) + 900))
    with pytest.raises(PermissionDenied, match="signature"):
        links.verify(KEY, token, int(T0.timestamp()))
