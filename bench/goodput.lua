-- bench/goodput.lua: one client strategy against a rate-limited server for
-- a while (bench/run.lua starts it once per strategy and server).
--
--   lua5.4 bench/goodput.lua STRATEGY BASE_URL SECONDS TOKEN [RATE BURST]
--
-- It calls GET BASE_URL/rooms?max=100 in a loop, one call after the other,
-- until SECONDS have passed since its start (a call in progress then, its
-- waits included, is finished), and prints what it saw:
-- {"ok":N,"rate_limited":N,"errors":N,"calls":N,"elapsed":S}. The server's
-- own log is what bench/run.lua judges; this count is a cross-check.
--
-- Strategies:
--   gate      spark.new{} as is: a 429 closes the client's gate until
--             Retry-After has passed (spark.sleep), the call is retried
--   pacing    spark.new{ rate = RATE, burst = BURST }: GCRA pacing, plus the
--             gate for any 429 that still comes
--   adaptive  spark.new{ rate = "adaptive" }: pacing learnt from the 429s
--   naive     the original example's strategy, without spark: luasocket's
--             socket.http.request (a new connection each time) as fast as
--             it goes; on a 429 sleep Retry-After (socket.sleep), repeat
-- TOKEN is a dummy the server keys its limit on. Loopback only.

local dir = (arg and arg[0] or ""):match("^(.*)/bench/[^/]*$") or "."
package.path = dir .. "/lua/?.lua;" .. dir .. "/lua/?/init.lua;" .. package.path
package.cpath = dir .. "/build/?.so;" .. package.cpath

local system = require "system"

local strategy, base_url, seconds, token = arg[1], arg[2], tonumber(arg[3] or ""), arg[4]
local rate, burst = tonumber(arg[5] or ""), tonumber(arg[6] or "")

local STRATEGIES = { gate = true, pacing = true, adaptive = true, naive = true }
if not (STRATEGIES[strategy] and base_url and base_url:match("^http://") and seconds
    and seconds > 0 and token and (strategy ~= "pacing" or (rate and burst))) then
  io.stderr:write("usage: lua5.4 bench/goodput.lua gate|pacing|adaptive|naive BASE_URL ",
    "SECONDS TOKEN [RATE BURST]\n")
  os.exit(2)
end

local counts = { ok = 0, rate_limited = 0, errors = 0, calls = 0 }
local t0 = system.monotime()
local stop_at = t0 + seconds

if strategy == "naive" then
  local http = require "socket.http"
  local ltn12 = require "ltn12"
  local socket = require "socket"
  local cjson = require("cjson").new()
  local url = base_url .. "/rooms?max=100"
  local headers = { authorization = "Bearer " .. token, accept = "application/json" }
  while system.monotime() < stop_at do
    local out = {}
    local ok, status, h = http.request{ url = url, headers = headers,
      sink = ltn12.sink.table(out) }
    counts.calls = counts.calls + 1
    if ok and status == 200 then
      counts.ok = counts.ok + 1
      cjson.decode(table.concat(out))
    elseif ok and status == 429 then
      counts.rate_limited = counts.rate_limited + 1
      local ra = tonumber(h["retry-after"] or "") or 15
      socket.sleep(ra)
    else
      counts.errors = counts.errors + 1
      io.stderr:write("goodput naive: ", tostring(status), "\n")
      socket.sleep(0.1)
    end
  end
else
  local spark = require "spark"
  local opts = {
    token = token, base_url = base_url,
    on_retry = function(info)
      if info.reason == "rate_limited" then counts.rate_limited = counts.rate_limited + 1 end
    end,
  }
  if strategy == "pacing" then
    opts.rate, opts.burst = rate, burst
  elseif strategy == "adaptive" then
    opts.rate = "adaptive"
  end
  local client = spark.new(opts)
  local params = { max = 100 }
  while system.monotime() < stop_at do
    local rooms, res = client:get_rooms(params)
    counts.calls = counts.calls + 1
    if rooms then
      counts.ok = counts.ok + 1
    else
      counts.errors = counts.errors + 1
      io.stderr:write("goodput ", strategy, ": ", tostring(res), "\n")
    end
  end
  client:close()
end

print(('{"ok":%d,"rate_limited":%d,"errors":%d,"calls":%d,"elapsed":%.6f}'):format(
  counts.ok, counts.rate_limited, counts.errors, counts.calls, system.monotime() - t0))
