-- The retry policy beyond 429: jitter, deadlines, the retry budget, pacing
-- and rate-limit headers, against spark-mock.
local helper = require "helper"
local spark = require "spark"
local core = require "spark.core"

describe("retry policy", function()
  local m
  setup(function() m = helper.start_mock{} end)
  teardown(function() m:stop() end)
  before_each(function() m:reset() end)

  -- A client on a virtual clock: the sleep hook advances it.
  local function virtual(opts)
    local clock = { t = 1000, calls = {} }
    opts = opts or {}
    opts.token = helper.TOKEN
    opts.base_url = m.base_url
    opts.clock = function() return clock.t end
    opts.sleep = function(s, info)
      clock.calls[#clock.calls + 1] = { seconds = s, info = info }
      clock.t = clock.t + s
    end
    return spark.new(opts), clock
  end

  local function statuses(status, n)
    local list = {}
    for i = 1, n do list[i] = { status = status } end
    return list
  end

  describe("jitter", function()
    it("draws each backoff as random x min(30, 0.5 x 2^n)", function()
      m:script(statuses(503, 4))
      local draws = { 0.5, 0.25, 0.999, 0.1 }
      local i = 0
      local c, clock = virtual{ max_retries = 4, random = function()
        i = i + 1
        return draws[i]
      end }
      local rooms, res = c:get_rooms{ max = 1 }
      assert.is_table(rooms)
      assert.are.equal(5, res.attempts)
      local got = {}
      for k, call in ipairs(clock.calls) do got[k] = call.seconds end
      assert.are.same({ 0.25, 0.25, 0.999 * 2, 0.4 }, got)
      assert.are.equal(4, #res.retries)
      assert.are.equal("server_error", res.retries[1].reason)
      assert.are.equal(503, res.retries[1].status)
    end)

    it("stays within its bounds with the default generator", function()
      m:script(statuses(502, 3))
      local c, clock = virtual{ max_retries = 3 }
      assert.is_table((c:get_rooms()))
      for n, call in ipairs(clock.calls) do
        assert.is_true(call.seconds >= 0 and call.seconds < 0.5 * 2 ^ (n - 1))
      end
    end)

    it("rejects a random function that leaves [0, 1)", function()
      m:script{ { status = 503 } }
      local c = virtual{ random = function() return 1 end }
      assert.has_error(function() c:get_rooms() end,
        "spark: the random function returned 1.0 (expected [0, 1))")
    end)

    it("rejects a clock that returns no number", function()
      local c = spark.new{ token = helper.TOKEN, base_url = m.base_url,
                           clock = function() return "noon" end }
      assert.has_error(function() c:get_rooms() end,
        "spark: the clock function returned a string (expected a number)")
    end)
  end)

  describe("deadline", function()
    it("never sleeps past it, and hands the last answer back", function()
      m:script(statuses(503, 10))
      local c, clock = virtual{ max_retries = 10, deadline = 2,
                                random = function() return 0.9999 end }
      local start = clock.t
      local _, err = c:get_rooms()
      assert.are.equal("http", err.kind)
      assert.are.equal(503, err.status)
      -- 0.49995 + 0.9999 fit in 2 s; the next 1.9998 would not
      assert.are.equal(3, err.attempts)
      assert.is_true(clock.t - start <= 2)
    end)

    it("fails a 429 whose Retry-After ends past it, without sleeping", function()
      m:script{ { status = 429, headers = { ["Retry-After"] = "5" } } }
      local c, clock = virtual{ deadline = 3 }
      local _, err = c:get_rooms()
      assert.are.equal("rate_limited", err.kind)
      assert.are.equal(5, err.retry_after)
      assert.matches("deadline", err.message)
      assert.are.equal(0, #clock.calls)
    end)

    it("starts no attempt after it", function()
      m:script{ { status = 503 } }
      local clock
      local c
      c, clock = virtual{ deadline = 10, on_retry = function()
        clock.t = clock.t + 60 -- time passes while deciding
      end }
      local _, err = c:get_rooms()
      assert.are.equal("timeout", err.kind)
      assert.matches("deadline", err.message)
      assert.are.equal(1, err.attempts)
      assert.are.equal(1, m:stats().requests)
    end)

    it("can be given per call, overriding the client's", function()
      m:script{ { status = 429, headers = { ["Retry-After"] = "5" } } }
      local c, clock = virtual{ deadline = 100 }
      local _, err = c:get_rooms(nil, { deadline = 4 })
      assert.are.equal("rate_limited", err.kind)
      assert.are.equal(0, #clock.calls)
      assert.has_error(function() c:get_rooms(nil, { deadline = -1 }) end,
        "get_rooms: call option 'deadline' must be a number > 0")
      assert.has_error(function() c:get_rooms(nil, { dedline = 1 }) end,
        "get_rooms: unknown call option 'dedline'")
    end)

    it("caps each attempt's curl timeout by the time left", function()
      m:script{ { action = "delay", seconds = 3 } }
      local c = spark.new{ token = helper.TOKEN, base_url = m.base_url,
                           timeout = 30, deadline = 0.4 }
      local _, err = c:get_rooms()
      assert.are.equal("timeout", err.kind)
      assert.are.equal(1, err.attempts)
    end)
  end)

  describe("retries by method", function()
    it("retries a timeout waiting for the answer on GET only", function()
      m:script{ { action = "delay", seconds = 2 } }
      local c, clock = virtual{ timeout = 0.3 }
      local rooms, res = c:get_rooms{ max = 1 }
      assert.is_table(rooms)
      assert.are.equal(2, res.attempts)
      assert.are.equal("network", clock.calls[1].info.reason)

      m:script{ { action = "delay", seconds = 2 } }
      local url = assert(core.url(m.base_url, "/rooms"))
      local r = core.request(c, "POST", url, "{}", "application/json")
      assert.are.equal("timeout", r.kind)
      assert.are.equal(1, r.attempts)
    end)

    it("retries a truncated answer on GET", function()
      m:script{ { action = "truncate" } }
      local c = virtual()
      local rooms, res = c:get_rooms{ max = 3 }
      assert.are.equal(3, #rooms)
      assert.are.equal(2, res.attempts)
    end)
  end)

  describe("retry budget", function()
    it("stops a storm of 503s once the budget is gone", function()
      m:script(statuses(503, 150))
      local budgets = {}
      local c = virtual{ max_retries = 1000, max_wait = 1e9,
        random = function() return 0 end,
        on_retry = function(info) budgets[#budgets + 1] = info.budget end }
      local _, err = c:get_rooms()
      assert.are.equal(503, err.status)
      assert.are.equal(101, err.attempts) -- 500 tokens / 5 per retry
      assert.are.equal(100, #budgets)
      assert.are.equal(495, budgets[1])
      assert.are.equal(0, budgets[100])
      -- the next call gets no retry at all
      local _, err2 = c:get_rooms()
      assert.are.equal(1, err2.attempts)
      assert.are.equal(102, m:stats().requests)
      -- answers that need no retry refund the budget
      m:reset()
      local _, res = c:get_rooms{ max = 1 }
      assert.are.equal(1, res.budget)
    end)

    it("does not charge 429 waits", function()
      m:script{ { status = 429, headers = { ["Retry-After"] = "1" } } }
      local c = virtual()
      local _, res = c:get_rooms()
      assert.are.equal(500, res.budget)
      assert.are.equal(500, res.retries[1].budget)
    end)
  end)

  describe("pacing", function()
    it("at rate = 5 sends no two requests closer than GCRA allows", function()
      local reasons = {}
      local c = spark.new{ token = helper.TOKEN, base_url = m.base_url, rate = 5,
        burst = 2, sleep = function(s, info)
          reasons[#reasons + 1] = info.reason
          return spark.sleep(s)
        end }
      for _ = 1, 6 do assert.is_table((c:get_rooms{ max = 1 })) end
      local log = m:stats().log
      assert.are.equal(6, #log)
      -- GCRA(0.2 s, burst 2): request i may go at t0 + (i - 2) x 0.2 s. The
      -- simulator stamps arrivals, so allow 10 ms of loopback jitter.
      for i = 3, 6 do
        local earliest = log[1].t + (i - 2) * 0.2
        assert.is_true(log[i].t >= earliest - 0.01,
          ("request %d arrived %.4f s early"):format(i, earliest - log[i].t))
      end
      assert.are.equal(4, #reasons)
      for _, r in ipairs(reasons) do assert.are.equal("pacing", r) end
    end)

    it("counts pacing waits in res.waited, not against max_wait", function()
      local c = spark.new{ token = helper.TOKEN, base_url = m.base_url, rate = 1,
        max_wait = 0, sleep = function() end }
      assert.is_table((c:get_rooms{ max = 1 }))
      local rooms, res = c:get_rooms{ max = 1 }
      assert.is_table(rooms)
      assert.is_true(res.waited > 0 and res.waited <= 1)
    end)

    it("adaptive: paces after a 429, through the sleep hook #realtime", function()
      local rm = helper.start_mock{ "--rate", "20", "--burst", "20" }
      finally(function() rm:stop() end)
      local reasons = {}
      local c = spark.new{ token = helper.TOKEN, base_url = rm.base_url,
        rate = "adaptive", sleep = function(s, info)
          reasons[info.reason] = (reasons[info.reason] or 0) + 1
          return spark.sleep(s)
        end }
      for _ = 1, 40 do assert.is_table((c:get_rooms{ max = 1 })) end
      assert.is_true((reasons.rate_limited or 0) >= 1, "never rate limited")
      assert.is_true((reasons.pacing or 0) >= 1, "never paced")
    end)

    it("adaptive: RateLimit-Policy from the server sets a pace", function()
      m:script{ { status = 200, headers = { ["RateLimit-Policy"] = "2;w=1" } } }
      local reasons = {}
      local c = spark.new{ token = helper.TOKEN, base_url = m.base_url,
        rate = "adaptive", sleep = function(_, info) reasons[#reasons + 1] = info.reason end }
      assert.is_table((c:get_rooms{ max = 1 }))
      assert.is_table((c:get_rooms{ max = 1 }))
      assert.are.same({ "pacing" }, reasons)
    end)

    it("validates rate and burst", function()
      for _, bad in ipairs{ { rate = 0 }, { rate = "fast" }, { rate = -1 },
                            { rate = 5, burst = 0.5 }, { rate = "adaptive", burst = 2 } } do
        bad.token = helper.TOKEN
        bad.base_url = m.base_url
        assert.has_error(function() spark.new(bad) end)
      end
    end)
  end)

  describe("rate-limit headers", function()
    it("are parsed into res.rate_limit", function()
      m:script{ { status = 200, headers = { ["X-RateLimit-Limit"] = "100",
        ["X-RateLimit-Remaining"] = "5", ["X-RateLimit-Reset"] = "30" } } }
      local _, res = virtual():get_rooms{ max = 1 }
      assert.are.same({ limit = 100, remaining = 5, reset = 30 }, res.rate_limit)
    end)

    it("leave res.rate_limit nil when absent", function()
      local _, res = virtual():get_rooms{ max = 1 }
      assert.is_nil(res.rate_limit)
    end)

    it("never override Retry-After", function()
      m:script{ { status = 429, headers = { ["Retry-After"] = "2",
        ["RateLimit"] = "limit=100, remaining=0, reset=50" } } }
      local c, clock = virtual{ rate = "adaptive" }
      assert.is_table((c:get_rooms{ max = 1 }))
      assert.are.equal(2, clock.calls[1].seconds)
      assert.are.equal("rate_limited", clock.calls[1].info.reason)
    end)
  end)
end)
