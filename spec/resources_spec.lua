-- Pagination, the generic request and the messaging resources, against
-- spark-mock.
local helper = require "helper"
local spark = require "spark"

describe("pagination", function()
  local m
  setup(function() m = helper.start_mock{} end)
  teardown(function() m:stop() end)
  before_each(function() m:reset() end)

  local function client(opts)
    opts = opts or {}
    opts.token = helper.TOKEN
    opts.base_url = m.base_url
    opts.sleep = opts.sleep or function() end
    return spark.new(opts)
  end

  local function ids(items, seen)
    seen = seen or {}
    local n = 0
    for _, it in ipairs(items) do
      if not seen[it.id] then n = n + 1 end
      seen[it.id] = true
    end
    return n, seen
  end

  it("walks 250 rooms with max = 100 in 3 requests (each)", function()
    local c, n, seen = client(), 0, {}
    for room in c:each("rooms", { max = 100 }) do
      n = n + 1
      seen[room.id] = true
    end
    assert.are.equal(250, n)
    assert.are.equal(250, select(1, ids({}, seen)) + (function()
      local k = 0
      for _ in pairs(seen) do k = k + 1 end
      return k
    end)())
    assert.are.equal(3, m:stats().requests)
  end)

  it("collects them all with client:all", function()
    local items, res = client():all("rooms", { max = 100 })
    assert.are.equal(250, #items)
    assert.are.equal(250, (ids(items)))
    assert.are.equal(3, res.pages)
    assert.is_nil(res.next)
    assert.are.equal(3, m:stats().requests)
  end)

  it("stops at limit without fetching needless pages", function()
    local items = client():all("rooms", { max = 100 }, { limit = 150 })
    assert.are.equal(150, #items)
    assert.are.equal(2, m:stats().requests)
    items = client():all("rooms", { max = 100 }, { limit = 100 })
    assert.are.equal(100, #items)
    assert.are.equal(3, m:stats().requests)
  end)

  it("pages by hand with get_next, and raises when there is no next page", function()
    local c = client()
    local page1, res1 = c:get_rooms{ max = 200 }
    assert.are.equal(200, #page1)
    local page2, res2 = c:get_next(res1)
    assert.are.equal(50, #page2)
    assert.is_nil(res2.next)
    assert.has_error(function() c:get_next(res2) end,
      "get_next: bad argument 'res' (the res of a list call with a next page expected)")
  end)

  it("re-applies a parameter the next link dropped", function()
    local c = client()
    local first, res = c:get_rooms{ type = "direct", max = 10 }
    assert.matches("type=direct", res.next, 1, true)
    local dropped = res.next:gsub("([?&])type=direct&?", "%1")
    m:reset()
    m:script{ { status = 200, headers = { Link = "<" .. dropped .. '>; rel="next"' } } }
    local again, res1 = c:get_rooms{ type = "direct", max = 10 }
    assert.are.same(first, again)
    assert.is_nil(res1.next:find("type=", 1, true))
    local page2 = c:get_next(res1)
    assert.are.equal(10, #page2)
    for _, r in ipairs(page2) do assert.are.equal("direct", r.type) end
    local log = m:stats().log
    assert.matches("type=direct", log[2].query, 1, true)
    local _, seen = ids(first)
    assert.are.equal(10, (ids(page2, seen)))
  end)

  it("refuses a next link to another origin and never contacts it", function()
    local other = helper.start_mock{}
    finally(function() other:stop() end)
    local c = client()
    m:script{ { status = 200, headers = {
      Link = "<" .. other.base_url .. '/rooms?max=10&cursor=x>; rel="next"' } } }
    local _, res = c:get_rooms{ max = 10 }
    local page, err = c:get_next(res)
    assert.is_nil(page)
    assert.are.equal("refused", err.kind)
    assert.matches("another origin", tostring(err))
    assert.are.equal(0, other:stats().requests)
    -- each raises the same error value instead of ending silently
    m:script{ { status = 200, headers = {
      Link = "<" .. other.base_url .. '/rooms?max=10&cursor=x>; rel="next"' } } }
    local ok, e = pcall(function()
      for _ in c:each("rooms", { max = 10 }) do end
    end)
    assert.is_false(ok)
    assert.is_true(spark.is_error(e))
    assert.are.equal("refused", e.kind)
    assert.are.equal(0, other:stats().requests)
  end)

  it("waits a 429 in the middle of a walk and resumes at the same page", function()
    local waits = {}
    local c = client{ sleep = function(s) waits[#waits + 1] = s end }
    m:script{ { status = 200 }, { status = 429, headers = { ["Retry-After"] = "2" } } }
    local items = c:all("rooms", { max = 100 })
    assert.are.equal(250, #items)
    assert.are.equal(250, (ids(items)))
    assert.are.same({ 2 }, waits)
    local log = m:stats().log
    assert.are.equal(4, #log)
    assert.are.equal(429, log[2].status)
    assert.are.equal(log[2].query, log[3].query)
  end)

  it("raises the error value from each when a page fails", function()
    m:script{ { status = 200 }, { status = 404 } }
    local c = client()
    local n = 0
    local ok, e = pcall(function()
      for _ in c:each("rooms", { max = 100 }) do n = n + 1 end
    end)
    assert.is_false(ok)
    assert.are.equal(100, n)
    assert.are.equal("http", e.kind)
    assert.are.equal(404, e.status)
  end)

  it("checks the arguments of each and all", function()
    local c = client()
    assert.has_error(function() c:each("chairs") end,
      "each: bad argument 'resource' (a listable resource name expected, got \"chairs\")")
    assert.has_error(function() c:all("rooms", nil, { limit = -1 }) end,
      "all: option 'limit' must be a non-negative integer (got -1)")
    assert.has_error(function() c:all("rooms", nil, { lmit = 1 }) end,
      "all: unknown option 'lmit'")
    assert.has_error(function() c:each("rooms", { max = 0 }) end)
    assert.are.equal(0, m:stats().requests)
  end)
end)

describe("client:request", function()
  local m
  setup(function() m = helper.start_mock{} end)
  teardown(function() m:stop() end)
  before_each(function() m:reset() end)

  local function client()
    return spark.new{ token = helper.TOKEN, base_url = m.base_url, sleep = function() end }
  end

  it("GETs a path with a query and decodes the body", function()
    local body, res = client():request("GET", "/rooms", { query = { max = 3, type = "group" } })
    assert.are.equal(3, #body.items)
    assert.are.equal(200, res.status)
    assert.matches("max=3", m:stats().log[1].query, 1, true)
  end)

  it("POSTs JSON, and a 204 gives true", function()
    local c = client()
    local room = c:request("POST", "/rooms", { json = { title = "Ops" } })
    assert.are.equal("Ops", room.title)
    local ok, res = c:request("DELETE", "/rooms/" .. room.id)
    assert.is_true(ok)
    assert.are.equal(204, res.status)
  end)

  it("takes an absolute URL on base_url's origin only", function()
    local c = client()
    assert.is_table((c:request("GET", m.base_url .. "/people/me")))
    assert.has_error(function() c:request("GET", "http://127.0.0.2:1/v1/people/me") end)
    assert.are.equal(1, m:stats().requests)
  end)

  it("retries a 503 only for idempotent calls, or when told", function()
    local c = client()
    m:script{ { status = 503 } }
    local _, err = c:request("POST", "/rooms", { json = { title = "x" } })
    assert.are.equal(503, err.status)
    m:script{ { status = 503 } }
    local room = c:request("POST", "/rooms", { json = { title = "x" }, idempotent = true })
    assert.are.equal("x", room.title)
  end)

  it("checks its arguments", function()
    local c = client()
    assert.has_error(function() c:request("get", "/rooms") end)
    assert.has_error(function() c:request("GET", 5) end,
      "request: bad argument 'path' (string expected, got number)")
    assert.has_error(function() c:request("GET", "/rooms", { jsn = {} }) end,
      "request: unknown call option 'jsn'")
    assert.are.equal(0, m:stats().requests)
  end)
end)

describe("resources", function()
  local m, c
  setup(function()
    m = helper.start_mock{}
    c = spark.new{ token = helper.TOKEN, base_url = m.base_url, sleep = function() end }
  end)
  teardown(function() m:stop() end)

  local function ok(v, res)
    assert(v, tostring(res))
    return v, res
  end

  it("rooms: create, get, update, list, delete", function()
    local room = ok(c.rooms:create{ title = "Launch", description = "go" })
    assert.are.equal("Launch", room.title)
    assert.are.equal(room.id, ok(c.rooms:get(room.id)).id)
    assert.are.equal("Launch 2", ok(c.rooms:update(room.id, { title = "Launch 2" })).title)
    local found = false
    for r in c:each("rooms", { max = 1000 }) do found = found or r.id == room.id end
    assert.is_true(found)
    assert.is_true(ok(c.rooms:delete(room.id)))
    local _, err = c.rooms:get(room.id)
    assert.are.equal(404, err.status)
  end)

  it("messages: create, get, update, list, delete", function()
    local room = ok(c.rooms:create{ title = "Chat" })
    local msg = ok(c.messages:create{ roomId = room.id, text = "hello" })
    assert.are.equal("hello", msg.text)
    assert.are.equal(msg.id, ok(c.messages:get(msg.id)).id)
    local edited = ok(c.messages:update(msg.id, { roomId = room.id, text = "hello!" }))
    assert.are.equal("hello!", edited.text)
    local list = ok(c.messages:list{ roomId = room.id })
    assert.are.equal(msg.id, list[1].id)
    local md = ok(c.messages:create{ toPersonEmail = "someone@example.com", markdown = "**hi**" })
    assert.are.equal("**hi**", md.markdown)
    assert.is_true(ok(c.messages:delete(msg.id)))
    assert.are.equal(404, select(2, c.messages:get(msg.id)).status)
  end)

  it("people: me, get, list", function()
    local me = ok(c.people:me())
    assert.is_string(me.id)
    assert.are.equal(me.id, ok(c.people:get(me.id)).id)
    local found = false
    for p in c:each("people", { max = 2 }) do found = found or p.id == me.id end
    assert.is_true(found)
  end)

  it("memberships: create, get, update, list, delete", function()
    local room = ok(c.rooms:create{ title = "Team room" })
    local mem = ok(c.memberships:create{ roomId = room.id, personEmail = "ann@example.com" })
    assert.are.equal(mem.id, ok(c.memberships:get(mem.id)).id)
    local up = ok(c.memberships:update(mem.id, { isModerator = true, isRoomHidden = false }))
    assert.is_true(up.isModerator)
    local all = ok(c:all("memberships", { roomId = room.id }))
    local found = false
    for _, x in ipairs(all) do found = found or x.id == mem.id end
    assert.is_true(found)
    assert.is_true(ok(c.memberships:delete(mem.id)))
    assert.are.equal(404, select(2, c.memberships:get(mem.id)).status)
  end)

  it("teams and team memberships: create, get, update, list, delete", function()
    local team = ok(c.teams:create{ name = "Blue", description = "d" })
    assert.are.equal(team.id, ok(c.teams:get(team.id)).id)
    assert.are.equal("Green", ok(c.teams:update(team.id, { name = "Green" })).name)
    local found = false
    for t in c:each("teams") do found = found or t.id == team.id end
    assert.is_true(found)
    local tm = ok(c.team_memberships:create{ teamId = team.id, personEmail = "bo@example.com" })
    assert.are.equal(tm.id, ok(c.team_memberships:get(tm.id)).id)
    assert.is_true(ok(c.team_memberships:update(tm.id, { isModerator = true })).isModerator)
    local list = ok(c.team_memberships:list{ teamId = team.id })
    found = false
    for _, x in ipairs(list) do found = found or x.id == tm.id end
    assert.is_true(found)
    assert.is_true(ok(c.team_memberships:delete(tm.id)))
    assert.is_true(ok(c.teams:delete(team.id)))
    assert.are.equal(404, select(2, c.teams:get(team.id)).status)
  end)

  it("webhooks: create, get, update, list, delete", function()
    local hook = ok(c.webhooks:create{ name = "h", targetUrl = "https://example.com/hook",
                                       resource = "messages", event = "created" })
    assert.are.equal(hook.id, ok(c.webhooks:get(hook.id)).id)
    assert.are.equal("h2", ok(c.webhooks:update(hook.id, { name = "h2",
      targetUrl = "https://example.com/hook" })).name)
    local list = ok(c.webhooks:list())
    assert.are.equal(hook.id, list[#list].id)
    assert.is_true(ok(c.webhooks:delete(hook.id)))
    assert.are.equal(404, select(2, c.webhooks:get(hook.id)).status)
  end)

  describe("validation, before anything is sent", function()
    local cases = {
      { function() c.rooms:create{} end, "client.rooms:create: field 'title' is required" },
      { function() c.rooms:create{ title = 5 } end,
        "client.rooms:create: field 'title' must be a string (got 5)" },
      { function() c.rooms:create{ title = "x", color = "red" } end,
        "client.rooms:create: unknown field 'color'" },
      { function() c.messages:list{} end, "client.messages:list: parameter 'roomId' is required" },
      { function() c.messages:list{ roomId = "r", max = 0 } end,
        "client.messages:list: parameter 'max' must be an integer from 1 to 1000 (got 0)" },
      { function() c.messages:create{ text = "hi" } end,
        "client.messages:create: one of the fields 'roomId', 'toPersonId', "
          .. "'toPersonEmail' is required" },
      { function() c.messages:create{ roomId = "r" } end,
        "one of the fields 'text', 'markdown', 'files', 'attachments' is required" },
      { function() c.messages:list{ roomId = "r", mentionedPeople = "me" } end,
        "parameter 'mentionedPeople' must be an array of strings" },
      { function() c.rooms:get() end,
        "client.rooms:get: bad argument 'id' (a non-empty string expected, got nil)" },
      { function() c.rooms:get("") end, "bad argument 'id'" },
      { function() c.rooms:delete("x", { deadline = "soon" }) end,
        "client.rooms:delete: call option 'deadline' must be a number > 0" },
      { function() c.webhooks:create{ name = "h", targetUrl = "u", resource = "chairs",
          event = "created" } end, "field 'resource' must be one of attachmentActions" },
      { function() c.memberships:create{ roomId = "r" } end,
        "one of the fields 'personId', 'personEmail' is required" },
      { function() c.team_memberships:list() end, "parameter 'teamId' is required" },
      { function() c.rooms.list{} end, "client.rooms:list: call it as a method (with a colon)" },
      { function() c.teams:update("t", { description = "x" }) end, "field 'name' is required" },
      { function() c.people:list{ email = true } end, "parameter 'email' must be a string" },
    }
    for i, case in ipairs(cases) do
      it(("#%d: %s"):format(i, case[2]), function()
        m:reset()
        local okk, err = pcall(case[1])
        assert.is_false(okk)
        assert.matches(case[2], err, 1, true)
        assert.are.equal(0, m:stats().requests)
      end)
    end
  end)

  it("encodes ids in the path", function()
    m:reset()
    local _, err = c.rooms:get("a/b c")
    assert.are.equal(404, err.status)
    assert.are.equal("/v1/rooms/a%2Fb%20c", m:stats().log[1].path)
  end)

  it("exposes no resource that does not exist", function()
    assert.is_nil(c.chairs)
  end)
end)
