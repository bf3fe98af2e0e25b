"""Traffic incidents, independent of gRPC: an incident is recorded, with a TRAFFIC replan in
the same transaction when an active route drives through its area while it lasts."""

from __future__ import annotations

from cartage.routing.v1 import decision_pb2
from services.kit.idempotency import IdempotencyKey, idempotent
from services.kit.uow import Transaction
from services.routing.domain import traffic
from services.routing.domain.model import (
    Change,
    DecisionDomain,
    TrafficIncident,
    Trigger,
    new_id,
)
from services.routing.use_cases.ports import Page
from services.routing.use_cases.shared import UseCaseBase


class IncidentUseCases(UseCaseBase):
    async def report_incident(self, client_id: str, content: decision_pb2.TrafficIncident,
                              key: IdempotencyKey | None, request_id: str = ""
                              ) -> TrafficIncident:
        """Store the incident; if an active route drives through its area while it lasts,
        store a TRAFFIC replan in the same transaction."""

        codec = self._messages.incident_codec(client_id)

        async def work(tx: Transaction) -> TrafficIncident:
            incident = TrafficIncident(new_id(), client_id, content, self._clock())
            self._repo.insert_incident(tx, incident)
            active = await self._repo.active_plan(tx, client_id)
            if (active is not None and incident.end > incident.create_time
                    and traffic.passes_through(content, traffic.route_legs(
                        active.content, {v.name: v for v in active.fleet}))):
                trigger = Trigger(
                    "ReportTrafficIncident", key.key if key else request_id, (incident.name,),
                    content.description or f"traffic incident {incident.name}")
                self._replan_job(tx, active, Change(DecisionDomain.TRAFFIC,
                                                    reason=trigger.summary), trigger)
            return incident

        incident = await idempotent(self._uow, key, codec, work, request_id=request_id)
        self._planner.wake()
        return incident

    async def list_incidents(self, page: Page) -> list[TrafficIncident]:
        async with self._uow.transaction() as tx:
            return await self._repo.incident_page(tx, page)
