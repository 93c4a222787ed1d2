-- spark-mock, the offline Webex simulator: the command, HTTP, the API, the
-- rate limit, the control API, signals and the library, with real requests
-- over loopback. No timing assertions: waits are on conditions.
local helper = require "helper"
local mock = require "spark.mock"
local socket = require "socket"
local system = require "system"

local TOKEN = helper.TOKEN

-- Standard base64 without padding -> string (an independent decoder).
local function unbase64(s)
  local alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
  local out, n, bits = {}, 0, 0
  for c in s:gmatch(".") do
    n = (n << 6) | (alphabet:find(c, 1, true) - 1)
    bits = bits + 6
    if bits >= 8 then
      bits = bits - 8
      out[#out + 1] = string.char((n >> bits) & 255)
    end
  end
  return table.concat(out)
end

local UUID = "%x%x%x%x%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%x%x%x%x%x%x%x%x"
local ISO_MS = "^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%dZ$"
local TRACKING = "^ROUTER_" .. ("[0-9A-F]"):rep(32) .. "$"

local function assert_webex_id(kind, id)
  assert.is_string(id)
  assert.matches("^ciscospark://us/" .. kind .. "/" .. UUID .. "$", unbase64(id))
end

-- status, headers, decoded body (nil when not JSON)
local function get(url, opts)
  local status, headers, body = helper.http("GET", url, opts)
  assert(status, headers)
  local ok, doc = pcall(helper.json, body)
  return status, headers, ok and doc or nil, body
end

local function assert_error_body(doc, headers)
  assert.is_string(doc.message)
  assert.are.equal(doc.message, doc.errors[1].description)
  assert.are.equal(headers.trackingid, doc.trackingId)
end

local function ids(items)
  local out = {}
  for i, item in ipairs(items) do out[i] = item.id end
  return out
end

-- Follows Link rel="next" from url: the pages' items and Link headers.
local function walk(url)
  local pages, links = {}, {}
  while url do
    local status, headers, doc = get(url)
    assert.are.equal(200, status)
    pages[#pages + 1] = doc.items
    links[#links + 1] = headers.link
    url = headers.link and headers.link:match('^<([^>]+)>; rel="next"$')
    assert(#pages <= 20, "too many pages")
  end
  return pages, links
end

-- Polls fn() until it returns true (at most 5 s).
local function eventually(fn)
  local deadline = system.monotime() + 5
  while not fn() do
    assert(system.monotime() < deadline, "condition not met within 5 s")
    system.sleep(0.01)
  end
end

local function free_port()
  local s = assert(socket.bind("127.0.0.1", 0))
  local _, port = s:getsockname()
  s:close()
  return tonumber(port)
end

-- Runs a shell command: exit code, stderr text.
local function run(cmd)
  local errfile = os.tmpname()
  local _, _, code = os.execute(cmd .. " >/dev/null 2>" .. errfile)
  local f = assert(io.open(errfile))
  local err = f:read("a")
  f:close()
  os.remove(errfile)
  return code, err
end

describe("spark-mock", function()
  teardown(helper.stop_all)

  describe("the command", function()
    it("prints its base URL first with --port 0 and serves there", function()
      local m = helper.start_mock{}
      finally(function() m:stop() end)
      assert.matches("^http://127%.0%.0%.1:%d+/v1$", m.base_url)
      assert.is_true(m.port > 0)
      assert.are.equal(200, (get(m.base_url .. "/people/me")))
    end)

    it("listens on --port N", function()
      local port = free_port()
      local m = helper.spawn_mock{ "--port", tostring(port) }
      finally(function() m:stop() end)
      assert.are.equal("http://127.0.0.1:" .. port .. "/v1", m.base_url)
      assert.are.equal(200, (get(m.base_url .. "/rooms")))
    end)

    it("listens on --host", function()
      local m = helper.spawn_mock{ "--port", "0", "--host", "0.0.0.0" }
      finally(function() m:stop() end)
      assert.matches("^http://127%.0%.0%.1:%d+/v1$", m.base_url)
      assert.are.equal(200, (get(m.base_url .. "/rooms?max=1")))
    end)

    it("finds spark.mock by itself when LUA_PATH is unset", function()
      local m = helper.spawn_mock({ "--port", "0" }, { lua_path = false })
      finally(function() m:stop() end)
      assert.are.equal(200, (get(m.base_url .. "/rooms?max=1")))
    end)

    it("writes nothing more to stdout; --verbose logs each request to stderr", function()
      local quiet_err, loud_err = os.tmpname(), os.tmpname()
      finally(function() os.remove(quiet_err); os.remove(loud_err) end)
      local quiet = helper.spawn_mock({ "--port", "0" }, { stderr = quiet_err })
      local loud = helper.spawn_mock({ "--port", "0", "--verbose" }, { stderr = loud_err })
      finally(function() quiet:stop(); loud:stop() end)
      for _, m in ipairs{ quiet, loud } do
        get(m.base_url .. "/rooms?max=1")
        get(m.base_url .. "/nowhere")
        m:stop()
        assert.are.equal("", m.stdout)
      end
      local f = assert(io.open(quiet_err))
      assert.are.equal("", f:read("a"))
      f:close()
      local lines = {}
      for line in io.lines(loud_err) do lines[#lines + 1] = line end
      assert.are.equal(2, #lines)
      assert.matches("GET /v1/rooms%?max=1 %-> 200", lines[1])
      assert.matches("GET /v1/nowhere %-> 404", lines[2])
    end)

    local bad_args = {
      { "--rate", "0" }, { "--rate", "fast" }, { "--port", "70000" }, { "--burst", "2" },
      { "--rate", "1", "--burst", "0" }, { "--rooms", "-1" }, { "--seed", "1.5" },
    }
    for _, args in ipairs(bad_args) do
      it("exits 1 on " .. table.concat(args, " "), function()
        local code, err = run("timeout 10 lua5.4 lua/spark-mock --port 0 "
          .. table.concat(args, " "))
        assert.are.equal(1, code)
        assert.matches(args[#args - 1]:sub(3), err) -- names the option
      end)
    end

    it("exits 1 when it cannot listen", function()
      local busy = assert(socket.bind("127.0.0.1", 0))
      finally(function() busy:close() end)
      local _, port = busy:getsockname()
      local code, err = run("timeout 10 lua5.4 lua/spark-mock --port " .. port)
      assert.are.equal(1, code)
      assert.matches("cannot listen", err)
    end)
  end)

  describe("HTTP", function()
    local m
    setup(function() m = helper.start_mock{} end)
    teardown(function() m:stop() end)
    before_each(function() m:reset() end)

    it("sends TrackingID, Date, Content-Type and Content-Length", function()
      local status, headers, _, body = get(m.base_url .. "/rooms?max=3")
      assert.are.equal(200, status)
      assert.matches(TRACKING, headers.trackingid)
      assert.matches("^%a%a%a, %d%d %a%a%a %d%d%d%d %d%d:%d%d:%d%d GMT$", headers.date)
      assert.are.equal("application/json;charset=UTF-8", headers["content-type"])
      assert.are.equal(#body, tonumber(headers["content-length"]))
    end)

    it("gives every response its own TrackingID, the error body's trackingId", function()
      local seen = {}
      for i = 1, 30 do
        local url = m.base_url .. ({ "/rooms?max=1", "/nowhere", "/people/me" })[i % 3 + 1]
        local _, headers, doc = get(url, { token = i % 2 == 0 and TOKEN or "wrong" })
        assert.matches(TRACKING, headers.trackingid)
        assert.is_nil(seen[headers.trackingid])
        seen[headers.trackingid] = true
        if doc.trackingId then assert.are.equal(headers.trackingid, doc.trackingId) end
      end
    end)

    it("keeps one connection alive for 1000 requests", function()
      local c = assert(helper.connect(m.port))
      finally(function() c:close() end)
      for _ = 1, 1000 do
        local res = assert(c:request("GET", "/v1/rooms?max=1"))
        assert.are.equal(200, res.status)
      end
      local st = m:stats()
      assert.are.equal(1000, st.requests)
      assert.are.equal(1, st.connections)
      assert.are.equal(1000, st.by_status["200"])
      assert.are.equal(st.log[1].conn, st.log[1000].conn)
    end)

    it("answers pipelined requests in order", function()
      local c = assert(helper.connect(m.port))
      finally(function() c:close() end)
      c:send(helper.request_text("GET", "/v1/rooms?max=1")
        .. helper.request_text("GET", "/v1/rooms?max=2")
        .. helper.request_text("GET", "/v1/rooms?max=3"))
      for n = 1, 3 do
        assert.are.equal(n, #helper.json(assert(c:receive()).body).items)
      end
    end)

    it("reads a request body and goes on with the next request", function()
      local c = assert(helper.connect(m.port))
      finally(function() c:close() end)
      local res = assert(c:request("POST", "/v1/people/me", { body = '{"title": "x"}' }))
      assert.are.equal(405, res.status)
      assert.are.equal(200, assert(c:request("GET", "/v1/rooms?max=1")).status)
    end)

    it("answers Expect: 100-continue", function()
      local c = assert(helper.connect(m.port))
      finally(function() c:close() end)
      c:send("POST /v1/rooms HTTP/1.1\r\nAuthorization: Bearer " .. TOKEN
        .. "\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n")
      assert.are.equal(100, assert(c:receive()).status)
      c:send("{}")
      local res = assert(c:receive())
      assert.are.equal(400, res.status) -- read, and refused for want of a title
      assert.matches("title", helper.json(res.body).message)
    end)

    it("honours Connection: close", function()
      local c = assert(helper.connect(m.port))
      finally(function() c:close() end)
      local opts = { headers = { Connection = "close" } }
      local res = assert(c:request("GET", "/v1/rooms?max=1", opts))
      assert.are.equal(200, res.status)
      assert.are.equal("close", res.headers.connection)
      assert.is_true(c:closed())
    end)

    it("closes HTTP/1.0 connections unless asked to keep them", function()
      local c = assert(helper.connect(m.port))
      local res = assert(c:request("GET", "/v1/rooms?max=1", { version = "1.0" }))
      assert.are.equal(200, res.status)
      assert.is_true(c:closed())
      c:close()
      c = assert(helper.connect(m.port))
      finally(function() c:close() end)
      local opts = { version = "1.0", headers = { Connection = "keep-alive" } }
      res = assert(c:request("GET", "/v1/rooms?max=1", opts))
      assert.are.equal("keep-alive", res.headers.connection)
      assert.are.equal(200, assert(c:request("GET", "/v1/rooms?max=1", opts)).status)
    end)

    it("serves 50 clients at once", function()
      local conns = {}
      finally(function() for _, c in ipairs(conns) do c:close() end end)
      for i = 1, 50 do conns[i] = assert(helper.connect(m.port)) end
      for _, c in ipairs(conns) do assert(c:send(helper.request_text("GET", "/v1/rooms?max=5"))) end
      for _, c in ipairs(conns) do
        local res = assert(c:receive())
        assert.are.equal(200, res.status)
        assert.are.equal(5, #helper.json(res.body).items)
      end
      local st = m:stats()
      assert.are.equal(50, st.requests)
      assert.are.equal(50, st.connections)
    end)

    describe("a malformed request: 400, connection closed, the next is served", function()
      local cases = {
        ["a bad request line"] = "GARBAGE\r\n\r\n",
        ["a bad HTTP version"] = "GET /v1/rooms HTTP/2.0\r\n\r\n",
        ["a target that is not a path"] = "GET rooms HTTP/1.1\r\n\r\n",
        ["a bad header line"] = "GET /v1/rooms HTTP/1.1\r\nNo colon here\r\n\r\n",
        ["a header section over 64 KB"] = "GET /v1/rooms HTTP/1.1\r\nX-Big: "
          .. ("a"):rep(70000) .. "\r\n\r\n",
        ["a Content-Length that is not a number"] =
          "POST /v1/rooms HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
        ["a negative Content-Length"] = "POST /v1/rooms HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
        ["two different Content-Lengths"] =
          "POST /v1/rooms HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        ["Transfer-Encoding: chunked"] =
          "POST /v1/rooms HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
      }
      for name, text in pairs(cases) do
        it(name, function()
          local c = assert(helper.connect(m.port))
          finally(function() c:close() end)
          c:send(text)
          local res = assert(c:receive())
          assert.are.equal(400, res.status)
          assert_error_body(helper.json(res.body), res.headers)
          assert.is_true(c:closed())
          assert.are.equal(200, (get(m.base_url .. "/rooms?max=1")))
        end)
      end

      it("and a body over 1 MiB gets 413", function()
        local c = assert(helper.connect(m.port))
        finally(function() c:close() end)
        c:send("POST /v1/rooms HTTP/1.1\r\nContent-Length: 2000000\r\n\r\n")
        assert.are.equal(413, assert(c:receive()).status)
        assert.is_true(c:closed())
      end)
    end)
  end)

  describe("auth", function()
    local m
    setup(function() m = helper.spawn_mock{ "--port", "0", "--token", "one", "--token", "two" } end)
    teardown(function() m:stop() end)

    it("401 with the error body without Authorization", function()
      local status, headers, doc = get(m.base_url .. "/rooms", { token = false })
      assert.are.equal(401, status)
      assert_error_body(doc, headers)
    end)

    it("401 with a token it does not know, the default one included", function()
      for _, token in ipairs{ "wrong", TOKEN } do
        local status, headers, doc = get(m.base_url .. "/rooms", { token = token })
        assert.are.equal(401, status)
        assert_error_body(doc, headers)
      end
      local status = get(m.base_url .. "/rooms", { token = false,
        headers = { Authorization = "Basic b25lOm9uZQ==" } })
      assert.are.equal(401, status)
    end)

    it("accepts each --token, with any case of Bearer", function()
      assert.are.equal(200, (get(m.base_url .. "/rooms", { token = "one" })))
      assert.are.equal(200, (get(m.base_url .. "/rooms", { token = "two" })))
      assert.are.equal(200, (get(m.base_url .. "/rooms", { token = false,
        headers = { Authorization = "bearer two" } })))
    end)

    it("accepts mock-token by default", function()
      local d = helper.start_mock{}
      finally(function() d:stop() end)
      assert.are.equal(200, (get(d.base_url .. "/rooms")))
    end)
  end)

  describe("GET /v1/rooms", function()
    local m, all
    setup(function()
      m = helper.start_mock{}
      local _, _, doc = get(m.base_url .. "/rooms?max=1000")
      all = doc.items
    end)
    teardown(function() m:stop() end)

    it("has 250 rooms with the Room fields of the spec", function()
      assert.are.equal(250, #all)
      local seen, teams, kinds = {}, {}, { direct = 0, group = 0, team = 0, public = 0 }
      for _, r in ipairs(all) do
        assert_webex_id("ROOM", r.id)
        assert.is_nil(seen[r.id])
        seen[r.id] = true
        assert.is_string(r.title)
        assert.is_true(r.type == "direct" or r.type == "group")
        kinds[r.type] = kinds[r.type] + 1
        for _, field in ipairs{ "isLocked", "isAnnouncementOnly", "isReadOnly", "isPublic" } do
          assert.is_boolean(r[field])
        end
        assert.matches(ISO_MS, r.created)
        assert.matches(ISO_MS, r.lastActivity)
        assert.is_true(r.lastActivity >= r.created)
        assert_webex_id("PEOPLE", r.creatorId)
        assert_webex_id("ORGANIZATION", r.ownerId)
        if r.teamId then
          assert.are.equal("group", r.type)
          assert_webex_id("TEAM", r.teamId)
          teams[r.teamId] = true
          kinds.team = kinds.team + 1
        end
        if r.isPublic then
          assert.matches(ISO_MS, r.madePublic)
          assert.is_string(r.description)
          kinds.public = kinds.public + 1
        end
      end
      assert.is_true(kinds.direct > 50 and kinds.group > 100)
      assert.is_true(kinds.team > 10 and kinds.public > 0)
      local nteams = 0
      for _ in pairs(teams) do nteams = nteams + 1 end
      assert.is_true(nteams >= 2 and nteams <= 10)
    end)

    it("is the same for the same --seed, another for another seed; --rooms N", function()
      local same = helper.start_mock{ "--seed", "1" }
      local other = helper.start_mock{ "--seed", "2" }
      local few = helper.start_mock{ "--rooms", "7" }
      finally(function() same:stop(); other:stop(); few:stop() end)
      local _, _, a = get(same.base_url .. "/rooms?max=1000")
      local _, _, b = get(other.base_url .. "/rooms?max=1000")
      local _, _, c = get(few.base_url .. "/rooms?max=1000")
      assert.are.same(all, a.items)
      assert.are.equal(250, #b.items)
      assert.are_not.equal(all[1].id, b.items[1].id)
      assert.are.equal(7, #c.items)
    end)

    it("gives 100 rooms by default and max rooms with max", function()
      local _, _, doc = get(m.base_url .. "/rooms")
      assert.are.equal(100, #doc.items)
      for _, n in ipairs{ 1, 7, 1000 } do
        _, _, doc = get(m.base_url .. "/rooms?max=" .. n)
        assert.are.equal(math.min(n, 250), #doc.items)
      end
    end)

    for _, bad in ipairs{ "0", "1001", "abc", "1.5", "", "-1", "1e2" } do
      it("rejects max=" .. bad .. " with 400 naming max", function()
        local status, headers, doc = get(m.base_url .. "/rooms?max=" .. bad)
        assert.are.equal(400, status)
        assert_error_body(doc, headers)
        assert.matches("max", doc.message)
      end)
    end

    it("filters by type and rejects another type", function()
      for _, kind in ipairs{ "direct", "group" } do
        local _, _, doc = get(m.base_url .. "/rooms?max=1000&type=" .. kind)
        local expected = {}
        for _, r in ipairs(all) do
          if r.type == kind then expected[#expected + 1] = r end
        end
        assert.are.same(expected, doc.items)
      end
      local status, _, doc = get(m.base_url .. "/rooms?type=room")
      assert.are.equal(400, status)
      assert.matches("type", doc.message)
    end)

    it("sorts by id ascending, lastactivity and created newest first", function()
      local function sorted(field, newest_first)
        local copy = table.move(all, 1, #all, 1, {})
        table.sort(copy, function(a, b)
          if a[field] == b[field] then return a.id < b.id end
          if newest_first then return a[field] > b[field] end
          return a[field] < b[field]
        end)
        return ids(copy)
      end
      assert.are.same(sorted("id"), ids(all)) -- the default
      for by, field in pairs{ id = "id", lastactivity = "lastActivity", created = "created" } do
        local _, _, doc = get(m.base_url .. "/rooms?max=1000&sortBy=" .. by)
        assert.are.same(sorted(field, by ~= "id"), ids(doc.items))
      end
      local status, _, doc = get(m.base_url .. "/rooms?sortBy=title")
      assert.are.equal(400, status)
      assert.matches("sortBy", doc.message)
    end)

    it("filters by teamId, alone and with type", function()
      local team
      for _, r in ipairs(all) do team = team or r.teamId end
      local expected = {}
      for _, r in ipairs(all) do
        if r.teamId == team then expected[#expected + 1] = r end
      end
      local _, _, doc = get(m.base_url .. "/rooms?max=1000&teamId=" .. team)
      assert.are.same(expected, doc.items)
      _, _, doc = get(m.base_url .. "/rooms?max=1000&type=group&teamId=" .. team)
      assert.are.same(expected, doc.items)
      _, _, doc = get(m.base_url .. "/rooms?max=1000&type=direct&teamId=" .. team)
      assert.are.same({}, doc.items)
      _, _, doc = get(m.base_url .. "/rooms?teamId=nope")
      assert.are.same({}, doc.items)
    end)

    it("percent-decodes query values and ignores unknown parameters", function()
      local team
      for _, r in ipairs(all) do team = team or r.teamId end
      local encoded = team:gsub(".", function(ch) return ("%%%02X"):format(ch:byte()) end)
      local _, _, plain = get(m.base_url .. "/rooms?max=1000&type=group&teamId=" .. team)
      local status, _, doc = get(m.base_url .. "/rooms?max=10%30%30&type=gr%6Fup&teamId="
        .. encoded .. "&orgPublicSpaces=true&color=blue")
      assert.are.equal(200, status)
      assert.are.same(plain.items, doc.items)
    end)

    it("walks 250 rooms in 3 pages of max=100 through Link rel=next", function()
      local pages, links = walk(m.base_url .. "/rooms?max=100")
      assert.are.same({ 100, 100, 50 }, { #pages[1], #pages[2], #pages[3] })
      local seen, n = {}, 0
      for _, page in ipairs(pages) do
        for _, r in ipairs(page) do
          if not seen[r.id] then n = n + 1 end
          seen[r.id] = true
        end
      end
      assert.are.equal(250, n)
      assert.are.equal(2, #links)
      for _, link in ipairs(links) do
        local pattern = "^<http://127%.0%.0%.1:" .. m.port .. "/v1/rooms%?[^>]*cursor=[^>]+>"
        assert.matches(pattern .. '; rel="next"$', link)
        assert.matches("max=100", link, 1, true)
      end
    end)

    it("repeats max, type, sortBy and teamId in the Link", function()
      local pages, links = walk(m.base_url .. "/rooms?max=30&type=group&sortBy=created")
      local got = {}
      for _, page in ipairs(pages) do
        for _, r in ipairs(page) do got[#got + 1] = r end
      end
      local _, _, doc = get(m.base_url .. "/rooms?max=1000&type=group&sortBy=created")
      assert.are.same(ids(doc.items), ids(got))
      for _, link in ipairs(links) do
        for _, param in ipairs{ "max=30", "type=group", "sortBy=created" } do
          assert.matches("[?&]" .. param .. "&", link)
        end
      end
      local team
      for _, r in ipairs(all) do team = team or r.teamId end
      local _, headers = get(m.base_url .. "/rooms?max=1&teamId=" .. team)
      assert.matches("teamId=" .. team, headers.link, 1, true)
    end)

    it("rejects a cursor it did not make", function()
      local status, headers, doc = get(m.base_url .. "/rooms?cursor=bogus")
      assert.are.equal(400, status)
      assert_error_body(doc, headers)
    end)

    it("GET /v1/rooms/{id}: the room, or 404", function()
      local status, _, doc = get(m.base_url .. "/rooms/" .. all[42].id)
      assert.are.equal(200, status)
      assert.are.same(all[42], doc)
      local encoded = all[7].id:gsub(".", function(ch) return ("%%%02X"):format(ch:byte()) end)
      _, _, doc = get(m.base_url .. "/rooms/" .. encoded)
      assert.are.same(all[7], doc)
      local headers
      status, headers, doc = get(m.base_url .. "/rooms/Y2lzY29zcGFyazovL3VzL1JPT00vbm9uZQ")
      assert.are.equal(404, status)
      assert_error_body(doc, headers)
    end)
  end)

  describe("other paths", function()
    local m
    setup(function() m = helper.start_mock{ "--token", "second-token" } end)
    teardown(function() m:stop() end)

    it("GET /v1/people/me: the Person of the token", function()
      local status, _, me = get(m.base_url .. "/people/me")
      assert.are.equal(200, status)
      assert_webex_id("PEOPLE", me.id)
      assert.matches("^[%w.]+@example%.com$", me.emails[1])
      assert.are.equal(me.firstName .. " " .. me.lastName, me.displayName)
      assert_webex_id("ORGANIZATION", me.orgId)
      assert.matches(ISO_MS, me.created)
      assert.are.equal("person", me.type)
      assert.are.equal("active", me.status)
      assert.is_string(me.phoneNumbers[1].value)
      local _, _, other = get(m.base_url .. "/people/me", { token = "second-token" })
      assert.are_not.equal(me.id, other.id)
      assert.are.equal(me.orgId, other.orgId)
    end)

    it("404 with the error body on unknown paths", function()
      for _, path in ipairs{ "/v1/nothing", "/v1", "/v1/rooms/", "/", "/v2/rooms" } do
        local status, headers, doc = get("http://127.0.0.1:" .. m.port .. path)
        assert.are.equal(404, status, path)
        assert_error_body(doc, headers)
      end
    end)

    it("405 with Allow for another method on a known path", function()
      for _, case in ipairs{ { "DELETE", "/people/me", "GET" }, { "PUT", "/rooms", "GET, POST" },
                             { "POST", "/rooms/abc", "DELETE, GET, PUT" },
                             { "PATCH", "/team/memberships", "GET, POST" } } do
        local status, headers, body = helper.http(case[1], m.base_url .. case[2], { body = "" })
        assert.are.equal(405, status)
        assert.are.equal(case[3], headers.allow)
        assert_error_body(helper.json(body), headers)
      end
    end)
  end)

  describe("resources", function()
    local m, me, other, room, team, hook

    -- status, headers, decoded body (nil when not JSON), raw body; a table
    -- body is sent as JSON, a string raw.
    local function call(method, path, body)
      if type(body) == "table" then body = helper.encode(body) end
      local status, headers, raw = helper.http(method, m.base_url .. path, { body = body })
      assert(status, headers)
      local ok, doc = pcall(helper.json, raw)
      return status, headers, ok and doc or nil, raw
    end

    local function ok_call(method, path, body)
      local status, headers, doc = call(method, path, body)
      assert(status == 200, ("%s %s: %s %s"):format(method, path, status,
        doc and doc.message or ""))
      return doc, headers
    end

    -- All items of a list (every page, max=1000).
    local function list_all(path)
      local sep = path:find("?", 1, true) and "&" or "?"
      local items = {}
      for _, page in ipairs((walk(m.base_url .. path .. sep .. "max=1000"))) do
        table.move(page, 1, #page, #items + 1, items)
      end
      return items
    end

    local function find(items, id)
      for _, item in ipairs(items) do
        if item.id == id then return item end
      end
    end

    setup(function()
      m = helper.start_mock{ "--rooms", "20" }
      me = ok_call("GET", "/people/me")
      for _, p in ipairs(list_all("/people")) do
        if p.id ~= me.id and p.status == "active" then other = other or p end
      end
      room = ok_call("POST", "/rooms", { title = "Fixture" })
      team = ok_call("POST", "/teams", { name = "Fixture team" })
      hook = ok_call("POST", "/webhooks", { name = "f", targetUrl = "https://example.com/f",
        resource = "rooms", event = "updated" })
    end)
    teardown(function() m:stop() end)

    -- path, id type, create body, update body, list query, and checks of the
    -- derived fields of the created object.
    local cases = {
      { name = "rooms", path = "/rooms", kind = "ROOM",
        create = function() return { title = "Launch", description = "go", isLocked = true } end,
        update = function() return { title = "Launch 2", isLocked = false } end,
        check = function(r)
          assert.are.same({ "group", me.id, me.orgId, r.created, false, false },
            { r.type, r.creatorId, r.ownerId, r.lastActivity, r.isPublic, r.isReadOnly })
          local members = list_all("/memberships?roomId=" .. r.id)
          assert.are.same({ me.id }, { members[1].personId })
          assert.is_true(members[1].isModerator) -- of a locked room it made
        end },
      { name = "messages", path = "/messages", kind = "MESSAGE",
        create = function() return { roomId = room.id, text = "hello" } end,
        update = function() return { roomId = room.id, markdown = "**hello**" } end,
        query = function() return "roomId=" .. room.id end,
        check = function(msg)
          assert.are.same({ room.id, "group", me.id, me.emails[1] },
            { msg.roomId, msg.roomType, msg.personId, msg.personEmail })
          assert.are.equal(msg.created, ok_call("GET", "/rooms/" .. room.id).lastActivity)
        end },
      { name = "people", path = "/people", kind = "PEOPLE",
        create = function()
          return { emails = { "new.person@example.com" }, firstName = "New", lastName = "Person" }
        end,
        update = function() return { displayName = "Renamed Person", loginEnabled = false } end,
        check = function(p)
          assert.are.same({ "New Person", "person", me.orgId },
            { p.displayName, p.type, p.orgId })
        end },
      { name = "memberships", path = "/memberships", kind = "MEMBERSHIP",
        create = function() return { roomId = room.id, personId = other.id } end,
        update = function() return { isModerator = true, isRoomHidden = true } end,
        query = function() return "roomId=" .. room.id end,
        check = function(ms)
          assert.are.same({ room.id, other.id, other.emails[1], other.displayName, "group", false },
            { ms.roomId, ms.personId, ms.personEmail, ms.personDisplayName, ms.roomType,
              ms.isModerator })
        end },
      { name = "teams", path = "/teams", kind = "TEAM",
        create = function() return { name = "Blue", description = "d" } end,
        update = function() return { name = "Green" } end,
        check = function(t)
          local members = list_all("/team/memberships?teamId=" .. t.id)
          assert.are.same({ { me.id, true } }, { { members[1].personId, members[1].isModerator } })
        end },
      { name = "team memberships", path = "/team/memberships", kind = "TEAM_MEMBERSHIP",
        create = function() return { teamId = team.id, personEmail = "Invited@Example.com" } end,
        update = function() return { isModerator = true } end,
        query = function() return "teamId=" .. team.id end,
        check = function(tm)
          local invited = list_all("/people?email=invited@example.com")
          assert.are.equal(1, #invited)
          assert.are.same({ team.id, invited[1].id, "Invited@Example.com", false },
            { tm.teamId, tm.personId, tm.personEmail, tm.isModerator })
        end },
      { name = "webhooks", path = "/webhooks", kind = "WEBHOOK",
        create = function()
          return { name = "h", targetUrl = "https://example.com/h", resource = "messages",
            event = "created", secret = "s" }
        end,
        update = function() return { name = "h2", targetUrl = "https://example.com/h2" } end,
        check = function(h)
          assert.are.same({ "active", "creator", "messages", "created" },
            { h.status, h.ownedBy, h.resource, h.event })
        end },
    }

    for _, case in ipairs(cases) do
      it(case.name .. ": create, get, update, list, delete, then 404", function()
        local fields = case.create()
        local created = ok_call("POST", case.path, fields)
        assert_webex_id(case.kind, created.id)
        assert.matches(ISO_MS, created.created)
        for k, v in pairs(fields) do assert.are.same(v, created[k], k) end
        case.check(created)
        local url = case.path .. "/" .. created.id
        assert.are.same(created, ok_call("GET", url))
        local changes = case.update()
        local updated = ok_call("PUT", url, changes)
        for k, v in pairs(changes) do
          if k == "loginEnabled" then v = tostring(v) end -- a string in a Person
          assert.are.same(v, updated[k], k)
        end
        assert.are.equal(created.id, updated.id)
        assert.are.same(updated, ok_call("GET", url))
        local query = case.query and "?" .. case.query() or ""
        assert.are.same(updated, find(list_all(case.path .. query), created.id))
        local status, headers, _, body = call("DELETE", url)
        assert.are.same({ 204, "", nil, nil }, { status, body, headers["content-type"],
          headers["content-length"] })
        assert.matches(TRACKING, headers.trackingid)
        local doc
        status, headers, doc = call("GET", url)
        assert.are.equal(404, status)
        assert_error_body(doc, headers)
        assert.is_nil(find(list_all(case.path .. query), created.id))
        assert.are.equal(404, (call("DELETE", url)))
      end)
    end

    it("answers 404 for unknown ids on get, update and delete of every resource", function()
      local unknown = "Y2lzY29zcGFyazovL3VzL1JPT00vbm9uZQ"
      for _, case in ipairs(cases) do
        for _, method in ipairs{ "GET", "PUT", "DELETE" } do
          local body = method == "PUT" and case.update() or nil
          local status, headers, doc = call(method, case.path .. "/" .. unknown, body)
          assert.are.equal(404, status, method .. " " .. case.path)
          assert_error_body(doc, headers)
        end
      end
    end)

    it("sends no body with a 204 and goes on on the same connection", function()
      local t = ok_call("POST", "/teams", { name = "Short-lived" })
      local c = assert(helper.connect(m.port))
      finally(function() c:close() end)
      c:send(helper.request_text("DELETE", "/v1/teams/" .. t.id)
        .. helper.request_text("GET", "/v1/teams/" .. t.id))
      local lines = {}
      repeat lines[#lines + 1] = assert(c.sock:receive("*l")) until lines[#lines] == ""
      assert.matches("^HTTP/1%.1 204 No Content$", lines[1])
      for _, line in ipairs(lines) do assert.is_nil(line:lower():match("^content%-")) end
      assert.are.equal(404, assert(c:receive()).status)
    end)

    local function message_names(message, names)
      for _, name in ipairs(names) do assert.matches(name, message, 1, true) end
    end

    -- method, path, body (table: JSON; string: raw), the names the message gives.
    local bad = {
      { "POST", "/rooms", {}, { "title" } },
      { "POST", "/rooms", { title = "" }, { "title" } },
      { "POST", "/rooms", { title = 5 }, { "title" } },
      { "POST", "/rooms", { title = "x", isLocked = "yes" }, { "isLocked" } },
      { "PUT", "/rooms/{room}", { isLocked = true }, { "title" } },
      { "POST", "/messages", { text = "hi" }, { "roomId", "toPersonId", "toPersonEmail" } },
      { "POST", "/messages", { roomId = "{room}" },
        { "text", "markdown", "files", "attachments" } },
      { "POST", "/messages", { roomId = "{room}", files = "x" }, { "files" } },
      { "POST", "/messages", { roomId = "{room}", files = { 1 } }, { "files" } },
      { "POST", "/messages", { roomId = "{room}", attachments = { a = 1 } }, { "attachments" } },
      { "PUT", "/messages/{message}", { text = "x" }, { "roomId" } },
      { "PUT", "/messages/{message}", { roomId = "{room}" }, { "text", "markdown" } },
      { "GET", "/messages", nil, { "roomId" } },
      { "GET", "/messages?roomId=", nil, { "roomId" } },
      { "GET", "/messages?roomId={room}&max=0", nil, { "max" } },
      { "GET", "/team/memberships", nil, { "teamId" } },
      { "POST", "/memberships", { roomId = "{room}" }, { "personId", "personEmail" } },
      { "POST", "/memberships", { personId = "p" }, { "roomId" } },
      { "POST", "/memberships", { roomId = "{room}", personId = "p", isModerator = "no" },
        { "isModerator" } },
      { "PUT", "/memberships/{membership}", { isModerator = true }, { "isRoomHidden" } },
      { "POST", "/team/memberships", { teamId = "{team}" }, { "personId", "personEmail" } },
      { "POST", "/teams", { name = true }, { "name" } },
      { "PUT", "/teams/{team}", { description = "x" }, { "name" } },
      { "POST", "/people", {}, { "emails" } },
      { "POST", "/people", { emails = "a@example.com" }, { "emails" } },
      { "PUT", "/people/{me}", { nickName = "x" }, { "displayName" } },
      { "POST", "/webhooks", { name = "h", targetUrl = "u", resource = "chairs",
        event = "created" }, { "resource" } },
      { "POST", "/webhooks", { name = "h", targetUrl = "u", resource = "rooms",
        event = "exploded" }, { "event" } },
      { "POST", "/webhooks", { name = "h", resource = "rooms", event = "created" },
        { "targetUrl" } },
      { "PUT", "/webhooks/{hook}", { name = "h", targetUrl = "u", status = "inactive" },
        { "status" } },
      { "GET", "/people?callingData=maybe", nil, { "callingData" } },
      { "GET", "/memberships?max=0", nil, { "max" } },
      { "GET", "/teams?max=1001", nil, { "max" } },
      { "GET", "/webhooks?max=x", nil, { "max" } },
      { "GET", "/people?max=1.5", nil, { "max" } },
      { "GET", "/team/memberships?teamId={team}&cursor=bogus", nil, { "cursor" } },
      { "POST", "/rooms", "not json", {} },
      { "POST", "/rooms", "", {} },
      { "POST", "/rooms", "null", {} },
      { "POST", "/teams", "[1, 2]", {} },
      { "POST", "/webhooks", '"a string"', {} },
      { "PUT", "/teams/{team}", "{nope", {} },
    }

    local function fill(s, refs)
      return (s:gsub("{(%a+)}", refs))
    end

    for i, case in ipairs(bad) do
      local method, path, body, names = table.unpack(case)
      local label = type(body) == "string" and ("%q"):format(body)
        or body and helper.encode(body) or ""
      it(("400 #%d: %s %s %s names %s"):format(i, method, path, label,
          table.concat(names, ", ")), function()
        local msg = ok_call("POST", "/messages", { roomId = room.id, text = "x" })
        local ms = ok_call("POST", "/memberships", { roomId = room.id,
          personEmail = ("someone%d@example.com"):format(i) })
        local refs = { room = room.id, team = team.id, hook = hook.id, me = me.id,
          message = msg.id, membership = ms.id }
        if type(body) == "table" then
          local copy = {}
          for k, v in pairs(body) do copy[k] = type(v) == "string" and fill(v, refs) or v end
          body = copy
        end
        local status, headers, doc = call(method, fill(path, refs), body)
        assert.are.equal(400, status)
        assert_error_body(doc, headers)
        message_names(doc.message, names)
      end)
    end

    it("ignores unknown body fields and query parameters", function()
      local t = ok_call("POST", "/teams?color=red", { name = "Plain", color = "red" })
      assert.is_nil(t.color)
      assert.are.same(t, ok_call("GET", "/teams/" .. t.id .. "?color=red"))
      local doc = ok_call("GET", "/team/memberships?teamId=" .. t.id .. "&shape=round")
      assert.are.equal(1, #doc.items)
    end)

    it("answers 404 for unknown ids in bodies and required query parameters", function()
      local none = "Y2lzY29zcGFyazovL3VzL1JPT00vbm9uZQ"
      local parent = ok_call("POST", "/messages", { roomId = room.id, text = "parent" })
      local cases404 = {
        { "POST", "/messages", { roomId = none, text = "x" }, "roomId" },
        { "POST", "/messages", { toPersonId = none, text = "x" }, "toPersonId" },
        { "POST", "/messages", { roomId = room.id, parentId = none, text = "x" }, "parentId" },
        { "PUT", "/messages/" .. parent.id, { roomId = none, text = "x" }, "roomId" },
        { "POST", "/rooms", { title = "x", teamId = none }, "teamId" },
        { "PUT", "/rooms/" .. room.id, { title = "Fixture", teamId = none }, "teamId" },
        { "POST", "/memberships", { roomId = none, personId = me.id }, "roomId" },
        { "POST", "/memberships", { roomId = room.id, personId = none }, "personId" },
        { "POST", "/team/memberships", { teamId = none, personId = me.id }, "teamId" },
        { "POST", "/team/memberships", { teamId = team.id, personId = none }, "personId" },
        { "GET", "/messages?roomId=" .. none, nil, "roomId" },
        { "GET", "/messages?roomId=" .. room.id .. "&beforeMessage=" .. none, nil,
          "beforeMessage" },
        { "GET", "/team/memberships?teamId=" .. none, nil, "teamId" },
      }
      for _, case in ipairs(cases404) do
        local status, headers, doc = call(case[1], case[2], case[3])
        assert.are.equal(404, status, case[1] .. " " .. case[2])
        assert_error_body(doc, headers)
        assert.matches(case[4], doc.message, 1, true)
      end
      assert.are.same({}, list_all("/messages?roomId=" .. room.id .. "&parentId=" .. none))
    end)

    it("answers 409 for a membership that exists", function()
      local r = ok_call("POST", "/rooms", { title = "Twice" })
      ok_call("POST", "/memberships", { roomId = r.id, personId = other.id })
      local status, headers, doc = call("POST", "/memberships",
        { roomId = r.id, personEmail = other.emails[1]:upper() })
      assert.are.equal(409, status)
      assert_error_body(doc, headers)
      status = call("POST", "/team/memberships", { teamId = team.id, personId = me.id })
      assert.are.equal(409, status)
    end)

    it("pages messages newest first with max=3, the Link repeating roomId", function()
      local r = ok_call("POST", "/rooms", { title = "Paged" })
      local sent = {}
      for i = 1, 7 do
        sent[8 - i] = ok_call("POST", "/messages", { roomId = r.id, text = "m" .. i }).id
      end
      local pages, links = walk(m.base_url .. "/messages?roomId=" .. r.id
        .. "&max=3&color=blue")
      assert.are.same({ 3, 3, 1 }, { #pages[1], #pages[2], #pages[3] })
      local got = {}
      for _, page in ipairs(pages) do
        for _, msg in ipairs(page) do got[#got + 1] = msg.id end
      end
      assert.are.same(sent, got) -- all seven, once each, newest first
      assert.are.equal(2, #links)
      for _, link in ipairs(links) do
        assert.matches("^<http://127%.0%.0%.1:" .. m.port .. "/v1/messages%?[^>]*>; rel=\"next\"$",
          link)
        for _, param in ipairs{ "max=3", "roomId=" .. r.id, "color=blue" } do
          assert.matches("[?&]" .. param:gsub("%p", "%%%0") .. "&", link)
        end
      end
    end)

    it("pages memberships with max=3 and filters them", function()
      local r = ok_call("POST", "/rooms", { title = "Crowded" })
      for i = 1, 7 do
        ok_call("POST", "/memberships",
          { roomId = r.id, personEmail = ("p%d@example.com"):format(i) })
      end
      local pages, links = walk(m.base_url .. "/memberships?max=3&roomId=" .. r.id)
      assert.are.same({ 3, 3, 2 }, { #pages[1], #pages[2], #pages[3] })
      local seen, n = {}, 0
      for _, page in ipairs(pages) do
        for _, ms in ipairs(page) do
          assert.are.equal(r.id, ms.roomId)
          if not seen[ms.id] then n = n + 1 end
          seen[ms.id] = true
        end
      end
      assert.are.equal(8, n) -- me and the seven
      for _, link in ipairs(links) do assert.matches("roomId=" .. r.id, link, 1, true) end
      local mine = list_all("/memberships?roomId=" .. r.id .. "&personEmail=P3@EXAMPLE.COM")
      assert.are.same({ "p3@example.com" }, { mine[1].personEmail, mine[2] })
      mine = list_all("/memberships?roomId=" .. r.id .. "&personId=" .. me.id)
      assert.are.equal(1, #mine)
    end)

    it("filters messages by parentId, before and beforeMessage", function()
      local r = ok_call("POST", "/rooms", { title = "Threads" })
      local root = ok_call("POST", "/messages", { roomId = r.id, text = "root" })
      local reply = ok_call("POST", "/messages", { roomId = r.id, parentId = root.id, text = "re" })
      local last = ok_call("POST", "/messages", { roomId = r.id, text = "last" })
      local function texts(query)
        local out = {}
        for i, msg in ipairs(list_all("/messages?roomId=" .. r.id .. query)) do
          out[i] = msg.text
        end
        return out
      end
      assert.are.equal(root.id, reply.parentId)
      assert.are.same({ "re" }, texts("&parentId=" .. root.id))
      assert.are.same({ "re", "root" }, texts("&before=" .. last.created))
      assert.are.same({ "root" }, texts("&beforeMessage=" .. reply.id))
      local other_room = ok_call("POST", "/rooms", { title = "Elsewhere" })
      local status, _, doc = call("POST", "/messages",
        { roomId = other_room.id, parentId = root.id, text = "x" })
      assert.are.equal(400, status)
      assert.matches("parentId", doc.message, 1, true)
    end)

    it("sends toPersonId and toPersonEmail messages to one direct room", function()
      local a = ok_call("POST", "/messages", { toPersonId = other.id, text = "hi" })
      local b = ok_call("POST", "/messages", { toPersonEmail = other.emails[1], markdown = "*yo*" })
      assert.are.equal(a.roomId, b.roomId)
      assert.are.same({ "direct", "direct", other.id, "*yo*", "*yo*" },
        { a.roomType, b.roomType, a.toPersonId, b.markdown, b.text })
      local dm = ok_call("GET", "/rooms/" .. a.roomId)
      assert.are.equal("direct", dm.type)
      local people = {}
      for _, ms in ipairs(list_all("/memberships?roomId=" .. dm.id)) do
        people[#people + 1] = ms.personId
      end
      table.sort(people)
      local expected = { me.id, other.id }
      table.sort(expected)
      assert.are.same(expected, people)
      local fresh = ok_call("POST", "/messages",
        { toPersonEmail = "stranger@example.com", text = "?" })
      assert.are_not.equal(a.roomId, fresh.roomId)
      local stranger = list_all("/people?email=stranger@example.com")[1]
      assert.are.same({ "stranger@example.com", "pending" },
        { stranger.emails[1], stranger.status })
      local status = call("POST", "/messages", { toPersonId = me.id, text = "me?" })
      assert.are.equal(400, status)
    end)

    it("deleting a room deletes its messages and memberships", function()
      local r = ok_call("POST", "/rooms", { title = "Doomed" })
      local m1 = ok_call("POST", "/messages", { roomId = r.id, text = "one" })
      local m2 = ok_call("POST", "/messages", { roomId = r.id, text = "two" })
      local ms = ok_call("POST", "/memberships", { roomId = r.id, personId = other.id })
      assert.are.equal(2, #list_all("/messages?roomId=" .. r.id))
      assert.are.equal(204, (call("DELETE", "/rooms/" .. r.id)))
      for _, path in ipairs{ "/messages/" .. m1.id, "/messages/" .. m2.id,
                             "/memberships/" .. ms.id, "/messages?roomId=" .. r.id } do
        assert.are.equal(404, (call("GET", path)), path)
      end
      assert.are.same({}, list_all("/memberships?roomId=" .. r.id))
    end)

    it("deleting a team deletes its team memberships", function()
      local t = ok_call("POST", "/teams", { name = "Gone" })
      local tm = ok_call("POST", "/team/memberships", { teamId = t.id, personId = other.id })
      assert.are.equal(204, (call("DELETE", "/teams/" .. t.id)))
      assert.are.equal(404, (call("GET", "/team/memberships/" .. tm.id)))
    end)

    it("/people/me is one of /people, found by email, displayName and id", function()
      assert.are.same(me, find(list_all("/people"), me.id))
      local pages = walk(m.base_url .. "/people?max=5")
      assert.is_true(#pages >= 3)
      assert.are.same({ me }, list_all("/people?email=" .. me.emails[1]:upper()))
      local prefix = me.displayName:sub(1, 3):lower()
      for _, p in ipairs(list_all("/people?displayName=" .. prefix)) do
        assert.are.equal(prefix, p.displayName:sub(1, 3):lower())
      end
      assert.is_truthy(find(list_all("/people?displayName=" .. prefix), me.id))
      local two = list_all("/people?id=" .. me.id .. "," .. other.id)
      assert.are.same({ me.id, other.id }, { find(two, me.id).id, find(two, other.id).id })
      assert.are.equal(2, #two)
    end)

    it("an update of my person shows in /people/me and my memberships", function()
      local r = ok_call("POST", "/rooms", { title = "Renames" })
      local before = ok_call("GET", "/people/me")
      local after = ok_call("PUT", "/people/" .. me.id, { displayName = "Me Renamed" })
      finally(function()
        ok_call("PUT", "/people/" .. me.id, { displayName = before.displayName })
      end)
      assert.are.same(after, ok_call("GET", "/people/me"))
      assert.are.equal("Me Renamed", list_all("/memberships?roomId=" .. r.id)[1].personDisplayName)
    end)

    it("logs writes like reads", function()
      m:reset()
      ok_call("POST", "/teams", { name = "Logged" })
      local l = m:stats().log[1]
      assert.are.same({ "POST", "/v1/teams", "", 200 }, { l.method, l.path, l.query, l.status })
    end)
  end)

  describe("the seeded store", function()
    local m
    setup(function() m = helper.start_mock{ "--rooms", "12" } end)
    teardown(function() m:stop() end)

    local function items(path)
      local _, _, doc = get(m.base_url .. path)
      return doc.items
    end

    it("has the teams of the rooms, me in every room and team, messages, no webhooks", function()
      local _, _, me = get(m.base_url .. "/people/me")
      local rooms = items("/rooms?max=1000")
      assert.are.equal(12, #rooms)
      local teams = items("/teams")
      assert.is_true(#teams >= 2)
      for _, t in ipairs(teams) do
        assert_webex_id("TEAM", t.id)
        assert.is_string(t.name)
        assert.matches(ISO_MS, t.created)
        local members = items("/team/memberships?teamId=" .. t.id)
        assert.is_true(#members >= 2)
        local mine = 0
        for _, tm in ipairs(members) do
          assert_webex_id("TEAM_MEMBERSHIP", tm.id)
          if tm.personId == me.id then mine = mine + 1 end
        end
        assert.are.equal(1, mine)
      end
      local messages = 0
      for _, r in ipairs(rooms) do
        if r.teamId then assert.are.equal(200, (get(m.base_url .. "/teams/" .. r.teamId))) end
        local members = items("/memberships?roomId=" .. r.id)
        assert.are.equal(2, #members)
        assert.are.equal(me.id, members[1].personId)
        for _, ms in ipairs(members) do
          assert_webex_id("MEMBERSHIP", ms.id)
          assert.are.equal(r.type, ms.roomType)
        end
        if r.type == "direct" then assert.are.equal(r.title, members[2].personDisplayName) end
        for _, msg in ipairs(items("/messages?roomId=" .. r.id)) do
          assert_webex_id("MESSAGE", msg.id)
          assert.is_true(msg.created >= r.created and msg.created <= r.lastActivity)
          messages = messages + 1
        end
      end
      assert.are.equal(15, messages)
      assert.are.same({}, items("/webhooks"))
      assert.are.equal(12, #items("/memberships?personId=" .. me.id))
    end)

    it("is the same for the same --seed", function()
      local again = helper.start_mock{ "--rooms", "12" }
      finally(function() again:stop() end)
      for _, path in ipairs{ "/people?max=1000", "/teams", "/memberships?max=1000",
                             "/people/me" } do
        local _, _, a = get(m.base_url .. path)
        local _, _, b = get(again.base_url .. path)
        assert.are.same(a, b)
      end
    end)
  end)

  describe("rate limit", function()
    -- n requests pipelined on one connection: their responses.
    local function burst(m, n, token)
      local c = assert(helper.connect(m.port))
      local text = helper.request_text("GET", "/v1/rooms?max=1", { token = token })
      c:send(text:rep(n))
      local out = {}
      for i = 1, n do out[i] = assert(c:receive()) end
      c:close()
      return out
    end

    local function statuses(responses)
      local out = {}
      for i, res in ipairs(responses) do out[i] = res.status end
      return out
    end

    it("--rate 2 --burst 2: two 200s, 429s that take no token, 200 after Retry-After", function()
      local m = helper.start_mock{ "--rate", "2", "--burst", "2" }
      finally(function() m:stop() end)
      -- ten requests, then 20 more 429s: had these taken tokens, waiting
      -- Retry-After would not be enough
      local res = burst(m, 30)
      local expected = { 200, 200 }
      for i = 3, 30 do expected[i] = 429 end
      assert.are.same(expected, statuses(res))
      local retry_after
      for i = 3, 30 do
        retry_after = res[i].headers["retry-after"]
        assert.matches("^%d+$", retry_after)
        assert.is_true(tonumber(retry_after) >= 1)
        local doc = helper.json(res[i].body)
        assert_error_body(doc, res[i].headers)
        assert.matches("Too Many Requests", doc.message)
      end
      system.sleep(tonumber(retry_after))
      assert.are.equal(200, (get(m.base_url .. "/rooms?max=1")))
    end)

    it("rounds Retry-After up to whole seconds: --rate 0.5 gives 2", function()
      local m = helper.start_mock{ "--rate", "0.5" }
      finally(function() m:stop() end)
      local res = burst(m, 2)
      assert.are.same({ 200, 429 }, statuses(res))
      assert.are.equal("2", res[2].headers["retry-after"])
    end)

    it("defaults the burst to ceil(rate)", function()
      local m = helper.start_mock{ "--rate", "2.5" }
      finally(function() m:stop() end)
      assert.are.same({ 200, 200, 200, 429, 429 }, statuses(burst(m, 5)))
    end)

    it("keeps one bucket per access token, and limits after auth", function()
      local m = helper.start_mock{ "--rate", "1", "--token", "second-token" }
      finally(function() m:stop() end)
      assert.are.same({ 401, 401, 401 }, statuses(burst(m, 3, "wrong")))
      assert.are.same({ 200, 429 }, statuses(burst(m, 2)))
      assert.are.same({ 200, 429 }, statuses(burst(m, 2, "second-token")))
    end)

    it("lets scripted answers through without taking tokens", function()
      local m = helper.start_mock{ "--rate", "1" }
      finally(function() m:stop() end)
      m:script{ { status = 200, body = { scripted = true } }, { status = 200, body = {} } }
      assert.are.same({ 200, 200, 200, 429 }, statuses(burst(m, 4)))
    end)

    it("is refilled by /_mock/reset", function()
      local m = helper.start_mock{ "--rate", "1" }
      finally(function() m:stop() end)
      assert.are.same({ 200, 429 }, statuses(burst(m, 2)))
      m:reset()
      assert.are.same({ 200, 429 }, statuses(burst(m, 2)))
    end)

    it("is off without --rate", function()
      local m = helper.start_mock{}
      finally(function() m:stop() end)
      for _, r in ipairs(burst(m, 300)) do assert.are.equal(200, r.status) end
    end)
  end)

  describe("control API", function()
    local m
    setup(function() m = helper.start_mock{} end)
    teardown(function() m:stop() end)
    before_each(function() m:reset() end)

    it("queues entries in order and answers /v1 requests with them before auth", function()
      assert.are.same({ queued = 2 }, m:script{ { status = 503 }, { status = 500 } })
      assert.are.same({ queued = 3 }, m:script{ { status = 201, body = { hello = "world" } } })
      local s1, h1, d1 = get(m.base_url .. "/anything", { token = false })
      local s2 = get(m.base_url .. "/rooms", { token = "wrong" })
      local s3, _, d3 = get(m.base_url .. "/rooms")
      local s4 = get(m.base_url .. "/rooms", { token = false })
      assert.are.same({ 503, 500, 201, 401 }, { s1, s2, s3, s4 })
      assert_error_body(d1, h1)
      assert.are.same({ hello = "world" }, d3)
    end)

    it("status and headers, with the Webex error body", function()
      m:script{ { status = 429, headers = { ["Retry-After"] = "2" } } }
      local status, headers, doc = get(m.base_url .. "/rooms")
      assert.are.equal(429, status)
      assert.are.equal("2", headers["retry-after"])
      assert_error_body(doc, headers)
      assert.matches(TRACKING, doc.trackingId)
      assert.are.equal("application/json;charset=UTF-8", headers["content-type"])
    end)

    it("headers as [name, value] pairs repeat a header", function()
      m:script{ { status = 429, headers = { { "Retry-After", "1" }, { "Retry-After", 2 } } } }
      local c = assert(helper.connect(m.port))
      finally(function() c:close() end)
      local res = assert(c:request("GET", "/v1/rooms"))
      local values = {}
      for _, h in ipairs(res.list) do
        if h[1]:lower() == "retry-after" then values[#values + 1] = h[2] end
      end
      assert.are.same({ "1", "2" }, values)
    end)

    it("a table body is sent as JSON, a string body raw", function()
      m:script{ { status = 404, body = { message = "gone", items = { 1, 2 } } },
                { body = "not json at all" } }
      local status, _, doc = get(m.base_url .. "/rooms")
      assert.are.equal(404, status)
      assert.are.same({ message = "gone", items = { 1, 2 } }, doc)
      local headers, body
      status, headers, _, body = get(m.base_url .. "/rooms")
      assert.are.equal(200, status)
      assert.are.equal("not json at all", body)
      assert.are.equal("application/json;charset=UTF-8", headers["content-type"])
    end)

    it("without a body below 400, answers normally with its status and headers", function()
      m:script{ { status = 203, headers = { ["X-Mock"] = "yes", ["Content-Type"] = "text/x" } },
                { headers = { Link = "<elsewhere>" } } }
      local status, headers, doc = get(m.base_url .. "/rooms?max=4", { token = false })
      assert.are.equal(203, status)
      assert.are.equal(4, #doc.items)
      assert.are.equal("yes", headers["x-mock"])
      assert.are.equal("text/x", headers["content-type"])
      assert.matches(TRACKING, headers.trackingid)
      status, headers = get(m.base_url .. "/rooms?max=4")
      assert.are.equal(200, status)
      assert.are.equal("<elsewhere>", headers.link)
    end)

    it("may set TrackingID and Date itself", function()
      local date = "Sun, 06 Nov 1994 08:49:37 GMT"
      m:script{ { status = 500, headers = { TrackingID = "ROUTER_MINE", Date = date } } }
      local status, headers, doc = get(m.base_url .. "/rooms")
      assert.are.equal(500, status)
      assert.are.equal("ROUTER_MINE", headers.trackingid)
      assert.are.equal("ROUTER_MINE", doc.trackingId)
      assert.are.equal(date, headers.date)
      assert.are.equal("ROUTER_MINE", m:stats().log[1].tracking_id)
    end)

    it("drop: closes the connection without an answer", function()
      m:script{ { action = "drop" } }
      local c = assert(helper.connect(m.port))
      finally(function() c:close() end)
      local res, err, partial = c:request("GET", "/v1/rooms")
      assert.is_nil(res)
      assert.are.equal("closed", err)
      assert.is_nil(partial.status)
      assert.truthy(c:send("x")) -- a FIN, not a reset: the socket still sends
      assert.are.equal(200, (get(m.base_url .. "/rooms")))
    end)

    it("reset: resets the connection", function()
      m:script{ { action = "reset" } }
      local c = assert(helper.connect(m.port))
      finally(function() c:close() end)
      local res, err = c:request("GET", "/v1/rooms")
      assert.is_nil(res)
      assert.are.equal("closed", err) -- luasocket's word for ECONNRESET too
      assert.is_nil(c:send("x"))      -- after a RST, sending fails at once
      assert.are.equal(200, (get(m.base_url .. "/rooms")))
    end)

    it("delay: answers later, serving other connections meanwhile", function()
      m:script{ { action = "delay", seconds = 2 } }
      local c = assert(helper.connect(m.port))
      finally(function() c:close() end)
      c:send(helper.request_text("GET", "/v1/rooms?max=2"))
      eventually(function() return m:stats().requests == 1 end)
      assert.are.equal(200, (get(m.base_url .. "/rooms?max=1")))
      local readable = socket.select({ c.sock }, nil, 0)
      assert.are.equal(0, #readable) -- still waiting
      local res = assert(c:receive())
      assert.are.equal(200, res.status)
      assert.are.equal(2, #helper.json(res.body).items)
      local log = m:stats().log
      assert.are.equal("delay", log[1].action)
      assert.are.equal(200, log[1].status)
    end)

    it("delay with a status answers with it", function()
      m:script{ { action = "delay", seconds = 0.05, status = 503,
                  headers = { ["Retry-After"] = "1" } } }
      local status, headers, doc = get(m.base_url .. "/rooms")
      assert.are.equal(503, status)
      assert.are.equal("1", headers["retry-after"])
      assert_error_body(doc, headers)
    end)

    it("truncate: Content-Length promises more than is sent, then close", function()
      m:script{ { action = "truncate" } }
      local c = assert(helper.connect(m.port))
      finally(function() c:close() end)
      local res, err, partial = c:request("GET", "/v1/rooms?max=10")
      assert.is_nil(res)
      assert.are.equal("closed", err)
      assert.are.equal(200, partial.status)
      assert.is_true(#partial.body > 0)
      assert.is_true(#partial.body < tonumber(partial.headers["content-length"]))
    end)

    it("badjson: 200 with a JSON content type and a body that is not JSON", function()
      m:script{ { action = "badjson" } }
      local status, headers, doc, body = get(m.base_url .. "/rooms")
      assert.are.equal(200, status)
      assert.are.equal("application/json;charset=UTF-8", headers["content-type"])
      assert.is_nil(doc)
      assert.is_true(#body > 0)
    end)

    local bad_scripts = {
      ["not JSON"] = "{nope",
      ["no responses"] = '{"entries": []}',
      ["responses not an array"] = '{"responses": {"status": 429}}',
      ["an unknown action"] = '{"responses": [{"action": "explode"}]}',
      ["a status out of range"] = '{"responses": [{"status": 99}]}',
      ["a status that is not an integer"] = '{"responses": [{"status": "429"}]}',
      ["delay without seconds"] = '{"responses": [{"action": "delay"}]}',
      ["a bad header name"] = '{"responses": [{"status": 429, "headers": {"A B": "1"}}]}',
      ["a header value with CRLF"] =
        '{"responses": [{"status": 429, "headers": {"X": "1\\r\\nY: 2"}}]}',
      ["a bad header pair"] = '{"responses": [{"status": 429, "headers": [["X"]]}]}',
      ["an entry that is not an object"] = '{"responses": [{"status": 429}, 5]}',
    }
    for name, body in pairs(bad_scripts) do
      it("rejects a script with " .. name .. " (400, nothing queued)", function()
        local status, headers, text = helper.http("POST",
          "http://127.0.0.1:" .. m.port .. "/_mock/script", { body = body, token = false })
        assert.are.equal(400, status)
        assert_error_body(helper.json(text), headers)
        assert.are.equal(200, (get(m.base_url .. "/rooms")))
      end)
    end

    it("takes each control endpoint only with its method", function()
      local base = "http://127.0.0.1:" .. m.port .. "/_mock/"
      assert.are.equal(405, (helper.http("GET", base .. "script")))
      assert.are.equal(405, (helper.http("GET", base .. "reset")))
      local status, headers = helper.http("POST", base .. "stats", { body = "" })
      assert.are.equal(405, status)
      assert.are.equal("GET", headers.allow)
      assert.are.equal(404, (helper.http("GET", base .. "other")))
    end)

    it("/_mock/reset empties the queue and the stats", function()
      m:script{ { status = 500 } }
      get(m.base_url .. "/rooms", { token = false })
      m:script{ { status = 500 } }
      m:reset()
      assert.are.same({ requests = 0, connections = 0, by_status = {}, log = {} }, m:stats())
      assert.are.equal(200, (get(m.base_url .. "/rooms")))
    end)

    it("stats: counts and logs each /v1 request with its fields", function()
      local _, h1 = get(m.base_url .. "/rooms?max=2&type=group")
      local _, h2 = get(m.base_url .. "/people/me", { token = false })
      m:script{ { action = "drop" } }
      assert.is_nil((helper.http("GET", m.base_url .. "/rooms")))
      local st = m:stats()
      assert.are.equal(3, st.requests)
      assert.are.equal(3, st.connections)
      assert.are.same({ ["200"] = 1, ["401"] = 1, ["0"] = 1 }, st.by_status)
      assert.are.equal(3, #st.log)
      local l1, l2, l3 = st.log[1], st.log[2], st.log[3]
      assert.are.same({ "GET", "/v1/rooms", "max=2&type=group", 200, h1.trackingid },
        { l1.method, l1.path, l1.query, l1.status, l1.tracking_id })
      assert.are.same({ "/v1/people/me", "", 401, h2.trackingid },
        { l2.path, l2.query, l2.status, l2.tracking_id })
      assert.are.same({ 0, "drop", true }, { l3.status, l3.action, l3.scripted })
      assert.matches(TRACKING, l3.tracking_id)
      assert.is_nil(l1.action)
      for i, l in ipairs(st.log) do
        assert.are.equal("number", type(l.t))
        assert.are.equal("integer", math.type(l.conn))
        if i > 1 then
          assert.is_true(l.t >= st.log[i - 1].t)
          assert.is_true(l.conn > st.log[i - 1].conn)
        end
      end
    end)

    it("is 404 without --control", function()
      local plain = helper.spawn_mock{ "--port", "0" }
      finally(function() plain:stop() end)
      local base = "http://127.0.0.1:" .. plain.port .. "/_mock/"
      local status, headers, body = helper.http("GET", base .. "stats")
      assert.are.equal(404, status)
      assert_error_body(helper.json(body), headers)
      assert.are.equal(404, (helper.http("POST", base .. "script",
        { body = '{"responses": [{"status": 500}]}' })))
      assert.are.equal(200, (get(plain.base_url .. "/rooms")))
    end)
  end)

  describe("signals", function()
    it("SIGINT closes every socket and exits 0", function()
      local m = helper.start_mock{}
      finally(function() m:stop() end)
      local c = assert(helper.connect(m.port))
      finally(function() c:close() end)
      assert.are.equal(200, assert(c:request("GET", "/v1/rooms?max=1")).status)
      assert.are.same({ true, "exit", 0 }, { m:stop("INT") })
      assert.is_true(helper.wait_port_closed(m.port))
      assert.is_true(c:closed())
    end)

    it("SIGTERM ends the process", function()
      local m = helper.start_mock{}
      finally(function() m:stop() end)
      assert.are.same({ nil, "signal", 15 }, { m:stop() })
      assert.is_true(helper.wait_port_closed(m.port))
      assert.are.same({ nil, "signal", 15 }, { m:stop() }) -- idempotent
    end)
  end)

  describe("the library", function()
    -- One request to an in-process server, driven by server:step.
    local function exchange(server, text)
      local c = assert(socket.connect("127.0.0.1", server.port))
      c:settimeout(0)
      assert(c:send(text))
      local buf = ""
      for _ = 1, 500 do
        server:step(0.01)
        local data, _, partial = c:receive("*a")
        buf = buf .. (data or partial)
        local head, body = buf:match("^(.-\r\n\r\n)(.*)$")
        local length = head and tonumber(head:match("\r\nContent%-Length: (%d+)"))
        if length and #body >= length then
          c:close()
          return tonumber(head:match("^HTTP/1%.1 (%d+)")), helper.json(body)
        end
      end
      error("no response")
    end

    it("serves in-process through step, and closes", function()
      local server = assert(mock.new{ port = 0, rooms = 3, tokens = { "t" } })
      finally(function() server:close() end)
      assert.are.equal("http://127.0.0.1:" .. server.port .. "/v1", server:url())
      local status, doc = exchange(server, helper.request_text("GET", "/v1/rooms", { token = "t" }))
      assert.are.equal(200, status)
      assert.are.equal(3, #doc.items)
      server:close()
      server:close()
      assert.is_true(helper.wait_port_closed(server.port))
    end)

    it("keeps the newest entries of the log with log_max", function()
      local server = assert(mock.new{ port = 0, control = true, log_max = 4 })
      finally(function() server:close() end)
      for i = 1, 9 do
        assert.are.equal(200, (exchange(server, helper.request_text("GET", "/v1/rooms?max=" .. i))))
      end
      local _, st = exchange(server, helper.request_text("GET", "/_mock/stats"))
      assert.are.equal(9, st.requests)
      assert.is_true(#st.log >= 2 and #st.log <= 4)
      assert.are.equal("max=9", st.log[#st.log].query)
    end)

    local bad_options = {
      { rate = 0 }, { rate = "2" }, { burst = 2 }, { rate = 1, burst = 0 }, { port = -1 },
      { port = 65536 }, { rooms = 1.5 }, { tokens = {} }, { tokens = { "a b" } }, { host = 1 },
      { log_max = 1 },
    }
    for _, opts in ipairs(bad_options) do
      local k, v = next(opts)
      it("returns nil and a message for " .. k .. " = " .. tostring(v), function()
        local server, err = mock.new(opts)
        assert.is_nil(server)
        assert.is_string(err)
      end)
    end

    it("returns nil and a message when it cannot listen", function()
      local busy = assert(socket.bind("127.0.0.1", 0))
      finally(function() busy:close() end)
      local _, port = busy:getsockname()
      local server, err = mock.new{ port = tonumber(port) }
      assert.is_nil(server)
      assert.matches("cannot listen", err)
    end)
  end)
end)
