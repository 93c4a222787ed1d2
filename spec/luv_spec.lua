-- spark.luv: a Retry-After wait yields to the libuv loop, which runs
-- another client's calls meanwhile. Against spark-mock.
local helper = require "helper"

local has_luv = pcall(require, "luv")

describe("spark.luv", function()
  if not has_luv then
    it("needs luv", function()
      pending("luv is not installed (Debian: lua-luv); spark.luv is not tested")
    end)
    return
  end

  local uv = require "luv"
  local sluv = require "spark.luv"
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

  -- Runs fn in a new coroutine now; its errors go to `errors` (an error
  -- raised in a uv callback would end the process).
  local errors
  before_each(function() errors = {} end)
  local function spawn(fn)
    local co = coroutine.create(function()
      local ok, err = xpcall(fn, debug.traceback)
      if not ok then errors[#errors + 1] = err end
    end)
    assert(coroutine.resume(co))
    return co
  end

  -- Calls fn from a uv callback on the loop's next iteration.
  local function soon(fn)
    local t = uv.new_timer()
    t:start(0, 0, function()
      t:close()
      fn()
    end)
  end

  local function run_loop()
    uv.run()
    assert.are.same({}, errors)
    assert.is_false(uv.loop_alive())
  end

  it("gives sleep and new, new being spark.new with that hook", function()
    assert.is_function(sluv.sleep)
    local client = sluv.new(opts())
    finally(function() client:close() end)
    assert.matches("^spark.client", tostring(client))
    assert.has_error(function() sluv.new(opts{ sleep = spark.sleep }) end,
      "spark.luv.new: option 'sleep' is spark.luv.sleep here; use spark.new for another hook")
    assert.has_error(function() sluv.new(opts{ nope = 1 }) end, "spark.new: unknown option 'nope'")
  end)

  it("raises a clear error outside a coroutine", function()
    local ok, err = pcall(sluv.sleep, 0.01)
    assert.is_false(ok)
    assert.matches("spark.luv.sleep: call it inside a coroutine", err, 1, true)
    -- and a client call that has to wait says the same
    m:script{ { status = 429, headers = { ["Retry-After"] = "1" } } }
    local client = sluv.new(opts())
    finally(function() client:close() end)
    ok, err = pcall(client.get_rooms, client, { max = 1 })
    assert.is_false(ok)
    assert.matches("spark.luv.sleep: call it inside a coroutine", err, 1, true)
  end)

  it("sleeps the whole time on the loop and then returns nothing", function()
    local n, elapsed
    soon(function()
      spawn(function()
        local t = spark.monotime()
        n = select("#", sluv.sleep(0.02))
        elapsed = spark.monotime() - t
      end)
    end)
    run_loop()
    assert.are.equal(0, n)
    assert.is_true(elapsed >= 0.02)
  end)

  it("returns the unslept seconds when resumed early, and drops its timer", function()
    local result
    local co = spawn(function() result = table.pack(sluv.sleep(0.5)) end)
    assert.are.equal("suspended", coroutine.status(co))
    assert(coroutine.resume(co)) -- a foreign resume, before the timer
    assert.are.equal("dead", coroutine.status(co))
    assert.are.equal(1, result.n)
    assert.is_true(result[1] > 0.4 and result[1] <= 0.5)
    run_loop() -- the closed timer resumes nothing
  end)

  it("lets another coroutine's client run while one waits out a 429", function()
    m:script{ { status = 429, headers = { ["Retry-After"] = "2" } } }
    local a, b = {}, { counts = {} }
    soon(function()
      spawn(function()
        local client = sluv.new(opts{
          -- B starts once A has its 429 (A sent first, so it met the script)
          on_retry = function()
            soon(function()
              spawn(function()
                local cb = sluv.new(opts())
                for i = 1, 10 do
                  local rooms, res = cb:get_rooms{ type = "group", max = 2 }
                  assert(rooms, tostring(res))
                  b.counts[i] = #rooms
                  sluv.sleep(0) -- back to the loop between calls
                end
                b.done = true
                cb:close()
              end)
            end)
          end,
        })
        a.rooms, a.res = client:get_rooms{ max = 3 }
        a.done_while_b = b.done
        client:close()
      end)
    end)
    run_loop()

    -- A waited its Retry-After through the hook, then completed
    assert.is_truthy(a.rooms, tostring(a.res))
    assert.are.equal(3, #a.rooms)
    assert.are.equal(2, a.res.attempts)
    assert.are.equal(2, a.res.waited)
    assert.are.equal(1, #a.res.retries)
    assert.are.equal("rate_limited", a.res.retries[1].reason)
    assert.are.equal(2, a.res.retries[1].delay)
    assert.is_true(a.done_while_b == true, "A finished before B's calls")
    assert.are.same({ 2, 2, 2, 2, 2, 2, 2, 2, 2, 2 }, b.counts)

    -- the simulator saw A's 429, then all 10 of B's requests, then A's retry
    local log = m:stats().log
    helper.assert_b_between_a(log)
  end)

  it("waits the rest when a stale loop time fires the timer early", function()
    m:script{ { status = 429, headers = { ["Retry-After"] = "1" } } }
    -- the loop's cached time goes stale while a callback blocks; without
    -- update_time the timer then fires early, and the hook must say so
    local real = uv.update_time
    uv.update_time = function() end
    finally(function() uv.update_time = real end)
    local calls, rooms, res = {}, nil, nil
    soon(function()
      spark.sleep(0.3) -- a callback that blocks (as a long transfer would)
      spawn(function()
        local client = spark.new(opts{
          sleep = function(s, info)
            local left = sluv.sleep(s, info)
            calls[#calls + 1] = { s, left }
            return left
          end,
        })
        rooms, res = client:get_rooms{ max = 1 }
        client:close()
      end)
    end)
    run_loop()
    uv.update_time = real
    assert.is_truthy(rooms, tostring(res))
    assert.are.equal(2, res.attempts)
    assert.is_true(#calls >= 2, "the early wake-up was not reported")
    assert.are.equal(1, calls[1][1])
    assert.is_true(calls[1][2] > 0)
    assert.are.equal(calls[1][2], calls[2][1])
    local log = m:stats().log
    assert.are.equal(2, #log)
    assert.is_true(log[2].t - log[1].t >= 1, "the retry went out before Retry-After")
  end)
end)
