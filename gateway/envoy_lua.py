"""The Lua filters of the edge (see gateway.envoy_config for where they sit in the chain)."""

# Before jwt_authn: the Authorization header must be exactly `Bearer <token>` (RFC 6750 §2.1:
# the scheme, case-insensitive per RFC 7235 §2.1, one or more spaces, a b64token). jwt_authn
# alone finds its `Bearer ` prefix anywhere in the value (`xyzBearer <token>` was accepted) and
# matches it case-sensitively (`bearer <token>` was "Jwt is missing"): this filter refuses any
# other shape with 401 and rewrites the scheme to `Bearer`, so `bearer`/`BEARER` are accepted
# as the RFC says. Several Authorization headers arrive joined by commas, which no b64token
# contains: refused. Tokens are accepted from this header only (jwt_authn `from_headers`): a
# token in the URL (`?access_token=`, RFC 6750 §2.3) would land in access logs, the audit
# record's path and browser histories (§5.3), so there it is ignored and the request is 401.
# First of all, a header name gRPC metadata cannot carry is a 400.
LUA_BEARER = r"""
local MAX_TOKEN = 8192
function envoy_on_request(handle)
  local headers = handle:headers()
  -- gRPC metadata keys are [0-9a-z_.-]: the upstream refused any other header name (`a$`, which
  -- HTTP allows) with INTERNAL, a 500 (found by schemathesis).
  for key, _ in pairs(headers) do
    if key:sub(1, 1) ~= ":" and key:find("[^0-9a-z_%.%-]") then
      handle:respond({[":status"] = "400"},
                     "header names may hold only letters, digits, '-', '_' and '.'")
      return
    end
  end
  local value = headers:get("authorization")
  if value == nil then return end
  local scheme, token = value:match("^(%a+) +([%w%-%._~%+/]+=*)$")
  local problem = nil
  if scheme == nil or scheme:lower() ~= "bearer" then
    problem = "malformed Authorization header: expected Bearer and a token"
  elseif #token > MAX_TOKEN then
    problem = "the token is too long"
  end
  if problem ~= nil then
    handle:respond({[":status"] = "401",
                    ["www-authenticate"] = 'Bearer error="invalid_token"'}, problem)
    return
  end
  if scheme ~= "Bearer" or value ~= "Bearer " .. token then
    headers:replace("authorization", "Bearer " .. token)
  end
end
"""

# Right after the transcoder, on the response path: the service's own gRPC status, before the
# transcoder turns it into an HTTP status for a REST caller (and drops the grpc-status header).
# Envoy's %GRPC_STATUS% reads the response the caller gets, so for REST it derived the status
# from the HTTP code: a 400 INVALID_ARGUMENT was recorded as Internal, a 404 as Unimplemented, a
# 409 as Unknown. Errors arrive as trailers-only responses (grpc-status in the headers); an OK
# one carries it in trailers, which this filter does not wait for (that would hold a watch's
# stream): a 200 is OK anyway. gateway.audit puts the audit record's grpc_status together.
LUA_OUTCOME = r"""
function envoy_on_response(handle)
  local status = handle:headers():get("grpc-status")
  if status ~= nil then
    handle:streamInfo():dynamicMetadata():set("cartage.outcome", "grpc_status", status)
  end
end
"""

# Per request, after jwt_authn: (0) the token's `typ` header is at+jwt and it has an iat, and
# exp - iat is at most the issuer's lifetime; (1) the client's IP
# allowlist (token claim `ip_allow`; absent = anywhere) against the peer address; (2) whether the
# client is still enabled and the token not revoked, asked of the authorization server and cached
# per worker for STATUS_TTL seconds, so a disabled client or a revoked token is refused within
# seconds at the cost of one call per token and worker per period. If the authorization server
# cannot answer, the last answer (or "allowed") stands: token lifetimes bound that exposure, and
# the API stays up without the auth server.
LUA_ACCESS = r"""
local STATUS_TTL = __TTL__
local MAX_LIFETIME = __MAX_LIFETIME__
local cache = {}
local entries = 0
local function prune(now)
  -- Tokens come and go every few minutes: drop expired answers now and then.
  for key, hit in pairs(cache) do
    if hit.until_ <= now then cache[key] = nil; entries = entries - 1 end
  end
end
local function v4(addr)
  local a, b, c, d = addr:match("^(%d+)%.(%d+)%.(%d+)%.(%d+)$")
  if not a then return nil end
  return ((tonumber(a) * 256 + tonumber(b)) * 256 + tonumber(c)) * 256 + tonumber(d)
end
local function in_cidr(ip, cidr)
  local net, bits = cidr:match("^([%d%.]+)/(%d+)$")
  if not net then net, bits = cidr, "32" end
  local n, x = v4(net), v4(ip)
  if not n or not x then return false end
  local size = 2 ^ (32 - tonumber(bits))
  return math.floor(n / size) == math.floor(x / size)
end
local function deny(handle, message)
  -- A local reply: the local_reply_config mapper turns it into the JSON error body.
  handle:respond({[":status"] = "403"}, message)
end
local function still_allowed(handle, client_id, jti)
  local key = client_id .. " " .. jti
  local now = os.time()
  local hit = cache[key]
  if hit ~= nil and hit.until_ > now then return hit.ok end
  local headers, _ = handle:httpCall("auth", {
      [":method"] = "GET", [":authority"] = "auth",
      [":path"] = "/internal/access?client_id=" .. client_id .. "&jti=" .. jti},
    "", 1000)
  local status = headers and headers[":status"]
  local ok
  if status == "200" then ok = true
  elseif status == "403" then ok = false
  elseif hit ~= nil then ok = hit.ok
  else ok = true end
  if hit == nil then
    entries = entries + 1
    if entries > 10000 then prune(now) end
  end
  cache[key] = {ok = ok, until_ = now + STATUS_TTL}
  return ok
end
local function unauthenticated(handle, message)
  handle:respond({[":status"] = "401",
                  ["www-authenticate"] = 'Bearer error="invalid_token"'}, message)
end
function envoy_on_request(handle)
  local meta = handle:streamInfo():dynamicMetadata():get("envoy.filters.http.jwt_authn")
  if meta == nil or meta["jwt_payload"] == nil then return end
  local claims = meta["jwt_payload"]
  -- RFC 9068 §4: an access token's `typ` is at+jwt (jwt_authn does not look at it), so an ID
  -- token or any other JWT signed by the same keys is not taken for one.
  local typ = meta["jwt_header"] and meta["jwt_header"]["typ"]
  if type(typ) ~= "string" or (typ:lower() ~= "at+jwt" and typ:lower() ~= "application/at+jwt")
  then
    return unauthenticated(handle, "the token is not an access token (typ at+jwt)")
  end
  -- jwt_authn's max_lifetime bounds exp from now only (a token issued an hour ago that still
  -- has five minutes passes it), and it lets a token without iat through (RFC 9068 §2.2
  -- requires one): the lifetime the issuer gave it, exp - iat, is bounded here.
  local iat, exp = claims["iat"], claims["exp"]
  if type(iat) ~= "number" or type(exp) ~= "number" then
    return unauthenticated(handle, "the token has no iat")
  end
  if exp - iat > MAX_LIFETIME then
    return unauthenticated(handle, "the token lives longer than the issuer's tokens")
  end
  local allow = claims["ip_allow"]
  if allow ~= nil and #allow > 0 then
    local peer = handle:streamInfo():downstreamDirectRemoteAddress()
    local ip = peer:match("^(.*):%d+$") or peer
    local inside = false
    for _, cidr in ipairs(allow) do
      if in_cidr(ip, cidr) then inside = true break end
    end
    if not inside then return deny(handle, "client not allowed from this address") end
  end
  local client_id, jti = claims["client_id"], claims["jti"]
  if type(client_id) == "string" and type(jti) == "string"
      and client_id:match("^[%w%.%-_]+$") and jti:match("^[%w%-_]+$") then
    if not still_allowed(handle, client_id, jti) then
      return deny(handle, "client disabled or token revoked")
    end
  end
end
"""

# The strict-JSON check of REST bodies (gateway.strict_json generates __TABLES__ from the
# descriptor set). Envoy's transcoder silently drops JSON fields the bound message does not have;
# this filter, placed before it, finds the binding the transcoder will pick (a port of its path
# matcher: query stripped, a registered custom verb split off, segments matched literal first,
# then `*`, then `**`), scans the body once and refuses unknown fields with 400.
#
# The scanner accepts strict RFC 8259 JSON only and refuses anything else with 400 ("not valid
# JSON"): the transcoder's parser is more lenient (single quotes, unquoted keys), and a
# tokenisation the two disagreed on could hide a key from this check. On strict JSON both see
# the same keys. Keys are compared after JSON unescaping, against both the JSON name and the
# proto name of each field (the transcoder accepts both). A message's value is checked when it
# is an object (or an array of them: the transcoder takes one object for a repeated field too);
# a string or number (a Timestamp, a Duration, a wrapper ...) is a value. Scalars, Struct, Value,
# ListValue and Any are checked for syntax only, as are maps of scalars; a map of messages has
# free keys and checked values.
#
# Scanning does not yield, so the scanner's state lives in upvalues shared by the requests of a
# worker.
LUA_STRICT_JSON = r"""
__TABLES__
local byte, find, sub, concat = string.byte, string.find, string.sub, table.concat
local MAX_DEPTH = 100
local MAX_REPORTED = 20
local BAD, DEEP, FULL = {}, {}, {}
local S, N = "", 0      -- the body being scanned and its length
local P, K = {}, {}     -- the path to the current value: keys (or array indexes); K: map key?
local unknown = {}      -- paths of the unknown fields found so far
local prefix = ""       -- the request field the body fills ("" for the whole request)

local function ws(i)
  local c = byte(S, i)
  if c == nil or c > 32 then return i end  -- compact JSON: no call into the pattern matcher
  return find(S, "[^ \t\n\r]", i) or N + 1
end

local ESC = {[34] = '"', [92] = "\\", [47] = "/", [98] = "\b", [102] = "\f", [110] = "\n",
             [114] = "\r", [116] = "\t"}

-- The index of the closing quote of the string opening at i, and whether it has escapes.
local function string_end(i)
  local j, escaped = i + 1, false
  while true do
    local k = find(S, '["\\%z\1-\31]', j)
    if k == nil then error(BAD) end
    local c = byte(S, k)
    if c == 34 then return k, escaped end
    if c ~= 92 then error(BAD) end  -- a raw control character
    escaped = true
    c = byte(S, k + 1)
    if c == 117 then
      if find(S, "^%x%x%x%x", k + 2) == nil then error(BAD) end
      j = k + 6
    elseif ESC[c] then
      j = k + 2
    else
      error(BAD)
    end
  end
end

local function utf8(cp)
  if cp < 0x80 then return string.char(cp) end
  if cp < 0x800 then
    return string.char(0xC0 + math.floor(cp / 0x40), 0x80 + cp % 0x40)
  end
  if cp < 0x10000 then
    return string.char(0xE0 + math.floor(cp / 0x1000), 0x80 + math.floor(cp / 0x40) % 0x40,
                       0x80 + cp % 0x40)
  end
  return string.char(0xF0 + math.floor(cp / 0x40000), 0x80 + math.floor(cp / 0x1000) % 0x40,
                     0x80 + math.floor(cp / 0x40) % 0x40, 0x80 + cp % 0x40)
end

-- A key's text with its escapes resolved (only called for keys that have some).
local function unescape(raw)
  local out, i = {}, 1
  while true do
    local k = find(raw, "\\", i, true)
    if k == nil then out[#out + 1] = sub(raw, i) break end
    out[#out + 1] = sub(raw, i, k - 1)
    local c = byte(raw, k + 1)
    if c == 117 then
      local cp = tonumber(sub(raw, k + 2, k + 5), 16)
      i = k + 6
      if cp >= 0xD800 and cp <= 0xDBFF and sub(raw, i, i + 1) == "\\u" then
        local low = tonumber(sub(raw, i + 2, i + 5), 16)
        if low >= 0xDC00 and low <= 0xDFFF then
          cp = 0x10000 + (cp - 0xD800) * 0x400 + (low - 0xDC00)
          i = i + 6
        end
      end
      out[#out + 1] = utf8(cp)
    else
      out[#out + 1] = ESC[c]
      i = k + 2
    end
  end
  return concat(out)
end

-- A number, loosely (`1.` or `1e` pass): the transcoder checks values; what matters here is
-- where the token ends, and a number can hide no key.
local function number_end(i)
  local _, e = find(S, "^-?%d+%.?%d*[eE]?[-+]?%d*", i)
  if e == nil then error(BAD) end
  return e + 1
end

local function report(depth)
  local out = {prefix}
  for d = 1, depth do
    local p = P[d]
    if type(p) == "number" or K[d] then
      out[#out + 1] = "[" .. p .. "]"
    elseif #out == 1 and prefix == "" then
      out[#out + 1] = p
    else
      out[#out + 1] = "." .. p
    end
  end
  unknown[#unknown + 1] = concat(out)
  if #unknown >= MAX_REPORTED then error(FULL) end
end

-- value(i, code, depth): scans the value starting at i, returns the index after it.
-- code: nil or 0 = syntax only; n > 0 = message M[n] (an object, or an array of them);
-- n < 0 = a map whose values are messages M[-n].
local value

local function members(i, fields, map, depth)
  -- S[i] == "{"; fields: the message's names (nil: any key, syntax only)
  i = ws(i + 1)
  if byte(S, i) == 125 then return i + 1 end
  local d = depth + 1
  while true do
    if byte(S, i) ~= 34 then error(BAD) end
    local e, escaped = string_end(i)
    local code
    if fields then
      local key = sub(S, i + 1, e - 1)
      if escaped then key = unescape(key) end
      P[d], K[d] = key, false
      code = fields[key]
      if code == nil then report(d) end
    elseif map then
      P[d], K[d] = sub(S, i + 1, e - 1), true
      code = map
    end
    i = ws(e + 1)
    if byte(S, i) ~= 58 then error(BAD) end
    i = ws(value(ws(i + 1), code, d))
    local c = byte(S, i)
    if c == 125 then return i + 1 end
    if c ~= 44 then error(BAD) end
    i = ws(i + 1)
  end
end

value = function(i, code, depth)
  if depth >= MAX_DEPTH then error(DEEP) end
  local c = byte(S, i)
  if c == 123 then
    if code == nil or code == 0 then return members(i, nil, nil, depth) end
    if code > 0 then return members(i, M[code], nil, depth) end
    return members(i, nil, -code, depth)
  elseif c == 91 then
    i = ws(i + 1)
    if byte(S, i) == 93 then return i + 1 end
    local d, index = depth + 1, 0
    while true do
      P[d], K[d] = index, false
      i = ws(value(i, code, d))
      c = byte(S, i)
      if c == 93 then return i + 1 end
      if c ~= 44 then error(BAD) end
      i = ws(i + 1)
      index = index + 1
    end
  elseif c == 34 then
    return (string_end(i)) + 1
  elseif c == 116 then
    if sub(S, i, i + 3) ~= "true" then error(BAD) end
    return i + 4
  elseif c == 102 then
    if sub(S, i, i + 4) ~= "false" then error(BAD) end
    return i + 5
  elseif c == 110 then
    if sub(S, i, i + 3) ~= "null" then error(BAD) end
    return i + 4
  end
  return number_end(i)
end

-- The binding the transcoder resolves (method, path) to, as its path matcher does.
local function lookup(node, parts, i, n, key)
  if i > n then
    local found = node.r and node.r[key]
    if found == nil and node.c and node.c["**"] and node.c["**"].r then
      found = node.c["**"].r[key]
    end
    return found
  end
  local children = node.c
  if children then
    local child = children[parts[i]]
    if child then
      local found = lookup(child, parts, i + 1, n, key)
      if found ~= nil then return found end
    end
  end
  if node.w then return lookup(node, parts, i + 1, n, key) end
  if children then
    for _, wild in ipairs({"*", "**"}) do
      local child = children[wild]
      if child then
        local found = lookup(child, parts, i + 1, n, key)
        if found ~= nil then return found end
      end
    end
  end
  return nil
end

local function binding(method, path)
  path = sub(path, 1, (find(path, "?", 1, true) or 0) - 1)
  local colon = find(path, ":[^:/]*$")
  if colon and VERBS[sub(path, colon + 1)] then
    method = method .. sub(path, colon + 1)
    path = sub(path, 1, colon - 1)
  end
  local parts, n, start = {}, 0, 2
  while true do
    local k = find(path, "/", start, true)
    n = n + 1
    if k == nil then parts[n] = sub(path, start) break end
    parts[n] = sub(path, start, k - 1)
    start = k + 1
  end
  while n > 0 and parts[n] == "" do parts[n] = nil n = n - 1 end
  local found = lookup(TRIE, parts, 1, n, method)
  if found then return BINDINGS[found] end
  return nil  -- no binding, or a duplicate (the transcoder matches neither)
end

-- The error body: a google.rpc.Status with a BadRequest, as the transcoder's errors have.
local function json_string(text)
  local out, i, n = {'"'}, 1, #text
  while i <= n do
    local c = byte(text, i)
    local width, cp = 1, nil
    if c == 34 or c == 92 then
      out[#out + 1] = "\\" .. string.char(c)
    elseif c < 32 or c == 127 then
      out[#out + 1] = string.format("\\u%04x", c)
    elseif c < 128 then
      out[#out + 1] = string.char(c)
    else
      -- one UTF-8 sequence as \u escapes; a broken one as U+FFFD
      local need = c >= 0xF0 and c < 0xF5 and 3 or c >= 0xE0 and c < 0xF0 and 2
                   or c >= 0xC2 and c < 0xE0 and 1 or 0
      cp = need > 0 and c % (2 ^ (6 - need)) or 0xFFFD
      for k = 1, need do
        local b = byte(text, i + k)
        if b == nil or b < 0x80 or b > 0xBF then cp, width = 0xFFFD, 1 break end
        cp, width = cp * 64 + b % 64, width + 1
      end
      if cp > 0xFFFF then
        cp = cp - 0x10000
        out[#out + 1] = string.format("\\u%04x\\u%04x", 0xD800 + math.floor(cp / 0x400),
                                      0xDC00 + cp % 0x400)
      else
        out[#out + 1] = string.format("\\u%04x", cp)
      end
    end
    i = i + width
  end
  out[#out + 1] = '"'
  return concat(out)
end

local function bad_request(handle, fields, description, reason)
  local violations, quoted = {}, {}
  for k, field in ipairs(fields) do
    if #field > 256 then field = sub(field, 1, 256) .. "..." end
    violations[k] = '{"field":' .. json_string(field) .. ',"description":'
                    .. json_string(description) .. ',"reason":"' .. reason .. '"}'
    quoted[k] = field
  end
  local message = description
  if #quoted == 1 and quoted[1] ~= "" then
    message = quoted[1] .. ": " .. description
  elseif #quoted > 1 then
    message = description .. "s: " .. concat(quoted, ", ")
  end
  handle:streamInfo():dynamicMetadata():set("cartage.strict_json", "rejected", true)
  handle:respond({[":status"] = "400", ["content-type"] = "application/json"},
    '{"code":3,"message":' .. json_string(message) .. ',"details":[{"@type":'
    .. '"type.googleapis.com/google.rpc.ErrorInfo","reason":"' .. reason
    .. '","domain":"cartage.io"},{"@type":'
    .. '"type.googleapis.com/google.rpc.BadRequest","fieldViolations":['
    .. concat(violations, ",") .. "]}]}")
end

function envoy_on_request(handle)
  local body = handle:body()  -- nil at once for a request without a body (most GETs)
  if body == nil then return end
  local size = body:length()
  if size == 0 then return end
  local headers = handle:headers()
  local bound = binding(headers:get(":method") or "", headers:get(":path") or "/")
  if bound == nil then return end
  S, N = body:getBytes(0, size), size
  prefix = bound[2]
  unknown = {}
  local ok, err = pcall(function()
    local i = ws(1)
    if i > N then return end  -- only whitespace: as empty as no body
    i = ws(value(i, bound[1], 0))
    if i <= N then error(BAD) end
  end)
  S = ""
  if ok or err == FULL then
    if #unknown > 0 then return bad_request(handle, unknown, "unknown field", "UNKNOWN_FIELD") end
    return
  end
  if err == BAD then return bad_request(handle, {""}, "the body is not valid JSON",
                                     "MALFORMED_BODY") end
  if err == DEEP then return bad_request(handle, {""}, "the body nests too deeply",
                                     "MALFORMED_BODY") end
  handle:logErr("strict JSON check failed: " .. tostring(err))
  handle:respond({[":status"] = "500"}, "the request body could not be checked")
end
"""

# First in the chain, so last on the response path, and only for REST callers (a matcher skips
# native gRPC requests): what a partner's HTTP client receives.
#
# (1) No gRPC internals: the transcoder copies the service's grpc-status / grpc-message (and
#     grpc-accept-encoding) into the REST response's headers; they are removed here (the audit
#     record's true status is kept before the transcoder, by LUA_OUTCOME).
# (2) Every error of the gateway's own, in our words with an ErrorInfo reason: the local reply
#     mapper (gateway.envoy_config._local_reply) already gives every local reply a
#     google.rpc.Status body with an ErrorInfo for its status; the replies whose message says
#     more than the status (the transcoder's 400s, jwt_authn's 401s, RBAC's 403, the route
#     table's 404) are marked with a header, and this filter names their reason, rewrites
#     Envoy's wording and adds the BadRequest field violation where the field is known. The
#     mapped body is `{"code":N,"details":[...],"message":"..."}` (keys sorted); the message is
#     worked on in its JSON-escaped form, so what is copied from it stays valid JSON.
LUA_REST_RESPONSE = r"""
local DOMAIN = "__DOMAIN__"
local MARK = "__MARK__"
local ENUMS = __ENUMS__  -- the contracts' enum types: the transcoder names them like messages
local GRPC_HEADERS = {"grpc-status", "grpc-message", "grpc-status-details-bin",
                      "grpc-accept-encoding"}
local EXPECTED = {
  TYPE_INT32 = "an integer", TYPE_INT64 = "an integer", TYPE_UINT32 = "a non-negative integer",
  TYPE_UINT64 = "a non-negative integer", TYPE_SINT32 = "an integer", TYPE_SINT64 = "an integer",
  TYPE_FIXED32 = "a non-negative integer", TYPE_FIXED64 = "a non-negative integer",
  TYPE_SFIXED32 = "an integer", TYPE_SFIXED64 = "an integer",
  TYPE_DOUBLE = "a number", TYPE_FLOAT = "a number", TYPE_BOOL = "true or false",
  TYPE_STRING = "a string", TYPE_BYTES = "base64-encoded bytes",
  TYPE_ENUM = "one of the enum's value names",
}
local WELL_KNOWN = {
  ["google.protobuf.Timestamp"] = 'an RFC 3339 timestamp such as \\"2026-01-01T08:00:00Z\\"',
  ["google.protobuf.Duration"] = 'a duration in seconds such as \\"5s\\"',
  ["google.protobuf.FieldMask"] = 'a comma-separated list of field paths',
}
local TOKEN_401 = {
  ["Jwt is missing"] = {"TOKEN_MISSING",
    "a bearer token is required: Authorization: Bearer <access token>"},
  ["Jwt is expired"] = {"TOKEN_EXPIRED", "the token has expired: get a new one"},
  ["Jwt not yet valid"] = {"INVALID_TOKEN", "the token is not valid yet"},
  ["Jwt verification fails"] = {"INVALID_TOKEN", "the token's signature does not verify"},
  ["Jwt issuer is not configured"] = {"INVALID_TOKEN", "the token was not issued by us"},
  ["Audiences in Jwt are not allowed"] = {"INVALID_TOKEN", "the token is not for this API"},
}
local DENIED_403 = {
  ["RBAC: access denied"] = {"MISSING_SCOPE",
    "the token's scopes do not allow this call (see the operation's security in /openapi.json)"},
  ["client not allowed from this address"] = {"ADDRESS_NOT_ALLOWED", nil},
  ["client disabled or token revoked"] = {"ACCESS_REVOKED", nil},
}

local function info(reason)
  return '{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"' .. reason
         .. '","domain":"' .. DOMAIN .. '"}'
end

local function violation(field, description, reason)
  return '{"@type":"type.googleapis.com/google.rpc.BadRequest","fieldViolations":[{"field":"'
         .. field .. '","description":"' .. description .. '","reason":"' .. reason .. '"}]}'
end

-- reason, message, field violation (or nil) for the transcoder's own 400s
local function bad_request(message)
  local field = message:match('^Could not find field \\"(.-)\\" in the type')
  if field then
    return "UNKNOWN_QUERY_PARAMETER", field .. ": unknown query parameter",
           violation(field, "unknown query parameter", "UNKNOWN_QUERY_PARAMETER")
  end
  local path, value, kind = message:match("^(.-): invalid value (.-) for type (.+)$")
  if path then
    local expected = EXPECTED[kind]
    if expected == nil then
      local name = kind:match("^type%.googleapis%.com/(.+)$") or kind
      expected = WELL_KNOWN[name] or ENUMS[name] and EXPECTED.TYPE_ENUM or "a JSON object"
    end
    local shown = #value <= 40 and value .. " is not " or "not "
    local description = shown .. expected
    local where = path ~= "" and path or "body"
    return "INVALID_FIELD_VALUE", where .. ": " .. description,
           violation(path, description, "INVALID_FIELD_VALUE")
  end
  path = message:match("^(.-): ?Proto field is not repeating, cannot start list")
  if path then
    if path == "" then
      return "MALFORMED_BODY", "the body must be a JSON object, not a list",
             violation("", "must be a JSON object, not a list", "MALFORMED_BODY")
    end
    return "MALFORMED_BODY", path .. ": takes one value, not a list",
           violation(path, "takes one value, not a list", "MALFORMED_BODY")
  end
  if message:match("^Unexpected") or message:match("^Expected") or
     message:match("^Invalid") or message:match("^Unable to parse") then
    return "MALFORMED_BODY", "the body is not valid JSON for this call: " .. message, nil
  end
  return "INVALID_REQUEST", "the request does not fit this call: " .. message, nil
end

local function refine(status, message)
  if status == "400" then return bad_request(message) end
  if status == "401" then
    local known = TOKEN_401[message]
    if known then return known[1], known[2], nil end
    return "INVALID_TOKEN", message, nil
  end
  if status == "403" then
    local known = DENIED_403[message]
    if known then return known[1], known[2] or message, nil end
    return "PERMISSION_DENIED", message, nil
  end
  if status == "404" and message:match("^no such endpoint") then
    return "UNKNOWN_PATH", message, nil
  end
  return nil
end

function envoy_on_response(handle)
  local headers = handle:headers()
  for _, name in ipairs(GRPC_HEADERS) do headers:remove(name) end
  if headers:get(MARK) == nil then return end
  headers:remove(MARK)
  local status = headers:get(":status")
  local body = handle:body()
  if body == nil or body:length() == 0 then return end  -- HEAD: no body to rewrite
  local text = body:getBytes(0, body:length())
  local code, message = text:match('^{"code":(%d+),"details":%[.-%],"message":"(.*)"}%s*$')
  if code == nil then return end
  local reason, ours, detail = refine(status, message)
  if reason == nil then return end
  local details = info(reason)
  if detail then details = details .. "," .. detail end
  body:setBytes('{"code":' .. code .. ',"message":"' .. ours .. '","details":[' .. details
                .. ']}')
end
"""
