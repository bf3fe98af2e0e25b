"""The domain error tree, and its one mapping to gRPC status with `google.rpc` details.

    CartageError                      (INTERNAL, never raised directly)
    ├── InvalidArgument               INVALID_ARGUMENT + BadRequest field violations
    ├── NotFound                      NOT_FOUND
    ├── AlreadyExists                 ALREADY_EXISTS
    ├── FailedPrecondition            FAILED_PRECONDITION (wrong state for the verb)
    ├── Aborted                       ABORTED (etag mismatch, concurrent attempt in flight)
    ├── Unauthenticated               UNAUTHENTICATED
    ├── PermissionDenied              PERMISSION_DENIED
    └── Unavailable                   UNAVAILABLE (a dependency is down; safe to retry)

Domain and use-case code raise these; only `to_rpc_status` knows about gRPC. Every status
carries an `ErrorInfo` (reason, domain, metadata), so clients can branch on a stable reason
instead of parsing messages.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

ERROR_DOMAIN = "cartage.io"


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One problem with one field of a request, named by its path (`order.pickup.location`)."""

    field: str
    description: str
    reason: str = "INVALID"


class CartageError(Exception):
    """Base of all expected errors. `reason` is a stable UPPER_SNAKE code for clients."""

    grpc_code: grpc.StatusCode = grpc.StatusCode.INTERNAL
    default_reason = "INTERNAL"

    def __init__(
        self, message: str, *, reason: str | None = None, metadata: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason
        self.metadata = dict(metadata or {})


class InvalidArgument(CartageError):
    grpc_code = grpc.StatusCode.INVALID_ARGUMENT
    default_reason = "INVALID_ARGUMENT"

    def __init__(
        self,
        message: str = "the request has invalid fields",
        *,
        violations: list[FieldViolation] | tuple[FieldViolation, ...] = (),
        reason: str | None = None,
    ) -> None:
        super().__init__(message, reason=reason)
        self.violations = tuple(violations)

    @classmethod
    def single(cls, field_path: str, description: str) -> InvalidArgument:
        violation = FieldViolation(field_path, description)
        return cls(f"{field_path}: {description}", violations=[violation])


class NotFound(CartageError):
    grpc_code = grpc.StatusCode.NOT_FOUND
    default_reason = "NOT_FOUND"


class AlreadyExists(CartageError):
    grpc_code = grpc.StatusCode.ALREADY_EXISTS
    default_reason = "ALREADY_EXISTS"


class FailedPrecondition(CartageError):
    grpc_code = grpc.StatusCode.FAILED_PRECONDITION
    default_reason = "FAILED_PRECONDITION"


class Aborted(CartageError):
    grpc_code = grpc.StatusCode.ABORTED
    default_reason = "ABORTED"


class Unauthenticated(CartageError):
    grpc_code = grpc.StatusCode.UNAUTHENTICATED
    default_reason = "UNAUTHENTICATED"


class PermissionDenied(CartageError):
    grpc_code = grpc.StatusCode.PERMISSION_DENIED
    default_reason = "PERMISSION_DENIED"


class Unavailable(CartageError):
    grpc_code = grpc.StatusCode.UNAVAILABLE
    default_reason = "UNAVAILABLE"


@dataclass(frozen=True, slots=True)
class RpcStatus:
    """A gRPC status ready to send: code, message and the `google.rpc.Status` with details."""

    code: grpc.StatusCode
    message: str
    proto: status_pb2.Status = field(repr=False)


def _pack(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
    return packed


def to_rpc_status(error: BaseException) -> RpcStatus:
    """Map any exception to the status a client sees. Unknown exceptions become a generic
    INTERNAL (the caller logs the traceback once); their text never reaches the client."""
    if not isinstance(error, CartageError):
        error = CartageError("internal error", reason="INTERNAL")
    code = error.grpc_code
    details = [
        _pack(
            error_details_pb2.ErrorInfo(
                reason=error.reason, domain=ERROR_DOMAIN, metadata=error.metadata
            )
        )
    ]
    if isinstance(error, InvalidArgument) and error.violations:
        details.append(
            _pack(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(
                            field=v.field, description=v.description, reason=v.reason
                        )
                        for v in error.violations
                    ]
                )
            )
        )
    proto = status_pb2.Status(code=code.value[0], message=error.message, details=details)
    return RpcStatus(code=code, message=error.message, proto=proto)


__all__ = [
    "ERROR_DOMAIN",
    "Aborted",
    "AlreadyExists",
    "CartageError",
    "FailedPrecondition",
    "FieldViolation",
    "InvalidArgument",
    "NotFound",
    "PermissionDenied",
    "RpcStatus",
    "Unauthenticated",
    "Unavailable",
    "code_pb2",
    "to_rpc_status",
]
