"""Decisions and the autonomy policy, independent of gRPC: a pending decision is approved (its
plan becomes the active one) or rejected, and a client's levels per decision domain are kept.
Each method is one transaction, under the client's fleet lock where it changes a decision or
the policy. Decisions are made in `jobs.py` when a plan is solved."""

from __future__ import annotations

from cartage.routing.v1 import decision_pb2
from services.kit.errors import FailedPrecondition, NotFound
from services.kit.uow import Transaction
from services.routing.domain.model import AutonomyPolicy, Decision, PlanState
from services.routing.use_cases.ports import Page
from services.routing.use_cases.shared import UseCaseBase


class DecisionUseCases(UseCaseBase):
    async def get_decision(self, client_id: str, decision_id: str) -> Decision:
        async with self._uow.transaction() as tx:
            return await self._decision(tx, client_id, decision_id)

    async def list_decisions(self, page: Page) -> list[Decision]:
        async with self._uow.transaction() as tx:
            return await self._repo.decision_page(tx, page)

    async def _decision(self, tx: Transaction, client_id: str, decision_id: str, *,
                        for_update: bool = False) -> Decision:
        decision = await self._repo.decision(tx, client_id, decision_id, for_update=for_update)
        if decision is None:
            raise NotFound(f"decision decisions/{decision_id} not found",
                           reason="DECISION_NOT_FOUND")
        return decision

    async def approve_decision(self, client_id: str, decision_id: str) -> Decision:
        """Apply a pending decision, if the plan it was made against is still the active one."""
        async with self._uow.transaction() as tx:
            await self._repo.lock_fleet(tx, client_id)
            decision = await self._decision(tx, client_id, decision_id, for_update=True)
            decision.check_pending()
            active = await self._repo.active_plan(tx, client_id, for_update=True)
            if (active.id if active else "") != decision.previous_plan_id:
                raise FailedPrecondition(
                    "the active plan changed since this decision was made; replan instead",
                    reason="PREVIOUS_PLAN_NOT_ACTIVE",
                    metadata={"active_plan": active.name if active else ""})
            plan = await self._plan(tx, client_id, decision.plan_id, for_update=True)
            decision, plan = await self._apply(tx, decision, plan, active, client_id)
            await self._repo.save_decision(tx, decision)
        self.changes.changed([plan.id, *([active.id] if active else [])])
        return decision

    async def reject_decision(self, client_id: str, decision_id: str, reason: str) -> Decision:
        async with self._uow.transaction() as tx:
            await self._repo.lock_fleet(tx, client_id)
            decision = await self._decision(tx, client_id, decision_id, for_update=True)
            now = self._clock()
            decision = decision.reject(client_id, reason, now)
            plan = await self._plan(tx, client_id, decision.plan_id, for_update=True)
            await self._repo.save_plan(tx, plan.move(PlanState.REJECTED, now))
            await self._repo.save_decision(tx, decision)
        self.changes.changed([plan.id])
        return decision

    async def get_policy(self, client_id: str) -> AutonomyPolicy:
        async with self._uow.transaction() as tx:
            return await self._repo.policy(tx, client_id)

    async def update_policy(self, client_id: str, entries: list[decision_pb2.DomainPolicy],
                            etag: str) -> AutonomyPolicy:
        async with self._uow.transaction() as tx:
            await self._repo.lock_fleet(tx, client_id)
            policy = await self._repo.policy(tx, client_id, for_update=True)
            policy.check_etag(etag)
            updated = policy.replace_domains(entries, self._clock())
            await self._repo.save_policy(tx, updated)
            return updated
