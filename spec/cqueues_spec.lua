-- spark.cqueues: a Retry-After wait yields to the cqueues controller, which
-- runs another client's calls meanwhile. Against spark-mock.
local helper = require "helper"

local has_cqueues = pcall(require, "cqueues")

describe("spark.cqueues", function()
  if not has_cqueues then
    it("needs cqueues", function()
      pending("cqueues is not installed (Debian: lua-cqueues); spark.cqueues is not tested")
    end)
    return
  end

  local cqueues = require "cqueues"
  local condition = require "cqueues.condition"
  local scq = require "spark.cqueues"
  local spark = require "spark"

  local m
  setup(function() m = helper.start_mock{} end)
  teardown(function() m:stop() end)
  before_each(function() m:reset() end)

  local function opts(extra)
    local o = { token = helper.TOKEN, base_url = m.base_url }
    for k, v in pairs(extra or {}) do o[k] = v end
    return o
  end

  it("gives sleep and new, new being spark.new with that hook", function()
    assert.is_function(scq.sleep)
    local client = scq.new(opts())
    finally(function() client:close() end)
    assert.matches("^spark.client", tostring(client))
    assert.has_error(function() scq.new(opts{ sleep = spark.sleep }) end,
      "spark.cqueues.new: option 'sleep' is spark.cqueues.sleep here;"
      .. " use spark.new for another hook")
    assert.has_error(function() scq.new(opts{ nope = 1 }) end, "spark.new: unknown option 'nope'")
  end)

  it("sleeps the whole time and then returns nothing, inside and outside a controller",
    function()
      local before = spark.monotime()
      assert.are.equal(0, select("#", scq.sleep(0.01)))
      assert.is_true(spark.monotime() - before >= 0.01)
      local cq = cqueues.new()
      local n
      cq:wrap(function()
        local t = spark.monotime()
        n = select("#", scq.sleep(0.01))
        assert(spark.monotime() - t >= 0.01, "woke early without saying so")
      end)
      assert(cq:loop())
      assert.are.equal(0, n)
    end)

  it("lets another coroutine's client run while one waits out a 429", function()
    m:script{ { status = 429, headers = { ["Retry-After"] = "2" } } }
    local cq = cqueues.new()
    local got_429 = condition.new()
    local a = {}
    local b = { counts = {} }
    local a_waiting = false

    cq:wrap(function()
      local client = scq.new(opts{
        on_retry = function() a_waiting = true; got_429:signal() end,
      })
      a.rooms, a.res = client:get_rooms{ max = 3 }
      a.done_while_b = b.done
      client:close()
    end)
    cq:wrap(function()
      -- B starts once A has its 429 (A sent first, so it met the script)
      if not a_waiting then got_429:wait(10) end
      assert(a_waiting, "A never met its 429")
      local client = scq.new(opts())
      for i = 1, 10 do
        local rooms, res = client:get_rooms{ type = "group", max = 2 }
        assert(rooms, tostring(res))
        b.counts[i] = #rooms
      end
      b.done = true
      client:close()
    end)
    assert(cq:loop())

    -- A waited its Retry-After through the hook, then completed
    assert.is_truthy(a.rooms, tostring(a.res))
    assert.are.equal(1, #a.res.retries)
    assert.are.equal("rate_limited", a.res.retries[1].reason)
    assert.are.equal(2, a.res.retries[1].delay)
    assert.are.equal(3, #a.rooms)
    assert.are.equal(2, a.res.attempts)
    assert.are.equal(2, a.res.waited)
    assert.is_true(a.done_while_b == true, "A finished before B's calls")
    assert.are.same({ 2, 2, 2, 2, 2, 2, 2, 2, 2, 2 }, b.counts)

    -- the simulator saw A's 429, then all 10 of B's requests, then A's retry
    local log = m:stats().log
    helper.assert_b_between_a(log)
    assert.is_true(log[1].conn ~= log[2].conn)
  end)

  it("returns the unslept seconds when cqueues wakes it early", function()
    -- a controller that cuts the wait short: cqueues.sleep returns at once
    local real = cqueues.sleep
    cqueues.sleep = function() end
    local ok, left = pcall(scq.sleep, 0.5)
    cqueues.sleep = real
    assert.is_true(ok, left)
    assert.is_number(left)
    assert.is_true(left > 0.4 and left <= 0.5)
  end)

  it("makes the client wait the rest when woken early, so nothing is sent early", function()
    m:script{ { status = 429, headers = { ["Retry-After"] = "1" } } }
    local real = cqueues.sleep
    local calls = {}
    -- wakes after half of what is asked, at most 3 times, then sleeps fully
    cqueues.sleep = function(s)
      calls[#calls + 1] = s
      return real(#calls <= 3 and s / 2 or s)
    end
    finally(function() cqueues.sleep = real end)
    local cq = cqueues.new()
    local rooms, res
    cq:wrap(function()
      local client = scq.new(opts())
      rooms, res = client:get_rooms{ max = 1 }
      client:close()
    end)
    assert(cq:loop())
    cqueues.sleep = real
    assert.is_truthy(rooms, tostring(res))
    assert.are.equal(2, res.attempts)
    assert.is_true(#calls >= 4, "the hook did not report the rest")
    assert.are.equal(1, calls[1])
    for i = 2, #calls do assert.is_true(calls[i] < calls[i - 1]) end
    local log = m:stats().log
    assert.are.equal(2, #log)
    assert.is_true(log[2].t - log[1].t >= 1, "the retry went out before Retry-After")
  end)
end)
