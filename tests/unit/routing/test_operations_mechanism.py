"""The kit's google.longrunning.Operations mechanism (services/kit/operations.py), served for a
made-up second service over an in-memory store: names carry the service, pages and filters,
WaitOperation's bounded wait. Routing's own store is exercised end to end in
tests/integration/routing/test_planning.py. No I/O."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence

import pytest
from google.longrunning import operations_proto_pb2 as ops
from google.protobuf import duration_pb2

from services.kit.auth import Caller, set_caller
from services.kit.errors import InvalidArgument, NotFound
from services.kit.operations import ListedOperation, OperationNames, OperationsServicer

IDS = [f"{i:032x}" for i in range(1, 4)]


class Store:
    """Operations of client c1, newest (highest id) first; `finish` marks one done."""

    def __init__(self, names: OperationNames) -> None:
        self.names = names
        self.done: set[str] = set()
        self.changed = asyncio.Event()
        self.cancelled: list[str] = []

    async def get(self, client_id: str, operation_id: str) -> ops.Operation:
        if client_id != "c1" or operation_id not in IDS:
            raise NotFound(f"operation {operation_id} not found")
        return ops.Operation(name=self.names.name(operation_id), done=operation_id in self.done)

    async def list(self, client_id: str, done: bool | None, after: tuple[str, ...] | None,
                   limit: int) -> Sequence[ListedOperation]:
        rows = [ListedOperation((i,), await self.get(client_id, i)) for i in reversed(IDS)
                if client_id == "c1" and (after is None or i < after[0])
                and (done is None or (i in self.done) == done)]
        return rows[:limit]

    async def cancel(self, client_id: str, operation_id: str) -> None:
        self.cancelled.append(operation_id)

    async def delete(self, client_id: str, operation_id: str) -> None: ...

    async def wait(self, client_id: str, operation_id: str, seconds: float) -> None:
        try:
            await asyncio.wait_for(self.changed.wait(), seconds)
        except TimeoutError:
            pass


@pytest.fixture
def served() -> Iterator[tuple[OperationsServicer, Store]]:
    names = OperationNames("billing")
    store = Store(names)
    set_caller(Caller("c1", frozenset()))
    try:
        yield OperationsServicer(names, store, key_length=1, reread_s=0.05), store
    finally:
        set_caller(None)


async def test_names_say_which_service_owns_an_operation(served) -> None:
    servicer, store = served
    got = await servicer.GetOperation(ops.GetOperationRequest(
        name=f"operations/billing/{IDS[0]}"), None)
    assert got.name == f"operations/billing/{IDS[0]}"
    for wrong in (f"operations/routing/{IDS[0]}", f"operations/{IDS[0]}"):  # no legacy form
        with pytest.raises(InvalidArgument):
            await servicer.GetOperation(ops.GetOperationRequest(name=wrong), None)
    await servicer.CancelOperation(ops.CancelOperationRequest(
        name=f"operations/billing/{IDS[1]}"), None)
    assert store.cancelled == [IDS[1]]
    assert OperationsServicer("billing", store).names.name("x") == "operations/billing/x"


async def test_pages_and_the_done_filter(served) -> None:
    servicer, store = served
    first = await servicer.ListOperations(ops.ListOperationsRequest(page_size=2), None)
    assert [o.name[-1] for o in first.operations] == ["3", "2"] and first.next_page_token
    rest = await servicer.ListOperations(ops.ListOperationsRequest(
        page_size=2, page_token=first.next_page_token), None)
    assert [o.name[-1] for o in rest.operations] == ["1"] and not rest.next_page_token
    store.done.add(IDS[1])
    done = await servicer.ListOperations(ops.ListOperationsRequest(
        name="operations/billing", filter="done = true"), None)
    assert [o.name[-1] for o in done.operations] == ["2"]
    with pytest.raises(InvalidArgument):  # a token of another query
        await servicer.ListOperations(ops.ListOperationsRequest(
            filter="done = false", page_token=first.next_page_token), None)
    for bad in ("done = maybe", "state = DONE"):
        with pytest.raises(InvalidArgument):
            await servicer.ListOperations(ops.ListOperationsRequest(filter=bad), None)


async def test_wait_returns_when_done_or_when_its_timeout_passes(served) -> None:
    servicer, store = served
    name = f"operations/billing/{IDS[2]}"
    timed_out = await servicer.WaitOperation(ops.WaitOperationRequest(
        name=name, timeout=duration_pb2.Duration(nanos=100_000_000)), None)
    assert not timed_out.done

    async def finish_soon() -> None:
        await asyncio.sleep(0.1)
        store.done.add(IDS[2])
        store.changed.set()

    finishing = asyncio.create_task(finish_soon())
    waited = await servicer.WaitOperation(ops.WaitOperationRequest(name=name), None)
    await finishing
    assert waited.done
    with pytest.raises(InvalidArgument):
        await servicer.WaitOperation(ops.WaitOperationRequest(
            name=name, timeout=duration_pb2.Duration(seconds=-1)), None)
