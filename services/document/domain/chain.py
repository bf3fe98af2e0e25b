"""The per-client hash chain of document events, and its verification. Pure functions.

Each record is canonical JSON (sorted keys, no spaces) of its sequence number, the client, the
event, the document, its content hash, the time and the previous record's hash; its hash is the
SHA-256 of those bytes. The head (newest sequence number and hash) is signed with HMAC-SHA256
under the service's key, so a rewrite of the whole chain with recomputed hashes is still found.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

EVENTS = ("generated", "captured", "voided", "downloaded")


@dataclass(frozen=True, slots=True)
class Record:
    seq: int
    record: bytes
    previous_hash: str
    hash: str


@dataclass(frozen=True, slots=True)
class Head:
    seq: int
    hash: str
    signature: str


@dataclass(frozen=True, slots=True)
class Verdict:
    valid: bool
    checked: int
    first_broken: int = 0
    problem: str = ""


def canonical(seq: int, client_id: str, event: str, document_id: str, sha256: str,
              when: datetime, previous_hash: str) -> bytes:
    if event not in EVENTS:
        raise ValueError(f"unknown chain event {event!r}")
    body = {"seq": seq, "client_id": client_id, "event": event, "document": document_id,
            "sha256": sha256, "time": when.isoformat(), "previous": previous_hash}
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def record_hash(record: bytes) -> str:
    return hashlib.sha256(record).hexdigest()


def next_record(previous: Head | None, client_id: str, event: str, document_id: str,
                sha256: str, when: datetime) -> Record:
    seq = 1 if previous is None else previous.seq + 1
    prev_hash = "" if previous is None else previous.hash
    body = canonical(seq, client_id, event, document_id, sha256, when, prev_hash)
    return Record(seq, body, prev_hash, record_hash(body))


def sign_head(key: bytes, client_id: str, seq: int, head_hash: str) -> str:
    message = f"cartage-document-chain\x1f{client_id}\x1f{seq}\x1f{head_hash}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def verify(key: bytes, client_id: str, records: Sequence[Record], head: Head | None,
           content_hashes: Mapping[str, str]) -> Verdict:
    """Walk the chain from its first record. `content_hashes`: document id -> the SHA-256 its
    stored record holds now, so an edited document row is found at the record that chained
    it. The first problem wins."""
    previous = ""
    for index, rec in enumerate(records):
        seq = index + 1

        def broken(problem: str, at: int = seq, checked: int = index + 1) -> Verdict:
            return Verdict(False, checked, at, problem)

        if rec.seq != seq:
            return broken(f"record {rec.seq} found where {seq} belongs (a record is missing, "
                          "inserted or out of order)", min(rec.seq, seq))
        if rec.previous_hash != previous:
            return broken("its previous_hash does not match the record before it")
        if record_hash(rec.record) != rec.hash:
            return broken("its hash does not match its content (the record was edited)")
        try:
            body: dict[str, Any] = json.loads(rec.record)
        except ValueError:
            return broken("its record is not JSON")
        if body.get("seq") != seq or body.get("previous") != previous \
                or body.get("client_id") != client_id:
            return broken("its record names another position, previous hash or client")
        document = str(body.get("document", ""))
        if body.get("event") in ("generated", "captured"):
            stored = content_hashes.get(document)
            if stored is None:
                return broken(f"documents/{document} it records is gone")
            if stored != body.get("sha256"):
                return broken(f"documents/{document} no longer has the content hash it "
                              "recorded (the document row was edited)")
        previous = rec.hash
    checked = len(records)
    if head is None:
        if records:
            return Verdict(False, checked, 1, "the chain has no signed head")
        return Verdict(True, 0)
    if not hmac.compare_digest(head.signature, sign_head(key, client_id, head.seq, head.hash)):
        return Verdict(False, checked, max(1, min(head.seq, checked)),
                       "the signed head's signature is wrong (the chain was rewritten)")
    if head.seq != checked or head.hash != previous:
        at = min(head.seq, checked) + 1 if head.seq != checked else checked
        return Verdict(False, checked, max(1, at),
                       f"the signed head is record {head.seq} but the chain ends at {checked} "
                       "(records were removed or added after it)")
    return Verdict(True, checked)
