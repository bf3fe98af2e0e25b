"""The fleet's use cases: vehicle CRUD and status, independent of gRPC. Each method is one
transaction. A status change publishes `vehicle.status_changed`, which the planning jobs
(`jobs.py`) consume to replan a broken vehicle's route."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from sqlalchemy.exc import IntegrityError

from cartage.routing.v1 import vehicle_pb2
from services.kit.db import constraint_name
from services.kit.errors import AlreadyExists, FailedPrecondition, NotFound
from services.kit.idempotency import IdempotencyKey, idempotent
from services.kit.uow import Transaction, UnitOfWork
from services.routing.domain.model import Vehicle, VehicleStatus
from services.routing.use_cases.ports import Events, Messages, Page, Repository
from services.routing.use_cases.shared import utc_now


class FleetUseCases:
    def __init__(
        self,
        uow: UnitOfWork,
        repository: Repository,
        events: Events,
        messages: Messages,
        *,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._uow = uow
        self._repo = repository
        self._events = events
        self._messages = messages
        self._clock = clock

    async def create_vehicle(self, client_id: str, vehicle_id: str,
                             content: vehicle_pb2.Vehicle, key: IdempotencyKey | None,
                             request_id: str = "") -> Vehicle:
        codec = self._messages.vehicle_codec(client_id, vehicle_id)

        async def work(tx: Transaction) -> Vehicle:
            vehicle = Vehicle.create(client_id, vehicle_id, content, self._clock())
            self._repo.insert_vehicle(tx, vehicle)
            return vehicle

        try:
            return await idempotent(self._uow, key, codec, work, request_id=request_id,
                                    reads=False)
        except IntegrityError as error:
            if constraint_name(error) == "vehicles_pkey":
                raise AlreadyExists(f"vehicle vehicles/{vehicle_id} already exists",
                                    reason="VEHICLE_EXISTS") from None
            raise

    async def get_vehicle(self, client_id: str, vehicle_id: str) -> Vehicle:
        async with self._uow.transaction() as tx:
            return await self._vehicle(tx, client_id, vehicle_id)

    async def list_vehicles(self, page: Page) -> list[Vehicle]:
        async with self._uow.transaction() as tx:
            return await self._repo.vehicle_page(tx, page)

    async def update_vehicle(self, client_id: str, vehicle_id: str, etag: str,
                             apply: Callable[[vehicle_pb2.Vehicle], None],
                             request_id: str = "") -> Vehicle:
        """`apply` changes a copy of the content in place (and validates the result)."""
        async with self._uow.transaction(request_id) as tx:
            vehicle = await self._vehicle(tx, client_id, vehicle_id, for_update=True)
            vehicle.check_etag(etag)
            content = vehicle_pb2.Vehicle()
            content.CopyFrom(vehicle.content)
            apply(content)
            updated = vehicle.update_content(content, self._clock())
            self._repo.save_vehicle(tx, updated)
            return updated

    async def delete_vehicle(self, client_id: str, vehicle_id: str) -> None:
        async with self._uow.transaction() as tx:
            await self._repo.lock_fleet(tx, client_id)
            vehicle = await self._vehicle(tx, client_id, vehicle_id, for_update=True)
            active = await self._repo.active_plan(tx, client_id)
            if active is not None and any(r.vehicle == vehicle.name for r in active.content.routes):
                raise FailedPrecondition(
                    f"{vehicle.name} has a route in the active plan {active.name}",
                    reason="VEHICLE_IN_ACTIVE_PLAN", metadata={"route_plan": active.name})
            self._repo.delete_vehicle(tx, vehicle)

    async def set_vehicle_status(self, client_id: str, vehicle_id: str, status: VehicleStatus,
                                 reason: str, request_id: str = "") -> Vehicle:
        """A change publishes `vehicle.status_changed` (which replans a broken vehicle's
        route); setting the status it already has changes nothing."""
        async with self._uow.transaction(request_id) as tx:
            vehicle = await self._vehicle(tx, client_id, vehicle_id, for_update=True)
            if vehicle.status == status:
                return vehicle
            now = self._clock()
            changed = vehicle.set_status(status, now)
            self._repo.save_vehicle(tx, changed)
            tx.publish(self._events.vehicle_status_changed(changed, vehicle.status, reason, now))
            return changed

    async def _vehicle(self, tx: Transaction, client_id: str, vehicle_id: str, *,
                       for_update: bool = False) -> Vehicle:
        vehicle = await self._repo.vehicle(tx, client_id, vehicle_id, for_update=for_update)
        if vehicle is None:
            # Another client's vehicle is indistinguishable from a missing one.
            raise NotFound(f"vehicle vehicles/{vehicle_id} not found",
                           reason="VEHICLE_NOT_FOUND")
        return vehicle
