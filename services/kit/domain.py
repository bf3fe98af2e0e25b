"""Rules every aggregate shares: optimistic concurrency by etag and state-transition tables."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import TypeVar

from services.kit.errors import Aborted, FailedPrecondition

S = TypeVar("S", bound=enum.Enum)
Transitions = Mapping[S, frozenset[S]]


def check_etag(etag: str, current: str, what: str) -> None:
    """AIP-154: a stale etag means someone else changed the resource since the caller read it.
    An empty etag means the caller does not ask for the check."""
    if etag and etag != current:
        raise Aborted(
            f"the {what} changed since it was read (etag {etag!r}, now {current!r}); "
            "read it again and retry",
            reason="ETAG_MISMATCH",
        )


def check_transition(table: Transitions[S], state: S, target: S, what: str) -> None:
    """FAILED_PRECONDITION unless `table` allows `state` -> `target`."""
    if target not in table[state]:
        raise FailedPrecondition(
            f"{what} in state {state.name} cannot become {target.name}",
            reason="INVALID_STATE_TRANSITION",
            metadata={"state": state.name, "target": target.name},
        )


def final_states(table: Transitions[S]) -> frozenset[S]:
    """The states nothing leaves."""
    return frozenset(state for state, targets in table.items() if not targets)
