"""Generate the Python contract package and the descriptor set from `proto/`.

Run as `python proto/generate.py` (the Makefile's `proto` target). Writes:

- `cartage/**/*_pb2.py`, `*_pb2.pyi`, `*_pb2_grpc.py` at the repository root. The `cartage`
  package is generated, git-ignored and never edited; `make test` regenerates it, so it cannot
  drift from the contracts.
- `build/cartage.binpb`: a descriptor set with imports and source info. buf lints it, and the
  gateway builds Envoy's transcoder config and the OpenAPI document from it. It includes
  `google/rpc/status.proto` and `error_details.proto` because Envoy needs them to turn error
  details into JSON.
"""

from __future__ import annotations

import sys
from pathlib import Path

import grpc_tools
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO = ROOT / "proto"
OUT = ROOT
DESCRIPTORS = ROOT / "build" / "cartage.binpb"
EXTRA = ["google/rpc/status.proto", "google/rpc/error_details.proto"]


def _include_dirs() -> list[str]:
    # googleapis-common-protos ships the google/api, google/rpc and google/type sources in
    # site-packages; grpc_tools ships the well-known types.
    import google.api

    site = Path(next(iter(google.api.__path__))).parent.parent
    wkt = Path(grpc_tools.__file__).parent / "_proto"
    return [str(PROTO), str(site), str(wkt), str(_longrunning_include(site))]


def _longrunning_include(site: Path) -> Path:
    """googleapis-common-protos ships `google/longrunning/operations.proto` under the file name
    `operations_proto.proto` (its Python module registers the canonical name). Stage a copy under
    the canonical path so contracts can import it as every other API does."""
    staged = ROOT / "build" / "include"
    target = staged / "google" / "longrunning" / "operations.proto"
    source = site / "google" / "longrunning" / "operations_proto.proto"
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.exists() or target.read_bytes() != source.read_bytes():
        target.write_bytes(source.read_bytes())
    return staged


def main() -> int:
    sources = sorted(str(p.relative_to(PROTO)) for p in PROTO.rglob("*.proto"))
    if not sources:
        print("no .proto files under proto/", file=sys.stderr)
        return 1
    includes = [f"-I{d}" for d in _include_dirs()]
    DESCRIPTORS.parent.mkdir(parents=True, exist_ok=True)
    for package_dir in {Path(s).parent for s in sources}:
        target = OUT / package_dir
        target.mkdir(parents=True, exist_ok=True)
    args = [
        "protoc",
        *includes,
        f"--python_out={OUT}",
        f"--pyi_out={OUT}",
        f"--grpc_python_out={OUT}",
        f"--descriptor_set_out={DESCRIPTORS}",
        "--include_imports",
        "--include_source_info",
        *sources,
        *EXTRA,
    ]
    code = protoc.main(args)
    if code != 0:
        print(f"protoc failed with exit code {code}", file=sys.stderr)
        return code
    # protoc also wrote google/rpc/*_pb2.py for the EXTRA files; the runtime uses the copies
    # from googleapis-common-protos, so remove ours to avoid shadowing them.
    _remove_tree(OUT / "google")
    for directory in (OUT / "cartage").rglob("*"):
        if directory.is_dir():
            (directory / "__init__.py").touch()
    (OUT / "cartage" / "__init__.py").touch()
    print(f"generated {len(sources)} proto files into cartage/ and {DESCRIPTORS.relative_to(ROOT)}")
    return 0


def _remove_tree(path: Path) -> None:
    if not path.exists():
        return
    for child in sorted(path.rglob("*"), reverse=True):
        child.rmdir() if child.is_dir() else child.unlink()
    path.rmdir()


if __name__ == "__main__":
    sys.exit(main())
