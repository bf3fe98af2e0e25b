"""The strict-JSON check (gateway.strict_json + the Lua scanner in gateway.envoy_lua) in the real
Envoy, on its own: the filter as the gateway generates it, in front of a route that answers 200,
so a request either passes (200) or is refused with the 400 a partner gets.

Two descriptor sets: the real contracts (checked against the Python reference `StrictJson` on
mutated order bodies), and a probe contract compiled here with what the real ones do not have
yet (maps, Struct, Value, Any, wrappers, a custom json_name, a Lua keyword as a field name,
recursion, HttpBody bodies, `**` templates). Needs no database: only Envoy.
"""

from __future__ import annotations

import copy
import json
import random
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc_tools
import httpx
import pytest
from google.protobuf import descriptor_pb2, json_format

from gateway import contracts
from gateway.envoy_config import T, _address, _local_reply, _strict_json
from services.stack.components import free_port
from tests.e2e.harness import EnvoyProcess
from tests.e2e.strict_json_reference import StrictJson
from tests.support import sample_order

pytestmark = pytest.mark.integration

PROBE_PROTO = """
syntax = "proto3";
package cartage.probe.v1;

import "google/api/annotations.proto";
import "google/api/httpbody.proto";
import "google/protobuf/any.proto";
import "google/protobuf/field_mask.proto";
import "google/protobuf/struct.proto";
import "google/protobuf/timestamp.proto";
import "google/protobuf/wrappers.proto";

message Leaf {
  string label = 1;
  int32 end = 2;
}

message Thing {
  string name = 1;
  Leaf leaf = 2;
  repeated Leaf leaves = 3;
  map<string, Leaf> by_key = 4;
  map<string, string> tags = 5;
  google.protobuf.Struct attributes = 6;
  google.protobuf.Value anything = 7;
  google.protobuf.Any extension = 8;
  google.protobuf.Timestamp at = 9;
  google.protobuf.Int32Value limit = 10;
  google.protobuf.FieldMask mask = 11;
  string renamed = 12 [json_name = "alias"];
  oneof choice {
    Leaf first = 13;
    string second = 14;
  }
  repeated Thing children = 15;
  google.protobuf.ListValue list = 16;
}

message CreateThingRequest {
  Thing thing = 1;
  string request_id = 2;
}

message UploadRequest {
  string name = 1;
  google.api.HttpBody payload = 2;
}

message FindRequest {
  string label = 1;
  int32 limit = 2;
}

service ProbeService {
  rpc CreateThing(CreateThingRequest) returns (Thing) {
    option (google.api.http) = {post: "/v1/things" body: "thing"};
  }
  rpc PutThing(Thing) returns (Thing) {
    option (google.api.http) = {
      put: "/v1/{name=things/*}"
      body: "*"
      additional_bindings {post: "/v1/{name=things/*}:put" body: "*"}
    };
  }
  rpc Upload(UploadRequest) returns (Thing) {
    option (google.api.http) = {post: "/v1/{name=things/*}:upload" body: "payload"};
  }
  rpc Raw(google.api.HttpBody) returns (Thing) {
    option (google.api.http) = {post: "/v1/raw" body: "*"};
  }
  rpc Find(FindRequest) returns (Thing) {
    option (google.api.http) = {get: "/v1/{label=leaves/**}:find"};
  }
  rpc Rename(Leaf) returns (Leaf) {
    option (google.api.http) = {post: "/v1/{label=leaves/*}:rename" body: "*"};
  }
}
"""


def compile_probe(tmp: Path) -> descriptor_pb2.FileDescriptorSet:
    import google.api

    (tmp / "cartage" / "probe" / "v1").mkdir(parents=True, exist_ok=True)
    (tmp / "cartage" / "probe" / "v1" / "probe.proto").write_text(PROBE_PROTO)
    site = Path(next(iter(google.api.__path__))).parent.parent
    wkt = Path(grpc_tools.__file__).parent / "_proto"
    out = tmp / "probe.binpb"
    # protoc in its own process: its extension and OR-Tools (loaded by the routing fixtures)
    # each carry a static libprotobuf, and the two abort when loaded into one process.
    done = subprocess.run([sys.executable, "-m", "grpc_tools.protoc", f"-I{tmp}", f"-I{site}",
                           f"-I{wkt}", f"--descriptor_set_out={out}", "--include_imports",
                           "cartage/probe/v1/probe.proto"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())


def filter_only_config(descriptors: descriptor_pb2.FileDescriptorSet,
                       port: int) -> dict[str, Any]:
    """The generated strict-JSON filter in front of a route that answers 200 `passed`."""
    services = {r.service_name for r in contracts.rest_rpcs(descriptors)}
    hcm = {
        "@type": T + ("envoy.extensions.filters.network.http_connection_manager.v3."
                      "HttpConnectionManager"),
        "stat_prefix": "strict", "codec_type": "AUTO",
        "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [{
            "match": {"prefix": "/"},
            "direct_response": {"status": 200, "body": {"inline_string": "passed"}}}]}]},
        "http_filters": [*_strict_json(descriptors, services), {
            "name": "envoy.filters.http.router",
            "typed_config": {"@type": T + "envoy.extensions.filters.http.router.v3.Router"}}],
        "local_reply_config": _local_reply(),
    }
    return {"admin": {"address": _address(f"127.0.0.1:{free_port()}")},
            "static_resources": {"listeners": [{
                "name": "strict", "address": _address(f"127.0.0.1:{port}"),
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": hcm}]}]}]}}


@pytest.fixture(scope="module")
def probe(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    tmp = tmp_path_factory.mktemp("strict-json-probe")
    descriptors = compile_probe(tmp)
    port = free_port()
    envoy = EnvoyProcess(filter_only_config(descriptors, port), tmp, port).start()
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            yield client
    finally:
        envoy.stop()


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    tmp = tmp_path_factory.mktemp("strict-json-real")
    port = free_port()
    envoy = EnvoyProcess(filter_only_config(contracts.load(), port), tmp, port).start()
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            yield client
    finally:
        envoy.stop()


def unknown_fields(response: httpx.Response) -> list[str]:
    """The fields a 400 names, after checking the body has the shape every error has."""
    assert response.status_code == 400, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["code"] == 3 and body["message"]
    info, detail = body["details"]
    assert info["@type"] == "type.googleapis.com/google.rpc.ErrorInfo"
    assert info["reason"] in ("UNKNOWN_FIELD", "MALFORMED_BODY"), info
    assert detail["@type"] == "type.googleapis.com/google.rpc.BadRequest"
    return [v["field"] for v in detail["fieldViolations"]
            if v["description"] == "unknown field"]


def post(client: httpx.Client, path: str, body: Any, **kwargs: Any) -> httpx.Response:
    content = body if isinstance(body, str | bytes) else json.dumps(body)
    return client.post(path, content=content, **kwargs)


GOOD_THING = {
    "name": "things/a", "leaf": {"label": "x", "end": 3},
    "leaves": [{"label": "a"}, {"label": "b", "end": 1}],
    "byKey": {"any key at all": {"label": "y"}, "": {}},
    "by_key": {"k": {"end": 2}},
    "tags": {"free": "form", "keys": "too"},
    "attributes": {"deep": [1, {"anything": None, "goes": {"here": True}}]},
    "anything": [{"nested": {"free": 1}}, "s", 1.5e3, None],
    "list": [{"x": 1}, []],
    "extension": {"@type": "type.googleapis.com/google.protobuf.Duration", "value": "1s"},
    "at": "2030-01-01T00:00:00Z", "limit": 5, "mask": "name,leaf.label",
    "alias": "json name", "renamed": "proto name",
    "first": {"label": "one"},
    "children": [{"name": "c", "children": [{"leaf": {"label": "grandchild"}}]}],
}


def test_a_body_with_every_kind_of_field_passes(probe: httpx.Client) -> None:
    response = post(probe, "/v1/things", GOOD_THING)
    assert response.status_code == 200, response.text
    assert response.text == "passed"
    # JSON names and proto names alike, escapes in keys resolved, whitespace anywhere.
    spaced = ' \r\n\t{ "n\\u0061me" : "x" , "renamed":"r", "alias" : "r" ,"by_key":{}}\n'
    assert post(probe, "/v1/things/a:put", spaced).status_code == 200
    assert post(probe, "/v1/things", spaced).status_code == 200  # body: "thing"
    assert unknown_fields(post(probe, "/v1/leaves/a:rename", spaced)) == [
        "name", "renamed", "alias", "by_key"]


@pytest.mark.parametrize(("change", "expected"), [
    (lambda b: b["leaf"].update(colour=1), ["thing.leaf.colour"]),
    (lambda b: b["leaves"][1].update(colour=1), ["thing.leaves[1].colour"]),
    (lambda b: b["byKey"]["any key at all"].update(colour=1),
     ["thing.byKey[any key at all].colour"]),
    (lambda b: b["children"][0]["children"][0]["leaf"].update(colour=1),
     ["thing.children[0].children[0].leaf.colour"]),
    (lambda b: b.update(colour=1, flavour=[{"x": 1}]), ["thing.colour", "thing.flavour"]),
    (lambda b: b.update(Name="x"), ["thing.Name"]),  # names are case-sensitive
    (lambda b: b.update(requestId="x"), ["thing.requestId"]),  # a field, but not of Thing
    (lambda b: b["first"].update(first={}), ["thing.first.first"]),
    # Well-known types as objects of their fields: the transcoder takes them (and drops typos).
    (lambda b: b.update(at={"seconds": 1, "nanos": 2, "nano": 3}), ["thing.at.nano"]),
    (lambda b: b.update(limit={"value": 3, "valeu": 3}), ["thing.limit.valeu"]),
    (lambda b: b.update(mask={"paths": ["a"], "path": "b"}), ["thing.mask.path"]),
    # One object for a repeated field: the transcoder takes it as a list of one.
    (lambda b: b.update(leaves={"label": "l", "lable": "l"}), ["thing.leaves.lable"]),
])
def test_unknown_fields_are_named_wherever_they_are(
        probe: httpx.Client, change: Any, expected: list[str]) -> None:
    body = copy.deepcopy(GOOD_THING)
    change(body)
    assert unknown_fields(post(probe, "/v1/things", body)) == expected


def test_the_error_names_every_unknown_field_and_escapes_them(probe: httpx.Client) -> None:
    response = post(probe, "/v1/things",
                    '{"c\\u00f6l\\ud83d\\ude00ur\\"\\n": 1, "a": 2, "leaf": {"b": 3}}')
    assert unknown_fields(response) == ['thing.cöl😀ur"\n', "thing.a", "thing.leaf.b"]
    assert response.json()["message"].startswith("unknown fields: ")
    many = {f"f{i}": i for i in range(50)}
    assert len(unknown_fields(post(probe, "/v1/things", many))) == 20
    # A key that is not valid UTF-8 still gives a valid JSON error.
    broken = post(probe, "/v1/things", b'{"\xff\xfe": 1}')
    assert unknown_fields(broken) == ["thing.\ufffd\ufffd"]


@pytest.mark.parametrize("body", [
    "{'thing': {}}",                      # single quotes: the transcoder would accept them
    '{thing: {"name": "x"}}',             # an unquoted key: likewise
    '{"thing": {"name": "x",}}',          # trailing comma
    '{"thing": {}} {"thing": {}}',        # two values
    '{"thing": {}',                       # unterminated
    '{"thing": {"name": "x\ny"}}',        # a raw control character in a string
    '{"thing": {"name": "\\x41"}}',       # not an escape
    '{"thing": {"name": "a\x00b"}}',       # a raw NUL
    '{"thing": {"name": "\\u12"}}',       # a short \\u escape
    '{"thing": {"limit": NaN}}',
    '{"thing": {"limit": +1}}',
    '{"thing": /* comment */ {}}',
    '{"thing": {"attributes": {"k": tru}}}',
    "\ufeff{}",                           # a byte order mark
])
def test_anything_but_strict_json_is_refused(probe: httpx.Client, body: str) -> None:
    response = post(probe, "/v1/things", body.encode())
    assert unknown_fields(response) == []
    assert response.json()["message"] == "the body is not valid JSON", response.text


def test_nesting_is_limited(probe: httpx.Client) -> None:
    deep = '{"anything": ' + "[" * 200 + "]" * 200 + "}"
    response = post(probe, "/v1/things", deep)
    assert response.status_code == 400
    assert response.json()["message"] == "the body nests too deeply"
    fine = '{"anything": ' + "[" * 90 + "]" * 90 + "}"
    assert post(probe, "/v1/things", fine).status_code == 200


def test_which_requests_are_checked(probe: httpx.Client) -> None:
    bad = {"colour": 1}
    # Another binding of the same RPC; body "*" is the whole request message.
    assert unknown_fields(post(probe, "/v1/things/a:put", {"colour": 1})) == ["colour"]
    assert unknown_fields(probe.put("/v1/things/a", content='{"colour": 1}')) == ["colour"]
    # A rule without `body`: the transcoder still reads a body into the request message.
    find = probe.request("GET", "/v1/leaves/a/b/c:find", content='{"limit": 1, "colour": 1}')
    assert unknown_fields(find) == ["colour"]
    assert probe.get("/v1/leaves/a/b/c:find").status_code == 200
    # (A GET body that is not announced by a Content-Length, sent chunked over HTTP/1.1 or
    # without one over HTTP/2, skips the check: see gateway.envoy_config._strict_json.)
    assert probe.request("GET", "/v1/leaves/a:find", content='{"limit": 1}').status_code == 200
    # Only gRPC (as the transcoder defines it) is left alone; any other label is JSON to it.
    for grpc_type in ("application/grpc", "application/grpc+proto"):
        assert post(probe, "/v1/things", bad, headers={"content-type": grpc_type}
                    ).status_code == 200
    for label in ("application/grpc-web", "application/grpc; x=y", "text/plain",
                  "application/x-www-form-urlencoded", "application/json; charset=utf-8"):
        assert unknown_fields(post(probe, "/v1/things", bad, headers={"content-type": label})
                              ) == ["thing.colour"], label
    # Raw bodies (google.api.HttpBody) are not JSON.
    assert post(probe, "/v1/things/a:upload", b"\x00not json").status_code == 200
    assert post(probe, "/v1/raw", b"not json either").status_code == 200
    # Paths the transcoder does not bind (it passes them on, and the gateway answers 404).
    for path in ("/v1/things:bogus", "/v2/things", "/v1//things", "/v1/things/a/b:put",
                 "/healthz"):
        assert post(probe, path, bad).status_code == 200, path
    # Paths it does bind, as its matcher splits them.
    for path in ("/v1/things?x=1", "/v1/things/", "/v1/things//", "/v1/things/a:put?y=:z"):
        assert post(probe, path, {"colour": 1, "thing": {}}).status_code == 400, path
    # A verb some template registers splits off; an unregistered one stays in the segment.
    assert unknown_fields(post(probe, "/v1/leaves/a:rename", {"colour": 1})) == ["colour"]
    assert post(probe, "/v1/leaves/a:renamed", {"colour": 1}).status_code == 200
    # No body, an empty one, or only whitespace: nothing to check.
    assert probe.post("/v1/things").status_code == 200
    assert post(probe, "/v1/things", " \n").status_code == 200


# --- the real contracts, against the Python reference ---------------------------------------


def _mutations(seed: int, body: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Type-correct variants of a valid body: unknown keys at random places, keys renamed to
    their proto names, keys with escapes."""
    rng = random.Random(seed)

    def objects(value: Any) -> list[dict[str, Any]]:
        found = []
        if isinstance(value, dict):
            found.append(value)
            for v in value.values():
                found += objects(v)
        elif isinstance(value, list):
            for v in value:
                found += objects(v)
        return found

    def snake(name: str) -> str:
        return "".join(f"_{c.lower()}" if c.isupper() else c for c in name)

    for n in range(40):
        variant = copy.deepcopy(body)
        places = objects(variant)
        for target in rng.sample(places, k=min(len(places), rng.randint(1, 4))):
            keys = list(target)
            for key in rng.sample(keys, k=min(len(keys), 2)):
                if rng.random() < 0.5:
                    target[snake(key)] = target.pop(key)
        kind = n % 3
        text = json.dumps(variant, indent=rng.choice([None, 1]))
        if kind == 1:
            target = rng.choice(objects(variant))
            target[rng.choice(["colour", "sku2", "lat", "notes_", "Name"])] = rng.choice(
                [1, "x", {"y": []}, None])
            text = json.dumps(variant)
        elif kind == 2:
            # Escape one letter of every key (the JSON is the same for both checks).
            text = text.replace('"name"', '"n\\u0061me"').replace('"sku"', '"\\u0073ku"')
        yield text, variant


def test_the_lua_check_agrees_with_the_python_reference(real: httpx.Client) -> None:
    reference = StrictJson(contracts.load())
    order = json_format.MessageToDict(sample_order(notes="n", priority=2))
    cases = [("POST", "/v1/orders", order), ("PATCH", "/v1/orders/abc", order),
             ("POST", "/v1/orders:batchCreate", {"requests": [{"order": order, "requestId": "r"},
                                                              {"order": order}]}),
             ("POST", "/v1/orders/abc:cancel", {"reason": "r", "etag": "e", "requestId": "x"})]
    checked, refused = 0, 0
    for seed, (verb, path, body) in enumerate(cases):
        for text, _ in _mutations(seed, body):
            expected = reference.check(verb, path, text.encode())
            response = real.request(verb, path, content=text)
            checked += 1
            refused += expected is not None
            if expected is None:
                assert response.status_code == 200, (verb, path, text, response.text)
            else:
                [violation] = expected["details"][0]["fieldViolations"]
                assert violation["description"] == "unknown field", expected
                assert violation["field"] in unknown_fields(response), (text, response.text)
    assert checked == 160 and 30 < refused < 130
