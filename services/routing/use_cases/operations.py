"""The long-running operations of PlanRoutes and ReplanRoutes (google.longrunning.Operations,
through `api/operations.py`): read, cancelled and forgotten here. Each method is one
transaction; an operation is a handle on its plan."""

from __future__ import annotations

from services.kit.errors import NotFound
from services.kit.uow import Transaction
from services.routing.domain.model import Operation, PlanState, RoutePlan
from services.routing.use_cases.ports import Page
from services.routing.use_cases.shared import UseCaseBase


class OperationUseCases(UseCaseBase):
    async def get_operation(self, client_id: str, operation_id: str
                            ) -> tuple[str, RoutePlan]:
        async with self._uow.transaction() as tx:
            return await self._operation(tx, client_id, operation_id)

    async def _operation(self, tx: Transaction, client_id: str, operation_id: str
                         ) -> tuple[str, RoutePlan]:
        row = await self._repo.operation(tx, client_id, operation_id)
        if row is None:
            raise NotFound(f"operation operations/{operation_id} not found",
                           reason="OPERATION_NOT_FOUND")
        return row.id, await self._plan(tx, client_id, row.plan_id)

    async def list_operations(self, page: Page, done: bool | None
                              ) -> list[tuple[Operation, RoutePlan]]:
        async with self._uow.transaction() as tx:
            return await self._repo.operation_page(tx, page, done)

    async def cancel_operation(self, client_id: str, operation_id: str) -> None:
        """Ask the solver to stop: the best feasible plan so far is kept (and decided on like
        any other), else the plan ends CANCELLED. A finished operation is left as it is."""
        async with self._uow.transaction() as tx:
            _, plan = await self._operation(tx, client_id, operation_id)
            plan = await self._plan(tx, client_id, plan.id, for_update=True)
            if plan.state != PlanState.SOLVING or plan.cancel_requested:
                return
            await self._repo.save_plan(tx, plan.request_cancel(self._clock()))
        self._planner.cancel(plan.id)
        self._planner.wake()

    async def delete_operation(self, client_id: str, operation_id: str) -> None:
        """Forget the operation; its plan stays."""
        async with self._uow.transaction() as tx:
            await self._operation(tx, client_id, operation_id)
            self._repo.delete_operation(tx, client_id, operation_id)
