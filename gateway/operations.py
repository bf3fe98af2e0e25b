"""google.longrunning.Operations at the edge: each call goes to the service that owns the
operation, named in the request (`operations/{service}/{id}`), under that service's scopes.

Every service that `serves_operations` (services.registry) serves the same gRPC service, so
the gRPC path (`/google.longrunning.Operations/GetOperation`, which the transcoder also makes of
a REST call) cannot tell them apart: only the `name` in the request body can. A small Lua
filter, on the Operations routes only and after the transcoder (so REST and native gRPC
callers meet the same code, both as gRPC-framed protobuf), reads that field, sets
SERVICE_HEADER and clears the route cache; Envoy then matches one route per method and owner,
which carries the owner's cluster, its scope (RBAC, next in the chain) and its rate limit.

Which service a name belongs to:

- `operations/{service}/{id}`: `service` (an unknown one: NOT_FOUND from the gateway);
- `operations/{id}` (names made before they carried their service) and anything else: the
  registry's DEFAULT_OPERATIONS_OWNER, whose own validation then answers for a bad name;
- ListOperations names a collection, not an operation: `operations/{service}` lists that
  service's operations; `operations` or empty (REST's `GET /v1/operations` always sends
  `operations`: its HTTP rule fixes the name) lists the default owner's.

The filter reads the request's `name` field (its number per method comes from the descriptor
set) by walking the protobuf wire format of the one gRPC message: 5-byte frame header, then
tag/value pairs. A compressed message (frame flag 1) cannot be read and is refused.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from gateway import contracts

FILTER = "cartage.operations"
SOURCE = "operations"
SERVICE_HEADER = "x-cartage-operation-service"
T = "type.googleapis.com/"

LUA = r"""
local OWNERS = {__OWNERS__}
local DEFAULT = "__DEFAULT__"
local NAME_FIELD = {__FIELDS__}
local HEADER = "__HEADER__"
local byte, floor = string.byte, math.floor

-- The string field `number` of the protobuf message in msg[i..last]; "" when absent, nil when
-- the bytes are not a message.
local function string_field(msg, i, last, number)
  local function varint()
    local value, scale = 0, 1
    repeat
      local b = byte(msg, i)
      if b == nil then return nil end
      value = value + (b % 128) * scale
      scale = scale * 128
      i = i + 1
    until b < 128
    return value
  end
  while i <= last do
    local key = varint()
    if key == nil then return nil end
    local wire, num = key % 8, floor(key / 8)
    if wire == 0 then
      if varint() == nil then return nil end
    elseif wire == 1 then i = i + 8
    elseif wire == 5 then i = i + 4
    elseif wire == 2 then
      local len = varint()
      if len == nil or i + len - 1 > last then return nil end
      if num == number then return msg:sub(i, i + len - 1) end
      i = i + len
    else
      return nil
    end
  end
  return ""
end

local function owner_of(method, name)
  if method == "ListOperations" then
    if name == "" or name == "operations" then return DEFAULT end
    return name:match("^operations/([^/]+)$") or DEFAULT
  end
  return name:match("^operations/([^/]+)/.") or DEFAULT
end

local function refuse(handle, rest, http_status, grpc_status, message)
  if rest then
    -- A local reply: the local_reply_config mapper makes the JSON error body.
    handle:respond({[":status"] = http_status}, message)
  else
    -- Native gRPC: a trailers-only reply with the gRPC code itself (Envoy would map an HTTP
    -- 404 to UNIMPLEMENTED).
    handle:respond({[":status"] = "200", ["content-type"] = "application/grpc",
                    ["grpc-status"] = grpc_status, ["grpc-message"] = message}, "")
  end
end

function envoy_on_request(handle)
  local headers = handle:headers()
  -- The transcoder keeps a REST call's own path here; a native gRPC call has none.
  local rest = headers:get("x-envoy-original-path") ~= nil
  local method = (headers:get(":path") or ""):match("^/google%.longrunning%.Operations/(%w+)$")
  local number = method and NAME_FIELD[method]
  local name = ""
  if number then
    local body = handle:body()
    local size = body and body:length() or 0
    if size >= 5 then
      local bytes = body:getBytes(0, size)
      if byte(bytes, 1) ~= 0 then
        return refuse(handle, rest, "400", "3",
                      "compressed Operations requests are not supported")
      end
      name = string_field(bytes, 6, size, number) or ""
    end
  end
  local service = owner_of(method, name)
  if not OWNERS[service] then
    local shown = service:sub(1, 64):gsub("[^%w%-_%.]", "?")
    return refuse(handle, rest, "404", "5",
                  "no service named " .. shown .. " serves operations (operation " ..
                  "names look like operations/{service}/{id})")
  end
  -- body() yields: the headers object taken before it is out of scope now.
  handle:headers():replace(HEADER, service)
  handle:clearRouteCache()
end
"""


def lua_source(owners: Iterable[str], default: str, name_fields: Mapping[str, int]) -> str:
    table = ", ".join(f'["{o}"] = true' for o in sorted(owners))
    fields = ", ".join(f"{m} = {n}" for m, n in sorted(name_fields.items()) if n)
    return (LUA.replace("__OWNERS__", table).replace("__DEFAULT__", default)
            .replace("__FIELDS__", fields).replace("__HEADER__", SERVICE_HEADER))


def http_filter(rpcs: list[contracts.Rpc], owners: Iterable[str], default: str
                ) -> dict[str, Any]:
    """The Lua filter; it runs only on routes that name its source (per_route), so other
    requests do not enter Lua at all."""
    name_fields = {r.method: r.name_field for r in rpcs if r.shared}
    return {"name": FILTER, "typed_config": {
        "@type": T + "envoy.extensions.filters.http.lua.v3.Lua",
        "source_codes": {SOURCE: {"inline_string": lua_source(owners, default, name_fields)}},
        "stat_prefix": "operations"}}


def per_route() -> dict[str, Any]:
    return {"@type": T + "envoy.extensions.filters.http.lua.v3.LuaPerRoute", "name": SOURCE}


def owner_match(rpc: contracts.Rpc, owner: str) -> dict[str, Any]:
    return {"path": rpc.path,
            "headers": [{"name": SERVICE_HEADER, "string_match": {"exact": owner}}]}
