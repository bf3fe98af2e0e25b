"""A small AIP-160 filter subset: comparisons joined by AND.

    filter     = condition { "AND" condition }
    condition  = field operator value
    operator   = "=" | "!=" | "<" | "<=" | ">" | ">="
    value      = bare-word | "double-quoted string"

Enough for what partners ask of a list call (state, reference, time range) without a query
language to secure. Each service declares which fields and operators it accepts; anything else
is INVALID_ARGUMENT on `filter`, naming the problem.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from services.kit.errors import InvalidArgument

_TOKEN = re.compile(
    r'\s*(?:(?P<op><=|>=|!=|=|<|>)|"(?P<quoted>(?:[^"\\]|\\.)*)"|(?P<word>[A-Za-z0-9_.:\-+]+))'
)


@dataclass(frozen=True, slots=True)
class Condition:
    field: str
    operator: str
    value: str


def parse_filter(text: str, allowed: dict[str, frozenset[str]], *, max_len: int = 2000
                 ) -> list[Condition]:
    """Parse `text`; `allowed` maps each field to the operators it supports."""
    if len(text) > max_len:
        raise InvalidArgument.single("filter", f"must be at most {max_len} characters")
    tokens = _tokenize(text)
    conditions: list[Condition] = []
    i = 0
    while i < len(tokens):
        if len(tokens) - i < 3:
            raise _error("expected `field operator value`")
        (kind_f, field), (kind_o, operator), (kind_v, value) = tokens[i : i + 3]
        if kind_f != "word" or kind_o != "op" or kind_v == "op":
            raise _error("expected `field operator value`")
        if field not in allowed:
            raise _error(f"cannot filter on {field!r}; allowed: {', '.join(sorted(allowed))}")
        if operator not in allowed[field]:
            ops = " ".join(sorted(allowed[field]))
            raise _error(f"operator {operator!r} is not supported for {field} (use {ops})")
        conditions.append(Condition(field, operator, value))
        i += 3
        if i < len(tokens):
            if tokens[i] != ("word", "AND"):
                raise _error("conditions must be joined by AND")
            i += 1
            if i == len(tokens):
                raise _error("AND must be followed by a condition")
    return conditions


def _tokenize(text: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    position = 0
    text = text.rstrip()
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None or match.end() == position:
            raise _error(f"unexpected character at position {position}")
        if match.group("op") is not None:
            tokens.append(("op", match.group("op")))
        elif match.group("quoted") is not None:
            tokens.append(("quoted", re.sub(r"\\(.)", r"\1", match.group("quoted"))))
        else:
            tokens.append(("word", match.group("word")))
        position = match.end()
    return tokens


def _error(description: str) -> InvalidArgument:
    return InvalidArgument.single("filter", description)
