"""The kit's pure parts: error mapping, validation, filters, page tokens, field masks."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import field_mask_pb2
from google.rpc import error_details_pb2

from cartage.order.v1 import order_pb2
from services.kit.errors import (
    Aborted,
    FieldViolation,
    InvalidArgument,
    NotFound,
    to_rpc_status,
)
from services.kit.fieldmask import apply_update_mask
from services.kit.filtering import parse_filter
from services.kit.pagination import PageToken, clamp_page_size
from services.kit.validation import Violations


def _details(status):
    out = {}
    for packed in status.proto.details:
        for kind in (error_details_pb2.ErrorInfo, error_details_pb2.BadRequest):
            if packed.Is(kind.DESCRIPTOR):
                message = kind()
                packed.Unpack(message)
                out[kind.__name__] = message
    return out


def test_invalid_argument_carries_error_info_and_field_violations() -> None:
    status = to_rpc_status(InvalidArgument(violations=[FieldViolation("order.notes", "too long")]))
    assert status.code == grpc.StatusCode.INVALID_ARGUMENT
    details = _details(status)
    assert details["ErrorInfo"].reason == "INVALID_ARGUMENT"
    assert details["ErrorInfo"].domain == "cartage.io"
    assert [v.field for v in details["BadRequest"].field_violations] == ["order.notes"]


@pytest.mark.parametrize(("error", "code"), [
    (NotFound("x"), grpc.StatusCode.NOT_FOUND),
    (Aborted("x", reason="ETAG_MISMATCH"), grpc.StatusCode.ABORTED),
])
def test_domain_errors_map_to_their_codes(error, code) -> None:
    status = to_rpc_status(error)
    assert status.code == code and _details(status)["ErrorInfo"].reason == error.reason


def test_unknown_exceptions_become_a_generic_internal_error() -> None:
    status = to_rpc_status(KeyError("secret table name"))
    assert status.code == grpc.StatusCode.INTERNAL
    assert "secret" not in status.message


def test_violations_collect_every_problem() -> None:
    v = Violations()
    v.text("", "a", required=True)
    v.number(float("inf"), "b", minimum=0)
    v.number(-1, "c", minimum=0)
    v.number(5, "d", minimum=0, maximum=10)
    v.enum(42, order_pb2.Priority.DESCRIPTOR, "e")
    with pytest.raises(InvalidArgument) as caught:
        v.raise_if_any()
    assert [x.field for x in caught.value.violations] == ["a", "b", "c", "e"]


def test_filter_parses_conjunctions_and_rejects_the_rest() -> None:
    allowed = {"state": frozenset({"="}), "create_time": frozenset({">=", "<"})}
    parsed = parse_filter('state = RELEASED AND create_time >= "2026-01-01T00:00:00Z"', allowed)
    assert [(c.field, c.operator, c.value) for c in parsed] == [
        ("state", "=", "RELEASED"), ("create_time", ">=", "2026-01-01T00:00:00Z")]
    assert parse_filter("", allowed) == []
    for bad in ["state", "state = A OR state = B", "colour = red", "state > A",
                "state = A AND", "state = 'x'"]:
        with pytest.raises(InvalidArgument) as caught:
            parse_filter(bad, allowed)
        assert caught.value.violations[0].field == "filter", bad


def test_page_tokens_round_trip_and_refuse_other_queries_and_garbage() -> None:
    token = PageToken(("2026-01-01T00:00:00+00:00", "abc"), "q1").encode()
    assert PageToken.decode(token, query="q1").after == ("2026-01-01T00:00:00+00:00", "abc")
    for bad, query in [(token, "q2"), ("%%%", "q1"), ("eyJ4IjoxfQ", "q1")]:
        with pytest.raises(InvalidArgument):
            PageToken.decode(bad, query=query)
    assert clamp_page_size(0) == 50 and clamp_page_size(5000) == 1000
    with pytest.raises(InvalidArgument):
        clamp_page_size(-1)


def test_field_mask_replaces_only_masked_fields_and_guards_read_only_ones() -> None:
    target = order_pb2.Order(notes="old", external_reference="R", required_skills=["a", "b"])
    patch = order_pb2.Order(notes="new", external_reference="X", required_skills=["c"])
    paths = apply_update_mask(target, patch,
                              field_mask_pb2.FieldMask(paths=["notes", "required_skills"]),
                              updatable=frozenset({"notes", "required_skills"}))
    assert paths == ["notes", "required_skills"]
    assert (target.notes, target.external_reference, list(target.required_skills)) == (
        "new", "R", ["c"])
    for mask in (["external_reference"], ["no_such_field"], []):
        with pytest.raises(InvalidArgument):
            apply_update_mask(target, patch, field_mask_pb2.FieldMask(paths=mask),
                              updatable=frozenset({"notes"}))


def test_an_omitted_mask_means_the_populated_fields_and_an_empty_update_is_refused() -> None:
    from services.kit.fieldmask import check_update_mask, effective_update_mask

    updatable = frozenset({"notes", "priority"})
    patch = order_pb2.Order(name="orders/x", etag="v3", notes="n")
    assert list(effective_update_mask(field_mask_pb2.FieldMask(), patch,
                                      updatable=updatable).paths) == ["notes"]
    assert list(effective_update_mask(field_mask_pb2.FieldMask(paths=["*"]), patch,
                                      updatable=updatable).paths) == ["notes", "priority"]
    given = field_mask_pb2.FieldMask(paths=["priority"])
    assert list(effective_update_mask(given, patch, updatable=updatable).paths) == ["priority"]
    # Only identity fields: nothing to change.
    empty = effective_update_mask(field_mask_pb2.FieldMask(),
                                  order_pb2.Order(name="orders/x", etag="v3"),
                                  updatable=updatable)
    with pytest.raises(InvalidArgument, match="empty update"):
        check_update_mask(empty, order_pb2.Order.DESCRIPTOR, updatable=updatable)


def test_spliced_message_bytes_parse_as_the_parent_with_that_field_set() -> None:
    from cartage.order.v1 import events_pb2, order_service_pb2
    from services.kit.wire import embedded, varint

    assert [varint(n) for n in (0, 1, 127, 128, 300)] == [
        b"\x00", b"\x01", b"\x7f", b"\x80\x01", b"\xac\x02"]
    order = order_pb2.Order(name="orders/" + "a" * 32, notes="n" * 300)  # a 2-byte length
    event = events_pb2.OrderCreatedEvent(event_id="e1")
    spliced = event.SerializeToString() + embedded(
        event.DESCRIPTOR.fields_by_name["order"], order.SerializeToString())
    assert events_pb2.OrderCreatedEvent.FromString(spliced) == events_pb2.OrderCreatedEvent(
        event_id="e1", order=order)
    results = order_service_pb2.BatchCreateOrdersResponse.DESCRIPTOR.fields_by_name["results"]
    item = order_service_pb2.BatchCreateOrderResult(order=order).SerializeToString()
    response = order_service_pb2.BatchCreateOrdersResponse.FromString(
        embedded(results, item) * 2)
    assert [r.order.notes for r in response.results] == [order.notes] * 2
    with pytest.raises(TypeError):
        embedded(event.DESCRIPTOR.fields_by_name["event_id"], b"x")
