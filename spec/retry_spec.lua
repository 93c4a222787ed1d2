-- The Retry-After-aware retry loop of the C core, against spark-mock.
local helper = require "helper"
local spark = require "spark"

local function http_date(epoch)
  return os.date("!%a, %d %b %Y %H:%M:%S GMT", epoch)
end

describe("retry on 429", function()
  local m
  setup(function() m = helper.start_mock{} end)
  teardown(function() m:stop() end)
  before_each(function() m:reset() end)

  -- A client whose sleep hook records its calls and sleeps not at all.
  local function client(opts)
    local calls = {}
    opts = opts or {}
    opts.token = helper.TOKEN
    opts.base_url = m.base_url
    opts.sleep = opts.sleep or function(s, info)
      calls[#calls + 1] = { seconds = s, info = info }
    end
    return spark.new(opts), calls
  end

  it("waits Retry-After once, through the hook, then succeeds", function()
    m:script{ { status = 429, headers = { ["Retry-After"] = "2" } } }
    local c, calls = client()
    local rooms, res = c:get_rooms{ max = 10 }
    assert.is_table(rooms, tostring(res))
    assert.are.equal(10, #rooms)
    assert.are.equal(1, #calls)
    assert.are.equal(2, calls[1].seconds)
    assert.are.equal("integer", math.type(calls[1].seconds))
    local info = calls[1].info
    assert.are.equal("rate_limited", info.reason)
    assert.are.equal(429, info.status)
    assert.are.equal(1, info.attempt)
    assert.are.equal(2, info.retry_after)
    assert.matches("^ROUTER_", info.tracking_id)
    assert.are.equal(2, res.attempts)
    assert.are.equal(2, res.waited)
    assert.are.equal(200, res.status)
    assert.are.equal(2, m:stats().requests)
    c:close()
  end)

  it("reads an HTTP-date Retry-After against the response's Date", function()
    local now = os.time()
    m:script{ { status = 429, headers = {
      ["Retry-After"] = http_date(now + 3607), Date = http_date(now + 3600) } } }
    local c, calls = client()
    assert.is_table((c:get_rooms()))
    assert.are.same({ 7 }, { calls[1].seconds })
  end)

  for _, odd in ipairs{ "soon", "", "-5", "x5", "5x" } do
    it("waits the default 15 s for Retry-After '" .. odd .. "'", function()
      m:script{ { status = 429, headers = { ["Retry-After"] = odd } } }
      local c, calls = client()
      assert.is_table((c:get_rooms()))
      assert.are.equal(15, calls[1].seconds)
    end)
  end

  it("waits the default 15 s when Retry-After is missing", function()
    m:script{ { status = 429 } }
    local c, calls = client()
    assert.is_table((c:get_rooms()))
    assert.are.equal(15, calls[1].seconds)
  end)

  it("takes the largest of two Retry-After fields", function()
    m:script{ { status = 429, headers = { { "Retry-After", "3" }, { "Retry-After", "5" } } } }
    local c, calls = client()
    assert.is_table((c:get_rooms()))
    assert.are.equal(5, calls[1].seconds)
  end)

  it("fails fast, without sleeping, when Retry-After exceeds max_wait", function()
    m:script{ { status = 429, headers = { ["Retry-After"] = "120" } } }
    local c, calls = client{ max_wait = 60 }
    local rooms, err = c:get_rooms()
    assert.is_nil(rooms)
    assert.are.equal("rate_limited", err.kind)
    assert.are.equal(429, err.status)
    assert.are.equal(120, err.retry_after)
    assert.matches("^ROUTER_", err.tracking_id)
    assert.are.equal(0, #calls)
    assert.are.equal(1, m:stats().requests)
  end)

  it("gives up after max_rate_limited waits, with retry_after", function()
    local r = { status = 429, headers = { ["Retry-After"] = "1" } }
    m:script{ r, r, r }
    local c, calls = client{ max_rate_limited = 2 }
    local rooms, err = c:get_rooms()
    assert.is_nil(rooms)
    assert.are.equal("rate_limited", err.kind)
    assert.are.equal(1, err.retry_after)
    assert.are.equal(3, err.attempts)
    assert.are.equal(2, #calls)
    assert.matches("rate_limited", tostring(err))
    assert.matches("Retry%-After 1 s", tostring(err))
  end)

  it("counts all waits of a call against max_wait", function()
    local r = { status = 429, headers = { ["Retry-After"] = "4" } }
    m:script{ r, r, r }
    local c, calls = client{ max_wait = 10 }
    local _, err = c:get_rooms()
    assert.are.equal("rate_limited", err.kind)
    assert.are.equal(2, #calls) -- 4 + 4 fit in 10, a third 4 does not
    assert.are.equal(8, err.waited)
  end)

  it("sleeps the remainder a hook reports, until it reports none", function()
    m:script{ { status = 429, headers = { ["Retry-After"] = "2" } } }
    local seen = {}
    local c = client{ sleep = function(s)
      seen[#seen + 1] = s
      if #seen == 1 then return 1.5 end
      if #seen == 2 then return 0.25 end
    end }
    assert.is_table((c:get_rooms()))
    assert.are.same({ 2, 1.5, 0.25 }, seen)
  end)

  it("rejects a hook that returns something else than seconds", function()
    m:script{ { status = 429, headers = { ["Retry-After"] = "1" } } }
    local c = client{ sleep = function() return "later" end }
    assert.has_error(function() c:get_rooms() end,
      "spark: the sleep hook returned a string (expected the unslept seconds or nothing)")
  end)

  it("lets on_retry observe, and veto with false", function()
    m:script{ { status = 429, headers = { ["Retry-After"] = "2" } },
              { status = 429, headers = { ["Retry-After"] = "3" } } }
    local observed = {}
    local c, calls = client{ on_retry = function(info)
      observed[#observed + 1] = info
      return #observed < 2
    end }
    local rooms, err = c:get_rooms()
    assert.is_nil(rooms)
    assert.are.equal("rate_limited", err.kind)
    assert.matches("vetoed", err.message)
    assert.are.equal(3, err.retry_after)
    assert.are.equal(2, #observed)
    assert.are.equal("rate_limited", observed[1].reason)
    assert.are.equal(2, observed[1].retry_after)
    assert.are.equal(1, #calls) -- the vetoed retry was never slept
  end)

  it("propagates an error raised in the sleep hook; the client stays usable", function()
    m:script{ { status = 429, headers = { ["Retry-After"] = "1" } } }
    local fail = true
    local c = spark.new{ token = helper.TOKEN, base_url = m.base_url,
      sleep = function()
        if fail then error({ code = "boom" }) end
      end }
    local ok, e = pcall(c.get_rooms, c)
    assert.is_false(ok)
    assert.are.same({ code = "boom" }, e)
    fail = false
    local rooms = c:get_rooms()
    assert.is_table(rooms)
  end)

  it("propagates an error raised in on_retry", function()
    m:script{ { status = 429, headers = { ["Retry-After"] = "1" } } }
    local c = client{ on_retry = function() error("stop here", 0) end }
    assert.has_error(function() c:get_rooms() end, "stop here")
  end)

  describe("the gate", function()
    it("makes a later call on the same client wait out the Retry-After", function()
      m:script{ { status = 429, headers = { ["Retry-After"] = "1" } } }
      local calls = {}
      local c = spark.new{ token = helper.TOKEN, base_url = m.base_url,
        on_retry = function() return false end,
        sleep = function(s, info)
          calls[#calls + 1] = { seconds = s, info = info }
          return spark.sleep(s)
        end }
      local _, err = c:get_rooms()
      assert.are.equal("rate_limited", err.kind)
      assert.are.equal(0, #calls)
      local rooms, res = c:get_rooms()
      assert.is_table(rooms)
      assert.are.equal(1, #calls)
      assert.are.equal("gate", calls[1].info.reason)
      assert.is_true(calls[1].seconds > 0 and calls[1].seconds <= 1)
      assert.is_true(res.waited > 0)
      local log = m:stats().log
      assert.are.equal(2, #log)
      assert.are.equal(429, log[1].status)
      assert.is_true(log[2].t - log[1].t >= 1,
        "second request sent " .. (log[2].t - log[1].t) .. " s after the 429")
    end)

    it("fails fast when the gate outlasts max_wait", function()
      m:script{ { status = 429, headers = { ["Retry-After"] = "100" } } }
      local c, calls = client{ max_wait = 50 }
      local _, err = c:get_rooms()
      assert.are.equal(100, err.retry_after)
      local _, err2 = c:get_rooms()
      assert.are.equal("rate_limited", err2.kind)
      assert.is_true(err2.retry_after > 50)
      assert.are.equal(0, #calls)
      assert.are.equal(1, m:stats().requests)
    end)
  end)

  it("with the real default sleep, retries no sooner than Retry-After", function()
    m:script{ { status = 429, headers = { ["Retry-After"] = "1" } } }
    local c = spark.new{ token = helper.TOKEN, base_url = m.base_url }
    local rooms, res = c:get_rooms{ max = 1 }
    assert.is_table(rooms)
    assert.are.equal(2, res.attempts)
    local log = m:stats().log
    assert.are.equal(429, log[1].status)
    assert.are.equal(200, log[2].status)
    assert.is_true(log[2].t - log[1].t >= 1)
  end)

  describe("a yielding sleep hook", function()
    it("lets two coroutines share one client under a small scheduler", function()
      m:script{ { status = 429, headers = { ["Retry-After"] = "5" } } }
      local virtual_now, events = 0, {}
      -- The hook hands control back to the scheduler with its wake-up time.
      local c = spark.new{ token = helper.TOKEN, base_url = m.base_url,
        sleep = function(s) coroutine.yield(virtual_now + s) end }
      local tasks = {}
      local function spawn(name, fn)
        tasks[#tasks + 1] = { name = name, co = coroutine.create(fn), wake = 0 }
      end
      spawn("a", function()
        local rooms, res = c:get_rooms{ max = 3 }
        events[#events + 1] = "a done " .. #rooms .. " " .. res.attempts
      end)
      spawn("b", function()
        for i = 1, 3 do
          local rooms = c:get_rooms{ max = 2 }
          events[#events + 1] = "b " .. i .. " " .. #rooms
        end
      end)
      -- Run the runnable task with the earliest wake time until all finish.
      while #tasks > 0 do
        table.sort(tasks, function(x, y) return x.wake < y.wake end)
        local t = tasks[1]
        if t.wake > virtual_now then virtual_now = t.wake end
        local ok, wake = coroutine.resume(t.co)
        assert(ok, wake)
        if coroutine.status(t.co) == "dead" then
          table.remove(tasks, 1)
        else
          t.wake = wake
        end
      end
      -- a met the 429 and yielded until 5; b's first call met the gate and
      -- yielded until just before 5 (the gate opened when the 429 arrived),
      -- then the gate was open for b's later calls, and a retried last.
      assert.are.same({ "b 1 2", "b 2 2", "b 3 2", "a done 3 2" }, events)
      assert.are.equal(5, m:stats().requests)
    end)

    it("keeps the call's state across a yield while another call runs", function()
      m:script{ { status = 429, headers = { ["Retry-After"] = "2" } } }
      local c = spark.new{ token = helper.TOKEN, base_url = m.base_url,
        max_wait = 1000, sleep = function(s, info) coroutine.yield(s, info) end }
      local co = coroutine.create(function() return c:get_rooms{ max = 4 } end)
      local ok, s, info = coroutine.resume(co)
      assert.is_true(ok)
      assert.are.equal(2, s)
      assert.are.equal("rate_limited", info.reason)
      -- Meanwhile another client does its own work.
      local other = spark.new{ token = helper.TOKEN, base_url = m.base_url }
      assert.are.equal(7, #other:get_rooms{ max = 7 })
      local ok2, rooms, res = coroutine.resume(co)
      assert.is_true(ok2)
      assert.are.equal(4, #rooms)
      assert.are.equal(2, res.attempts)
      assert.are.equal("dead", coroutine.status(co))
    end)
  end)

  describe("transient failures", function()
    local core = require "spark.core"

    for _, status in ipairs{ 500, 502, 503, 504 } do
      it("retries " .. status .. " on GET with jittered backoff", function()
        m:script{ { status = status } }
        local c, calls = client()
        local rooms, res = c:get_rooms{ max = 2 }
        assert.are.equal(2, #rooms)
        assert.are.equal(2, res.attempts)
        assert.are.equal(1, #calls)
        assert.are.equal("server_error", calls[1].info.reason)
        assert.are.equal(status, calls[1].info.status)
        assert.is_true(calls[1].seconds >= 0 and calls[1].seconds < 0.5)
      end)
    end

    it("waits a 503's Retry-After instead of backing off", function()
      m:script{ { status = 503, headers = { ["Retry-After"] = "3" } } }
      local c, calls = client()
      assert.is_table((c:get_rooms()))
      assert.are.equal(3, calls[1].seconds)
      assert.are.equal("server_error", calls[1].info.reason)
    end)

    it("hands a 503 back once max_retries is spent, as an http error", function()
      m:script{ { status = 503 }, { status = 503 }, { status = 503 } }
      local c, calls = client{ max_retries = 2 }
      local _, err = c:get_rooms()
      assert.are.equal("http", err.kind)
      assert.are.equal(503, err.status)
      assert.are.equal(3, err.attempts)
      assert.are.equal(2, #calls)
      -- the ceilings double: uniform(0, 0.5), then uniform(0, 1)
      assert.is_true(calls[1].seconds < 0.5 and calls[2].seconds < 1)
    end)

    it("does not retry 501 or 4xx", function()
      m:script{ { status = 501 } }
      local c, calls = client()
      local _, err = c:get_rooms()
      assert.are.equal(501, err.status)
      assert.are.equal(0, #calls)
    end)

    it("retries a dropped connection on GET", function()
      m:script{ { action = "drop" }, { action = "reset" } }
      local c, calls = client()
      local rooms, res = c:get_rooms{ max = 1 }
      assert.are.equal(1, #rooms)
      assert.are.equal(3, res.attempts)
      assert.are.equal(2, #calls)
      assert.are.equal("network", calls[1].info.reason)
      assert.matches("^curl: %(%d+%)", calls[1].info.error)
    end)

    it("does not repeat a POST the server may have received", function()
      m:script{ { action = "drop" } }
      local c, calls = client()
      local url = assert(core.url(m.base_url, "/rooms"))
      local r = core.request(c, "POST", url, '{"title":"x"}', "application/json")
      assert.are.equal("network", r.kind)
      assert.are.equal(1, r.attempts)
      assert.are.equal(0, #calls)
    end)

    it("does not retry a 503 to a POST, unless marked idempotent", function()
      m:script{ { status = 503 }, { status = 503 } }
      local c, calls = client()
      local url = assert(core.url(m.base_url, "/rooms"))
      local r = core.request(c, "POST", url, "{}", "application/json")
      assert.are.equal(503, r.status)
      assert.are.equal(0, #calls)
      r = core.request(c, "POST", url, "{}", "application/json", { idempotent = true })
      assert.are.equal(2, r.attempts)
      assert.are.equal(1, #calls)
    end)

    it("retries a 429 to a POST (Webex did not process it)", function()
      m:script{ { status = 429, headers = { ["Retry-After"] = "1" } }, { status = 200, body = {} } }
      local c, calls = client()
      local url = assert(core.url(m.base_url, "/rooms"))
      local r = core.request(c, "POST", url, "{}", "application/json")
      assert.are.equal(200, r.status)
      assert.are.equal(1, #calls)
    end)

    it("retries a refused connection (nothing was sent) and then fails", function()
      local s = assert(require("socket").bind("127.0.0.1", 0))
      local _, port = s:getsockname()
      s:close()
      local calls = {}
      local c = spark.new{ token = helper.TOKEN, max_retries = 2,
        base_url = "http://127.0.0.1:" .. port .. "/v1",
        sleep = function(sec, info) calls[#calls + 1] = { seconds = sec, info = info } end }
      local _, err = c:get_rooms()
      assert.are.equal("network", err.kind)
      assert.are.equal(3, err.attempts)
      assert.are.equal(2, #calls)
    end)
  end)
end)
