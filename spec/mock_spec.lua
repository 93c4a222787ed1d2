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
      local res = assert(c:request("POST", "/v1/rooms", { body = '{"title": "x"}' }))
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
      assert.are.equal(405, assert(c:receive()).status)
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
      for _, case in ipairs{ { "DELETE", "/people/me" }, { "PUT", "/rooms" },
                             { "POST", "/rooms/abc" } } do
        local status, headers, body = helper.http(case[1], m.base_url .. case[2], { body = "" })
        assert.are.equal(405, status)
        assert.are.equal("GET", headers.allow)
        assert_error_body(helper.json(body), headers)
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
