-- spark.new, client:get_rooms, errors and the client's lifecycle, against
-- spark-mock.
local helper = require "helper"
local spark = require "spark"

local TOKEN = helper.TOKEN

describe("spark.new", function()
  it("raises on an unknown option, naming it", function()
    assert.has_error(function() spark.new{ token = TOKEN, tiemout = 1 } end,
      "spark.new: unknown option 'tiemout'")
  end)

  local bad = {
    token = { 12, "", "a b", "tok\r\nX-Evil: 1" },
    base_url = { 1 },
    sleep = { "soon", 5 },
    on_retry = { true },
    max_rate_limited = { -1, 1.5, "3" },
    max_wait = { -1, "x", 0 / 0 },
    timeout = { 0, -2, "30" },
    connect_timeout = { 0 },
    max_body = { 0, 2.5 },
    allow_insecure = { "yes" },
    ca_file = { 3 },
  }
  for name, values in pairs(bad) do
    for _, v in ipairs(values) do
      it("raises on option '" .. name .. "' = " .. tostring(v), function()
        local opts = { token = TOKEN, base_url = "http://127.0.0.1:1/v1" }
        opts[name] = v
        local ok, err = pcall(spark.new, opts)
        assert.is_false(ok)
        assert.matches("option '" .. name .. "'", err, 1, true)
        if name == "token" and type(v) == "string" and #v > 2 then
          assert.is_nil(err:find(v, 1, true), "the token leaked into the error")
        end
      end)
    end
  end

  it("raises on a non-table argument", function()
    assert.has_error(function() spark.new("tok") end,
      "spark.new: bad argument 'opts' (table expected, got string)")
  end)

  it("requires https except for loopback hosts", function()
    assert.has_error(function()
      spark.new{ token = TOKEN, base_url = "http://example.com/v1" }
    end, "spark.new: option 'base_url' is not usable: "
      .. "URL must use https (plain http only to a loopback host)")
    for _, url in ipairs{ "http://127.0.0.1:9/v1", "http://localhost:9/v1",
                          "http://[::1]:9/v1", "https://example.com/v1" } do
      assert.is_userdata(spark.new{ token = TOKEN, base_url = url })
    end
  end)

  it("reads the token and base URL from the environment", function()
    local out = helper.run_lua([[
      local spark = require "spark"
      io.write(tostring(spark.new()))
    ]], { WEBEX_ACCESS_TOKEN = TOKEN, SPARK_BASE_URL = "http://127.0.0.1:9/v1" })
    assert.matches("spark.client %(http://127.0.0.1:9/v1%)", out)
  end)
end)

describe("a client", function()
  local m
  setup(function() m = helper.start_mock{ "--token", "second-token" } end)
  teardown(function() m:stop() end)
  before_each(function() m:reset() end)

  local function client(opts)
    opts = opts or {}
    opts.token = opts.token or TOKEN
    opts.base_url = m.base_url
    return spark.new(opts)
  end

  it("gets one page of rooms with res", function()
    local c = client()
    local rooms, res = c:get_rooms{ max = 100 }
    assert.are.equal(100, #rooms)
    assert.is_string(rooms[1].id)
    assert.is_string(rooms[1].title)
    assert.are.equal(200, res.status)
    assert.matches("^ROUTER_%x+$", res.tracking_id)
    assert.matches("^http://127%.0%.0%.1:%d+/v1/rooms%?.*max=100", res.next)
    assert.are.equal(1, res.attempts)
    assert.are.equal(0, res.waited)
    assert.are.equal("integer", math.type(res.status))
  end)

  it("sends the parameters, encoded by curl", function()
    local c = client()
    local rooms = c:get_rooms{ type = "group", sortBy = "created", max = 5,
                               teamId = "a b&c=d" }
    assert.are.same({}, rooms) -- no such team
    local q = m:stats().log[1].query
    assert.matches("type=group", q, 1, true)
    assert.matches("sortBy=created", q, 1, true)
    assert.matches("max=5", q, 1, true)
    assert.matches("teamid=a%20b%26c%3dd", q:lower(), 1, true)
  end)

  it("filters by type", function()
    local rooms = client():get_rooms{ type = "direct", max = 50 }
    assert.is_true(#rooms > 0)
    for _, r in ipairs(rooms) do assert.are.equal("direct", r.type) end
  end)

  it("reaches the default client through spark.get_rooms", function()
    local out = helper.run_lua([[
      local spark = require "spark"
      local rooms, res = spark.get_rooms{ max = 3 }
      io.write(#rooms, " ", res.status, " ", tostring(spark.default() == spark.default()))
    ]], { WEBEX_ACCESS_TOKEN = TOKEN, SPARK_BASE_URL = m.base_url })
    assert.are.equal("3 200 true", out)
  end)

  it("raises when the default client has no token", function()
    local out = helper.run_lua([[
      local ok, err = pcall(require("spark").get_rooms)
      io.write(tostring(ok), " ", err)
    ]], { WEBEX_ACCESS_TOKEN = "", SPARK_ACCESS_TOKEN = "" })
    assert.matches("^false .*no token", out)
  end)

  describe("parameters", function()
    local cases = {
      { { type = "room" }, "parameter 'type' must be one of direct, group (got \"room\")" },
      { { sortBy = "title" }, "parameter 'sortBy' must be one of id, lastactivity, created" },
      { { max = 0 }, "parameter 'max' must be an integer from 1 to 1000 (got 0)" },
      { { max = 1001 }, "parameter 'max' must be an integer from 1 to 1000" },
      { { max = 2.5 }, "parameter 'max' must be an integer from 1 to 1000" },
      { { max = "10" }, "parameter 'max' must be an integer from 1 to 1000" },
      { { teamId = 5 }, "parameter 'teamId' must be a string" },
      { { from = true }, "parameter 'from' must be a string" },
      { { to = {} }, "parameter 'to' must be a string" },
      { { orgPublicSpaces = "yes" }, "parameter 'orgPublicSpaces' must be a boolean" },
      { { sort_by = "id" }, "unknown parameter 'sort_by'" },
    }
    for _, case in ipairs(cases) do
      it("rejects " .. case[2] .. " before sending anything", function()
        local c = client()
        local ok, err = pcall(c.get_rooms, c, case[1])
        assert.is_false(ok)
        assert.matches(case[2], err, 1, true)
        assert.are.equal(0, m:stats().requests)
      end)
    end

    it("rejects non-table params", function()
      local c = client()
      assert.has_error(function() c:get_rooms("group") end,
        "get_rooms: bad argument 'params' (table expected, got string)")
    end)

    it("accepts every documented parameter", function()
      local rooms = client():get_rooms{ type = "group", sortBy = "id", max = 1000,
        teamId = "x", from = "2016-04-21T19:01:55.966Z", to = "2026-04-21T19:01:55.966Z",
        orgPublicSpaces = false }
      assert.is_table(rooms)
    end)

    it("raises when called with a dot", function()
      local c = client()
      assert.has_error(function() c.get_rooms{ max = 1 } end)
    end)
  end)

  describe("errors", function()
    it("401: kind http with the server's message and tracking id", function()
      local c = client{ token = "wrong-token" }
      local rooms, err = c:get_rooms()
      assert.is_nil(rooms)
      assert.is_true(spark.is_error(err))
      assert.are.equal("http", err.kind)
      assert.are.equal(401, err.status)
      assert.is_string(err.message)
      assert.matches("^ROUTER_", err.tracking_id)
      assert.are.equal(m:stats().log[1].tracking_id, err.tracking_id)
      local s = tostring(err)
      assert.matches("^spark: http: ", s)
      assert.matches("HTTP 401", s, 1, true)
      assert.is_nil(s:find("wrong-token", 1, true))
    end)

    it("accepts any of the simulator's tokens", function()
      assert.is_table((client{ token = "second-token" }:get_rooms()))
    end)

    it("takes tracking_id from the body before the header", function()
      m:script{ { status = 404, body = { message = "gone", trackingId = "ROUTER_BODY" } } }
      local _, err = client():get_rooms()
      assert.are.equal("http", err.kind)
      assert.are.equal("gone", err.message)
      assert.are.equal("ROUTER_BODY", err.tracking_id)
    end)

    it("decode: a body that is not JSON", function()
      m:script{ { action = "badjson" } }
      local _, err = client():get_rooms()
      assert.are.equal("decode", err.kind)
      assert.are.equal(200, err.status)
      assert.matches("^ROUTER_", err.tracking_id)
    end)

    it("decode: JSON without items", function()
      m:script{ { status = 200, body = { things = {} } } }
      local _, err = client():get_rooms()
      assert.are.equal("decode", err.kind)
    end)

    it("too_large: a body over max_body", function()
      local _, err = client{ max_body = 1000 }:get_rooms{ max = 100 }
      assert.are.equal("too_large", err.kind)
    end)

    it("timeout: no answer within timeout", function()
      m:script{ { action = "delay", seconds = 3 } }
      local _, err = client{ timeout = 0.3, max_retries = 0 }:get_rooms()
      assert.are.equal("timeout", err.kind)
      assert.matches("curl: %(28%)", err.message)
    end)

    it("network: a dropped connection, a reset, a truncated body", function()
      m:script{ { action = "drop" }, { action = "reset" }, { action = "truncate" } }
      local c = client{ max_retries = 0 }
      for _ = 1, 3 do
        local rooms, err = c:get_rooms()
        assert.is_nil(rooms)
        assert.are.equal("network", err.kind)
        assert.matches("^curl: %(%d+%)", err.message)
      end
      assert.is_table((c:get_rooms())) -- and the client still works
    end)

    it("network: nobody listening", function()
      -- a port that was free a moment ago
      local s = assert(require("socket").bind("127.0.0.1", 0))
      local _, port = s:getsockname()
      s:close()
      local c = spark.new{ token = TOKEN, base_url = "http://127.0.0.1:" .. port .. "/v1",
        max_retries = 0 }
      local _, err = c:get_rooms()
      assert.are.equal("network", err.kind)
    end)

    it("does not follow redirects", function()
      m:script{ { status = 302, headers = { Location = m.base_url .. "/people/me" } } }
      local _, err = client():get_rooms()
      assert.are.equal("http", err.kind)
      assert.are.equal(302, err.status)
      assert.are.equal(1, m:stats().requests)
    end)
  end)

  describe("lifecycle", function()
    it("reuses one connection for 100 calls", function()
      local c = client()
      for _ = 1, 100 do assert.is_table((c:get_rooms{ max = 1 })) end
      local st = m:stats()
      assert.are.equal(100, st.requests)
      assert.are.equal(1, st.connections)
    end)

    it("closes idempotently and then raises a clear error", function()
      local c = client()
      assert.matches("^spark%.client %(http://127%.0%.0%.1:%d+/v1%)$", tostring(c))
      c:close()
      c:close()
      assert.are.equal("spark.client (closed)", tostring(c))
      assert.is_true(c:is_closed())
      assert.has_error(function() c:get_rooms() end)
      local ok, err = pcall(c.get_rooms, c)
      assert.is_false(ok)
      assert.matches("closed client", err)
    end)

    it("closes with <close>", function()
      local kept
      do
        local c <close> = client()
        kept = c
        assert.is_false(kept:is_closed())
      end
      assert.is_true(kept:is_closed())
    end)

    it("never shows the token", function()
      local c = client{ token = "second-token" }
      assert.is_nil(tostring(c):find("second-token", 1, true))
    end)
  end)
end)

describe("review fixes", function()
  local m
  setup(function() m = helper.start_mock{} end)
  teardown(function() m:stop() end)
  before_each(function() m:reset() end)

  it("honours a 429 whose body exceeds max_body (status, Retry-After, gate)", function()
    m:script{ { status = 429, headers = { ["Retry-After"] = "60" }, body = string.rep("x", 5000) } }
    local c = spark.new{ token = TOKEN, base_url = m.base_url, max_body = 64, max_wait = 10,
                         sleep = function() end }
    local _, err = c:get_rooms{ max = 1 }
    assert.are.equal("rate_limited", err.kind)
    assert.are.equal(60, err.retry_after)
    local _, err2 = c:get_rooms{ max = 1 }
    assert.are.equal("rate_limited", err2.kind) -- the gate is closed
    assert.are.equal(1, m:stats().requests)
  end)

  it("never sends a plain-http request through an environment proxy", function()
    -- a "proxy" that records what reaches it
    local out = helper.run_lua([[
      local socket = require "socket"
      local proxy = assert(socket.bind("127.0.0.1", 0))
      local _, port = proxy:getsockname()
      proxy:settimeout(0)
      local spark = require "spark"
      local c = spark.new{ token = "SECRET", base_url = os.getenv("MOCK"), max_retries = 0 }
      local rooms = c:get_rooms{ max = 1 }
      local leaked = proxy:accept()
      io.write(tostring(rooms and #rooms), " ", tostring(leaked ~= nil), " ", port)
    ]], { MOCK = m.base_url, http_proxy = "http://127.0.0.1:9", HTTP_PROXY = "http://127.0.0.1:9",
          all_proxy = "http://127.0.0.1:9" })
    assert.matches("^nil false", out) -- the mock answered 401 (unknown token), not a proxy
    assert.are.equal(1, m:stats().requests)
  end)

  it("allows plain http to any host with allow_insecure", function()
    local c = spark.new{ token = TOKEN, base_url = "http://192.0.2.1/v1", allow_insecure = true }
    assert.is_userdata(c)
    assert.has_no.errors(function() spark.new{ token = TOKEN, allow_insecure = true,
      base_url = "http://example.invalid/v1" } end)
  end)

  it("rejects a NaN from the sleep hook", function()
    m:script{ { status = 429, headers = { ["Retry-After"] = "1" } } }
    local c = spark.new{ token = TOKEN, base_url = m.base_url, sleep = function() return 0 / 0 end }
    assert.has_error(function() c:get_rooms() end)
  end)

  it("bounds numeric options", function()
    assert.has_error(function() spark.new{ token = TOKEN, max_retries = math.huge } end)
    assert.has_error(function() spark.new{ token = TOKEN, max_body = math.maxinteger } end)
  end)

  it("resolves a relative next link against the request URL", function()
    m:script{ { status = 200, headers = { Link = '</v1/rooms?max=1&cursor=abc>; rel="next"' } } }
    local c = spark.new{ token = TOKEN, base_url = m.base_url }
    local _, res = c:get_rooms{ max = 1 }
    assert.are.equal(m.base_url .. "/rooms?max=1&cursor=abc", res.next)
  end)

  it("rejects NUL bytes in query values", function()
    local c = spark.new{ token = TOKEN, base_url = m.base_url }
    assert.has_error(function() c:get_rooms{ teamId = "a\0b" } end)
    assert.are.equal(0, m:stats().requests)
  end)
end)

describe("spark.check_params", function()
  it("checks parameters and fields without sending anything", function()
    assert.are.same({ true }, { spark.check_params("rooms", "list", { max = 5 }) })
    assert.are.same({ false, "parameter 'max' must be an integer from 1 to 1000 (got 0)" },
      { spark.check_params("rooms", "list", { max = 0 }) })
    assert.are.same({ false, "field 'title' is required" },
      { spark.check_params("rooms", "create", {}) })
    assert.has_error(function() spark.check_params("chairs", "list", {}) end,
      "spark.check_params: unknown operation chairs:list")
  end)
end)

describe("spark.json_decode", function()
  it("gives whole numbers back as integers, wherever they are", function()
    local v = spark.json_decode('{"a":1,"b":[2.5,3,{"c":4.0}],"d":"5","e":-2,"f":1e300,'
      .. '"s":"a\\"b:1","g":["x",7],"h":"a\\\\","i":8}')
    assert.are.equal("integer", math.type(v.a))
    assert.are.equal("float", math.type(v.b[1]))
    assert.are.equal("integer", math.type(v.b[2]))
    assert.are.equal("integer", math.type(v.b[3].c))
    assert.are.equal("5", v.d)
    assert.are.equal("integer", math.type(v.e))
    assert.are.equal("float", math.type(v.f))
    assert.are.equal("integer", math.type(v.g[2]))
    assert.are.equal("integer", math.type(v.i))
  end)

  it("leaves text without numbers as decoded", function()
    local v = spark.json_decode('{"title":"Room 12: 3-4","ok":true,"items":["a"]}')
    assert.are.same({ title = "Room 12: 3-4", ok = true, items = { "a" } }, v)
  end)

  it("returns nil and a message for text that is not JSON", function()
    local v, err = spark.json_decode("{oops")
    assert.is_nil(v)
    assert.matches("not JSON", err)
  end)
end)

describe("spark.json_decode's number scan", function()
  -- strings of every length around the scan's 8-byte steps, with escapes
  -- at every position, before a number that must still be found
  it("finds a number after strings of any length and escapes", function()
    for len = 0, 20 do
      for esc = 0, len do
        local str = ("x"):rep(esc) .. '\\"' .. ("y"):rep(len - esc)
        local v = spark.json_decode('{"s":"' .. str .. '","n":7,"t":"' .. ("z"):rep(len)
          .. '\\\\","m":[8]}')
        assert.are.equal("integer", math.type(v.n), str)
        assert.are.equal("integer", math.type(v.m[1]), str)
      end
    end
  end)
end)
