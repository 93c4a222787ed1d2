-- bench/cost.lua: the Lua clients of the cost-per-request benchmark, one
-- process per measurement (bench/run.lua starts them).
--
--   lua5.4 bench/cost.lua spark     BASE_URL REQUESTS WARMUP
--   lua5.4 bench/cost.lua luasocket BASE_URL REQUESTS WARMUP
--   lua5.4 bench/cost.lua core|core_cjson|core_json_decode BASE_URL REQUESTS WARMUP
--   lua5.4 bench/cost.lua rss       BASE_URL CHECKPOINT...
--   lua5.4 bench/cost.lua sleep     COUNT SECONDS
--
-- spark: client:get_rooms{ max = 100 } on one client (one keep-alive
-- connection), the page decoded into Lua tables by spark. luasocket:
-- socket.http.request as users write it (its default: a new connection and
-- `Connection: close` per request) with the body decoded by lua-cjson, as
-- spark does. Both send WARMUP requests, then time REQUESTS requests and print
-- {"requests":N,"seconds":S,"items":I}. rss: one spark client, requests up
-- to each CHECKPOINT (a running count), printing VmRSS (kB, from
-- /proc/self/status) and Lua's heap (collectgarbage "count") at each:
-- {"points":[{"requests":N,"rss_kb":K,"lua_kb":L},...]}. sleep: how late
-- spark.sleep(SECONDS) returns, COUNT times: {"p50":S,"p99":S,"max":S,...}.
-- Dummy token only; loopback servers only. A measurement, not a test.

local dir = (arg and arg[0] or ""):match("^(.*)/bench/[^/]*$") or "."
package.path = dir .. "/lua/?.lua;" .. dir .. "/lua/?/init.lua;" .. package.path
package.cpath = dir .. "/build/?.so;" .. package.cpath

local TOKEN = "mock-token"

local mode, base_url = arg[1], arg[2]

-- core.request alone (spark's C loop, transport and result table); then
-- with cjson.decode of the body; then with spark.json_decode (cjson plus
-- spark's integer conversion walk). `spark` is the whole client:get_rooms.
local LADDER = { core = 1, core_cjson = 2, core_json_decode = 3 }

local function usage()
  io.stderr:write("usage: lua5.4 bench/cost.lua spark|luasocket|core|core_cjson|core_json_decode",
    " BASE_URL REQUESTS WARMUP\n",
    "       lua5.4 bench/cost.lua rss BASE_URL CHECKPOINT...\n",
    "       lua5.4 bench/cost.lua sleep COUNT SECONDS\n")
  os.exit(2)
end

if not (mode and (mode == "sleep" or base_url and base_url:match("^http://"))) then usage() end

local function count_arg(i)
  local n = math.tointeger(tonumber(arg[i] or ""))
  if not n or n < 0 then usage() end
  return n
end

local function result(t)
  local parts = {}
  for k, v in pairs(t) do
    parts[#parts + 1] = ("%q:%s"):format(k, type(v) == "number" and ("%.17g"):format(v) or v)
  end
  print("{" .. table.concat(parts, ",") .. "}")
end

local function rss_kb()
  local f = assert(io.open("/proc/self/status", "r"))
  local s = f:read("a")
  f:close()
  return math.tointeger(tonumber(s:match("VmRSS:%s*(%d+)")))
end

if mode == "sleep" then
  -- spark.sleep's own overshoot: COUNT sleeps of SECONDS each
  local spark = require "spark"
  local count, seconds = math.tointeger(tonumber(arg[2] or "")), tonumber(arg[3] or "")
  if not (count and count > 0 and seconds and seconds >= 0) then usage() end
  local over = {}
  for i = 1, count do
    local t0 = spark.monotime()
    spark.sleep(seconds)
    over[i] = spark.monotime() - t0 - seconds
  end
  table.sort(over)
  local function pct(p) return over[math.max(1, math.ceil(p / 100 * #over))] end
  result{ count = count, seconds = seconds, p50 = pct(50), p99 = pct(99), max = over[#over],
    min = over[1] }
  os.exit(0)
end

if LADDER[mode] then
  -- the layers of a get_rooms call, each on top of the one before
  local spark = require "spark"
  local core = require "spark.core"
  local cjson = require("cjson").new()
  local client = spark.new{ token = TOKEN, base_url = base_url }
  local url = base_url .. "/rooms?max=100"
  local step = LADDER[mode]
  local function one()
    local r = core.request(client, "GET", url)
    if r.status ~= 200 then error("core.request: " .. tostring(r.status or r.message), 0) end
    if step == 1 then return nil end
    local body = step == 2 and cjson.decode(r.body) or spark.json_decode(r.body)
    return body.items
  end
  local n, warmup = count_arg(3), count_arg(4)
  local rooms
  for _ = 1, warmup do rooms = one() end
  local t0 = spark.monotime()
  for _ = 1, n do rooms = one() end
  local t1 = spark.monotime()
  result{ requests = n, seconds = t1 - t0, items = rooms and #rooms or -1 }
  client:close()
elseif mode == "spark" or mode == "rss" then
  local spark = require "spark"
  local client = spark.new{ token = TOKEN, base_url = base_url }
  local params = { max = 100 }
  local function one()
    local rooms, res = client:get_rooms(params)
    if not rooms then error(tostring(res), 0) end
    return rooms
  end
  if mode == "spark" then
    local n, warmup = count_arg(3), count_arg(4)
    local rooms
    for _ = 1, warmup do rooms = one() end
    local t0 = spark.monotime()
    for _ = 1, n do rooms = one() end
    local t1 = spark.monotime()
    result{ requests = n, seconds = t1 - t0, items = rooms and #rooms or -1 }
  else
    local points, done = {}, 0
    for i = 3, #arg do
      local upto = count_arg(i)
      while done < upto do
        one()
        done = done + 1
      end
      collectgarbage("collect")
      points[#points + 1] = ('{"requests":%d,"rss_kb":%d,"lua_kb":%.0f}')
        :format(done, rss_kb(), collectgarbage("count"))
    end
    print('{"points":[' .. table.concat(points, ",") .. "]}")
  end
  client:close()
elseif mode == "luasocket" then
  local http = require "socket.http"
  local ltn12 = require "ltn12"
  local socket = require "socket"
  local cjson = require("cjson").new()
  local url = base_url .. "/rooms?max=100"
  local headers = { authorization = "Bearer " .. TOKEN, accept = "application/json" }
  local function one()
    local out = {}
    local ok, status = http.request{ url = url, headers = headers, sink = ltn12.sink.table(out) }
    if not ok or status ~= 200 then error("luasocket: " .. tostring(status), 0) end
    return cjson.decode(table.concat(out)).items
  end
  local n, warmup = count_arg(3), count_arg(4)
  local rooms
  for _ = 1, warmup do rooms = one() end
  local t0 = socket.gettime()
  for _ = 1, n do rooms = one() end
  local t1 = socket.gettime()
  result{ requests = n, seconds = t1 - t0, items = rooms and #rooms or -1 }
else
  usage()
end
