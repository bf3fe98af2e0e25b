"""gRPC server bootstrap: interceptors, health, reflection, graceful shutdown.

One interceptor does, for every unary RPC of every service (and every server-streaming RPC
written as an async generator, and every client-streaming RPC):
- parses the request itself, so malformed bytes become INVALID_ARGUMENT, not INTERNAL;
- sets the request id (from `x-request-id`, else a new one) and the caller for the call;
- maps every exception to a status with `google.rpc` details through `errors.to_rpc_status`,
  logging unknown exceptions once with their traceback;
- writes one JSON access line.
Servicers therefore contain no try/except.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import signal
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import grpc
from google.protobuf.message import DecodeError
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from grpc_status import rpc_status

from services.kit.auth import Caller, set_caller
from services.kit.db import unreachable, unstorable_text
from services.kit.errors import (
    CartageError,
    InvalidArgument,
    RpcStatus,
    Unavailable,
    to_rpc_status,
)
from services.kit.jobs import Job, Supervisor
from services.kit.log import request_id_var
from services.kit.metrics import observe_rpc

log = logging.getLogger("cartage.rpc")

MAX_MESSAGE_BYTES = 16 * 1024 * 1024
REQUEST_ID_HEADER = "x-request-id"


class KitInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self) -> None:
        # grpc.aio asks on every call; the wrapped handler of a method never changes.
        self._wrapped: dict[str, grpc.RpcMethodHandler] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method = handler_call_details.method
        wrapped = self._wrapped.get(method)
        if wrapped is None:
            handler = await continuation(handler_call_details)
            if handler is None:
                return handler  # unknown method: UNIMPLEMENTED (and nothing cached for it)
            wrapped = self._wrapped[method] = _wrap(method, handler)
        return wrapped


def _wrap(method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    parse = handler.request_deserializer
    if inspect.isasyncgenfunction(handler.unary_stream):
        stream = handler.unary_stream

        async def serve_stream(raw: bytes, context: grpc.aio.ServicerContext
                               ) -> AsyncIterator[Any]:
            # An error before or between messages ends the stream with the mapped status.
            async with _rpc_scope(method, context):
                async for response in stream(_parse(parse, raw), context):
                    yield response

        return grpc.unary_stream_rpc_method_handler(
            serve_stream, request_deserializer=None,
            response_serializer=handler.response_serializer)
    if handler.stream_unary is not None:
        client_stream = handler.stream_unary

        async def serve_client_stream(raw: AsyncIterator[bytes],
                                      context: grpc.aio.ServicerContext) -> Any:
            # Each message is parsed as the servicer reads it: a malformed one raises
            # INVALID_ARGUMENT there, after the messages before it were handled.
            async with _rpc_scope(method, context):
                return await client_stream(_parse_each(parse, raw), context)

        return grpc.stream_unary_rpc_method_handler(
            serve_client_stream, request_deserializer=None,
            response_serializer=handler.response_serializer)
    if handler.unary_unary is None:
        return handler  # other streams (health Watch, reflection) pass through untouched
    inner = handler.unary_unary

    async def serve(raw: bytes, context: grpc.aio.ServicerContext) -> Any:
        async with _rpc_scope(method, context):
            return await inner(_parse(parse, raw), context)

    return grpc.unary_unary_rpc_method_handler(
        serve, request_deserializer=None, response_serializer=handler.response_serializer
    )


def _parse(parse: Callable[[bytes], Any] | None, raw: bytes) -> Any:
    try:
        return parse(raw) if parse else raw
    except DecodeError:
        raise InvalidArgument("the request body is not a valid message") from None


async def _parse_each(parse: Callable[[bytes], Any] | None, raw: AsyncIterator[bytes]
                      ) -> AsyncIterator[Any]:
    async for message in raw:
        yield _parse(parse, message)


@contextlib.asynccontextmanager
async def _rpc_scope(method: str, context: grpc.aio.ServicerContext) -> AsyncIterator[None]:
    """One call: request id and caller from the metadata, every exception mapped to a status
    with `google.rpc` details, one access-log line at the end."""
    metadata = {k: v for k, v in context.invocation_metadata() if isinstance(v, str)}
    request_id_var.set(metadata.get(REQUEST_ID_HEADER) or uuid.uuid4().hex)
    caller = Caller.from_metadata(metadata)
    set_caller(caller)
    started = time.perf_counter()
    code = grpc.StatusCode.OK
    try:
        yield
    except CartageError as error:
        status = to_rpc_status(error)
        code = status.code
        await _abort(context, status)
    except (grpc.aio.AbortError, asyncio.CancelledError):
        code = context.code() or grpc.StatusCode.CANCELLED
        raise
    except Exception as error:
        if unreachable(error):  # an outage, not a bug: UNAVAILABLE, retry later; no traceback
            log.warning("database unreachable", extra={"rpc": method, "error": repr(error)})
            status = to_rpc_status(Unavailable("the database is unreachable; retry shortly",
                                               reason="DATABASE_UNAVAILABLE"))
        elif unstorable_text(error):  # e.g. a NUL in a request_id or a reason: the caller's
            status = to_rpc_status(InvalidArgument(
                "a text field contains a character that cannot be stored (NUL)",
                reason="UNSTORABLE_CHARACTER"))
        else:
            log.exception("unhandled error", extra={"rpc": method})
            status = to_rpc_status(Exception())
        code = status.code
        await _abort(context, status)
    finally:
        elapsed = time.perf_counter() - started
        observe_rpc(method, code.name, elapsed)
        log.info("rpc", extra={"rpc": method, "code": code.name,
                               "ms": round(elapsed * 1000, 2),
                               "client_id": caller.client_id if caller else ""})


async def _abort(context: grpc.aio.ServicerContext, status: RpcStatus) -> None:
    # grpc.aio has no abort_with_status: the details travel as trailing metadata.
    trailers = rpc_status.to_status(status.proto).trailing_metadata
    await context.abort(status.code, status.message, trailers)


HealthCheck = Callable[[], Awaitable[bool]]
HEALTH_INTERVAL_S = 1.0
# A grpc.health.v1 service name that is SERVING as long as the server serves, whatever its
# dependencies: the liveness (and startup) probe. Readiness is the overall "" entry.
LIVENESS_SERVICE = "liveness"


class Service:
    """A running gRPC server plus its supervised background jobs; `run()` returns after a
    graceful stop. Readiness (`grpc.health.v1`, the overall "" entry and each service name) is
    SERVING only while every health check passes and every required job is up."""

    def __init__(
        self,
        *,
        name: str,
        address: str,
        register: Callable[[grpc.aio.Server], None],
        service_names: Sequence[str],
        health_checks: Sequence[HealthCheck] = (),
        jobs: Sequence[Job] = (),
        grace_seconds: float = 5.0,
        reuse_port: bool = False,
        own_address: str | None = None,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
    ) -> None:
        self.name = name
        self._max_message_bytes = max_message_bytes
        self.address = address
        # An address only this process listens on (`unix:/path`), besides the shared one: a
        # proxy in front of several workers can then balance requests over them itself
        # instead of leaving the kernel to spread its few connections (SO_REUSEPORT).
        self.own_address = own_address
        self.stop_event = asyncio.Event()
        self.port = 0
        self._register = register
        self._service_names = list(service_names)
        self._health_checks = list(health_checks)
        self._supervisor = Supervisor(jobs, self.stop_event)
        self._grace = grace_seconds
        self._reuse_port = reuse_port
        self._server: grpc.aio.Server | None = None
        self._started = asyncio.Event()

    async def started(self) -> int:
        await self._started.wait()
        return self.port

    async def run(self, *, handle_signals: bool = True) -> None:
        server = grpc.aio.server(
            interceptors=[KitInterceptor()],
            options=[
                ("grpc.max_receive_message_length", self._max_message_bytes),
                ("grpc.max_send_message_length", self._max_message_bytes),
                # A stale server must not silently share the port with its replacement, unless
                # several workers of one service share it on purpose.
                ("grpc.so_reuseport", 1 if self._reuse_port else 0),
            ],
        )
        self._server = server
        self._register(server)
        health_servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        reflection.enable_server_reflection(
            [*self._service_names, health.SERVICE_NAME, reflection.SERVICE_NAME], server
        )
        self.port = server.add_insecure_port(self.address)
        if self.port == 0:
            raise OSError(f"could not bind {self.address}")
        if self.own_address and server.add_insecure_port(self.own_address) == 0:
            raise OSError(f"could not bind {self.own_address}")
        await server.start()
        await health_servicer.set(LIVENESS_SERVICE, health_pb2.HealthCheckResponse.SERVING)
        if handle_signals:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.stop_event.set)
        tasks = self._supervisor.start()
        tasks.append(asyncio.create_task(self._watch_health(health_servicer)))
        host = self.address.rsplit(":", 1)[0]
        logging.getLogger("cartage").info(
            "serving", extra={"service": self.name, "address": f"{host}:{self.port}",
                              **({"own_address": self.own_address} if self.own_address else {})}
        )
        self._started.set()
        await self.stop_event.wait()
        logging.getLogger("cartage").info("stopping", extra={"grace_s": self._grace})
        await health_servicer.enter_graceful_shutdown()
        await server.stop(self._grace)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _watch_health(self, servicer: health.aio.HealthServicer) -> None:
        """Readiness: NOT_SERVING while any dependency check fails (Postgres, NATS) or a
        required job is down; checked every `HEALTH_INTERVAL_S`."""
        serving = health_pb2.HealthCheckResponse.SERVING
        not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
        last: int | None = None
        while not self.stop_event.is_set():
            ok = True
            for check in [*self._health_checks, self._supervisor.ready]:
                try:
                    ok = ok and await asyncio.wait_for(check(), timeout=2.0)
                except Exception:
                    ok = False
            status = serving if ok else not_serving
            if status != last:
                for service_name in ["", *self._service_names]:
                    await servicer.set(service_name, status)
                last = status
            try:
                await asyncio.wait_for(self.stop_event.wait(), timeout=HEALTH_INTERVAL_S)
            except TimeoutError:
                pass
