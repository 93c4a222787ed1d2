--- spark: a Webex REST API client that survives its rate limits.
-- The facade over the C core (spark.core): options, parameters, URLs, JSON,
-- error values and the default client. The HTTP call, the Retry-After-aware
-- retry loop and the sleep hook live in C.
local core = require "spark.core"
local cjson = require("cjson").new()

local spark = {
  _VERSION = core.version,
  DEFAULT_BASE_URL = "https://webexapis.com/v1",
  sleep = core.sleep,
  monotime = core.monotime,
}

-- Errors ---------------------------------------------------------------------

local Error = {}
Error.__index = Error
Error.__name = "spark.error"

function Error:__tostring()
  local s = "spark: " .. self.kind .. ": " .. tostring(self.message)
  local extra = {}
  if self.status then extra[#extra + 1] = "HTTP " .. self.status end
  if self.retry_after then extra[#extra + 1] = "Retry-After " .. self.retry_after .. " s" end
  if self.tracking_id then extra[#extra + 1] = "TrackingID " .. self.tracking_id end
  if #extra > 0 then s = s .. " (" .. table.concat(extra, ", ") .. ")" end
  return s
end

--- Whether v is an error value returned by spark.
function spark.is_error(v)
  return getmetatable(v) == Error
end

spark.Error = Error

-- JSON -----------------------------------------------------------------------

-- lua-cjson decodes every number as a float; give integers back as integers.
local function integers(v)
  if type(v) == "table" then
    for k, x in pairs(v) do
      if math.type(x) == "float" then
        local i = math.tointeger(x)
        if i then v[k] = i end
      elseif type(x) == "table" then
        integers(x)
      end
    end
  end
  return v
end

local function decode(body)
  local ok, v = pcall(cjson.decode, body)
  if not ok then return nil, "response body is not JSON: " .. tostring(v) end
  return integers(v)
end

spark.json_encode = cjson.encode
spark.json_decode = decode

-- Options --------------------------------------------------------------------

local function callable(v)
  if type(v) == "function" then return true end
  local mt = getmetatable(v)
  return type(mt) == "table" and mt.__call ~= nil
end

local function number_check(min, exclusive, integer)
  return function(v)
    if type(v) ~= "number" or v ~= v then return "a number" end
    if integer and math.type(v) ~= "integer" and v ~= math.floor(v) then return "an integer" end
    if v < min or (exclusive and v == min) then
      return (exclusive and "> " or ">= ") .. min
    end
  end
end

local OPTIONS = {
  token = function(v)
    if type(v) ~= "string" or v == "" then return "a non-empty string" end
    if v:find("[%c ]") then return "free of spaces and control characters" end
  end,
  base_url = function(v) if type(v) ~= "string" then return "a string" end end,
  sleep = function(v) if not callable(v) then return "a function" end end,
  on_retry = function(v) if not callable(v) then return "a function" end end,
  max_rate_limited = number_check(0, false, true),
  max_retries = number_check(0, false, true),
  max_wait = number_check(0, false, false),
  timeout = number_check(0, true, false),
  connect_timeout = number_check(0, true, false),
  max_body = number_check(1, false, true),
  allow_insecure = function(v) if type(v) ~= "boolean" then return "a boolean" end end,
  ca_file = function(v) if type(v) ~= "string" then return "a string" end end,
  deadline = number_check(0, true, false),
  rate = function(v)
    if v ~= "adaptive" and (type(v) ~= "number" or v ~= v or v <= 0) then
      return 'a number > 0 or "adaptive"'
    end
  end,
  burst = number_check(1, false, false),
  random = function(v) if not callable(v) then return "a function" end end,
  clock = function(v) if not callable(v) then return "a function" end end,
}

local function env(name)
  local v = os.getenv(name)
  if v ~= nil and v ~= "" then return v end
end

--- Creates a client. See README.md for the options.
function spark.new(opts)
  if opts == nil then opts = {} end
  if type(opts) ~= "table" then
    error("spark.new: bad argument 'opts' (table expected, got " .. type(opts) .. ")", 2)
  end
  local o = {}
  for k, v in pairs(opts) do
    local check = OPTIONS[k]
    if not check then error("spark.new: unknown option '" .. tostring(k) .. "'", 2) end
    local want = check(v)
    if want then error("spark.new: option '" .. k .. "' must be " .. want, 2) end
    o[k] = v
  end
  o.token = o.token or env("WEBEX_ACCESS_TOKEN") or env("SPARK_ACCESS_TOKEN")
  if not o.token then
    error("spark.new: no token: pass the 'token' option or set WEBEX_ACCESS_TOKEN", 2)
  end
  local want = OPTIONS.token(o.token)
  if want then error("spark.new: the access token must be " .. want, 2) end
  o.base_url = o.base_url or env("SPARK_BASE_URL") or spark.DEFAULT_BASE_URL
  local ok, err = core.url(o.base_url, "", nil, o.allow_insecure)
  if not ok then error("spark.new: option 'base_url' is not usable: " .. err, 2) end
  o.base_url = o.base_url:gsub("/+$", "")
  if o.burst and type(o.rate) ~= "number" then
    error("spark.new: option 'burst' needs a numeric 'rate'", 2)
  end
  o.sleep = o.sleep or core.sleep
  return core.new(o)
end

-- Calls ----------------------------------------------------------------------

local methods = core.methods

-- Builds an error value from the result of core.request.
local function failure(r, kind, message, body)
  local e = setmetatable({
    kind = kind or r.kind,
    message = message or r.message,
    status = r.status,
    retry_after = r.retry_after,
    attempts = r.attempts,
    waited = r.waited,
    retries = r.retries,
  }, Error)
  if type(body) == "table" then
    e.tracking_id = type(body.trackingId) == "string" and body.trackingId or nil
    e.errors = body.errors
    if e.kind == "http" and type(body.message) == "string" then e.message = body.message end
  end
  e.tracking_id = e.tracking_id or r.tracking_id
  return e
end

local function response_of(r)
  local h = r.headers or {}
  return {
    status = r.status,
    tracking_id = r.tracking_id,
    next = h.link and core.link_next(h.link) or nil,
    attempts = r.attempts,
    waited = r.waited,
    retries = r.retries,
    budget = r.budget,
    rate_limit = r.rate_limit,
    headers = h,
  }
end

-- Turns the result of core.request into body, res or nil, err.
local function outcome(r)
  if r.kind then
    return nil, failure(r, nil, nil, r.body and decode(r.body))
  end
  local status = r.status
  if status < 200 or status > 299 then
    return nil, failure(r, "http", "HTTP " .. status, decode(r.body))
  end
  local res = response_of(r)
  if status == 204 or r.body == "" then return true, res end
  local body, err = decode(r.body)
  if type(body) ~= "table" then
    return nil, failure(r, "decode", err or "response body is not a JSON object")
  end
  return body, res
end

-- Parameters -------------------------------------------------------------------

local function enum(...)
  local values = { ... }
  local set = {}
  for _, v in ipairs(values) do set[v] = true end
  return function(v)
    if not set[v] then return "one of " .. table.concat(values, ", "), true end
    return v
  end
end

local function string_param(v)
  if type(v) ~= "string" then return "a string", true end
  return v
end

local function boolean_param(v)
  if type(v) ~= "boolean" then return "a boolean", true end
  return tostring(v)
end

local function max_param(v)
  local i = type(v) == "number" and math.tointeger(v)
  if not i or i < 1 or i > 1000 then return "an integer from 1 to 1000", true end
  return string.format("%d", i)
end

spark.params = {
  rooms_list = {
    teamId = string_param,
    type = enum("direct", "group"),
    orgPublicSpaces = boolean_param,
    from = string_param,
    to = string_param,
    sortBy = enum("id", "lastactivity", "created"),
    max = max_param,
  },
}

-- Validates `params` against `spec` and returns sorted {name, value} pairs.
local function query_of(what, spec, params)
  if params == nil then return {} end
  if type(params) ~= "table" then
    error(what .. ": bad argument 'params' (table expected, got " .. type(params) .. ")", 3)
  end
  local names = {}
  for k in pairs(params) do
    if not spec[k] then error(what .. ": unknown parameter '" .. tostring(k) .. "'", 3) end
    names[#names + 1] = k
  end
  table.sort(names)
  local q = {}
  for i, k in ipairs(names) do
    local v, bad = spec[k](params[k])
    if bad then
      error(string.format("%s: parameter '%s' must be %s (got %s)",
        what, k, v, type(params[k]) == "string" and ("%q"):format(params[k])
        or tostring(params[k])), 3)
    end
    q[i] = { k, v }
  end
  return q
end

local function check_self(self, what)
  if type(self) ~= "userdata" then
    error(what .. ": call it as a method, client:" .. what:match("[%w_]+$") .. "(...)", 3)
  end
end

local CALL_OPTIONS = {
  deadline = function(v)
    if type(v) ~= "number" or v ~= v or v <= 0 then return "a number > 0" end
  end,
}

-- Checks the per-call options (the last argument of a call).
local function call_options(what, opts)
  if opts == nil then return nil end
  if type(opts) ~= "table" then
    error(what .. ": bad argument 'opts' (table expected, got " .. type(opts) .. ")", 3)
  end
  for k, v in pairs(opts) do
    local check = CALL_OPTIONS[k]
    if not check then error(what .. ": unknown call option '" .. tostring(k) .. "'", 3) end
    local want = check(v)
    if want then error(what .. ": call option '" .. k .. "' must be " .. want, 3) end
  end
  return opts
end

--- client:get_rooms(params [, opts]) -> rooms, res | nil, err
-- opts: { deadline = seconds } for this call.
function methods:get_rooms(params, opts)
  check_self(self, "get_rooms")
  local q = query_of("get_rooms", spark.params.rooms_list, params)
  opts = call_options("get_rooms", opts)
  local url = assert(core.url(self:base_url(), "/rooms", q))
  local body, res = outcome(core.request(self, "GET", url, nil, nil, opts))
  if not body then return nil, res end
  if type(body.items) ~= "table" then
    return nil, setmetatable({ kind = "decode", status = res.status,
      message = "response has no 'items' array", tracking_id = res.tracking_id,
      attempts = res.attempts, waited = res.waited }, Error)
  end
  return body.items, res
end

-- The default client ------------------------------------------------------------

local default_client

--- The client spark.get_rooms and friends use, made from the environment on
-- first use (WEBEX_ACCESS_TOKEN or SPARK_ACCESS_TOKEN, SPARK_BASE_URL).
function spark.default()
  if default_client == nil or default_client:is_closed() then
    default_client = spark.new()
  end
  return default_client
end

function spark.get_rooms(params, opts)
  return spark.default():get_rooms(params, opts)
end

return spark
