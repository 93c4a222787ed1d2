-- spark-poll, the command (run as `lua5.4 lua/spark-poll` from the root with
-- LUA_PATH unset, against spark-mock), and spark.poll, its library.
local helper = require "helper"
local poll = require "spark.poll"
local socket = require "socket"

local SECRET = "poll-spec-secret-7f3a9c"   -- the token of most runs
local TOKENS = { SECRET, helper.TOKEN }     -- never printed

local function quote(s)
  return "'" .. (tostring(s):gsub("'", "'\\''")) .. "'"
end

local function read_file(name)
  local f = assert(io.open(name, "r"))
  local s = f:read("a")
  f:close()
  return s
end

local function write_file(text)
  local name = os.tmpname()
  local f = assert(io.open(name, "w"))
  f:write(text)
  f:close()
  return name
end

-- Asserts that no token appears in any of the texts.
local function no_token(tokens, ...)
  for _, text in ipairs{ ... } do
    for _, token in ipairs(tokens) do
      assert.is_nil(text:find(token, 1, true), "a token was printed: " .. text)
    end
  end
end

local function lines(text)
  local t = {}
  for l in text:gmatch("[^\n]+") do t[#t + 1] = l end
  return t
end

-- The text summary on stderr, as a table (nil when there is none).
local function summary_of(err)
  local reason, requests, ok, rl, errors, slept, paused, elapsed, rate = err:match(
    "spark%-poll: summary %(([^)]*)%): (%d+) requests, (%d+) 2xx, (%d+) 429, "
    .. "(%d+) other errors; slept (%S+) s, paused (%S+) s, elapsed (%S+) s, (%S+) requests/s")
  if not reason then return nil end
  return { reason = reason, requests = tonumber(requests), ok = tonumber(ok),
    rate_limited = tonumber(rl), errors = tonumber(errors), slept = slept,
    paused = paused, elapsed = tonumber(elapsed), rate = tonumber(rate) }
end

local RESPONSE = "^(%d%d%d) %d+%.%d%d%d (ROUTER_%x+)$"

describe("spark-poll", function()
  local m
  setup(function() m = helper.start_mock{ "--token", SECRET } end)
  teardown(function() m:stop() end)
  before_each(function() m:reset() end)

  -- The command line: env without the caller's variables, plus `env`.
  local function command(args, env)
    local words = { "env", "-u", "LUA_PATH", "-u", "LUA_CPATH", "-u", "WEBEX_ACCESS_TOKEN",
      "-u", "SPARK_ACCESS_TOKEN", "-u", "SPARK_BASE_URL" }
    local names = {}
    for name in pairs(env) do names[#names + 1] = name end
    table.sort(names)
    for _, name in ipairs(names) do words[#words + 1] = quote(name .. "=" .. env[name]) end
    words[#words + 1] = helper.lua
    words[#words + 1] = "lua/spark-poll"
    for _, a in ipairs(args) do words[#words + 1] = quote(a) end
    return table.concat(words, " ")
  end

  local function default_env(env)
    local e = { WEBEX_ACCESS_TOKEN = SECRET, SPARK_BASE_URL = m.base_url }
    for k, v in pairs(env or {}) do e[k] = v or nil end
    return e
  end

  -- Runs the command: stdout, stderr, exit code. env: overrides of the
  -- default variables (false removes one).
  local function run(args, env)
    env = default_env(env)
    local errfile = os.tmpname()
    local pipe = assert(io.popen(command(args, env) .. " 2>" .. quote(errfile), "r"))
    local out = pipe:read("a")
    local _, how, code = pipe:close()
    local err = read_file(errfile)
    os.remove(errfile)
    assert.are.equal("exit", how)
    no_token({ SECRET, helper.TOKEN, env.WEBEX_ACCESS_TOKEN }, out, err)
    return out, err, code
  end

  local function assert_matches_stats(s)
    local stats = m:stats()
    assert.are.equal(stats.requests, s.requests)
    assert.are.equal(stats.by_status["200"] or 0, s.ok)
    assert.are.equal(stats.by_status["429"] or 0, s.rate_limited)
    assert.are.equal(stats.requests - s.ok - s.rate_limited, s.errors)
  end

  it("prints one line per response: status, unix time in ms, TrackingID", function()
    local out, err, code = run{ "--count", "3" }
    assert.are.equal(0, code, err)
    local l = lines(out)
    assert.are.equal(3, #l, out)
    local ids = {}
    for _, s in ipairs(l) do
      local status, id = s:match(RESPONSE)
      assert.are.equal("200", status, s)
      assert.is_nil(ids[id], "TrackingIDs repeat")
      ids[id] = true
    end
    local s = summary_of(err)
    assert.is_table(s, err)
    assert.are.same({ "count reached", 3, 3, 0, 0 },
      { s.reason, s.requests, s.ok, s.rate_limited, s.errors })
    assert_matches_stats(s)
    -- integers as integers
    assert.is_nil(err:find("%d%.0[ ,;]"), err)
    assert.matches("polling " .. m.base_url .. "/rooms for 3 polls", err, 1, true)
  end)

  it("--count 5 gives exactly 5 response lines", function()
    local out, err, code = run{ "--count", "5", "--max", "3", "--type", "group",
      "--sort-by", "lastactivity" }
    assert.are.equal(0, code, err)
    local l = lines(out)
    assert.are.equal(5, #l, out)
    for _, s in ipairs(l) do assert.matches(RESPONSE, s) end
    local stats = m:stats()
    assert.are.equal(5, stats.requests)
    assert.are.equal("max=3&sortBy=lastactivity&type=group", stats.log[1].query)
  end)

  it("waits out a 429 with a line, progress lines, then goes on", function()
    m:script{ { status = 429, headers = { ["Retry-After"] = "2" } } }
    local out, err, code = run{ "--count", "2", "--progress-every", "1" }
    assert.are.equal(0, code, err)
    local l = lines(out)
    assert.are.equal(4, #l, out)
    local status, id =
      l[1]:match("^(%d%d%d) %d+%.%d%d%d (ROUTER_%x+) sleeping 2 s %(Retry%-After%)$")
    assert.are.equal("429", status, l[1])
    assert.are.equal(m:stats().log[1].tracking_id, id)
    assert.are.equal("asleep for 1 more seconds", l[2])
    assert.matches("^200 ", l[3])
    assert.matches(RESPONSE, l[3])
    assert.matches(RESPONSE, l[4])
    local s = summary_of(err)
    assert.are.same({ 3, 2, 1, 0, "2" }, { s.requests, s.ok, s.rate_limited, s.errors, s.slept })
    assert_matches_stats(s)
  end)

  it("counts retried server errors and 429s as the simulator does", function()
    -- poll 1: 503 retried, 200; poll 2: 429 waited, 200; poll 3: 200;
    -- poll 4: 500 retried, 500 handed back (--max-retries 1)
    m:script{
      { status = 503 }, {},
      { status = 429, headers = { ["Retry-After"] = "0" } }, {},
      {},
      { status = 500 }, { status = 500 },
    }
    local out, err, code = run{ "--count", "4", "--max-retries", "1" }
    assert.are.equal(1, code, err)
    local l = lines(out)
    assert.matches("^503 %d+%.%d%d%d ROUTER_%x+ retrying in %S+ s %(server_error%)$", l[1])
    assert.matches(RESPONSE, l[2])
    assert.matches("^429 .* sleeping 0 s %(Retry%-After%)$", l[3])
    assert.matches(RESPONSE, l[4])
    assert.matches(RESPONSE, l[5])
    assert.matches("^500 .* retrying in", l[6])
    assert.matches("^500 %d+%.%d%d%d ROUTER_%x+$", l[7])
    assert.are.equal(7, #l, out)
    assert.matches("spark%-poll: spark: http: .*HTTP 500", err)
    local s = summary_of(err)
    assert.are.same({ "stopped on an error", 7, 3, 1, 3 },
      { s.reason, s.requests, s.ok, s.rate_limited, s.errors })
    assert_matches_stats(s)
  end)

  it("stops on 401 with the error on stderr and exit 1", function()
    local out, err, code = run({ "--count", "3" }, { WEBEX_ACCESS_TOKEN = "wrong-token-0042" })
    assert.are.equal(1, code)
    local id = m:stats().log[1].tracking_id
    assert.are.same({ "401 " }, { out:match("^401 ") })
    assert.matches("^401 %d+%.%d%d%d " .. id .. "\n$", out)
    assert.matches("spark%-poll: spark: http: .*HTTP 401, TrackingID " .. id, err)
    local s = summary_of(err)
    assert.are.same({ "stopped on an error", 1, 0, 0, 1 },
      { s.reason, s.requests, s.ok, s.rate_limited, s.errors })
  end)

  it("gives up when Retry-After exceeds --max-wait (exit 1)", function()
    m:script{ { status = 429, headers = { ["Retry-After"] = "100" } } }
    local out, err, code = run{ "--max-wait", "10" }
    assert.are.equal(1, code, err)
    assert.matches("^429 %d+%.%d%d%d ROUTER_%x+\n$", out)
    assert.matches("spark%-poll: spark: rate_limited: .*Retry%-After 100 s", err)
    assert.are.equal(1, summary_of(err).rate_limited)
  end)

  it("reports a network failure (exit 1)", function()
    -- a port nobody listens on: bound, then closed
    local sock = assert(socket.bind("127.0.0.1", 0))
    local _, port = sock:getsockname()
    sock:close()
    local out, err, code = run({ "--max-retries", "0" },
      { SPARK_BASE_URL = "http://127.0.0.1:" .. port .. "/v1" })
    assert.are.equal(1, code, err)
    assert.are.equal("", out)
    assert.matches("spark%-poll: spark: network: ", err)
    local s = summary_of(err)
    assert.are.same({ 1, 0, 1 }, { s.requests, s.ok, s.errors })
  end)

  it("--json prints one object per event, with the same facts", function()
    m:script{ { status = 429, headers = { ["Retry-After"] = "1" } } }
    local out, err, code = run{ "--json", "--count", "2", "--progress-every", "0.5" }
    assert.are.equal(0, code, err)
    local events, types = {}, {}
    for _, l in ipairs(lines(out)) do
      local e = helper.json(l)
      events[#events + 1] = e
      types[#types + 1] = e.type
    end
    assert.are.same({ "start", "rate_limited", "asleep", "response", "response", "summary" }, types)
    local log = m:stats().log
    local rl = events[2]
    assert.are.same({ 429, 1, 1, log[1].tracking_id },
      { rl.status, rl.retry_after, rl.delay, rl.tracking_id })
    assert.are.equal(0.5, events[3].remaining)
    for i = 4, 5 do
      assert.are.equal(200, events[i].status)
      assert.are.equal(log[i - 2].tracking_id, events[i].tracking_id)
    end
    for i = 2, 5 do
      assert.is_number(events[i].time)
      assert.matches("^%d+%.?%d?%d?%d?$", tostring(events[i].time))
    end
    local s = events[6]
    assert.are.same({ "count", 0, 3, 2, 1, 0, 2, 1 },
      { s.reason, s.exit_code, s.requests, s.ok, s.rate_limited, s.errors, s.polls, s.slept })
    assert_matches_stats(s)
    -- integers as integers in the JSON text, and nothing of it on stderr
    assert.matches('"requests":3[,}]', out)
    assert.is_nil(out:find('":%d+%.0[,}]'), out)
    assert.are.equal("", err)
  end)

  it("--json reports an error as an event too", function()
    local out, err, code = run({ "--json", "--count", "2" },
      { WEBEX_ACCESS_TOKEN = "wrong-token-0042" })
    assert.are.equal(1, code, err)
    local l = lines(out)
    assert.are.equal(3, #l, out)
    local e, s = helper.json(l[2]), helper.json(l[3])
    assert.are.same({ "error", "http", 401, m:stats().log[1].tracking_id },
      { e.type, e.kind, e.status, e.tracking_id })
    assert.are.same({ "summary", "error", 1, 1, 1 },
      { s.type, s.reason, s.exit_code, s.requests, s.errors })
    assert.matches("spark%-poll: spark: http: .*HTTP 401", err)
  end)

  it("--quiet prints the summary only", function()
    local out, err, code = run{ "--quiet", "--count", "2" }
    assert.are.equal(0, code, err)
    assert.are.equal("", out)
    assert.are.equal(1, #lines(err), err)
    assert.are.equal(2, summary_of(err).requests)
  end)

  it("--duration bounds the run", function()
    local out, err, code = run{ "--duration", "0.3", "--interval", "0.05" }
    assert.are.equal(0, code, err)
    local s = summary_of(err)
    assert.are.equal("duration over", s.reason)
    assert.are.equal(#lines(out), s.requests)
    assert_matches_stats(s)
  end)

  it("--duration: a wait that would outlast it ends the run at once", function()
    m:script{ { status = 429, headers = { ["Retry-After"] = "60" } } }
    local out, err, code = run{ "--duration", "30" }
    assert.are.equal(0, code, err)
    assert.matches("sleeping 60 s", out)
    local s = summary_of(err)
    assert.are.same({ "duration over", 1, 1 }, { s.reason, s.requests, s.rate_limited })
    assert.matches("the wait of 60 s would outlast the duration", err, 1, true)
    assert.is_true(s.elapsed < 30)
  end)

  it("says when it runs until interrupted", function()
    -- ends at once on the 401, but says so first
    local _, err, code = run({}, { WEBEX_ACCESS_TOKEN = "wrong-token-0042" })
    assert.are.equal(1, code)
    assert.matches("until interrupted", err)
  end)

  it("reads the token from --token-file (first line, trimmed)", function()
    local file = write_file("  " .. SECRET .. " \nsecond line\n")
    local out, err, code = run({ "--token-file", file, "--count", "1" },
      { WEBEX_ACCESS_TOKEN = false })
    os.remove(file)
    assert.are.equal(0, code, err)
    assert.matches(RESPONSE, lines(out)[1])
  end)

  describe("usage errors exit 2", function()
    local cases = {
      { { "--max", "0" }, "--max must be an integer from 1 to 1000" },
      { { "--max", "1001" }, "--max must be an integer from 1 to 1000" },
      { { "--max", "ten" }, '--max must be an integer from 1 to 1000 (got "ten")' },
      { { "--type", "public" }, "--type must be one of direct, group" },
      { { "--sort-by", "name" }, "--sort-by must be one of id, lastactivity, created" },
      { { "--count", "0" }, "must be an integer >= 1" },
      { { "--duration=-1" }, "must be a number > 0" },
      { { "--progress-every", "0" }, "must be a number > 0" },
      { { "--max-retries", "1.5" }, "must be an integer >= 0" },
      { { "--frobnicate" }, "unknown option '--frobnicate'" },
      { { "--base-url", "http://example.com/v1" }, "URL must use https" },
      { { "--token-file", "/nonexistent/token" }, "--token-file: cannot read it" },
    }
    for _, case in ipairs(cases) do
      it(table.concat(case[1], " "), function()
        local out, err, code = run(case[1])
        assert.are.equal(2, code, err)
        assert.are.equal("", out)
        assert.matches("Usage: spark-poll", err, 1, true)
        assert.matches(case[2], err, 1, true)
        assert.are.equal(0, m:stats().requests)
      end)
    end

    it("no token", function()
      local out, err, code = run({ "--count", "1" }, { WEBEX_ACCESS_TOKEN = false })
      assert.are.equal(2, code, err)
      assert.are.equal("", out)
      assert.matches("no access token: set WEBEX_ACCESS_TOKEN", err, 1, true)
    end)

    it("an empty token file", function()
      local file = write_file("\n")
      local _, err, code = run({ "--token-file", file }, { WEBEX_ACCESS_TOKEN = false })
      os.remove(file)
      assert.are.equal(2, code, err)
      assert.matches("holds no token", err, 1, true)
    end)
  end)

  it("ends at once on SIGINT during a long Retry-After, with the summary (130)", function()
    m:script{ { status = 429, headers = { ["Retry-After"] = "60" } } }
    local errfile = os.tmpname()
    -- popen runs sh -c: $$ is that shell, which exec turns into env, then lua5.4
    local pipe = assert(io.popen("echo $$; exec " .. command({}, default_env())
      .. " 2>" .. quote(errfile), "r"))
    local pid = assert(tonumber(pipe:read("l")))
    finally(function()
      os.execute("kill -KILL " .. pid .. " 2>/dev/null")
      os.remove(errfile)
    end)
    local first = pipe:read("l")
    assert.matches("^429 .* sleeping 60 s %(Retry%-After%)$", first)
    os.execute("kill -INT " .. pid)
    local rest = pipe:read("a")
    local _, how, code = pipe:close()
    local err = read_file(errfile)
    no_token(TOKENS, first, rest, err)
    assert.are.same({ "exit", 130 }, { how, code })
    assert.are.equal("", rest)
    local s = summary_of(err)
    assert.is_table(s, err)
    assert.are.same({ "interrupted", 1, 0, 1 }, { s.reason, s.requests, s.ok, s.rate_limited })
    assert.is_true(s.elapsed < 60, "it slept the whole Retry-After")
    assert.are.equal(1, m:stats().requests)
  end)
end)

describe("spark.poll", function()
  -- A base sleeper that records its calls and sleeps not at all; `lefts`
  -- gives the unslept seconds it reports, call by call.
  local function fake_sleep(lefts)
    local calls = {}
    return function(s)
      calls[#calls + 1] = s
      return (lefts or {})[#calls]
    end, calls
  end

  it("sleeps in chunks of progress_every, with progress events between them", function()
    local events = {}
    local sleep, calls = fake_sleep()
    local p = poll.new{ sleep = sleep, progress_every = 10,
      emit = function(e) events[#events + 1] = e end }
    assert.is_nil(p.sleep(25, { reason = "rate_limited" }))
    assert.are.same({ 10, 10, 5 }, calls)
    assert.are.same({ 15, 5 }, { events[1].remaining, events[2].remaining })
    assert.are.same({ "asleep", "rate_limited" }, { events[1].type, events[1].reason })
    assert.are.equal(25, p.slept)
  end)

  it("returns the unslept seconds when the base sleeper reports some", function()
    local sleep, calls = fake_sleep{ nil, 3 }
    local p = poll.new{ sleep = sleep, progress_every = 10, emit = function() end }
    assert.are.equal(8, p.sleep(25, { reason = "rate_limited" }))
    assert.are.same({ 10, 10 }, calls)
    assert.are.equal(17, p.slept)
  end)

  it("formats numbers: integers without a fraction, else at most 3 decimals", function()
    assert.are.same({ "12", "12", "1.5", "0.123", "2" }, {
      poll.format_number(12.0), poll.format_number(12), poll.format_number(1.5),
      poll.format_number(0.12345), poll.format_number(1.9999999) })
  end)

  describe("run", function()
    local m
    setup(function() m = helper.start_mock{} end)
    teardown(function() m:stop() end)

    it("drives a client made from options and returns the summary and code", function()
      m:script{ { status = 429, headers = { ["Retry-After"] = "7" } } }
      local events = {}
      local sleep, calls = fake_sleep()
      local summary, code = poll.run{
        client = { token = helper.TOKEN, base_url = m.base_url },
        params = { max = 2 }, count = 3, sleep = sleep,
        emit = function(e) events[#events + 1] = e end,
      }
      assert.are.equal(0, code)
      assert.are.same({ 7 }, calls)
      assert.are.same({ "count", 4, 3, 1, 0, 7 }, { summary.reason, summary.requests,
        summary.ok, summary.rate_limited, summary.errors, summary.slept })
      assert.are.equal(summary, events[#events])
      assert.are.equal("rate_limited", events[2].type)
      assert.are.equal(2, events[3].items)
    end)

    it("raises on bad options", function()
      assert.has_error(function() poll.new{ count = -1 } end,
        "spark.poll: option 'count' must be an integer >= 0")
      assert.has_error(function() poll.new{ progress_every = 0 } end,
        "spark.poll: option 'progress_every' must be a number > 0")
    end)
  end)
end)
