"""The Lua filter of the edge (see gateway.envoy_config for where it sits in the chain)."""

# Per request, after jwt_authn: (1) the client's IP allowlist (token claim `ip_allow`; absent =
# anywhere) against the peer address; (2) whether the client is still enabled and the token not
# revoked, asked of the authorization server and cached per worker for STATUS_TTL seconds, so a
# disabled client or a revoked token is refused within seconds at the cost of one call per token
# and worker per period. If the authorization server cannot answer, the last answer (or "allowed")
# stands: token lifetimes bound that exposure, and the API stays up without the auth server.
LUA_ACCESS = r"""
local STATUS_TTL = __TTL__
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
function envoy_on_request(handle)
  local meta = handle:streamInfo():dynamicMetadata():get("envoy.filters.http.jwt_authn")
  if meta == nil or meta["jwt_payload"] == nil then return end
  local claims = meta["jwt_payload"]
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
