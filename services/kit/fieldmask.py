"""Field-mask updates (AIP-134) on protobuf messages, through protobuf's own FieldMask code.

One rule for every Update RPC (`effective_update_mask`): the `update_mask` as given; `*` means
every updatable field; no mask means the fields the request's resource populates (AIP-134's
implied mask), its identity fields (`name`, `etag`) aside. An update that names nothing (no
mask and nothing populated) is refused with INVALID_ARGUMENT: it could only be a mistake.
"""

from __future__ import annotations

from google.protobuf import field_mask_pb2
from google.protobuf.descriptor import Descriptor
from google.protobuf.message import Message

from services.kit.errors import InvalidArgument

IDENTITY_FIELDS = frozenset({"name", "etag"})


def effective_update_mask(
    mask: field_mask_pb2.FieldMask,
    patch: Message,
    *,
    updatable: frozenset[str],
    identity: frozenset[str] = IDENTITY_FIELDS,
) -> field_mask_pb2.FieldMask:
    """The mask an Update applies (see the module's rule); check it with check_update_mask."""
    paths = list(mask.paths)
    if paths == ["*"]:
        paths = sorted(updatable)
    elif not paths:
        paths = [f.name for f, _ in patch.ListFields() if f.name not in identity]
    return field_mask_pb2.FieldMask(paths=paths)


def apply_update_mask(
    target: Message,
    patch: Message,
    mask: field_mask_pb2.FieldMask,
    *,
    updatable: frozenset[str],
    prefix: str = "update_mask",
) -> list[str]:
    """Copy the masked fields of `patch` onto `target` (in place) and return the paths.

    A path is allowed when it, or one of its parents, is in `updatable` (so `pickup` allows
    `pickup.time_windows`). Message and repeated fields are replaced, not merged: what the
    client sends is what it gets, as AIP-134 asks."""
    paths = check_update_mask(mask, target.DESCRIPTOR, updatable=updatable, prefix=prefix)
    mask.MergeMessage(patch, target, replace_message_field=True, replace_repeated_field=True)
    return paths


def check_update_mask(
    mask: field_mask_pb2.FieldMask,
    descriptor: Descriptor,
    *,
    updatable: frozenset[str],
    prefix: str = "update_mask",
) -> list[str]:
    """The mask's paths, or INVALID_ARGUMENT naming the unknown or read-only ones."""
    paths = list(mask.paths)
    if not paths:
        raise InvalidArgument.single(
            prefix, "an empty update: send the fields to change (and name them here, or leave "
                    "this out to change every field sent)")
    if not mask.IsValidForDescriptor(descriptor):
        unknown = [p for p in paths if not _path_exists(descriptor, p)]
        raise InvalidArgument.single(prefix, f"unknown field paths: {', '.join(unknown)}")
    forbidden = [p for p in paths if not _allowed(p, updatable)]
    if forbidden:
        raise InvalidArgument.single(
            prefix,
            f"cannot change {', '.join(forbidden)}; updatable: {', '.join(sorted(updatable))}",
        )
    return paths


def _allowed(path: str, updatable: frozenset[str]) -> bool:
    parts = path.split(".")
    return any(".".join(parts[:i]) in updatable for i in range(1, len(parts) + 1))


def _path_exists(descriptor: Descriptor, path: str) -> bool:
    return field_mask_pb2.FieldMask(paths=[path]).IsValidForDescriptor(descriptor)
