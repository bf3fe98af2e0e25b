"""A route plan as an RFC 7946 GeoJSON FeatureCollection, which any map tool can draw.

One LineString per route (start depot, stops, end depot; positions are [longitude, latitude] as
RFC 7946 §3.1.1 requires), one Point per stop with its shipment, kind, vehicle, sequence, times
(RFC 3339) and load, and one Point per unassigned shipment (at its delivery, when known) with
the reason.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from google.protobuf import timestamp_pb2
from google.type import latlng_pb2

from cartage.routing.v1 import route_plan_pb2, routing_service_pb2, vehicle_pb2
from services.routing.domain.shipments import dimension_label

MEDIA_TYPE = "application/geo+json"


def _position(point: latlng_pb2.LatLng) -> list[float]:
    return [point.longitude, point.latitude]


def _time(stamp: timestamp_pb2.Timestamp) -> str:
    return stamp.ToJsonString()


def _load(quantities: Any) -> dict[str, float]:
    return {dimension_label(q.dimension): q.amount for q in quantities}


def feature_collection(plan: route_plan_pb2.RoutePlan,
                       fleet: Mapping[str, vehicle_pb2.Vehicle],
                       shipments: Mapping[str, routing_service_pb2.Shipment]) -> dict[str, Any]:
    features: list[dict[str, Any]] = []
    for route in plan.routes:
        vehicle = fleet.get(route.vehicle)
        line = [_position(s.location) for s in route.stops]
        if vehicle is not None:
            line.insert(0, _position(vehicle.start_depot.location))
            if vehicle.HasField("end_depot"):
                line.append(_position(vehicle.end_depot.location))
        features.append({
            "type": "Feature",
            "geometry": {"type": "LineString", "coordinates": line},
            "properties": {
                "kind": "route", "vehicle": route.vehicle,
                "start_time": _time(route.start_time), "end_time": _time(route.end_time),
                "distance_meters": route.distance_meters, "cost": route.cost,
                "stops": len(route.stops),
            },
        })
        for sequence, stop in enumerate(route.stops, start=1):
            features.append({
                "type": "Feature",
                "geometry": {"type": "Point", "coordinates": _position(stop.location)},
                "properties": {
                    "shipment": stop.shipment,
                    "kind": route_plan_pb2.RouteStop.Kind.Name(stop.kind).removeprefix(
                        "KIND_").lower(),
                    "vehicle": route.vehicle, "sequence": sequence,
                    "arrival": _time(stop.arrival_time),
                    "service_start": _time(stop.service_start_time),
                    "departure": _time(stop.departure_time),
                    "load_after": _load(stop.load_after), "fixed": stop.fixed,
                },
            })
    for item in plan.unassigned:
        shipment = shipments.get(item.shipment)
        geometry = None
        if shipment is not None and shipment.delivery.HasField("location"):
            geometry = {"type": "Point", "coordinates": _position(shipment.delivery.location)}
        features.append({
            "type": "Feature",
            "geometry": geometry,
            "properties": {
                "shipment": item.shipment, "kind": "unassigned",
                "reason": route_plan_pb2.UnassignedShipment.Reason.Name(item.reason)
                .removeprefix("REASON_"),
                "detail": item.detail,
            },
        })
    return {"type": "FeatureCollection", "features": features,
            "properties": {"route_plan": plan.name,
                           "state": route_plan_pb2.RoutePlan.State.Name(plan.state)
                           .removeprefix("STATE_")}}


def encode(plan: route_plan_pb2.RoutePlan, fleet: Mapping[str, vehicle_pb2.Vehicle],
           shipments: Mapping[str, routing_service_pb2.Shipment]) -> bytes:
    return json.dumps(feature_collection(plan, fleet, shipments),
                      separators=(",", ":")).encode()
