"""X12 interchanges as pure functions: one segment builder, one envelope writer, one reader.

Writing: `render(function_id, transactions, ...)` wraps transaction bodies in ST/SE, GS/GE and
ISA/IEA with correct counts and control numbers. Reading: `parse_interchange(text)` takes the
delimiters from the fixed-width ISA (element separator at byte 4, component separator at 105,
segment terminator at 106), checks every envelope (IEA/GE counts and control numbers match their
headers, SE counts its own segments) and raises `ChannelError` naming the segment position.
Segment positions are 1-based over the whole interchange, ISA = 1.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from services.carrier.channels.model import ChannelError

ELEMENT = "*"
COMPONENT = ">"
TERMINATOR = "~"
VERSION = "00401"  # ISA12
GROUP_VERSION = "004010"  # GS08
_DELIMITERS = frozenset(ELEMENT + COMPONENT + TERMINATOR + "^")
# Letters NFKD does not decompose into ASCII; the rest of Latin script folds by decomposition.
_FOLD = str.maketrans({"ß": "ss", "Æ": "AE", "æ": "ae", "Ø": "O", "ø": "o", "Œ": "OE",
                       "œ": "oe", "Ł": "L", "ł": "l", "Đ": "D", "đ": "d", "Þ": "TH", "þ": "th"})
_ISA_WIDTHS = (2, 10, 2, 10, 2, 15, 2, 15, 6, 4, 1, 5, 9, 1, 1, 1)
_ISA_LENGTH = 106  # "ISA" + 16 separators + the widths above + the terminator


@dataclass(frozen=True, slots=True)
class Segment:
    tag: str
    elements: tuple[str, ...]  # elements[0] is X12's element 01
    position: int

    def get(self, index: int) -> str:
        """Element `index` (1-based, as X12 numbers them); "" when absent."""
        return self.elements[index - 1] if index <= len(self.elements) else ""

    def where(self, index: int | None = None) -> str:
        element = f"{self.tag}{index:02d}" if index is not None else self.tag
        return f"segment {self.position} ({element})"


@dataclass(frozen=True, slots=True)
class Transaction:
    set_id: str  # ST01: 204, 990, 997
    control: str  # ST02
    segments: tuple[Segment, ...]  # between ST and SE, both excluded


@dataclass(frozen=True, slots=True)
class Group:
    function_id: str  # GS01: SM (204), GF (990), FA (997)
    control: int  # GS06
    transactions: tuple[Transaction, ...]


@dataclass(frozen=True, slots=True)
class Interchange:
    sender_id: str
    receiver_id: str
    control: int  # ISA13
    groups: tuple[Group, ...]


# --- writing ------------------------------------------------------------------------------------


def text(value: str, field: str, *, max_len: int, min_len: int = 1) -> str:
    """A data element: ASCII (accents folded), no delimiter characters, within X12's lengths."""
    folded = unicodedata.normalize("NFKD", value.translate(_FOLD))
    folded = folded.encode("ascii", "ignore").decode("ascii")
    folded = " ".join(folded.split())
    bad = sorted(_DELIMITERS.intersection(folded))
    if bad:
        raise ChannelError(f"{field} contains X12 delimiter characters {''.join(bad)!r}", field)
    if not min_len <= len(folded) <= max_len:
        raise ChannelError(f"{field} must be {min_len}–{max_len} characters in X12", field)
    return folded


def segment(tag: str, *elements: str) -> str:
    """One segment without its terminator; trailing empty elements are dropped, as X12 wants."""
    items = list(elements)
    while items and items[-1] == "":
        items.pop()
    return ELEMENT.join([tag, *items])


def date8(moment: datetime, field: str) -> str:
    return utc(moment, field).strftime("%Y%m%d")


def time4(moment: datetime, field: str) -> str:
    return utc(moment, field).strftime("%H%M")


def utc(moment: datetime, field: str) -> datetime:
    if moment.tzinfo is None:
        raise ChannelError(f"{field} has no time zone", field)
    return moment.astimezone(UTC)


def render(
    function_id: str,
    transactions: Sequence[tuple[str, Sequence[str]]],
    *,
    control_number: int,
    sender_id: str,
    receiver_id: str,
    now: datetime,
    test: bool = False,
) -> str:
    """A whole interchange: one functional group holding `(set_id, body segments)` transactions."""
    if not 1 <= control_number <= 999_999_999:
        raise ChannelError("control number must be 1–999999999", "control_number")
    sender = text(sender_id, "sender_id", max_len=15)
    receiver = text(receiver_id, "receiver_id", max_len=15)
    isa = segment(
        "ISA", "00", " " * 10, "00", " " * 10, "ZZ", sender.ljust(15), "ZZ", receiver.ljust(15),
        utc(now, "now").strftime("%y%m%d"), time4(now, "now"), "U", VERSION,
        f"{control_number:09d}", "0", "T" if test else "P", COMPONENT,
    )
    out = [isa, segment("GS", function_id, sender, receiver, date8(now, "now"), time4(now, "now"),
                        str(control_number), "X", GROUP_VERSION)]
    for index, (set_id, body) in enumerate(transactions, start=1):
        control = f"{index:04d}"
        out.append(segment("ST", set_id, control))
        out.extend(body)
        out.append(segment("SE", str(len(body) + 2), control))
    out.append(segment("GE", str(len(transactions)), str(control_number)))
    out.append(segment("IEA", "1", f"{control_number:09d}"))
    return "".join(s + TERMINATOR for s in out)


# --- reading ------------------------------------------------------------------------------------


def split_segments(text_: str) -> list[str]:
    """The raw segments of an interchange (for golden comparisons); whitespace between dropped."""
    return _tokenize(text_)[0]


def _tokenize(raw: str) -> tuple[list[str], str]:
    body = raw.lstrip("\ufeff\r\n\t ")
    if not body.startswith("ISA"):
        raise ChannelError("an interchange starts with ISA", "segment 1")
    if len(body) < _ISA_LENGTH:
        raise ChannelError("truncated ISA header (it is 106 characters)", "segment 1 (ISA)")
    separator, terminator = body[3], body[105]
    if separator.isalnum() or separator.isspace():
        raise ChannelError("invalid element separator in the ISA header", "segment 1 (ISA)")
    if terminator.isalnum() or terminator in (separator, " "):
        raise ChannelError("the ISA header is not fixed width (106 characters)",
                           "segment 1 (ISA)")
    parts = body.split(terminator)
    if parts[-1].strip():
        raise ChannelError("truncated: data after the last segment terminator",
                           f"segment {len(parts)}")
    return [p.strip("\r\n") for p in parts[:-1]], separator


def parse_segments(raw: str) -> list[Segment]:
    parts, separator = _tokenize(raw)
    segments: list[Segment] = []
    for position, part in enumerate(parts, start=1):
        fields = part.split(separator)
        tag = fields[0]
        if not re.fullmatch(r"[A-Z][A-Z0-9]{1,2}", tag):
            raise ChannelError(f"not a segment: {part[:20]!r}", f"segment {position}")
        segments.append(Segment(tag, tuple(fields[1:]), position))
    _check_isa(segments[0])
    return segments


def _check_isa(isa: Segment) -> None:
    if len(isa.elements) != len(_ISA_WIDTHS):
        raise ChannelError("ISA must have 16 elements", isa.where())
    for index, (value, width) in enumerate(zip(isa.elements, _ISA_WIDTHS, strict=True), 1):
        if len(value) != width:
            raise ChannelError(f"ISA{index:02d} must be {width} characters wide", isa.where(index))
    if not isa.get(13).isdigit():
        raise ChannelError("ISA13 control number must be digits", isa.where(13))


def _number(seg: Segment, index: int) -> int:
    value = seg.get(index)
    if not value.isdigit():
        raise ChannelError(f"{seg.tag}{index:02d} must be a number, got {value!r}",
                           seg.where(index))
    return int(value)


class _Cursor:
    def __init__(self, segments: list[Segment]) -> None:
        self.segments, self.index = segments, 0

    def next(self, *tags: str) -> Segment:
        if self.index >= len(self.segments):
            last = self.segments[-1].position + 1 if self.segments else 1
            raise ChannelError(f"truncated: expected {'/'.join(tags)}", f"segment {last}")
        seg = self.segments[self.index]
        if seg.tag not in tags:
            raise ChannelError(f"expected {'/'.join(tags)}, found {seg.tag}", seg.where())
        self.index += 1
        return seg

    def peek(self) -> str | None:
        return self.segments[self.index].tag if self.index < len(self.segments) else None


def parse_interchange(raw: str) -> Interchange:
    """Every envelope checked; ChannelError with the segment position on the first fault."""
    cursor = _Cursor(parse_segments(raw))
    isa = cursor.next("ISA")
    groups: list[Group] = []
    while cursor.peek() == "GS":
        groups.append(_group(cursor))
    iea = cursor.next("IEA")
    if _number(iea, 1) != len(groups):
        raise ChannelError(f"IEA01 says {iea.get(1)} groups, the interchange has {len(groups)}",
                           iea.where(1))
    if iea.get(2) != isa.get(13):
        raise ChannelError(f"IEA02 {iea.get(2)} does not match ISA13 {isa.get(13)}",
                           iea.where(2))
    if cursor.peek() is not None:
        raise ChannelError("segments after IEA", cursor.segments[cursor.index].where())
    return Interchange(isa.get(6).strip(), isa.get(8).strip(), int(isa.get(13)), tuple(groups))


def _group(cursor: _Cursor) -> Group:
    gs = cursor.next("GS")
    control = _number(gs, 6)
    transactions: list[Transaction] = []
    while cursor.peek() == "ST":
        transactions.append(_transaction(cursor))
    ge = cursor.next("GE")
    if _number(ge, 1) != len(transactions):
        raise ChannelError(
            f"GE01 says {ge.get(1)} transaction sets, the group has {len(transactions)}",
            ge.where(1))
    if _number(ge, 2) != control:
        raise ChannelError(f"GE02 {ge.get(2)} does not match GS06 {gs.get(6)}", ge.where(2))
    return Group(gs.get(1), control, tuple(transactions))


def _transaction(cursor: _Cursor) -> Transaction:
    st = cursor.next("ST")
    body: list[Segment] = []
    while cursor.peek() not in ("SE", "GE", "IEA", "ST", "GS", None):
        body.append(cursor.next(cursor.segments[cursor.index].tag))
    se = cursor.next("SE")
    if _number(se, 1) != len(body) + 2:
        raise ChannelError(f"SE01 says {se.get(1)} segments, the transaction set has "
                           f"{len(body) + 2}", se.where(1))
    if se.get(2) != st.get(2):
        raise ChannelError(f"SE02 {se.get(2)} does not match ST02 {st.get(2)}", se.where(2))
    return Transaction(st.get(1), st.get(2), tuple(body))
