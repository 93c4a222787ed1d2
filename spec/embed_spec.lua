-- examples/embed: a C host with the spark C module linked in statically and
-- a C sleep hook that yields to the host's loop. Runs build/examples/embed
-- (`make examples`, which `make test` runs) against spark-mock.
local helper = require "helper"

local ROOT = (debug.getinfo(1, "S").source:match("^@(.*)/spec/[^/]*$")) or "."
local BINARY = ROOT .. "/build/examples/embed"

local function shell_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

-- package.cpath without this checkout's build/ and ./ entries: the host
-- must find spark.core in itself, and cjson where the system keeps it.
local function system_cpath()
  local keep = {}
  for entry in package.cpath:gmatch("[^;]+") do
    if not (entry:find("build/", 1, true) or entry:match("^%./")) then
      keep[#keep + 1] = entry
    end
  end
  return table.concat(keep, ";")
end

-- Runs the host; returns its stdout and stderr lines, and its exit status.
local function run_host(env, args)
  local err_file = os.tmpname()
  local words = { "env", "-u", "SPARK_ACCESS_TOKEN", "-u", "LUA_PATH", "-u", "LUA_PATH_5_4",
    "-u", "LUA_CPATH_5_4", shell_quote("LUA_CPATH=" .. system_cpath()) }
  for name, value in pairs(env) do words[#words + 1] = shell_quote(name .. "=" .. value) end
  words[#words + 1] = shell_quote(BINARY)
  for _, a in ipairs(args or {}) do words[#words + 1] = shell_quote(a) end
  words[#words + 1] = "2>" .. shell_quote(err_file)
  local pipe = assert(io.popen(table.concat(words, " "), "r"))
  local out = pipe:read("a")
  local _, _, status = pipe:close()
  local f = assert(io.open(err_file))
  local err = f:read("a")
  f:close()
  os.remove(err_file)
  local lines = {}
  for line in out:gmatch("[^\n]+") do lines[#lines + 1] = line end
  return lines, err, status, out
end

local function find(lines, pattern, from)
  for i = from or 1, #lines do
    if lines[i]:find(pattern) then return i, lines[i] end
  end
end

describe("examples/embed", function()
  local f = io.open(BINARY)
  if not f then
    it("needs the binary", function()
      pending("build/examples/embed is missing: run `make examples` (make test builds it)")
    end)
    return
  end
  f:close()

  local m
  setup(function() m = helper.start_mock{} end)
  teardown(function() m:stop() end)
  before_each(function() m:reset() end)

  local function env(extra)
    local e = { WEBEX_ACCESS_TOKEN = helper.TOKEN, SPARK_BASE_URL = m.base_url }
    for k, v in pairs(extra or {}) do e[k] = v end
    return e
  end

  it("waits out a 429 in the host's own loop through its C sleep hook", function()
    m:script{ { status = 429, headers = { ["Retry-After"] = "2" } } }
    local lines, err, status, out = run_host(env{ EMBED_MAX = "7" })
    assert.are.equal(0, status, out .. err)
    -- the C hook yielded to the host with 2 s, reason rate_limited
    local yielded = find(lines, "^host: the script yielded: sleep 2 s %(rate_limited%)$")
    assert.is_number(yielded, out)
    -- the host kept control during the wait: at least one tick, before it
    -- resumed the script
    local resumed = find(lines, "^host: resuming the script$", yielded)
    assert.is_number(resumed, out)
    local tick = find(lines, "^host: tick while the script waits %(%d+ ms left%)$", yielded)
    assert.is_number(tick, out)
    assert.is_true(tick < resumed, out)
    -- the script's result
    local _, result = find(lines, "^script: ")
    assert.are.equal("script: 7 rooms, HTTP 200, 2 attempt(s), waited 2 s", result)
    assert.is_truthy(find(lines, "^host: the script finished$"), out)
    -- what the C hook recorded
    assert.are.equal("host: sleep hook called 1 time(s): 2 s (rate_limited)", lines[#lines])
    -- and the simulator: the 429, then the retry, not before Retry-After
    local log = m:stats().log
    assert.are.equal(2, #log)
    assert.are.equal(429, log[1].status)
    assert.are.equal(200, log[2].status)
    assert.are.equal("max=7", log[2].query)
    assert.is_true(log[2].t - log[1].t >= 2, "the retry went out before Retry-After")
  end)

  it("runs straight through without a 429 (the hook is never called)", function()
    local lines, err, status, out = run_host(env())
    assert.are.equal(0, status, out .. err)
    assert.is_nil(find(lines, "^host: tick"), out)
    local _, result = find(lines, "^script: ")
    assert.are.equal("script: 10 rooms, HTTP 200, 1 attempt(s), waited 0 s", result)
    assert.are.equal("host: sleep hook called 0 time(s)", lines[#lines])
  end)

  it("reports the script's error and exits with 1", function()
    local lines, err, status = run_host(env{ WEBEX_ACCESS_TOKEN = "not-the-token" })
    assert.are.equal(1, status)
    assert.matches("host: the script failed: spark: http: .*HTTP 401", err)
    assert.are.equal("host: sleep hook called 0 time(s)", lines[#lines])
  end)

  it("takes the script and the lua/ directory as arguments", function()
    local script = os.tmpname()
    finally(function() os.remove(script) end)
    local sf = assert(io.open(script, "w"))
    sf:write('local spark = require "spark"\n',
      'print("core from " .. (package.searchpath("spark.core", package.cpath) or "the host"))\n',
      'print("spark from " .. package.searchpath("spark", package.path))\n',
      'print(#assert(spark.new{ sleep = require("host").sleep }:get_rooms{ max = 3 }))\n')
    sf:close()
    local lines, err, status, out = run_host(env(), { script, ROOT .. "/lua" })
    assert.are.equal(0, status, out .. err)
    assert.is_truthy(find(lines, "^core from the host$"), out)
    assert.is_truthy(find(lines, "^spark from " .. ROOT:gsub("%p", "%%%0") .. "/lua/spark%.lua$"),
      out)
    assert.is_truthy(find(lines, "^3$"), out)
  end)
end)
