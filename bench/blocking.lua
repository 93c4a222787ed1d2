-- bench/blocking.lua: how long one client:get_rooms call blocks its caller.
--
--   lua5.4 bench/blocking.lua [calls [max]]      (from the checkout; `make` first)
--
-- The sleep hook may yield, so a Retry-After wait never blocks a scheduler;
-- the HTTP transfer itself is a blocking curl_easy_perform, and so are the
-- JSON decoding and the facade around it. This measures that blocking time:
-- `calls` (200) calls of client:get_rooms{ max = max (100) } on one client
-- (keep-alive) against spark-mock on loopback (started here with --port 0,
-- no rate limit), after 10 warm-up calls. Each call is timed with
-- spark.monotime around it; that time is what a cqueues controller or a uv
-- loop stands still for. It includes the simulator's own time to answer (pure
-- Lua: it builds and encodes the page per request), which a real server
-- on the network replaces with its latency. A measurement, not a test.

local dir = (arg and arg[0] or ""):match("^(.*)/bench/[^/]*$") or "."
package.path = dir .. "/lua/?.lua;" .. dir .. "/lua/?/init.lua;" .. package.path
package.cpath = dir .. "/build/?.so;" .. package.cpath

local spark = require "spark"

local CALLS = math.tointeger(tonumber(arg[1] or "200"))
local MAX = math.tointeger(tonumber(arg[2] or "100"))
if not (CALLS and CALLS > 0 and MAX and MAX >= 1 and MAX <= 1000) then
  io.stderr:write("usage: lua5.4 bench/blocking.lua [calls (> 0) [max (1..1000)]]\n")
  os.exit(2)
end
local WARMUP = 10

local function shell_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

-- spark-mock on a free port: its PID (the shell's $$, which exec turns into
-- lua5.4) and base URL are its first two lines.
local function start_mock()
  local cmd = ("echo $$; LUA_PATH=%s; export LUA_PATH; exec lua5.4 %s --port 0 --rooms 1000")
    :format(shell_quote(dir .. "/lua/?.lua;;"), shell_quote(dir .. "/lua/spark-mock"))
  local pipe = assert(io.popen(cmd, "r"))
  local pid = tonumber(pipe:read("l"))
  local url = pipe:read("l")
  if not (pid and url and url:match("^http://")) then
    if pid then os.execute("kill " .. pid .. " 2>/dev/null") end
    pipe:close()
    error("spark-mock did not start: " .. tostring(url))
  end
  return {
    url = url,
    stop = function()
      os.execute("kill " .. pid .. " 2>/dev/null")
      pipe:close()
    end,
  }
end

local function percentile(sorted, p)
  local i = math.max(1, math.ceil(p / 100 * #sorted))
  return sorted[i]
end

local function bench(url)
  local client <close> = spark.new{ token = "mock-token", base_url = url }
  local params = { max = MAX }
  local rooms
  for _ = 1, WARMUP do rooms = assert(client:get_rooms(params)) end
  local times, total = {}, 0
  for i = 1, CALLS do
    local t0 = spark.monotime()
    local page, res = client:get_rooms(params)
    local dt = spark.monotime() - t0
    if not page then error(tostring(res)) end
    times[i] = dt
    total = total + dt
  end
  table.sort(times)
  local ms = function(s) return ("%.2f ms"):format(s * 1e3) end
  print(("blocking time of client:get_rooms{ max = %d } (pages of %d rooms), %d calls, "
    .. "one keep-alive client, spark-mock on loopback:"):format(MAX, #rooms, CALLS))
  print(("  p50 %s   p90 %s   p99 %s   max %s   mean %s   min %s"):format(
    ms(percentile(times, 50)), ms(percentile(times, 90)), ms(percentile(times, 99)),
    ms(times[#times]), ms(total / CALLS), ms(times[1])))
  print("  (" .. spark._VERSION .. ", " .. require("spark.core").curl_version:match("^%S+")
    .. ", " .. _VERSION .. ")")
end

local mock = start_mock()
local ok, err = pcall(bench, mock.url)
mock.stop()
if not ok then
  io.stderr:write("bench/blocking.lua: ", tostring(err), "\n")
  os.exit(1)
end
