"""Random and mutated protobuf bytes on every unary and server-streaming method of the order
service, the routing service, the carrier service and `google.longrunning.Operations`
(served by routing): no call
may end INTERNAL or UNKNOWN (issue 12).

The methods come from the generated descriptors; each gets a fixed, seeded budget of cases:
random bytes, hand-made wire-format traps (truncated varints, bad wire types, huge length
prefixes, invalid UTF-8) and byte mutations of valid-ish requests (some filled with extreme
scalar values: NaN, huge integers, unknown enum numbers, out-of-range timestamps).
"""

from __future__ import annotations

import asyncio
import math
import os
import random
import time
from collections import Counter

import grpc
from google.longrunning import operations_proto_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message_factory

from cartage.carrier.v1 import carrier_service_pb2
from cartage.order.v1 import order_service_pb2
from cartage.order.v1 import order_service_pb2 as order_pb
from cartage.routing.v1 import routing_service_pb2
from cartage.tracking.v1 import tracking_service_pb2
from tests.support import OrderClient, metadata, new_client_id, sample_order

SEED = int(os.environ.get("CARTAGE_FUZZ_SEED", "12"))  # another seed: other cases
# `make fuzz` sets CARTAGE_FUZZ_CASES for a longer run.
CASES_PER_METHOD = int(os.environ.get("CARTAGE_FUZZ_CASES", "40"))
CALL_TIMEOUT_S = 3.0
STREAM_TIMEOUT_S = 0.5
STREAM_MAX_MESSAGES = 2
CONCURRENCY = 8
FORBIDDEN = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}

FieldDescriptor = _descriptor.FieldDescriptor

SERVICES = [
    ("order", order_service_pb2.DESCRIPTOR.services_by_name["OrderService"]),
    ("routing", routing_service_pb2.DESCRIPTOR.services_by_name["RoutingService"]),
    ("routing", operations_proto_pb2.DESCRIPTOR.services_by_name["Operations"]),
    ("carrier", carrier_service_pb2.DESCRIPTOR.services_by_name["CarrierService"]),
    ("tracking", tracking_service_pb2.DESCRIPTOR.services_by_name["TrackingService"]),
]

HEX_ID = "0123456789abcdef" * 2
RESOURCES = [("RateCard", f"carriers/{HEX_ID}/rateCards/{HEX_ID}"),
             ("Carrier", f"carriers/{HEX_ID}"), ("Shipment", f"shipments/{HEX_ID}"),
             ("Tender", f"tenders/{HEX_ID}"), ("TrackingLink", f"trackingLinks/{HEX_ID}"),
             ("Tracking", f"orders/{HEX_ID}/tracking"), ("Geofence", f"geofences/{HEX_ID}"),
             ("ListOperations", "operations"), ("Operation", f"operations/routing/{HEX_ID}"),
             ("Order", f"orders/{HEX_ID}"), ("Vehicle", "vehicles/v-fuzz"),
             ("RoutePlan", f"routePlans/{HEX_ID}"), ("Routes", f"routePlans/{HEX_ID}"),
             ("Decision", f"decisions/{HEX_ID}"), ("Incident", "trafficIncidents/fuzz"),
             ("Autonomy", "autonomyPolicy")]

EXTREME_INTS = [0, 1, -1, 2**31 - 1, -(2**31), 2**63 - 1, -(2**63), 10**12]
EXTREME_UINTS = [0, 1, 2**32 - 1, 2**64 - 1]
EXTREME_FLOATS = [0.0, -0.0, math.nan, math.inf, -math.inf, 1e308, -1e308, 5e-324]
EXTREME_STRINGS = ["", "x", "x" * 5000, "\x00", "orders/", "orders/../x", "ü€😀", " ",
                   "*", "orders/-", "00000000-0000-0000-0000-000000000000"]


def methods() -> list[tuple[str, str, _descriptor.MethodDescriptor]]:
    """(which server, full path, descriptor) of every unary and server-streaming method."""
    found = []
    for server, service in SERVICES:
        for method in service.methods:
            if method.client_streaming:
                continue
            found.append((server, f"/{service.full_name}/{method.name}", method))
    return found


def resource_name(method: _descriptor.MethodDescriptor) -> str:
    for word, name in RESOURCES:
        if word in method.name:
            return name
    return "x"


def is_repeated(field: FieldDescriptor) -> bool:
    if hasattr(field, "is_repeated"):
        return field.is_repeated
    return field.label == FieldDescriptor.LABEL_REPEATED


def minimal(message, name: str, depth: int = 0) -> None:
    """Only the resource name, on the request or on the resource it carries (Update*)."""
    for field in message.DESCRIPTOR.fields:
        if field.name == "name" and field.type == FieldDescriptor.TYPE_STRING:
            message.name = name
        elif (depth == 0 and field.type == FieldDescriptor.TYPE_MESSAGE
              and not is_repeated(field)
              and "name" in field.message_type.fields_by_name):
            minimal(getattr(message, field.name), name, depth + 1)


def fill(message, rng: random.Random, name: str, depth: int, extreme: bool) -> None:
    """Set every field of `message` (to depth 2): plausible values, or extreme ones."""
    for field in message.DESCRIPTOR.fields:
        repeated = is_repeated(field)
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            if depth >= 2 or field.message_type.GetOptions().map_entry:
                continue
            if field.containing_oneof is not None and rng.random() < 0.5:
                continue
            child = getattr(message, field.name).add() if repeated else getattr(
                message, field.name)
            fill(child, rng, name, depth + 1, extreme)
            if not repeated:
                child.SetInParent()
            continue
        value = scalar(field, rng, name, extreme)
        if value is None:
            continue
        try:
            if repeated:
                getattr(message, field.name).append(value)
            else:
                setattr(message, field.name, value)
        except (ValueError, TypeError):
            pass


def scalar(field: FieldDescriptor, rng: random.Random, name: str, extreme: bool):
    kind = field.type
    if kind == FieldDescriptor.TYPE_STRING:
        if not extreme:
            return name if field.name in ("name", "parent") else f"fuzz-{field.name}"
        return rng.choice([*EXTREME_STRINGS, name])
    if kind == FieldDescriptor.TYPE_BYTES:
        return rng.randbytes(rng.choice([0, 1, 16]))
    if kind == FieldDescriptor.TYPE_BOOL:
        return rng.random() < 0.5
    if kind in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return rng.choice(EXTREME_FLOATS) if extreme else 1.5
    if kind == FieldDescriptor.TYPE_ENUM:
        numbers = [v.number for v in field.enum_type.values]
        return rng.choice([*numbers, 99, -1]) if extreme else max(numbers)
    if kind in (FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_FIXED32):
        return rng.choice(EXTREME_UINTS[:3]) if extreme else 1
    if kind in (FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64):
        return rng.choice(EXTREME_UINTS) if extreme else 1
    if kind in (FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_SINT32,
                FieldDescriptor.TYPE_SFIXED32):
        return rng.choice(EXTREME_INTS[:5]) if extreme else 1
    return rng.choice(EXTREME_INTS) if extreme else 1  # 64-bit signed


def varint(value: int) -> bytes:
    out = bytearray()
    value &= (1 << 64) - 1
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def crafted(rng: random.Random, numbers: list[int]) -> bytes:
    """A wire-format trap on one of the message's field numbers (or a random one)."""
    number = rng.choice(numbers or [1]) if rng.random() < 0.8 else rng.randint(1, 2**29 - 1)
    tag = lambda wire: varint((number << 3) | wire)  # noqa: E731
    return rng.choice([
        lambda: tag(0) + b"\x80" * rng.randint(1, 11),            # truncated / overlong varint
        lambda: tag(rng.choice([3, 4, 6, 7])) + rng.randbytes(4),  # groups, bad wire types
        lambda: tag(2) + varint(rng.choice([2**31, 2**32 - 1, 2**63, 2**64 - 1])) + b"ab",
        lambda: tag(2) + varint(10) + b"abc",                     # length beyond the end
        lambda: tag(2) + varint(2) + b"\xff\xfe",                 # invalid UTF-8
        lambda: tag(1) + b"\x00" * 3,                             # truncated fixed64
        lambda: tag(5) + b"\x00",                                 # truncated fixed32
        lambda: b"\x00" + rng.randbytes(8),                       # field number 0
        lambda: (tag(2) + varint(2)) * 200,                       # nested, never closed
        lambda: varint(rng.randint(0, 2**64 - 1)),                # a lone random tag
    ])()


def mutate(data: bytes, rng: random.Random) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(6)
        pos = rng.randint(0, len(buf))
        if op == 0 and buf:                                        # flip a bit
            i = min(pos, len(buf) - 1)
            buf[i] ^= 1 << rng.randrange(8)
        elif op == 1:                                              # insert bytes
            buf[pos:pos] = rng.randbytes(rng.randint(1, 4))
        elif op == 2 and buf:                                      # delete bytes
            del buf[pos:pos + rng.randint(1, 4)]
        elif op == 3:                                              # truncate
            del buf[pos:]
        elif op == 4 and buf:                                      # set a byte to a trap
            buf[min(pos, len(buf) - 1)] = rng.choice([0x00, 0x7F, 0x80, 0xFF])
        else:                                                      # duplicate a slice
            buf[pos:pos] = buf[max(0, pos - 8):pos]
    return bytes(buf)


def cases(method: _descriptor.MethodDescriptor, rng: random.Random) -> list[bytes]:
    request_class = message_factory.GetMessageClass(method.input_type)
    name = resource_name(method)
    numbers = [f.number for f in method.input_type.fields]
    request = request_class()
    minimal(request, name)
    bases = [request.SerializeToString()]
    if method.name == "CreateOrder":
        bases.append(order_pb.CreateOrderRequest(order=sample_order()).SerializeToString())
    elif method.name == "BatchCreateOrders":
        bases.append(order_pb.BatchCreateOrdersRequest(requests=[
            order_pb.CreateOrderRequest(order=sample_order()) for _ in range(2)]
        ).SerializeToString())
    while len(bases) < 4:
        request = request_class()
        fill(request, rng, name, 0, extreme=len(bases) > 1)
        bases.append(request.SerializeToString())
    out: list[bytes] = list(bases)                                            # 4 valid-ish
    out += [rng.randbytes(rng.randint(0, 2048)) for _ in range(10)]           # 10 random
    out += [crafted(rng, numbers) for _ in range(8)]                          # 8 traps
    while len(out) < CASES_PER_METHOD:                                        # 18 mutations
        out.append(mutate(rng.choice(bases), rng))
    return out


async def send(channel: grpc.aio.Channel, path: str, streaming: bool, body: bytes,
               identity) -> grpc.StatusCode:
    if not streaming:
        call = channel.unary_unary(path, request_serializer=None, response_deserializer=None)
        try:
            await call(body, metadata=identity, timeout=CALL_TIMEOUT_S)
        except grpc.aio.AioRpcError as error:
            return error.code()
        return grpc.StatusCode.OK
    stream = channel.unary_stream(path, request_serializer=None, response_deserializer=None)
    call = stream(body, metadata=identity, timeout=STREAM_TIMEOUT_S)
    try:
        read = 0
        async for _ in call:
            read += 1
            if read >= STREAM_MAX_MESSAGES:
                call.cancel()
                return grpc.StatusCode.OK
    except grpc.aio.AioRpcError as error:
        return error.code()
    except asyncio.CancelledError:
        return grpc.StatusCode.CANCELLED
    return grpc.StatusCode.OK


async def test_random_and_mutated_bytes_never_end_internal(order_address: str,
                                                          routing_address: str,
                                                          carrier_address: str,
                                                          tracking_address: str) -> None:
    started = time.monotonic()
    rng = random.Random(SEED)
    client_id = new_client_id()
    identity = metadata(client_id)
    addresses = {"order": order_address, "routing": routing_address,
                 "carrier": carrier_address, "tracking": tracking_address}
    seen: Counter[str] = Counter()
    failures: list[tuple[str, str, bytes]] = []
    per_method: dict[str, int] = {}
    limit = asyncio.Semaphore(CONCURRENCY)
    async with grpc.aio.insecure_channel(order_address) as order_channel, \
            grpc.aio.insecure_channel(routing_address) as routing_channel, \
            grpc.aio.insecure_channel(carrier_address) as carrier_channel, \
            grpc.aio.insecure_channel(tracking_address) as tracking_channel:
        channels = {order_address: order_channel, routing_address: routing_channel,
                    carrier_address: carrier_channel, tracking_address: tracking_channel}

        async def one(path: str, streaming: bool, channel, body: bytes) -> None:
            async with limit:
                code = await send(channel, path, streaming, body, identity)
            seen[code.name] += 1
            if code in FORBIDDEN:
                failures.append((path, code.name, body))

        jobs = []
        for server, path, method in methods():
            bodies = cases(method, rng)
            per_method[path] = len(bodies)
            channel = channels[addresses[server]]
            jobs += [one(path, method.server_streaming, channel, b) for b in bodies]
        await asyncio.gather(*jobs)

        # Still healthy: a normal create and get on the order service, a list on routing.
        client = OrderClient(order_channel, client_id)
        created = await client.create(sample_order())
        got = await client.GetOrder(order_pb.GetOrderRequest(name=created.name))
        assert got.name == created.name
        await routing_channel.unary_unary(
            "/cartage.routing.v1.RoutingService/ListVehicles", request_serializer=None,
            response_deserializer=None)(b"", metadata=identity, timeout=30)

    total = sum(per_method.values())
    print(f"\nfuzz: {len(per_method)} methods, {CASES_PER_METHOD} cases each, {total} cases, "
          f"{time.monotonic() - started:.1f} s; codes: {dict(sorted(seen.items()))}")
    for path, code, body in failures[:20]:
        print(f"  {code} {path} {body[:64].hex()}")
    assert not failures, f"{len(failures)} cases ended INTERNAL/UNKNOWN: {failures[:5]}"



async def test_the_inputs_the_fuzzer_found_are_invalid_argument(routing_address: str) -> None:
    """Once INTERNAL: a NUL in a string Postgres stores (ReplanRoutes' request_id, taken as an
    advisory-lock key), and a WaitOperation timeout too large for a timedelta."""
    from google.protobuf import duration_pb2

    identity = metadata(new_client_id())
    requests = [
        ("/cartage.routing.v1.RoutingService/ReplanRoutes",
         routing_service_pb2.ReplanRoutesRequest(reason="r", request_id="fuz\x00-id")),
        ("/google.longrunning.Operations/WaitOperation",
         operations_proto_pb2.WaitOperationRequest(
             name=f"operations/routing/{HEX_ID}",
             timeout=duration_pb2.Duration(seconds=2**62))),
    ]
    async with grpc.aio.insecure_channel(routing_address) as channel:
        codes = [await send(channel, path, False, request.SerializeToString(), identity)
                 for path, request in requests]
    assert codes == [grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND], codes
