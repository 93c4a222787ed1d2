-- The fault matrix: a hostile or broken server against one call. Every
-- case ends within its deadline with the documented result; `make check`
-- runs this file under AddressSanitizer and valgrind, so nothing leaks.
local helper = require "helper"
local spark = require "spark"

local DEADLINE = 5 -- seconds; the hook below does not sleep, so waits take no time

describe("fault matrix", function()
  local m
  setup(function() m = helper.start_mock{} end)
  teardown(function() m:stop() end)
  before_each(function() m:reset() end)

  -- One call with a recording sleep hook that does not sleep.
  local function call(entries, opts)
    m:script(entries)
    local waits = {}
    opts = opts or {}
    opts.token = helper.TOKEN
    opts.base_url = m.base_url
    opts.deadline = opts.deadline or DEADLINE
    opts.max_retries = opts.max_retries or 0
    opts.sleep = function(s, info) waits[#waits + 1] = { seconds = s, reason = info.reason } end
    local c = spark.new(opts)
    local started = spark.monotime()
    local rooms, res = c:get_rooms{ max = 2 }
    local elapsed = spark.monotime() - started
    c:close()
    assert.is_true(elapsed < opts.deadline, ("the call took %.3f s"):format(elapsed))
    return rooms, res, waits
  end

  local failures = {
    { "a dropped connection", { { action = "drop" } }, "network" },
    { "a reset connection", { { action = "reset" } }, "network" },
    { "a truncated body", { { action = "truncate" } }, "network" },
    { "an answer later than timeout", { { action = "delay", seconds = 3 } }, "timeout",
      { timeout = 0.3 } },
    { "a body over max_body", {}, "too_large", { max_body = 100 } },
    { "a body that is not JSON", { { action = "badjson" } }, "decode" },
    { "a binary, non-UTF-8 body", { { status = 200, body = "\255\254\0\1" } }, "decode" },
    { "a JSON body that is not an object", { { status = 200, body = "[1, 2]" } }, "decode" },
    { "a 100 KB header line (over curl's limit)",
      { { status = 200, headers = { ["X-Big"] = string.rep("a", 100 * 1024) } } }, "network" },
    { "a redirect", { { status = 302, headers = { Location = "http://127.0.0.1:1/" } } }, "http" },
    { "an error status with a garbage body", { { status = 500, body = "<html>oops" } }, "http" },
  }
  for _, case in ipairs(failures) do
    local name, entries, kind, opts = case[1], case[2], case[3], case[4]
    it(name .. " gives kind " .. kind, function()
      local rooms, err = call(entries, opts)
      assert.is_nil(rooms)
      assert.is_true(spark.is_error(err))
      assert.are.equal(kind, err.kind)
      assert.is_string(tostring(err))
    end)
  end

  it("keeps non-UTF-8 bytes inside JSON strings as they are", function()
    local rooms = call{ { status = 200, body = '{"items":[{"title":"\255\254"}]}' } }
    assert.are.equal("\255\254", rooms[1].title)
  end)

  it("finds rel=next among 1000 Link entries", function()
    local links = {}
    for i = 1, 999 do links[i] = "<" .. m.base_url .. "/rooms?p=" .. i .. '>; rel="prev"' end
    links[1000] = "<" .. m.base_url .. '/rooms?max=2&cursor=zz>; rel="next"'
    local rooms, res = call{ { status = 200, headers = { Link = table.concat(links, ", ") } } }
    assert.are.equal(2, #rooms)
    assert.are.equal(m.base_url .. "/rooms?max=2&cursor=zz", res.next)
  end)

  describe("odd Retry-After values", function()
    local function http_date(epoch) return os.date("!%a, %d %b %Y %H:%M:%S GMT", epoch) end
    local now = os.time()
    local cases = {
      { "empty", { ["Retry-After"] = "" }, 15 },
      { "negative", { ["Retry-After"] = "-5" }, 15 },
      { "fractional", { ["Retry-After"] = "1.5" }, 1.5 },
      { "leading garbage", { ["Retry-After"] = "x5" }, 15 },
      { "trailing garbage", { ["Retry-After"] = "5s" }, 15 },
      { "a date in the past", { ["Retry-After"] = http_date(now - 3600) }, 0 },
      { "a future date, against a skewed Date header",
        { ["Retry-After"] = http_date(now + 7200 + 7), Date = http_date(now + 7200) }, 7 },
      { "two Retry-After fields", { { "Retry-After", "2" }, { "Retry-After", "3" } }, 3 },
      { "a Retry-After with spaces", { ["Retry-After"] = "  4  " }, 4 },
    }
    for _, case in ipairs(cases) do
      it(case[1] .. " waits " .. case[3] .. " s, then succeeds", function()
        -- a deadline that the wait fits in (the 15 s default too)
        local rooms, res, waits = call({ { status = 429, headers = case[2] } }, { deadline = 20 })
        assert.are.equal(2, #rooms, tostring(res))
        assert.are.equal(1, #waits)
        assert.are.equal("rate_limited", waits[1].reason)
        assert.are.equal(case[3], waits[1].seconds)
      end)
    end

    it("2^64 fails fast with rate_limited and retry_after, without sleeping", function()
      local rooms, err, waits = call{ { status = 429,
        headers = { ["Retry-After"] = "18446744073709551616" } } }
      assert.is_nil(rooms)
      assert.are.equal("rate_limited", err.kind)
      assert.is_true(err.retry_after >= 1e9)
      assert.are.equal(0, #waits)
    end)
  end)
end)
