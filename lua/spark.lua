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

-- lua-cjson decodes every number as a float; give integers back as
-- integers (in C: it runs on every body, see bench/README.md).
local integers = core.integers

local function decode(body)
  local ok, v = pcall(cjson.decode, body)
  if not ok then return nil, "response body is not JSON: " .. tostring(v) end
  return integers(v, body)
end

spark.json_encode = cjson.encode
spark.json_decode = decode

-- Options --------------------------------------------------------------------

local function callable(v)
  if type(v) == "function" then return true end
  local mt = getmetatable(v)
  return type(mt) == "table" and mt.__call ~= nil
end

local function number_check(min, exclusive, integer, max)
  max = max or 1e9
  return function(v)
    if type(v) ~= "number" or v ~= v then return "a number" end
    if integer and math.type(v) ~= "integer" and v ~= math.floor(v) then return "an integer" end
    if v < min or (exclusive and v == min) or v > max then
      return ("%s %s and <= %s"):format(exclusive and ">" or ">=", min, max)
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
  max_body = number_check(1, false, true, 2 ^ 40),
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

--- Raises unless `seconds` is what a sleep hook is given (a non-negative
-- number); `what` names the hook. For the event-loop modules.
function spark.check_seconds(what, seconds)
  if type(seconds) ~= "number" or seconds ~= seconds or seconds < 0 then
    error(what .. ": bad argument 'seconds' (a non-negative number expected, got "
      .. tostring(seconds) .. ")", 3)
  end
end

--- A spark.new that installs `hook` as the sleep hook: the `new` of the
-- event-loop modules (spark.cqueues, spark.luv); `what` names the module.
function spark.new_with_sleep(what, hook)
  return function(opts)
    if opts ~= nil and type(opts) ~= "table" then
      error(what .. ".new: bad argument 'opts' (table expected, got " .. type(opts) .. ")", 2)
    end
    local o = {}
    for k, v in pairs(opts or {}) do o[k] = v end
    if o.sleep ~= nil then
      error(what .. ".new: option 'sleep' is " .. what .. ".sleep here;"
        .. " use spark.new for another hook", 2)
    end
    o.sleep = hook
    return spark.new(o)
  end
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

local function response_of(r, url)
  local h = r.headers or {}
  return {
    status = r.status,
    tracking_id = r.tracking_id,
    next = h.link and core.link_next(h.link, url) or nil,
    attempts = r.attempts,
    waited = r.waited,
    retries = r.retries,
    budget = r.budget,
    rate_limit = r.rate_limit,
    headers = h,
  }
end

-- Turns the result of core.request (for `url`) into body, res or nil, err.
local function outcome(r, url)
  if r.kind then
    return nil, failure(r, nil, nil, r.body and decode(r.body))
  end
  local status = r.status
  if status < 200 or status > 299 then
    return nil, failure(r, "http", "HTTP " .. status, decode(r.body))
  end
  local res = response_of(r, url)
  if status == 204 or r.body == "" then return true, res end
  local body, err = decode(r.body)
  if type(body) ~= "table" then
    return nil, failure(r, "decode", err or "response body is not a JSON object")
  end
  return body, res
end

-- Parameters and fields ---------------------------------------------------------

-- Each type checks a value and returns it as it goes into a query string
-- (or into a JSON body: the value itself), or nil and what was expected.
local TYPES = {
  string = function(v) if type(v) == "string" then return v end return nil, "a string" end,
  boolean = function(v)
    if type(v) == "boolean" then return tostring(v) end
    return nil, "a boolean"
  end,
  max = function(v)
    local i = type(v) == "number" and math.tointeger(v)
    if i and i >= 1 and i <= 1000 then return string.format("%d", i) end
    return nil, "an integer from 1 to 1000"
  end,
  strings = function(v)
    if type(v) ~= "table" then return nil, "an array of strings" end
    for i = 1, #v do
      if type(v[i]) ~= "string" or v[i]:find(",", 1, true) then
        return nil, "an array of strings"
      end
    end
    for k in pairs(v) do
      if math.type(k) ~= "integer" or k < 1 or k > #v then return nil, "an array of strings" end
    end
    return table.concat(v, ",")
  end,
  array = function(v)
    if type(v) == "table" then return v end
    return nil, "an array"
  end,
}

local function check_value(ty, v)
  if type(ty) == "table" then -- an enum
    for _, allowed in ipairs(ty) do
      if v == allowed then return v end
    end
    return nil, "one of " .. table.concat(ty, ", ")
  end
  return TYPES[ty](v)
end

local function shown(v)
  if type(v) == "string" then return ("%q"):format(v) end
  return tostring(v)
end

-- Checks `given` (a table or nil) against `allowed` (name -> type) and the
-- operation's required and one_of lists; raises naming the culprit. Returns
-- sorted {name, query value} pairs.
local function check_fields(what, noun, argname, allowed, given, op)
  if given ~= nil and type(given) ~= "table" then
    error(("%s: bad argument '%s' (table expected, got %s)"):format(what, argname, type(given)), 4)
  end
  given = given or {}
  local names = {}
  for k in pairs(given) do
    if not (allowed and allowed[k]) then
      error(("%s: unknown %s '%s'"):format(what, noun, tostring(k)), 4)
    end
    names[#names + 1] = k
  end
  table.sort(names)
  local pairs_out = {}
  for i, k in ipairs(names) do
    local v, want = check_value(allowed[k], given[k])
    if v == nil then
      error(("%s: %s '%s' must be %s (got %s)"):format(what, noun, k, want, shown(given[k])), 4)
    end
    pairs_out[i] = { k, v }
  end
  for _, k in ipairs(op.required or {}) do
    if allowed[k] and given[k] == nil then
      error(("%s: %s '%s' is required"):format(what, noun, k), 4)
    end
  end
  for _, group in ipairs(op.one_of or {}) do
    if allowed[group[1]] then
      local any = false
      for _, k in ipairs(group) do any = any or given[k] ~= nil end
      if not any then
        error(("%s: one of the %ss '%s' is required"):format(what, noun,
          table.concat(group, "', '")), 4)
      end
    end
  end
  return pairs_out
end

-- Calls ---------------------------------------------------------------------

local CALL_OPTIONS = {
  deadline = function(v)
    if type(v) ~= "number" or v ~= v or v <= 0 then return "a number > 0" end
  end,
  idempotent = function(v) if type(v) ~= "boolean" then return "a boolean" end end,
  query = function(v) if type(v) ~= "table" then return "a table" end end,
  json = function(v) if type(v) ~= "table" then return "a table" end end,
}

-- Checks the per-call options (the last argument of a call); `allowed`
-- limits them to some names.
local function call_options(what, opts, allowed)
  if opts == nil then return {} end
  if type(opts) ~= "table" then
    error(what .. ": bad argument 'opts' (table expected, got " .. type(opts) .. ")", 3)
  end
  for k, v in pairs(opts) do
    local check = CALL_OPTIONS[k]
    if not check or (allowed and not allowed[k]) then
      error(what .. ": unknown call option '" .. tostring(k) .. "'", 3)
    end
    local want = check(v)
    if want then error(what .. ": call option '" .. k .. "' must be " .. want, 3) end
  end
  return opts
end

local DEADLINE_ONLY = { deadline = true }

local function check_self(self, what)
  if type(self) ~= "userdata" then
    error(what .. ": call it as a method (with a colon)", 3)
  end
end

-- The origin (scheme, host, port) of a URL, or nil.
local function origin(url)
  local p = core.url_parts(url)
  return p and (p.scheme .. "://" .. p.host:lower() .. ":" .. p.port), p
end

-- Sends one call through the C loop and interprets its outcome.
local function send(self, method, url, body, opts, meta)
  local r = core.request(self, method, url, body and cjson.encode(body),
    body and "application/json" or nil,
    { deadline = opts.deadline, idempotent = opts.idempotent })
  local result, res = outcome(r, url)
  if result and meta then
    for k, v in pairs(meta) do res[k] = v end
  end
  return result, res
end

-- The pages of a list: res carries what get_next needs to re-apply.
local function list_page(self, url, opts, meta)
  local body, res = send(self, "GET", url, nil, opts, meta)
  if not body then return nil, res end
  if type(body) ~= "table" or type(body.items) ~= "table" then
    return nil, setmetatable({ kind = "decode", status = res.status,
      message = "response has no 'items' array", tracking_id = res.tracking_id,
      attempts = res.attempts, waited = res.waited }, Error)
  end
  return body.items, res
end

--- client:request(method, path, opts) -> body, res | nil, err
-- The generic call: path below base_url ("/messages") or an absolute URL
-- on base_url's origin; opts: query (table), json (a body to encode),
-- idempotent (retry policy), deadline. A 204 or empty body gives true.
function methods:request(method, path, opts)
  check_self(self, "request")
  if type(method) ~= "string" or not method:match("^%u+$") then
    error("request: bad argument 'method' (an upper-case HTTP method expected, got "
      .. shown(method) .. ")", 2)
  end
  if type(path) ~= "string" then
    error("request: bad argument 'path' (string expected, got " .. type(path) .. ")", 2)
  end
  opts = call_options("request", opts)
  local q = {}
  if opts.query then
    local names = {}
    for k in pairs(opts.query) do
      if type(k) ~= "string" then error("request: query names must be strings", 2) end
      names[#names + 1] = k
    end
    table.sort(names)
    for i, k in ipairs(names) do
      local v = opts.query[k]
      if math.type(v) == "integer" then v = string.format("%d", v)
      elseif type(v) == "number" or type(v) == "boolean" then v = tostring(v)
      elseif type(v) ~= "string" then
        error("request: query value '" .. k .. "' must be a string, number or boolean", 2)
      end
      q[i] = { k, v }
    end
  end
  local url, err
  if path:match("^%a[%w+.-]*://") then
    if origin(path) ~= origin(self:base_url()) then
      error("request: " .. path:match("^[^?#]*") .. " is not on base_url's origin", 2)
    end
    url, err = core.url(path, "", q, true)
  else
    url, err = core.url(self:base_url(), path, q, true)
  end
  if not url then error("request: bad path: " .. err, 2) end
  return send(self, method, url, opts.json, opts)
end

--- client:get_next(res [, opts]) -> items, res | nil, err
-- The next page of a list. Parameters a next link dropped are re-applied;
-- a next link to another origin than base_url is refused (the token never
-- goes elsewhere). Raises when res has no next page. opts: { deadline }.
function methods:get_next(res, opts)
  check_self(self, "get_next")
  if type(res) ~= "table" or type(res.next) ~= "string" then
    error("get_next: bad argument 'res' (the res of a list call with a next page expected)", 2)
  end
  opts = call_options("get_next", opts, DEADLINE_ONLY)
  local next_origin, parts = origin(res.next)
  if next_origin ~= origin(self:base_url()) then
    return nil, setmetatable({ kind = "refused", status = res.status,
      message = "refused a next link to another origin than base_url: "
        .. tostring(next_origin or res.next:match("^[^?#]*")) }, Error)
  end
  -- re-apply the original parameters the next link dropped
  local present = {}
  for name in ((parts.query or "") .. "&"):gmatch("([^&=]*)[^&]*&") do
    present[name:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end)] = true
  end
  local missing = {}
  for _, pair in ipairs(res.query or {}) do
    if not present[pair[1]] then missing[#missing + 1] = pair end
  end
  local url = assert(core.url(res.next, "", missing, true))
  return list_page(self, url, opts, { query = res.query, resource = res.resource })
end

-- Resources -------------------------------------------------------------------

local resources = require "spark.resources"
spark.resources = resources

local Resource = {}
Resource.__index = Resource

-- client.<resource>:<operation>(...): built from spark.resources. The
-- arguments follow the operation: an id when it takes one; then query
-- parameters (list, get, me) or body fields (create, update); then the
-- per-call options ({ deadline = s }, and for operations with both fields
-- and query parameters, { query = {...} }). `what` names it in errors.
local function operation(rname, oname, what)
  local op = resources[rname].operations[oname]
  local base_path = resources[rname].path
  local allowed_opts = { deadline = true, query = op.body ~= nil and op.query ~= nil or nil }
  return function(client, ...)
    local args, n = { ... }, 1
    local path = base_path .. op.path
    if op.id then
      local id = args[1]
      if type(id) ~= "string" or id == "" then
        error(what .. ": bad argument 'id' (a non-empty string expected, got "
          .. shown(id) .. ")", 3)
      end
      path = path:gsub("{id}", (core.escape(id):gsub("%%", "%%%%")))
      n = 2
    end
    local body, query
    if op.body then
      body = args[n] or {}
      check_fields(what, "field", "fields", op.body, args[n], op)
      n = n + 1
    elseif op.query then
      query = check_fields(what, "parameter", "params", op.query, args[n], op)
      n = n + 1
    end
    local opts = call_options(what, args[n], allowed_opts)
    if opts.query then
      query = check_fields(what, "parameter", "query", op.query, opts.query, op)
    end
    -- core.request checks the scheme against the client's allow_insecure
    local url = assert(core.url(client:base_url(), path, query, true))
    if op.list then
      return list_page(client, url, opts, { query = query, resource = rname })
    end
    return send(client, op.method, url, body, opts)
  end
end

for rname, r in pairs(resources) do
  for oname in pairs(r.operations) do
    local impl = operation(rname, oname, "client." .. rname .. ":" .. oname)
    Resource[oname .. "@" .. rname] = function(self, ...)
      if getmetatable(self) ~= Resource then
        error("client." .. rname .. ":" .. oname .. ": call it as a method (with a colon)", 2)
      end
      return impl(self.client, ...)
    end
  end
end

-- A resource object bound to a client, made on first use and kept as long
-- as the client lives.
local bound = setmetatable({}, { __mode = "k" })

local function resource_of(client, rname)
  local per = bound[client]
  if not per then
    per = {}
    bound[client] = per
  end
  local obj = per[rname]
  if not obj then
    obj = setmetatable({ client = client, name = rname }, Resource)
    for oname in pairs(resources[rname].operations) do
      obj[oname] = Resource[oname .. "@" .. rname]
    end
    per[rname] = obj
  end
  return obj
end

core.metatable.__index = function(client, key)
  local m = methods[key]
  if m ~= nil then return m end
  if resources[key] then return resource_of(client, key) end
end

local list_rooms = operation("rooms", "list", "get_rooms")

--- client:get_rooms(params [, opts]) -> rooms, res | nil, err
-- The call of the original example: client.rooms:list under its own name.
function methods:get_rooms(params, opts)
  check_self(self, "get_rooms")
  return list_rooms(self, params, opts)
end

-- The resource and params of a whole-list walk, checked.
local function walk_args(what, self, rname, params)
  check_self(self, what)
  local r = type(rname) == "string" and resources[rname]
  if not (r and r.operations.list) then
    error(what .. ": bad argument 'resource' (a listable resource name expected, got "
      .. shown(rname) .. ")", 3)
  end
  return resource_of(self, rname), params
end

--- for item in client:each(resource, params) do ... end
-- Every item of a list, page by page; raises the spark error value when a
-- page fails (never ends silently).
function methods:each(rname, params, opts)
  local obj = walk_args("each", self, rname, params)
  local page, res = obj:list(params, opts)
  if not page then error(res, 2) end
  local i = 0
  return function()
    i = i + 1
    while page[i] == nil do
      if not res.next then return nil end
      local err
      page, err = self:get_next(res)
      if not page then error(err, 2) end
      res, i = err, 1
    end
    return page[i]
  end
end

--- client:all(resource, params, { limit = N }) -> items, res | nil, err
-- Collects the items of every page, at most `limit` (default: all); `max`
-- in params stays the page size. res is the last page's, with `pages`.
function methods:all(rname, params, opts)
  local obj = walk_args("all", self, rname, params)
  local limit
  if opts ~= nil then
    if type(opts) ~= "table" then
      error("all: bad argument 'opts' (table expected, got " .. type(opts) .. ")", 2)
    end
    limit = opts.limit
    if limit ~= nil and (math.type(limit) ~= "integer" or limit < 0) then
      error("all: option 'limit' must be a non-negative integer (got " .. shown(limit) .. ")", 2)
    end
    for k in pairs(opts) do
      if k ~= "limit" and k ~= "deadline" then
        error("all: unknown option '" .. tostring(k) .. "'", 2)
      end
    end
  end
  local items = {}
  local page, res = obj:list(params, opts and opts.deadline and { deadline = opts.deadline })
  local pages = 1
  while true do
    if not page then return nil, res end
    for _, item in ipairs(page) do
      if limit and #items >= limit then break end
      items[#items + 1] = item
    end
    if not res.next or (limit and #items >= limit) then break end
    page, res = self:get_next(res)
    pages = pages + 1
  end
  res.pages = pages
  return items, res
end

--- spark.check_params(resource, operation, params) -> true | false, why
-- Checks parameters (or fields, for create and update) as the call would,
-- without sending anything: for command lines and forms. `why` reads
-- "parameter 'max' must be an integer from 1 to 1000 (got 0)".
function spark.check_params(rname, oname, params)
  local op = resources[rname] and resources[rname].operations[oname]
  if not op then
    error("spark.check_params: unknown operation " .. tostring(rname) .. ":" .. tostring(oname), 2)
  end
  local noun = op.body and "field" or "parameter"
  local ok, err = pcall(check_fields, "", noun, "params", op.body or op.query or {}, params, op)
  if ok then return true end
  return false, (tostring(err):gsub("^.-: : ", "", 1))
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
