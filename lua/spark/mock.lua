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
-- API: every resource and operation of spark.resources under /v1 (rooms,
-- messages, people and /people/me, memberships, teams, team/memberships,
-- webhooks), routed and validated from that table: list (GET collection),
-- get (GET /{id}), create (POST, JSON body -> 200 and the object), update
-- (PUT /{id} -> 200 and the object; the fields given replace theirs), delete
-- (DELETE /{id} -> 204, no body); an operation spark.resources adds and
-- the mock does not know answers 501. Auth: `Authorization: Bearer
-- <token>` with one of `tokens`. Rate limit: a token bucket per access token.
--
-- Store: in memory, one per server, shared by all tokens (no per-user
-- visibility), seeded from `seed`: the rooms; the 4 teams their teamIds name;
-- 12 people plus one per token (the token's /people/me); "me" (the first
-- token's person) is a member of every room, with the other person of a
-- direct room or the creator of a group room; 3 messages in each of the
-- first 5 rooms generated; me and 2 others in each team; no webhooks.
-- Created objects get Webex ids (base64 "ciscospark://us/<TYPE>/<uuid>",
-- drawn from the seed),
-- `created` (wall clock, strictly increasing) and the derived fields of the
-- spec's schemas (creator, roomType, personEmail, ...). A room's creator
-- becomes its member, a team's creator its moderator; a message to
-- toPersonId/toPersonEmail goes to the direct room of the pair (created if
-- needed); a message sets its room's lastActivity; an unknown personEmail
-- (memberships, messages) creates a pending person, as Webex invites one.
-- Deleting a room deletes its messages and memberships; a team, its team
-- memberships (its rooms keep their teamId); a person, their memberships.
--
-- Validation (400 with the Webex error body, the message naming the field):
-- a missing required body field or query parameter (messages roomId, team
-- memberships teamId), none of a one_of group, a wrong JSON type or a value
-- outside its enum (query: booleans are true/false), a body that is not a
-- JSON object, max not an integer 1..1000 (default 100), a cursor not made
-- here. Null and "" count as absent. Unknown fields and parameters are
-- ignored. 404: unknown ids in the path, and a body or required query
-- reference to an unknown room, team, person (personId, toPersonId), parent
-- or beforeMessage. 409: a membership or team membership that exists, a
-- person with an email taken.
--
-- Lists: {"items": [...]}, `max` per page, an opaque `cursor` (an offset into
-- the current order) and `Link: <absolute url>; rel="next"` repeating max and
-- every other parameter of the request. Filters: rooms type, teamId (sortBy
-- id (default), lastactivity, created: newest first); messages roomId,
-- parentId, before (ISO time), beforeMessage, newest first; people email,
-- displayName (prefix, any case), id (comma-separated), orgId; memberships
-- roomId, personId, personEmail; team memberships teamId; webhooks ownedBy.
-- Other lists are in creation order.
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
local resources = require "spark.resources"

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
  [500] = "Internal Server Error", [501] = "Not Implemented", [502] = "Bad Gateway",
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

-- Base64 without padding, as Webex ids are; 12 bits (two digits) a lookup.
local DIGIT_PAIRS = {}
local function base64(s, alphabet)
  local pairs12 = DIGIT_PAIRS[alphabet]
  if not pairs12 then
    pairs12 = {}
    for i = 0, 4095 do
      local a, b = (i >> 6) + 1, (i & 63) + 1
      pairs12[i] = alphabet:sub(a, a) .. alphabet:sub(b, b)
    end
    DIGIT_PAIRS[alphabet] = pairs12
  end
  local out, k, len = {}, 0, #s
  local full = len - len % 3
  for i = 1, full, 3 do
    local a, b, c = s:byte(i, i + 2)
    local n = (a << 16) | (b << 8) | c
    out[k + 1], out[k + 2], k = pairs12[n >> 12], pairs12[n & 4095], k + 2
  end
  if full < len then -- 1 or 2 bytes left: 2 or 3 digits
    local a, b = s:byte(full + 1, len)
    local n = (a << 16) | ((b or 0) << 8)
    out[k + 1] = pairs12[n >> 12]
    if b then out[k + 2] = pairs12[n & 4095]:sub(1, 1) end
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
-- Also returns the list of {name, value} in order (first values only).
local function parse_query(query)
  local params, list = {}, {}
  for pair in query:gsub("%+", " "):gmatch("[^&]+") do
    local name, value = pair:match("^([^=]*)=?(.*)$")
    name = url_decode(name)
    if params[name] == nil then
      params[name] = url_decode(value)
      list[#list + 1] = { name, params[name] }
    end
  end
  return params, list
end

local function http_date()
  return os.date("!%a, %d %b %Y %H:%M:%S GMT")
end

local function iso8601(ms)
  return os.date("!%Y-%m-%dT%H:%M:%S", ms // 1000) .. format(".%03dZ", ms % 1000)
end

local function sorted_keys(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys)
  return keys
end

-- "a", "a or b", "a, b or c"
local function join_or(list)
  if #list < 2 then return list[1] or "" end
  return concat(list, ", ", 1, #list - 1) .. " or " .. list[#list]
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
-- Store: collections of resources, encoded lazily, with cached sorted and
-- filtered views. Items keep their creation order; `rank` numbers them.

local Collection = {}
Collection.__index = Collection

-- orders: name -> comparator(a, b, rank) for table.sort.
function Collection.new(orders)
  return setmetatable({ items = {}, by_id = {}, encoded = {}, rank = {}, nrank = 0,
    orders = orders or {}, views = {}, nviews = 0 }, Collection)
end

-- Forgets the cached encodings of `item` (when given) and every view.
function Collection:changed(item)
  if item then self.encoded[item] = nil end
  if self.nviews > 0 then self.views, self.nviews = {}, 0 end
end

function Collection:add(item)
  self.items[#self.items + 1] = item
  self.by_id[item.id] = item
  self.nrank = self.nrank + 1
  self.rank[item] = self.nrank
  self:changed()
  return item
end

function Collection:remove(item)
  if self.by_id[item.id] ~= item then return end
  for i, x in ipairs(self.items) do
    if x == item then table.remove(self.items, i); break end
  end
  self.by_id[item.id], self.rank[item] = nil, nil
  self:changed(item)
end

function Collection:get(id)
  return self.by_id[id]
end

function Collection:json(item)
  local text = self.encoded[item]
  if not text then
    text = json.encode(item)
    self.encoded[item] = text
  end
  return text
end

-- The items for which pred(item) is true, in creation order.
function Collection:select(pred)
  local out = {}
  for _, item in ipairs(self.items) do
    if pred(item) then out[#out + 1] = item end
  end
  return out
end

-- The encoded items in `order` (nil: creation order), keeping those that
-- pass every predicate of filter ({{key, pred}, ...}; the keys name the
-- filter in the cache); cached so that paging is O(page).
function Collection:view(order, filter)
  local key = { order or "" }
  for _, f in ipairs(filter) do key[#key + 1] = f[1] end
  key = concat(key, "\0")
  local view = self.views[key]
  if view then return view end
  local sorted = table.move(self.items, 1, #self.items, 1, {})
  if order then
    local cmp, rank = self.orders[order], self.rank
    table.sort(sorted, function(a, b) return cmp(a, b, rank) end)
  end
  view = {}
  for _, item in ipairs(sorted) do
    local keep = true
    for _, f in ipairs(filter) do keep = keep and f[2](item) end
    if keep then view[#view + 1] = self:json(item) end
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

-- Newest first on `field`, ties broken by creation order (newest first).
local function latest(field)
  return function(a, b, rank)
    if a[field] ~= b[field] then return a[field] > b[field] end
    return rank[a] > rank[b]
  end
end

local FIRST = { "John", "Maria", "Wei", "Aisha", "Lars", "Priya", "Kenji", "Sofia",
  "Omar", "Emma", "Diego", "Ingrid" }
local LAST = { "Andersen", "Garcia", "Chen", "Okafor", "Nilsson", "Sharma", "Sato",
  "Rossi", "Haddad", "Martin", "Lopez", "Berg" }
local WORDS = { "Unicorn", "Falcon", "Atlas", "Nimbus", "Orion", "Zephyr", "Comet", "Harbor" }
local KINDS = { "Project", "Team", "Release", "Support", "Design", "Ops" }
local SQUADS = { "Squad", "Crew", "Guild", "Lab" }
local LINES = { "Morning all, standup in 5", "Build is green again", "Can you review my PR?",
  "Shipping the release today", "Notes from the meeting are in the doc", "Thanks!",
  "Who owns the on-call this week?", "Lunch at noon?" }

local EPOCH_MS = 1451606400000            -- 2016-01-01T00:00:00Z
local SPAN_MS = 8 * 365 * 24 * 3600 * 1000 -- rooms are created over 8 years
-- No generated time is later: created objects are always newer.
local SEEDED_END_MS = EPOCH_MS + SPAN_MS + SPAN_MS // 4

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

-- A room; the other person of a direct room; created and lastActivity in ms.
local function make_room(rand, n, ctx)
  local direct = n % 3 == 0
  local created = EPOCH_MS + rand(SPAN_MS)
  local id = webex_id("ROOM", rand)
  local last = created + rand(SPAN_MS // 4)
  local room = {
    id = id, type = direct and "direct" or "group",
    isLocked = false, isAnnouncementOnly = false, isReadOnly = false, isPublic = false,
    created = iso8601(created), lastActivity = iso8601(last),
    creatorId = pick(rand, ctx.people).id, ownerId = ctx.org_id,
  }
  local other
  if direct then
    other = pick(rand, ctx.people)
    room.title = other.displayName
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
  return room, other, { created, last }
end

local Store = {}
Store.__index = Store

-- The collection of a resource (created empty for one the mock does not
-- seed).
function Store:collection(name)
  local c = self.c[name]
  if not c then
    c = Collection.new()
    self.c[name] = c
  end
  return c
end

-- A new id of `kind` (ROOM, MESSAGE, ...), drawn from the store's generator.
function Store:new_id(kind)
  return webex_id(kind, self.rand)
end

-- Now, as an ISO 8601 time in ms, strictly later than any time given before.
function Store:now()
  local ms = math.floor(system.gettime() * 1000)
  if ms <= self.last_ms then ms = self.last_ms + 1 end
  self.last_ms = ms
  return iso8601(ms)
end

function Store:person_by_email(email)
  email = email:lower()
  for _, p in ipairs(self.c.people.items) do
    for _, e in ipairs(p.emails or {}) do
      if type(e) == "string" and e:lower() == email then return p end
    end
  end
end

-- The person with `email`, invited (created, pending) when unknown.
function Store:invite(email)
  local person = self:person_by_email(email)
  if person then return person end
  local now = self:now()
  return self.c.people:add{ id = self:new_id("PEOPLE"), emails = { email },
    displayName = email, orgId = self.org_id, created = now, lastModified = now,
    type = "person", status = "pending", invitePending = "true", loginEnabled = "false" }
end

-- New (not yet stored) memberships of a room and of a team.
function Store:membership(room, person, is_moderator, created)
  return { id = self:new_id("MEMBERSHIP"), roomId = room.id,
    personId = person.id, personEmail = person.emails and person.emails[1],
    personDisplayName = person.displayName, personOrgId = person.orgId,
    isModerator = is_moderator, isMonitor = false, isRoomHidden = false,
    roomType = room.type, created = created }
end

function Store:add_membership(room, person, is_moderator, created)
  return self.c.memberships:add(self:membership(room, person, is_moderator, created))
end

function Store:team_membership(team, person, is_moderator, created)
  return { id = self:new_id("TEAM_MEMBERSHIP"), teamId = team.id,
    personId = person.id, personEmail = person.emails and person.emails[1],
    personDisplayName = person.displayName, personOrgId = person.orgId,
    isModerator = is_moderator, created = created }
end

function Store:add_team_membership(team, person, is_moderator, created)
  return self.c.team_memberships:add(self:team_membership(team, person, is_moderator, created))
end

local function pair_key(a, b)
  if a > b then a, b = b, a end
  return a .. " " .. b
end

-- The direct room of two people, created (with both memberships) if none.
function Store:direct_room(me, other)
  local key = pair_key(me.id, other.id)
  local room = self.direct[key]
  if room and self.c.rooms:get(room.id) == room then return room end
  local now = self:now()
  room = self.c.rooms:add{ id = self:new_id("ROOM"), type = "direct",
    title = other.displayName, isLocked = false, isAnnouncementOnly = false,
    isReadOnly = false, isPublic = false, created = now, lastActivity = now,
    creatorId = me.id, ownerId = self.org_id }
  self:add_membership(room, me, false, now)
  self:add_membership(room, other, false, now)
  self.direct[key] = room
  return room
end

local function add_message(store, room, person, created, text, parent)
  return store.c.messages:add{ id = store:new_id("MESSAGE"), roomId = room.id,
    roomType = room.type, text = text, personId = person.id,
    personEmail = person.emails[1], created = created, parentId = parent and parent.id }
end

-- Memberships, teams, team memberships and messages around the rooms, from
-- a generator of their own (the rooms stay those of the seed).
local function seed_relations(store, ctx, others, times, rand)
  local c, me = store.c, store.default_user.person
  local by_id_people = {}
  for _, p in ipairs(ctx.people) do by_id_people[p.id] = p end
  for i, id in ipairs(ctx.teams) do
    local team = c.teams:add{ id = id, created = iso8601(EPOCH_MS + rand(SPAN_MS // 2)),
      name = format("%s %s", pick(rand, WORDS), pick(rand, SQUADS)) }
    if i % 2 == 1 then team.description = "The " .. team.name .. " team" end
    store:add_team_membership(team, me, i <= 2, team.created)
    local a = rand(#ctx.people) + 1
    local b = (a + rand(#ctx.people - 1)) % #ctx.people + 1 -- another one
    store:add_team_membership(team, ctx.people[a], false, team.created)
    store:add_team_membership(team, ctx.people[b], false, team.created)
  end
  for n, room in ipairs(c.rooms.items) do
    local other = others[n] or by_id_people[room.creatorId]
    store:add_membership(room, me, room.type == "group" and room.isLocked, room.created)
    store:add_membership(room, other, room.type == "group" and room.isLocked, room.created)
    if room.type == "direct" then
      local key = pair_key(me.id, other.id)
      store.direct[key] = store.direct[key] or room
    end
    if n <= 5 then -- three messages over the room's life, the last a reply in room 1
      local t0, t1 = times[n][1], times[n][2]
      local first
      for k = 1, 3 do
        local msg = add_message(store, room, k == 2 and other or me,
          iso8601(t0 + (t1 - t0) * k // 4), pick(rand, LINES), k == 3 and n == 1 and first or nil)
        first = first or msg
      end
    end
  end
end

-- The generated data. Rooms and the users behind the tokens draw from
-- separate generators, so the rooms do not depend on the token list.
local function new_store(cfg)
  local rand = new_rng(cfg.seed)
  local ctx = { org_id = webex_id("ORGANIZATION", rand), teams = {}, people = {} }
  for i = 1, 4 do ctx.teams[i] = webex_id("TEAM", rand) end
  for i = 1, 12 do ctx.people[i] = make_person(rand, 100 + i, ctx.org_id) end
  local store = setmetatable({ c = {}, direct = {}, users = {}, org_id = ctx.org_id,
    rand = new_rng(cfg.seed ~ 0x1D5), last_ms = SEEDED_END_MS }, Store)
  local c = store.c
  c.rooms = Collection.new{ id = by_id, lastactivity = newest("lastActivity"),
    created = newest("created") }
  c.messages = Collection.new{ newest = latest("created") }
  for _, name in ipairs{ "people", "memberships", "teams", "team_memberships", "webhooks" } do
    c[name] = Collection.new()
  end
  local others, times = {}, {}
  for n = 1, cfg.rooms do
    local room
    room, others[n], times[n] = make_room(rand, n, ctx)
    c.rooms:add(room)
  end
  for _, p in ipairs(ctx.people) do c.people:add(p) end
  local user_rand = new_rng(cfg.seed ~ 0x5EED)
  for i, token in ipairs(cfg.tokens) do
    local person = make_person(user_rand, i, ctx.org_id)
    c.people:add(person)
    store.users[token] = { person = person }
  end
  store.default_user = store.users[cfg.tokens[1]]
  seed_relations(store, ctx, others, times, new_rng(cfg.seed ~ 0xDA7A))
  return store
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
-- A 204 has neither body nor Content-Type nor Content-Length.
local function render(res, tracking_id, connection)
  local body = res.body or error_body(res.message, tracking_id)
  local empty = res.status == 204
  if empty then body = "" end
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
  default("Content-Type", not empty and JSON_TYPE)
  default("Content-Length", not empty and tostring(#body))
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
-- /v1 resources: routes, validation and generic handlers built from
-- spark.resources; BEHAVIOURS adds what each resource does beyond storing.

local function bad_request(message) return error_response(400, message) end

local function not_found(field, what)
  return error_response(404, format("Could not find the %s given by %s", what, field))
end

local function conflict(message) return error_response(409, message) end

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

-- Null, "" and empty tables count as not given.
local function given(v)
  return v ~= nil and v ~= cjson.null and v ~= ""
    and not (type(v) == "table" and next(v) == nil)
end

-- An enum (a list of allowed values): an error message, or nil.
local function check_enum(list, v, name)
  for _, allowed in ipairs(list) do
    if v == allowed then return nil end
  end
  return name .. " must be " .. join_or(list)
end

-- Type checks of spark.resources: an error message naming `name`, or nil.
local function check_query_value(t, v, name)
  if t == "max" then
    if not parse_max(v) then return name .. " must be an integer from 1 to 1000" end
  elseif t == "boolean" then
    if v ~= "true" and v ~= "false" then return name .. " must be true or false" end
  elseif type(t) == "table" then
    return check_enum(t, v, name)
  end
end

local function check_body_value(t, v, name)
  if t == "string" or t == "boolean" then
    if type(v) ~= t then return format("%s must be a %s", name, t) end
  elseif t == "max" then
    if math.type(v) == nil or v ~= math.floor(v) or v < 1 or v > 1000 then
      return name .. " must be an integer from 1 to 1000"
    end
  elseif t == "strings" or t == "array" then
    if type(v) ~= "table" or not is_array(v) then
      return format("%s must be an array%s", name, t == "strings" and " of strings" or "")
    end
    for _, x in ipairs(t == "strings" and v or {}) do
      if type(x) ~= "string" then return name .. " must be an array of strings" end
    end
  elseif t == "object" then
    if type(v) ~= "table" or (next(v) ~= nil and is_array(v)) then
      return name .. " must be an object"
    end
  elseif type(t) == "table" then
    return check_enum(t, v, name)
  end
end

-- required and one_of over `values`: an error message, or nil.
local function check_presence(op, values)
  for _, name in ipairs(op.required or {}) do
    if not given(values[name]) then return name .. " is required" end
  end
  for _, group in ipairs(op.one_of or {}) do
    local any = false
    for _, name in ipairs(group) do any = any or given(values[name]) end
    if not any then return "One of " .. join_or(group) .. " is required" end
  end
end

-- The query parameters the operation knows: nil, or a 400 response. Query
-- presence rules apply to operations without a body.
local function check_query(op, params)
  local query = op.query or {}
  for _, name in ipairs(sorted_keys(query)) do
    local v = params[name]
    local message = v ~= nil and check_query_value(query[name], v, name)
    if message then return bad_request(message) end
  end
  if not op.body then
    local message = check_presence(op, params)
    if message then return bad_request(message) end
  end
end

-- The body's known fields (nulls dropped): fields, or nil and a 400.
local function read_fields(op, body)
  local ok, doc = pcall(json.decode, body or "")
  if not ok or type(doc) ~= "table" or (next(doc) ~= nil and is_array(doc)) then
    return nil, bad_request("The request body must be a JSON object")
  end
  local fields = {}
  for name, value in pairs(doc) do
    if op.body[name] ~= nil and value ~= cjson.null then fields[name] = value end
  end
  local message = check_presence(op, fields)
  if message then return nil, bad_request(message) end
  for _, name in ipairs(sorted_keys(fields)) do
    message = check_body_value(op.body[name], fields[name], name)
    if message then return nil, bad_request(message) end
  end
  return fields
end

-- A page of `view` as {"items": [...]}, with a Link to the next page that
-- repeats max, every other parameter of the request, and the cursor.
local function page_response(server, req, view, offset, max)
  local last = math.min(offset + max, #view)
  local body = '{"items":[' .. concat(view, ",", offset + 1, last) .. "]}"
  local headers = {}
  if last < #view then
    local q = { "max=" .. max }
    local _, list = parse_query(req.query)
    for _, pair in ipairs(list) do
      if pair[1] ~= "max" and pair[1] ~= "cursor" then
        q[#q + 1] = url_encode(pair[1]) .. "=" .. url_encode(pair[2])
      end
    end
    q[#q + 1] = "cursor=" .. encode_cursor(last)
    local link = format('<%s%s?%s>; rel="next"', server.base_url, req.path:sub(4), concat(q, "&"))
    headers[1] = { "Link", link }
  end
  return json_response(200, body, headers)
end

-- Copies the given `fields` named in `names` (all when nil) into item.
local function assign(item, fields, names)
  if names then
    for _, name in ipairs(names) do
      if fields[name] ~= nil then item[name] = fields[name] end
    end
  else
    for name, value in pairs(fields) do item[name] = value end
  end
  return item
end

local function equals(field)
  return function(value) return function(item) return item[field] == value end end
end

local function equals_any_case(field)
  return function(value)
    value = value:lower()
    return function(item) return type(item[field]) == "string" and item[field]:lower() == value end
  end
end

-- The person of personId (404 when unknown) or personEmail (invited).
local function person_of(store, fields, id_field, email_field)
  if not given(fields[id_field]) then return store:invite(fields[email_field]) end
  local person = store.c.people:get(fields[id_field])
  if not person then return nil, not_found(id_field, "person") end
  return person
end

-- Updates the copies of a person's email and name in their memberships.
local function refresh_memberships(store, person)
  for _, name in ipairs{ "memberships", "team_memberships" } do
    local c = store.c[name]
    for _, m in ipairs(c:select(function(x) return x.personId == person.id end)) do
      m.personEmail, m.personDisplayName = person.emails and person.emails[1], person.displayName
      c:changed(m)
    end
  end
end

local function remove_where(store, name, pred)
  local c = store.c[name]
  for _, item in ipairs(c:select(pred)) do c:remove(item) end
end

-- What a resource does beyond storing the fields it is given:
--   type (of its ids), orders, default_order, sort_param, filters (query
--   parameter -> function(value, store) -> predicate), check_list(store,
--   params) -> nil or a response, create(store, user, fields) -> item or
--   nil, response; update(store, user, item, fields) -> nil or a response;
--   delete(store, item) (before it is removed); ops: handlers(server, req,
--   op) of operations other than list, get, create, update and delete.
local BEHAVIOURS = {}

BEHAVIOURS.rooms = {
  type = "ROOM", default_order = "id", sort_param = "sortBy",
  filters = { type = equals("type"), teamId = equals("teamId") },
  create = function(store, user, f)
    if given(f.teamId) and not store.c.teams:get(f.teamId) then
      return nil, not_found("teamId", "team")
    end
    local now, me = store:now(), user.person
    local room = assign({ id = store:new_id("ROOM"), type = "group", isLocked = false,
      isAnnouncementOnly = false, isReadOnly = false, isPublic = false, created = now,
      lastActivity = now, creatorId = me.id, ownerId = store.org_id }, f)
    if room.isPublic then room.madePublic = now end
    store:add_membership(room, me, room.isLocked, now)
    return room
  end,
  update = function(store, _, room, f)
    if given(f.teamId) and not store.c.teams:get(f.teamId) then
      return not_found("teamId", "team")
    end
    assign(room, f)
    if room.isPublic and not room.madePublic then room.madePublic = store:now() end
    if not room.isPublic then room.madePublic = nil end
  end,
  delete = function(store, room)
    remove_where(store, "messages", function(m) return m.roomId == room.id end)
    remove_where(store, "memberships", function(m) return m.roomId == room.id end)
  end,
}

BEHAVIOURS.messages = {
  type = "MESSAGE", default_order = "newest",
  filters = {
    roomId = equals("roomId"), parentId = equals("parentId"),
    before = function(value) return function(m) return m.created < value end end,
    beforeMessage = function(value, store)
      local ref = store.c.messages:get(value)
      return function(m) return m.created < ref.created end
    end,
  },
  check_list = function(store, p)
    if not store.c.rooms:get(p.roomId) then return not_found("roomId", "room") end
    if p.beforeMessage and not store.c.messages:get(p.beforeMessage) then
      return not_found("beforeMessage", "message")
    end
  end,
  create = function(store, user, f)
    local me, room = user.person
    if given(f.roomId) then
      room = store.c.rooms:get(f.roomId)
      if not room then return nil, not_found("roomId", "room") end
    else
      local field = given(f.toPersonId) and "toPersonId" or "toPersonEmail"
      local other, err = person_of(store, f, "toPersonId", "toPersonEmail")
      if not other then return nil, err end
      if other.id == me.id then return nil, bad_request(field .. " must not be yourself") end
      room = store:direct_room(me, other)
    end
    if given(f.parentId) then
      local parent = store.c.messages:get(f.parentId)
      if not parent then return nil, not_found("parentId", "message") end
      if parent.roomId ~= room.id then
        return nil, bad_request("parentId must be a message of the same room")
      end
    end
    local now = store:now()
    local msg = assign({ id = store:new_id("MESSAGE"), roomId = room.id, roomType = room.type,
      personId = me.id, personEmail = me.emails and me.emails[1], created = now }, f,
      { "parentId", "toPersonId", "toPersonEmail", "text", "markdown", "files", "attachments" })
    msg.text = msg.text or msg.markdown
    room.lastActivity = now
    store.c.rooms:changed(room)
    return msg
  end,
  update = function(store, _, msg, f)
    if not store.c.rooms:get(f.roomId) then return not_found("roomId", "room") end
    if f.roomId ~= msg.roomId then return bad_request("roomId must be the message's room") end
    msg.markdown = f.markdown
    msg.text = f.text or f.markdown
  end,
}

BEHAVIOURS.people = {
  type = "PEOPLE",
  filters = {
    email = function(value)
      value = value:lower()
      return function(p)
        for _, e in ipairs(p.emails or {}) do
          if type(e) == "string" and e:lower() == value then return true end
        end
        return false
      end
    end,
    displayName = function(value)
      value = value:lower()
      return function(p)
        return type(p.displayName) == "string" and p.displayName:lower():sub(1, #value) == value
      end
    end,
    id = function(value)
      local set = {}
      for id in value:gmatch("[^,%s]+") do set[id] = true end
      return function(p) return set[p.id] == true end
    end,
    orgId = equals("orgId"),
  },
  create = function(store, _, f)
    for _, email in ipairs(f.emails) do
      if store:person_by_email(email) then
        return nil, conflict("emails: a person with " .. email .. " exists")
      end
    end
    local now = store:now()
    local person = assign({ id = store:new_id("PEOPLE"), orgId = store.org_id, created = now,
      lastModified = now, type = "person", status = "inactive", invitePending = "true",
      loginEnabled = "true" }, f)
    person.displayName = person.displayName or (f.firstName and f.lastName
      and f.firstName .. " " .. f.lastName) or f.emails[1]
    person.nickName = person.nickName or f.firstName
    return person
  end,
  update = function(store, _, person, f)
    for _, email in ipairs(f.emails or {}) do
      local owner = store:person_by_email(email)
      if owner and owner ~= person then
        return conflict("emails: a person with " .. email .. " exists")
      end
    end
    assign(person, f)
    if f.loginEnabled ~= nil then person.loginEnabled = tostring(f.loginEnabled) end
    person.lastModified = store:now()
    refresh_memberships(store, person)
  end,
  delete = function(store, person)
    remove_where(store, "memberships", function(m) return m.personId == person.id end)
    remove_where(store, "team_memberships", function(m) return m.personId == person.id end)
  end,
  ops = {
    me = function(server, req)
      local people = server.store.c.people
      local person = people:get(req.user.person.id)
      if not person then return error_response(404) end
      return json_response(200, people:json(person))
    end,
  },
}

-- The create of a membership of a room or a team: the group must exist, the
-- person is found (or invited by email), and a second membership is a
-- conflict. `add` names the store method that makes it.
local function membership_create(groups, key, noun, list, add)
  return function(store, _, f)
    local group = store.c[groups]:get(f[key])
    if not group then return nil, not_found(key, noun) end
    local person, err = person_of(store, f, "personId", "personEmail")
    if not person then return nil, err end
    for _, m in ipairs(store.c[list].items) do
      if m[key] == group.id and m.personId == person.id then
        return nil, conflict("The person is already a member of the " .. noun)
      end
    end
    return store[add](store, group, person, f.isModerator or false, store:now())
  end
end

BEHAVIOURS.memberships = {
  type = "MEMBERSHIP",
  filters = { roomId = equals("roomId"), personId = equals("personId"),
    personEmail = equals_any_case("personEmail") },
  create = membership_create("rooms", "roomId", "room", "memberships", "membership"),
  update = function(_, _, m, f) assign(m, f, { "isModerator", "isRoomHidden" }) end,
}

BEHAVIOURS.teams = {
  type = "TEAM",
  create = function(store, user, f)
    local now = store:now()
    local team = { id = store:new_id("TEAM"), name = f.name, description = f.description,
      created = now }
    store:add_team_membership(team, user.person, true, now)
    return team
  end,
  update = function(_, _, team, f) assign(team, f, { "name", "description" }) end,
  delete = function(store, team)
    remove_where(store, "team_memberships", function(m) return m.teamId == team.id end)
  end,
}

BEHAVIOURS.team_memberships = {
  type = "TEAM_MEMBERSHIP",
  filters = { teamId = equals("teamId") },
  check_list = function(store, p)
    if not store.c.teams:get(p.teamId) then return not_found("teamId", "team") end
  end,
  create = membership_create("teams", "teamId", "team", "team_memberships",
    "team_membership"),
  update = function(_, _, m, f) assign(m, f, { "isModerator" }) end,
}

BEHAVIOURS.webhooks = {
  type = "WEBHOOK",
  filters = { ownedBy = equals("ownedBy") },
  create = function(store, _, f)
    return assign({ id = store:new_id("WEBHOOK"), ownedBy = "creator", status = "active",
      created = store:now() }, f)
  end,
}

-- A resource without BEHAVIOURS stores its fields as they come.
local function kind_of(name)
  local kind = BEHAVIOURS[name]
  if not kind then
    kind = { type = name:upper():gsub("S$", "") }
    BEHAVIOURS[name] = kind
  end
  return kind
end

-- The generic handler of one operation of resource `name`: function(server,
-- req, id) -> response.
local function operation_handler(name, opname, op)
  local kind = kind_of(name)
  local custom = kind.ops and kind.ops[opname]
  if custom then
    return function(server, req)
      return check_query(op, req.params) or custom(server, req, op)
    end
  end
  local function item_of(server, id)
    local c = server.store:collection(name)
    local item = c:get(url_decode(id))
    if not item then return nil, error_response(404) end
    return item, c
  end
  if op.method == "GET" and op.list then
    return function(server, req)
      local p, store = req.params, server.store
      local err = check_query(op, p)
      if err then return err end
      local max = parse_max(p.max)
      if not max then return bad_request("max must be an integer from 1 to 1000") end
      local offset = 0
      if p.cursor then
        offset = decode_cursor(p.cursor)
        if not offset then return bad_request("Invalid cursor") end
      end
      err = kind.check_list and kind.check_list(store, p)
      if err then return err end
      local filter = {}
      for _, param in ipairs(sorted_keys(kind.filters or {})) do
        if p[param] then
          filter[#filter + 1] = { param .. "=" .. p[param], kind.filters[param](p[param], store) }
        end
      end
      local order = kind.sort_param and p[kind.sort_param] or kind.default_order
      local view = store:collection(name):view(order, filter)
      return page_response(server, req, view, offset, max)
    end
  elseif op.method == "GET" and op.id then
    return function(server, req, id)
      local err = check_query(op, req.params)
      if err then return err end
      local item, c = item_of(server, id)
      if not item then return c end
      return json_response(200, c:json(item))
    end
  elseif op.method == "POST" and not op.id and op.body then
    return function(server, req)
      local err = check_query(op, req.params)
      if err then return err end
      local fields
      fields, err = read_fields(op, req.body)
      if not fields then return err end
      local store, item = server.store
      if kind.create then
        item, err = kind.create(store, req.user, fields)
        if not item then return err end
      else
        item = assign({ id = store:new_id(kind.type), created = store:now() }, fields)
      end
      local c = store:collection(name)
      return json_response(200, c:json(c:add(item)))
    end
  elseif op.method == "PUT" and op.id and op.body then
    return function(server, req, id)
      local err = check_query(op, req.params)
      if err then return err end
      local item, c = item_of(server, id)
      if not item then return c end
      local fields
      fields, err = read_fields(op, req.body)
      if not fields then return err end
      if kind.update then
        err = kind.update(server.store, req.user, item, fields)
        if err then return err end
      else
        assign(item, fields)
      end
      c:changed(item)
      return json_response(200, c:json(item))
    end
  elseif op.method == "DELETE" and op.id then
    return function(server, req, id)
      local err = check_query(op, req.params)
      if err then return err end
      local item, c = item_of(server, id)
      if not item then return c end
      if kind.delete then kind.delete(server.store, item) end
      c:remove(item)
      return { status = 204, headers = {}, body = "" }
    end
  end
  return function() return error_response(501, "Not implemented by spark-mock") end
end

-- Lua pattern of an operation's path: "{id}" captures one segment.
local function path_pattern(path)
  local escaped = path:gsub("[%^%$%(%)%%%.%[%]%*%+%-%?]", "%%%0")
  return "^" .. escaped:gsub("{id}", "([^/]+)") .. "$"
end

-- One route per path of spark.resources, those without an id first (so
-- that /people/me comes before /people/{id}).
local function api_routes()
  local by_path = {}
  for _, name in ipairs(sorted_keys(resources)) do
    local resource = resources[name]
    for _, opname in ipairs(sorted_keys(resource.operations)) do
      local op = resource.operations[opname]
      local path = "/v1" .. resource.path .. op.path
      by_path[path] = by_path[path] or { path_pattern(path), path = path }
      by_path[path][op.method] = operation_handler(name, opname, op)
    end
  end
  local routes = {}
  for _, path in ipairs(sorted_keys(by_path)) do routes[#routes + 1] = by_path[path] end
  table.sort(routes, function(a, b)
    local da, db = a.path:find("{", 1, true) ~= nil, b.path:find("{", 1, true) ~= nil
    if da ~= db then return db end
    return a.path < b.path
  end)
  return with_allow(routes)
end

local API_ROUTES = api_routes()

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
