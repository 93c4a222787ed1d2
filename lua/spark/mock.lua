--- spark.mock: an offline simulator of the Webex REST API.
--
-- Pure Lua on luasocket, lua-cjson and lua-system (no dependency on
-- spark.core). One listening socket and one coroutine per connection; a
-- select loop (`server:step`) resumes the coroutines whose sockets are ready.
--
--   local mock = require "spark.mock"
--   local server = assert(mock.new{ port = 0, rate = 2, control = true })
--   print(server:url())   --> http://127.0.0.1:PORT/v1
--   server:run()          -- until SIGINT ("interrupted!"), then closes
--
-- Options of mock.new (all optional): host ("127.0.0.1"), port (8080; 0 =
-- any free port), rooms (250), seed (1), rate (tokens per second; nil = no
-- limit), burst (default max(1, ceil(rate))), tokens ({"mock-token"}),
-- control (false: /_mock/* is 404), verbose (false: one stderr line per
-- request when true), log_max (100000: the stats log keeps at most this
-- many of the most recent entries). Invalid options or a failed bind give
-- nil, message.
--
-- HTTP: HTTP/1.1 keep-alive (Connection: close honoured; HTTP/1.0 closes
-- unless it asks for keep-alive), pipelining, Content-Length bodies (at most
-- 1 MiB, else 413), `Expect: 100-continue`. Transfer-Encoding (chunked) is
-- rejected with 400. A malformed request gets 400 and its connection is
-- closed. Connections never time out; select() limits them to about 1000
-- at once. SIGINT makes `run` close every socket and return; SIGTERM keeps
-- its default action (the process ends and the kernel closes the sockets).
--
-- API: GET /v1/rooms (max, type, sortBy, teamId, cursor; Link rel="next"),
-- GET /v1/rooms/{id}, GET /v1/people/me. Auth: `Authorization: Bearer
-- <token>` with one of `tokens`. Rate limit: a token bucket per access token.
--
-- Control API (only with control = true; no auth, never counted or logged):
--   POST /_mock/script  {"responses": [entry, ...]} appends to a FIFO queue;
--                       answers {"queued": <queue length>}.
--   POST /_mock/reset   empties the queue, the stats and refills the buckets.
--   GET  /_mock/stats   {"requests", "connections", "by_status", "log"}.
-- Each /v1 request, before auth and rate limiting (and taking no token),
-- consumes the next entry, if any, and is answered by it:
--   {"status": 200..599, "headers": {name: value} or [[name, value], ...],
--    "body": <string, sent raw, or any other JSON value, encoded>}
--     - a body given: status (default 200), headers and that body;
--     - no body, status >= 400: the standard Webex error body;
--     - no body otherwise: the request is routed normally (without auth or
--       rate limit) and status/headers override the result.
--     Entry headers replace any header of the same name (case-insensitive);
--     TrackingID, Date, Content-Type, Content-Length are added unless given.
--     An entry that gives Content-Length closes the connection afterwards.
--   {"action": "drop"}      close the connection without an answer
--   {"action": "reset"}     close it with a TCP RST (SO_LINGER 0)
--   {"action": "delay", "seconds": S}  answer after S seconds (as above)
--   {"action": "truncate"}  Content-Length promises the whole body, half of
--                           it is sent, then the connection is closed
--   {"action": "badjson"}   200 with a JSON content type and a broken body
-- delay, truncate and badjson also take status and headers.
--
-- Stats: "requests" counts /v1 requests, "connections" the connections that
-- carried at least one of them, both since start or the last reset. A log
-- entry is {t (system.monotime() at arrival), conn, method, path, query,
-- status (0 for drop and reset; absent while a delay runs), tracking_id,
-- scripted (true when a script entry answered), action}; by_status counts
-- by status as a string ("0" for drop and reset).

local socket = require "socket"
local cjson = require "cjson"
local system = require "system"

-- A private cjson instance: settings never leak to other users of cjson.
local json = cjson.new()
local monotime = system.monotime
local concat, format = table.concat, string.format

local SELECT_TIMEOUT = 0.2  -- short, so that SIGINT is noticed quickly
local BACKLOG = 1024
local RECV_SIZE = 16384
local MAX_HEAD = 64 * 1024
local MAX_BODY = 1024 * 1024
local LINGER_SECONDS = 2    -- how long a closing connection is drained
local LINGER_BYTES = MAX_BODY
local MAX_VIEWS = 64        -- cached filtered orders per collection
local RATE_EPSILON = 1e-9   -- absorbs float error in the token bucket
local JSON_TYPE = "application/json;charset=UTF-8"
local BAD_JSON = '{"items": [ oops'

local REASONS = {
  [200] = "OK", [201] = "Created", [202] = "Accepted", [203] = "Non-Authoritative Information",
  [204] = "No Content", [301] = "Moved Permanently", [302] = "Found", [303] = "See Other",
  [304] = "Not Modified", [307] = "Temporary Redirect", [308] = "Permanent Redirect",
  [400] = "Bad Request", [401] = "Unauthorized", [403] = "Forbidden",
  [404] = "Not Found", [405] = "Method Not Allowed", [409] = "Conflict",
  [410] = "Gone", [413] = "Payload Too Large", [415] = "Unsupported Media Type",
  [423] = "Locked", [429] = "Too Many Requests",
  [500] = "Internal Server Error", [502] = "Bad Gateway",
  [503] = "Service Unavailable", [504] = "Gateway Timeout",
}

local MESSAGES = {
  [401] = "The request requires a valid access token set in the Authorization request header.",
  [404] = "The requested resource could not be found.",
}

-- RFC 9110 token characters, for methods and header names.
local TOKEN = "[%w!#%$%%&'%*%+%-%.%^_`|~]+"
local REQUEST_LINE = "^(" .. TOKEN .. ") (%S+) HTTP/1%.([01])$"
local HEADER_LINE = "^(" .. TOKEN .. "):[ \t]*(.-)[ \t]*$"
local CONTROL_CHARS = "[%z\1-\8\10-\31\127]"

---------------------------------------------------------------------------
-- Small utilities

local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
local B64_STD, B64_URL = B64 .. "+/", B64 .. "-_"

-- Base64 without padding, as Webex ids are.
local function base64(s, alphabet)
  local out = {}
  for i = 1, #s, 3 do
    local a, b, c = s:byte(i, i + 2)
    local n = (a << 16) | ((b or 0) << 8) | (c or 0)
    for k = 0, (c and 3) or (b and 2) or 1 do
      local d = (n >> (18 - 6 * k)) & 63
      out[#out + 1] = alphabet:sub(d + 1, d + 1)
    end
  end
  return concat(out)
end

-- Inverse of base64(s, B64_URL); nil when s is not such an encoding.
local function unbase64url(s)
  if s:find("[^%w%-_]") or #s % 4 == 1 then return nil end
  local out, n, bits = {}, 0, 0
  for i = 1, #s do
    n = (n << 6) | (B64_URL:find(s:sub(i, i), 1, true) - 1)
    bits = bits + 6
    if bits >= 8 then
      bits = bits - 8
      out[#out + 1] = string.char((n >> bits) & 255)
    end
  end
  return concat(out)
end

local function url_decode(s)
  return (s:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

local function url_encode(s)
  return (s:gsub("[^%w%-%._~]", function(c) return format("%%%02X", c:byte()) end))
end

-- Query string -> table. '+' is a space, as curl encodes it and as Webex
-- decodes it (a literal '+' comes as %2B); the first value of a name wins.
local function parse_query(query)
  local params = {}
  for pair in query:gsub("%+", " "):gmatch("[^&]+") do
    local name, value = pair:match("^([^=]*)=?(.*)$")
    name = url_decode(name)
    if params[name] == nil then params[name] = url_decode(value) end
  end
  return params
end

local function http_date()
  return os.date("!%a, %d %b %Y %H:%M:%S GMT")
end

local function iso8601(ms)
  return os.date("!%Y-%m-%dT%H:%M:%S", ms // 1000) .. format(".%03dZ", ms % 1000)
end

local function is_array(t)
  local n = 0
  for _ in pairs(t) do n = n + 1 end
  return n == #t
end

local function has_token(list, token)
  for item in list:lower():gmatch("[^,%s]+") do
    if item == token then return true end
  end
  return false
end

-- Deterministic generator (splitmix64): rand(n) is an integer in [0, n).
local function new_rng(seed)
  local state = seed
  return function(n)
    state = state + 0x9E3779B97F4A7C15
    local z = state
    z = (z ~ (z >> 30)) * 0xBF58476D1CE4E5B9
    z = (z ~ (z >> 27)) * 0x94D049BB133111EB
    z = z ~ (z >> 31)
    return (z >> 1) % n
  end
end

local function uuid(rand)
  local h = format("%08x%08x%08x%08x", rand(1 << 32), rand(1 << 32), rand(1 << 32), rand(1 << 32))
  local v = rand(4) + 1
  local variant = ("89ab"):sub(v, v)
  return format("%s-%s-4%s-%s%s-%s", h:sub(1, 8), h:sub(9, 12), h:sub(14, 16),
    variant, h:sub(18, 20), h:sub(21, 32))
end

-- A Webex-style id: base64 of "ciscospark://us/<KIND>/<uuid>".
local function webex_id(kind, rand)
  return base64("ciscospark://us/" .. kind .. "/" .. uuid(rand), B64_STD)
end

local function pick(rand, list)
  return list[rand(#list) + 1]
end

---------------------------------------------------------------------------
-- Store: collections of resources, pre-encoded, with cached sorted views.
-- Resources added later (messages, memberships, ...) get a Collection each.

local Collection = {}
Collection.__index = Collection

-- orders: name -> comparator(a, b) for table.sort.
function Collection.new(orders)
  return setmetatable({ items = {}, by_id = {}, encoded = {}, orders = orders,
    views = {}, nviews = 0 }, Collection)
end

function Collection:add(item)
  self.items[#self.items + 1] = item
  self.by_id[item.id] = item
  self.encoded[item] = json.encode(item)
  self.views, self.nviews = {}, 0
end

function Collection:get_json(id)
  local item = self.by_id[id]
  return item and self.encoded[item]
end

-- The encoded items in `order`, keeping those whose fields equal the
-- filter's ({{field, value}, ...}); cached so that paging is O(page).
function Collection:view(order, filter)
  local key = { order }
  for _, f in ipairs(filter) do key[#key + 1] = f[1] .. "=" .. f[2] end
  key = concat(key, "\0")
  local view = self.views[key]
  if view then return view end
  local sorted = table.move(self.items, 1, #self.items, 1, {})
  table.sort(sorted, self.orders[order])
  view = {}
  for _, item in ipairs(sorted) do
    local keep = true
    for _, f in ipairs(filter) do keep = keep and item[f[1]] == f[2] end
    if keep then view[#view + 1] = self.encoded[item] end
  end
  if self.nviews >= MAX_VIEWS then self.views, self.nviews = {}, 0 end
  self.views[key], self.nviews = view, self.nviews + 1
  return view
end

local function by_id(a, b) return a.id < b.id end

-- Newest first on `field`, ties broken by id.
local function newest(field)
  return function(a, b)
    if a[field] ~= b[field] then return a[field] > b[field] end
    return a.id < b.id
  end
end

local FIRST = { "John", "Maria", "Wei", "Aisha", "Lars", "Priya", "Kenji", "Sofia",
  "Omar", "Emma", "Diego", "Ingrid" }
local LAST = { "Andersen", "Garcia", "Chen", "Okafor", "Nilsson", "Sharma", "Sato",
  "Rossi", "Haddad", "Martin", "Lopez", "Berg" }
local WORDS = { "Unicorn", "Falcon", "Atlas", "Nimbus", "Orion", "Zephyr", "Comet", "Harbor" }
local KINDS = { "Project", "Team", "Release", "Support", "Design", "Ops" }

local EPOCH_MS = 1451606400000            -- 2016-01-01T00:00:00Z
local SPAN_MS = 8 * 365 * 24 * 3600 * 1000 -- rooms are created over 8 years

local function make_person(rand, n, org_id)
  local first, last = pick(rand, FIRST), pick(rand, LAST)
  local created = EPOCH_MS + rand(SPAN_MS)
  local email = format("%s.%s%d@example.com", first:lower(), last:lower(), n)
  return {
    id = webex_id("PEOPLE", rand), emails = { email },
    phoneNumbers = { { type = "work", value = format("+1 408 555 %04d", n), primary = true } },
    displayName = first .. " " .. last, nickName = first, firstName = first, lastName = last,
    avatar = format("https://avatars.example.com/%s.png", uuid(rand)),
    orgId = org_id, created = iso8601(created - created % 1000),
    lastModified = iso8601(created + rand(SPAN_MS // 8)),
    lastActivity = iso8601(created + rand(SPAN_MS // 4)),
    timezone = "UTC", status = "active", type = "person",
    invitePending = "false", loginEnabled = "true",
  }
end

local function make_room(rand, n, ctx)
  local direct = n % 3 == 0
  local created = EPOCH_MS + rand(SPAN_MS)
  local room = {
    id = webex_id("ROOM", rand), type = direct and "direct" or "group",
    isLocked = false, isAnnouncementOnly = false, isReadOnly = false, isPublic = false,
    created = iso8601(created), lastActivity = iso8601(created + rand(SPAN_MS // 4)),
    creatorId = pick(rand, ctx.people).id, ownerId = ctx.org_id,
  }
  if direct then
    room.title = pick(rand, ctx.people).displayName
    room.isReadOnly = rand(20) == 0
  else
    room.title = format("%s %s - Sprint %d", pick(rand, KINDS), pick(rand, WORDS), rand(40))
    room.isLocked = rand(4) == 0
    room.isAnnouncementOnly = room.isLocked and rand(2) == 0
    if rand(3) == 0 then
      room.teamId = pick(rand, ctx.teams)
    elseif rand(5) == 0 then
      room.isPublic = true
      room.madePublic = iso8601(created + rand(1000 * 86400))
      room.description = "Open to everyone in the organization"
    end
  end
  return room
end

-- The generated data. Rooms and the users behind the tokens draw from
-- separate generators, so the rooms do not depend on the token list.
local function new_store(cfg)
  local rand = new_rng(cfg.seed)
  local ctx = { org_id = webex_id("ORGANIZATION", rand), teams = {}, people = {} }
  for i = 1, 4 do ctx.teams[i] = webex_id("TEAM", rand) end
  for i = 1, 12 do ctx.people[i] = make_person(rand, 100 + i, ctx.org_id) end
  local rooms = Collection.new{ id = by_id, lastactivity = newest("lastActivity"),
    created = newest("created") }
  for n = 1, cfg.rooms do rooms:add(make_room(rand, n, ctx)) end
  local users, user_rand = {}, new_rng(cfg.seed ~ 0x5EED)
  for i, token in ipairs(cfg.tokens) do
    local person = make_person(user_rand, i, ctx.org_id)
    users[token] = { person = person, json = json.encode(person) }
  end
  return { rooms = rooms, users = users, default_user = users[cfg.tokens[1]] }
end

---------------------------------------------------------------------------
-- Responses: {status, headers = {{name, value}, ...}, body = string or nil
-- (then an error body with `message`), close, truncate, action}

local function error_response(status, message, headers)
  return { status = status, headers = headers or {},
    message = message or MESSAGES[status] or REASONS[status] or "Error" }
end

-- text: the body, already encoded.
local function json_response(status, text, headers)
  return { status = status, headers = headers or {}, body = text }
end

local function header_value(headers, lname)
  for _, h in ipairs(headers) do
    if h[1]:lower() == lname then return h[2] end
  end
end

-- headers without those named in `over`, followed by `over`.
local function override_headers(headers, over)
  local names = {}
  for _, h in ipairs(over) do names[h[1]:lower()] = true end
  local out = {}
  for _, h in ipairs(headers) do
    if not names[h[1]:lower()] then out[#out + 1] = h end
  end
  return table.move(over, 1, #over, #out + 1, out)
end

local function error_body(message, tracking_id)
  return json.encode{ message = message, errors = { { description = message } },
    trackingId = tracking_id }
end

-- The response's head (status line and headers) and body.
local function render(res, tracking_id, connection)
  local body = res.body or error_body(res.message, tracking_id)
  local head = { format("HTTP/1.1 %d %s", res.status, REASONS[res.status] or "Unknown") }
  local given = {}
  for _, h in ipairs(res.headers) do
    head[#head + 1] = h[1] .. ": " .. h[2]
    given[h[1]:lower()] = true
  end
  local function default(name, value)
    if value and not given[name:lower()] then head[#head + 1] = name .. ": " .. value end
  end
  default("TrackingID", tracking_id)
  default("Date", http_date())
  default("Content-Type", JSON_TYPE)
  default("Content-Length", tostring(#body))
  default("Connection", connection)
  head[#head + 1] = "\r\n"
  return concat(head, "\r\n"), body
end

---------------------------------------------------------------------------
-- Routing: a table of {pattern, METHOD = handler(server, req, captures...)}.

local function route(routes, server, req)
  for _, r in ipairs(routes) do
    local found = table.pack(req.path:find(r[1]))
    if found[1] then
      local handler = r[req.method]
      if not handler then
        return error_response(405, nil, { { "Allow", r.allow } })
      end
      return handler(server, req, table.unpack(found, 3, found.n))
    end
  end
  return error_response(404)
end

local function with_allow(routes)
  for _, r in ipairs(routes) do
    local methods = {}
    for k in pairs(r) do
      if type(k) == "string" and k:match("^%u+$") then methods[#methods + 1] = k end
    end
    table.sort(methods)
    r.allow = concat(methods, ", ")
  end
  return routes
end

---------------------------------------------------------------------------
-- /v1 resources

local ROOM_ORDERS = { id = true, lastactivity = true, created = true }
local ROOM_TYPES = { direct = true, group = true }
local ROOM_FILTERS = { "type", "teamId" }
local ROOM_LINK_PARAMS = { "type", "sortBy", "teamId" }

local function parse_max(value)
  if value == nil then return 100 end
  local n = value:match("^%d+$") and tonumber(value)
  if n and n >= 1 and n <= 1000 then return n end
end

local function encode_cursor(offset)
  return base64("offset:" .. offset, B64_URL)
end

local function decode_cursor(cursor)
  local offset = (unbase64url(cursor) or ""):match("^offset:(%d+)$")
  return offset and tonumber(offset)
end

-- A page of `view` as {"items": [...]}, with a Link to the next page that
-- repeats max, the given `link_params` of the request, and the cursor.
local function page_response(server, req, view, offset, max, link_params)
  local last = math.min(offset + max, #view)
  local body = '{"items":[' .. concat(view, ",", offset + 1, last) .. "]}"
  local headers = {}
  if last < #view then
    local q = { "max=" .. max }
    for _, name in ipairs(link_params) do
      local value = req.params[name]
      if value then q[#q + 1] = name .. "=" .. url_encode(value) end
    end
    q[#q + 1] = "cursor=" .. encode_cursor(last)
    local link = format('<%s%s?%s>; rel="next"', server.base_url, req.path:sub(4), concat(q, "&"))
    headers[1] = { "Link", link }
  end
  return json_response(200, body, headers)
end

local function list_rooms(server, req)
  local p = req.params
  local max = parse_max(p.max)
  if not max then return error_response(400, "max must be an integer from 1 to 1000") end
  if p.type and not ROOM_TYPES[p.type] then
    return error_response(400, "type must be direct or group")
  end
  if p.sortBy and not ROOM_ORDERS[p.sortBy] then
    return error_response(400, "sortBy must be id, lastactivity or created")
  end
  local offset = 0
  if p.cursor then
    offset = decode_cursor(p.cursor)
    if not offset then return error_response(400, "Invalid cursor") end
  end
  local filter = {}
  for _, name in ipairs(ROOM_FILTERS) do
    if p[name] then filter[#filter + 1] = { name, p[name] } end
  end
  local view = server.store.rooms:view(p.sortBy or "id", filter)
  return page_response(server, req, view, offset, max, ROOM_LINK_PARAMS)
end

local function get_room(server, _, id)
  local body = server.store.rooms:get_json(url_decode(id))
  if not body then return error_response(404) end
  return json_response(200, body)
end

local function get_me(_, req)
  return json_response(200, req.user.json)
end

local API_ROUTES = with_allow{
  { "^/v1/rooms$", GET = list_rooms },
  { "^/v1/rooms/([^/]+)$", GET = get_room },
  { "^/v1/people/me$", GET = get_me },
}

---------------------------------------------------------------------------
-- Script entries (control API)

local ACTIONS = { drop = true, reset = true, delay = true, truncate = true, badjson = true }

local function header_string(value)
  if type(value) == "number" then return tostring(math.tointeger(value) or value) end
  return value
end

local function check_header(name, value)
  value = header_string(value)
  if type(name) ~= "string" or not name:match("^" .. TOKEN .. "$") then
    return nil, "bad header name"
  end
  if type(value) ~= "string" or value:find(CONTROL_CHARS) then
    return nil, "bad value for header " .. name
  end
  return { name, value }
end

-- Entry headers, an object or an array of [name, value], as a list of pairs.
local function normalize_headers(headers)
  if headers == nil then return {} end
  if type(headers) ~= "table" then return nil, "headers must be an object or an array" end
  local list = {}
  if is_array(headers) then
    for _, pair in ipairs(headers) do
      if type(pair) ~= "table" or #pair ~= 2 then
        return nil, "headers array items must be [name, value]"
      end
      list[#list + 1] = { pair[1], pair[2] }
    end
  else
    for name, value in pairs(headers) do list[#list + 1] = { name, value } end
    table.sort(list, function(a, b) return a[1] < b[1] end)
  end
  for i, h in ipairs(list) do
    local err
    list[i], err = check_header(h[1], h[2])
    if not list[i] then return nil, err end
  end
  return list
end

local function normalize_entry(e)
  if type(e) ~= "table" or (next(e) ~= nil and is_array(e)) then
    return nil, "must be an object"
  end
  if e.action ~= nil and not ACTIONS[e.action] then return nil, "unknown action" end
  local status = e.status
  if status ~= nil then
    status = math.type(status) and math.tointeger(status)
    if not status or status < 200 or status > 599 then
      return nil, "status must be an integer from 200 to 599"
    end
  end
  local seconds = e.seconds
  if e.action == "delay" and not (math.type(seconds) and seconds >= 0 and seconds < math.huge) then
    return nil, "delay needs seconds >= 0"
  end
  local headers, err = normalize_headers(e.headers)
  if not headers then return nil, err end
  local body = e.body
  if body == cjson.null then body = nil end
  if body ~= nil and type(body) ~= "string" then body = json.encode(body) end
  return { action = e.action, status = status, seconds = seconds, headers = headers, body = body }
end

-- A FIFO queue.
local Queue = {}
Queue.__index = Queue

function Queue.new() return setmetatable({ first = 1, last = 0 }, Queue) end

function Queue:push(v) self.last = self.last + 1; self[self.last] = v end

function Queue:len() return self.last - self.first + 1 end

function Queue:pop()
  if self.first > self.last then return nil end
  local v = self[self.first]
  self[self.first], self.first = nil, self.first + 1
  return v
end

---------------------------------------------------------------------------
-- Control API

local function control_script(server, req)
  local ok, doc = pcall(json.decode, req.body)
  if not ok or type(doc) ~= "table" or type(doc.responses) ~= "table"
      or not is_array(doc.responses) then
    return error_response(400, 'body must be JSON {"responses": [entry, ...]}')
  end
  local entries = {}
  for i, e in ipairs(doc.responses) do
    local entry, err = normalize_entry(e)
    if not entry then return error_response(400, format("responses[%d]: %s", i, err)) end
    entries[i] = entry
  end
  for _, entry in ipairs(entries) do server.script:push(entry) end
  return json_response(200, json.encode{ queued = server.script:len() })
end

local function control_reset(server)
  server:reset()
  return json_response(200, '{"reset":true}')
end

-- Built by hand: cjson would encode an empty log as an object.
local function control_stats(server)
  local s = server.stats
  local log = {}
  for i, entry in ipairs(s.log) do log[i] = json.encode(entry) end
  return json_response(200, format('{"requests":%d,"connections":%d,"by_status":%s,"log":[%s]}',
    s.requests, s.connections, json.encode(s.by_status), concat(log, ",")))
end

local CONTROL_ROUTES = with_allow{
  { "^/_mock/script$", POST = control_script },
  { "^/_mock/reset$", POST = control_reset },
  { "^/_mock/stats$", GET = control_stats },
}

---------------------------------------------------------------------------
-- HTTP over one connection; these run inside the connection's coroutine and
-- yield "read" or "write" (wait for the socket) or "sleep" (a deadline).

-- Appends what the socket has to conn.buf; false at end of stream or error.
local function fill(conn)
  while true do
    local data, err, partial = conn.sock:receive(RECV_SIZE)
    local chunk = data or partial
    if chunk and chunk ~= "" then
      conn.buf = conn.buf:sub(conn.pos) .. chunk
      conn.pos = 1
      return true
    end
    if err ~= "timeout" then return false end
    coroutine.yield("read")
  end
end

local function send_all(conn, data)
  local i = 1
  while true do
    local last, err, sent = conn.sock:send(data, i)
    if last then return true end
    if err ~= "timeout" then return false end
    i = sent + 1
    coroutine.yield("write")
  end
end

-- Half-closes, then reads and discards what the client still sends (for a
-- while), so that closing does not RST away our last response.
local function linger_close(conn)
  conn.sock:shutdown("send")
  local deadline, drained = monotime() + LINGER_SECONDS, 0
  while drained < LINGER_BYTES do
    local data, err, partial = conn.sock:receive(RECV_SIZE)
    drained = drained + #(data or partial or "")
    if err == "timeout" then
      if monotime() >= deadline then return end
      coroutine.yield("read", deadline)
    elseif err then
      return -- the client closed too
    end
  end
end

local function parse_head(head)
  local lines = {}
  for line in (head .. "\n"):gmatch("(.-)\r?\n") do lines[#lines + 1] = line end
  local method, target, minor = lines[1]:match(REQUEST_LINE)
  if not method or target:sub(1, 1) ~= "/" then return nil, "Malformed request line" end
  local headers = {}
  for i = 2, #lines do
    local name, value = lines[i]:match(HEADER_LINE)
    if not name or value:find(CONTROL_CHARS) then return nil, "Malformed header line" end
    name = name:lower()
    headers[name] = headers[name] and headers[name] .. ", " .. value or value
  end
  local path, query = target:match("^([^?#]*)%??([^#]*)")
  return { method = method, path = path, query = query, params = parse_query(query),
    version = "1." .. minor, headers = headers }
end

-- Reads the head: a request table; nil at end of stream; nil, message when
-- the head is malformed.
local function read_head(conn)
  while true do
    -- empty lines before a request are ignored (RFC 9112 section 2.2)
    conn.pos = conn.buf:match("^[\r\n]*()", conn.pos)
    local s, e = conn.buf:find("\r?\n\r?\n", conn.pos)
    if (s or #conn.buf + 1) - conn.pos > MAX_HEAD then
      return nil, "Request header section too large"
    end
    if s then
      local head = conn.buf:sub(conn.pos, s - 1)
      conn.pos = e + 1
      return parse_head(head)
    end
    if not fill(conn) then return nil end
  end
end

-- Reads the body into req.body: true; nil at end of stream; nil, message,
-- status when the request cannot be read.
local function read_body(conn, req)
  if req.headers["transfer-encoding"] then
    return nil, "Transfer-Encoding is not supported; send Content-Length", 400
  end
  local length = req.headers["content-length"] or "0"
  if not length:match("^%d+$") or #length > 15 then return nil, "Bad Content-Length", 400 end
  length = tonumber(length)
  if length > MAX_BODY then return nil, "Request body too large", 413 end
  if #conn.buf - conn.pos + 1 < length and req.version == "1.1"
      and has_token(req.headers.expect or "", "100-continue") then
    if not send_all(conn, "HTTP/1.1 100 Continue\r\n\r\n") then return nil end
  end
  while #conn.buf - conn.pos + 1 < length do
    if not fill(conn) then return nil end
  end
  req.body = conn.buf:sub(conn.pos, conn.pos + length - 1)
  conn.pos = conn.pos + length
  return true
end

local function read_request(conn)
  local req, err = read_head(conn)
  if not req then return nil, err, 400 end
  local ok, status
  ok, err, status = read_body(conn, req)
  if not ok then return nil, err, status end
  return req
end

local function wants_keep_alive(req)
  local connection = req.headers.connection or ""
  if has_token(connection, "close") then return false end
  return req.version == "1.1" or has_token(connection, "keep-alive")
end

---------------------------------------------------------------------------
-- The server

local Server = {}
Server.__index = Server

function Server:url()
  return self.base_url
end

function Server:next_tracking_id()
  self.tracking_count = self.tracking_count + 1
  return format("ROUTER_%016X%016X", self.tracking_prefix, self.tracking_count)
end

function Server:reset()
  self.script = Queue.new()
  self.stats = { requests = 0, connections = 0, by_status = {}, log = {} }
  self.epoch = self.epoch + 1 -- connections count again after a reset
  self.buckets = {}
end

-- Takes a token from the access token's bucket: nil, or the whole seconds
-- to wait when the bucket is empty. A refused request takes nothing.
function Server:take_token(token)
  if not self.rate then return nil end
  local now = monotime()
  local bucket = self.buckets[token]
  if not bucket then
    bucket = { tokens = self.burst, time = now }
    self.buckets[token] = bucket
  end
  bucket.tokens = math.min(self.burst, bucket.tokens + (now - bucket.time) * self.rate)
  bucket.time = now
  if bucket.tokens >= 1 - RATE_EPSILON then
    bucket.tokens = bucket.tokens - 1
    return nil
  end
  -- ceil: after that many seconds the bucket holds at least one token
  return math.max(1, math.ceil((1 - bucket.tokens) / self.rate))
end

local function bearer(req)
  return (req.headers.authorization or ""):match("^[Bb][Ee][Aa][Rr][Ee][Rr]%s+(%S+)%s*$")
end

-- Normal handling of a /v1 request: auth, rate limit, route.
function Server:serve_api(req)
  local token = bearer(req)
  local user = token and self.store.users[token]
  if not user then return error_response(401) end
  local retry_after = self:take_token(token)
  if retry_after then
    return error_response(429, nil, { { "Retry-After", tostring(retry_after) } })
  end
  req.user = user
  return route(API_ROUTES, self, req)
end

-- The answer a script entry gives (see the module comment).
function Server:scripted(req, entry)
  local action = entry.action
  if action == "drop" or action == "reset" then return { status = 0, action = action } end
  if action == "delay" then coroutine.yield("sleep", monotime() + entry.seconds) end
  local res
  if action == "badjson" then
    res = json_response(entry.status or 200, BAD_JSON)
  elseif entry.body then
    res = json_response(entry.status or 200, entry.body)
  elseif entry.status and entry.status >= 400 then
    res = error_response(entry.status)
  else
    local token = bearer(req)
    req.user = token and self.store.users[token] or self.store.default_user
    res = route(API_ROUTES, self, req)
    res.status = entry.status or res.status
  end
  res.headers = override_headers(res.headers, entry.headers)
  res.action = action
  res.truncate = action == "truncate"
  res.close = res.truncate or header_value(entry.headers, "content-length") ~= nil
  return res
end

function Server:log_request(conn, req)
  local stats = self.stats
  stats.requests = stats.requests + 1
  if conn.epoch ~= self.epoch then
    conn.epoch = self.epoch
    stats.connections = stats.connections + 1
  end
  local log = stats.log
  if #log >= self.log_max then -- keep the newer half; amortized O(1)
    local keep = self.log_max // 2
    table.move(log, #log - keep + 1, #log, 1)
    for i = #log, keep + 1, -1 do log[i] = nil end
  end
  local entry = { t = monotime(), conn = conn.id, method = req.method, path = req.path,
    query = req.query }
  log[#log + 1] = entry
  return entry, stats
end

function Server:handle_v1(conn, req)
  local entry, stats = self:log_request(conn, req)
  local script = self.script:pop()
  local res
  if script then
    res = self:scripted(req, script)
    entry.scripted, entry.action = true, script.action
  else
    res = self:serve_api(req)
  end
  local key = tostring(res.status)
  entry.status = res.status
  entry.tracking_id = header_value(res.headers or {}, "trackingid") or req.tracking_id
  stats.by_status[key] = (stats.by_status[key] or 0) + 1
  return res
end

function Server:handle(conn, req)
  local path = req.path
  if path == "/v1" or path:sub(1, 4) == "/v1/" then return self:handle_v1(conn, req) end
  if self.control and path:sub(1, 7) == "/_mock/" then return route(CONTROL_ROUTES, self, req) end
  return error_response(404)
end

function Server:trace(conn, req, res, tracking_id)
  if not self.verbose then return end
  local target = req.path and req.path .. (req.query ~= "" and "?" .. req.query or "") or "-"
  io.stderr:write(format("spark-mock: conn %d %s %s -> %d%s %s\n", conn.id,
    req.method or "-", target, res.status,
    res.action and " (" .. res.action .. ")" or "", tracking_id or "-"))
end

-- Sends res; true when the connection stays open.
function Server:respond(conn, req, res)
  local tracking_id = header_value(res.headers, "trackingid") or req.tracking_id
  self:trace(conn, req, res, tracking_id)
  local keep = not res.close and wants_keep_alive(req)
  local connection = not keep and "close" or (req.version == "1.0" and "keep-alive") or nil
  local head, body = render(res, tracking_id, connection)
  if res.truncate then body = body:sub(1, #body // 2) end
  local sent = send_all(conn, head .. body)
  if sent and not keep then linger_close(conn) end
  return sent and keep
end

-- The body of a connection's coroutine.
function Server:serve(conn)
  while true do
    local req, err, status = read_request(conn)
    if not req then
      if err then
        local res = error_response(status, err)
        res.close = true
        self:respond(conn, { tracking_id = self:next_tracking_id(), headers = {} }, res)
      end
      return
    end
    req.tracking_id = self:next_tracking_id()
    local res = self:handle(conn, req)
    if res.action == "reset" then
      conn.sock:setoption("linger", { on = true, timeout = 0 })
    end
    if res.action == "drop" or res.action == "reset" then
      self:trace(conn, req, res, nil)
      return
    end
    if not self:respond(conn, req, res) then return end
  end
end

function Server:remove(conn)
  self.conns[conn], self.by_sock[conn.sock] = nil, nil
  conn.sock:close()
end

function Server:resume(conn)
  local ok, wait, deadline = coroutine.resume(conn.co)
  if not ok then
    io.stderr:write("spark-mock: ", debug.traceback(conn.co, wait), "\n")
    self:remove(conn)
  elseif coroutine.status(conn.co) == "dead" then
    self:remove(conn)
  else
    conn.wait, conn.deadline = wait, deadline
  end
end

function Server:accept()
  while true do
    local sock = self.listener:accept()
    if not sock then return end
    sock:settimeout(0)
    sock:setoption("tcp-nodelay", true)
    self.conn_count = self.conn_count + 1
    local conn = { id = self.conn_count, sock = sock, buf = "", pos = 1 }
    conn.co = coroutine.create(function() self:serve(conn) end)
    self.conns[conn], self.by_sock[sock] = true, conn
    self:resume(conn)
  end
end

--- Runs one select iteration: waits at most `timeout` seconds (default 0.2)
-- for a socket or a deadline, then resumes what is ready.
function Server:step(timeout)
  local recvt, sendt = { self.listener }, {}
  local now = monotime()
  local wait = timeout or SELECT_TIMEOUT
  for conn in pairs(self.conns) do
    if conn.wait == "read" then
      recvt[#recvt + 1] = conn.sock
    elseif conn.wait == "write" then
      sendt[#sendt + 1] = conn.sock
    end
    if conn.deadline then wait = math.min(wait, math.max(0, conn.deadline - now)) end
  end
  local readable, writable = socket.select(recvt, sendt, wait)
  local ready, seen = {}, {}
  for _, list in ipairs{ readable, writable } do
    for _, sock in ipairs(list) do
      if sock == self.listener then
        self:accept()
      elseif self.by_sock[sock] then
        ready[#ready + 1], seen[self.by_sock[sock]] = self.by_sock[sock], true
      end
    end
  end
  now = monotime()
  for conn in pairs(self.conns) do
    if conn.deadline and conn.deadline <= now and not seen[conn] then ready[#ready + 1] = conn end
  end
  for _, conn in ipairs(ready) do
    if self.conns[conn] then self:resume(conn) end
  end
end

--- Serves until interrupted (SIGINT in lua5.4 raises "interrupted!"), then
-- closes all sockets and returns. Other errors close and propagate.
function Server:run()
  local ok, err = pcall(function()
    while true do self:step() end
  end)
  self:close()
  if not ok and not tostring(err):find("interrupted!", 1, true) then error(err, 0) end
end

function Server:close()
  if not self.listener then return end
  for conn in pairs(self.conns) do conn.sock:close() end
  self.conns, self.by_sock = {}, {}
  self.listener:close()
  self.listener = nil
end

---------------------------------------------------------------------------
-- Construction

local function integer_option(opts, name, default, min, max)
  local v = opts[name]
  if v == nil then return default end
  if math.type(v) ~= "integer" or v < min or (max and v > max) then
    error(format("%s must be an integer%s", name,
      max and format(" from %d to %d", min, max) or format(" >= %d", min)), 0)
  end
  return v
end

local function check_tokens(tokens)
  if tokens == nil then return { "mock-token" } end
  if type(tokens) ~= "table" or #tokens == 0 then error("tokens must be a non-empty list", 0) end
  for _, t in ipairs(tokens) do
    if type(t) ~= "string" or not t:match("^%S+$") then
      error("tokens must be non-empty strings without spaces", 0)
    end
  end
  return tokens
end

local function check_rate(opts)
  local rate, burst = opts.rate, opts.burst
  if rate == nil then
    if burst ~= nil then error("burst needs rate", 0) end
    return nil
  end
  if type(rate) ~= "number" or not (rate > 0 and rate < math.huge) then
    error("rate must be a positive number", 0)
  end
  return rate, integer_option(opts, "burst", math.max(1, math.ceil(rate)), 1)
end

local function check_options(opts)
  local cfg = {
    host = opts.host or "127.0.0.1",
    port = integer_option(opts, "port", 8080, 0, 65535),
    rooms = integer_option(opts, "rooms", 250, 0),
    seed = integer_option(opts, "seed", 1, math.mininteger),
    log_max = integer_option(opts, "log_max", 100000, 2),
    tokens = check_tokens(opts.tokens),
    control = opts.control and true or false,
    verbose = opts.verbose and true or false,
  }
  if type(cfg.host) ~= "string" then error("host must be a string", 0) end
  cfg.rate, cfg.burst = check_rate(opts)
  return cfg
end

local function url_host(host)
  if host == "*" or host == "0.0.0.0" then return "127.0.0.1" end
  if host == "::" then return "[::1]" end
  if host:find(":", 1, true) then return "[" .. host .. "]" end
  return host
end

local mock = {}

--- Creates a listening server: server, or nil and a message.
function mock.new(opts)
  local ok, cfg = pcall(check_options, opts or {})
  if not ok then return nil, cfg end
  local listener, err = socket.bind(cfg.host, cfg.port, BACKLOG)
  if not listener then
    return nil, format("cannot listen on %s port %d: %s", cfg.host, cfg.port, err)
  end
  listener:settimeout(0)
  local _, port = listener:getsockname()
  local server = setmetatable({
    listener = listener, port = tonumber(port), control = cfg.control,
    verbose = cfg.verbose, rate = cfg.rate, burst = cfg.burst, log_max = cfg.log_max,
    store = new_store(cfg), conns = {}, by_sock = {}, conn_count = 0, epoch = 0,
    tracking_prefix = math.random(0), tracking_count = 0,
  }, Server)
  server.base_url = format("http://%s:%d/v1", url_host(cfg.host), server.port)
  server:reset()
  return server
end

return mock
