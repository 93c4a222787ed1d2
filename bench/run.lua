-- bench/run.lua: the whole benchmark (`make bench`, through bench/run.sh).
--
--   lua5.4 bench/run.lua [RESULTS_FILE]
--
-- Starts nginx (its own generated configuration, loopback, a temporary
-- directory) and spark-mock, then measures:
--   1. cost per request: sequential GET /v1/rooms?max=100 (a 100-room JSON
--      page) against nginx with spark and other clients, requests/s and the
--      ratio to a raw libcurl loop decoding with lua-cjson (bench/raw.c);
--   2. callgrind instructions per request of spark, the raw loops and the
--      layers between them;
--   3. goodput under a rate limit R: spark-mock --rate R and nginx
--      limit_req, for each client strategy (bench/goodput.lua), judged from
--      the servers' own logs; and the wake precision after a Retry-After;
--   4. memory: VmRSS of one client after 1k and 100k requests.
-- Prints the results as Markdown (progress on stderr) and writes them to
-- RESULTS_FILE too. Benchmarks are not tests: nothing here fails on a number.
--
-- Environment (defaults): BENCH_SECONDS (30) per goodput run, BENCH_RATE
-- (10, an integer: nginx's rate is r/s), BENCH_BURST (2 * rate),
-- BENCH_REQUESTS (5000) per cost measurement, BENCH_ROUNDS (3, the median
-- is kept), BENCH_CALLGRIND_REQUESTS (200), BENCH_MEM_REQUESTS (100000),
-- BENCH_WARMUP_SECONDS (5, left out of the steady goodput), BENCH_PARTS
-- (cost,callgrind,goodput,memory).

local root = (arg and arg[0] or ""):match("^(.*)/bench/[^/]*$") or "."
package.path = root .. "/bench/?.lua;" .. root .. "/lua/?.lua;" .. package.path
package.cpath = root .. "/build/?.so;" .. package.cpath

local lib = require "lib"
local system = require "system"
local core = require "spark.core"

local results_file = arg[1]

local SECONDS = lib.env_number("BENCH_SECONDS", 30)
local RATE = math.tointeger(lib.env_number("BENCH_RATE", 10))
if not RATE then error("BENCH_RATE must be an integer (nginx's limit_req rate is in r/s)") end
local BURST = math.tointeger(lib.env_number("BENCH_BURST", 2 * RATE))
if not BURST then error("BENCH_BURST must be an integer") end
local REQUESTS = math.tointeger(lib.env_number("BENCH_REQUESTS", 5000))
local ROUNDS = math.tointeger(lib.env_number("BENCH_ROUNDS", 3))
local CG_REQUESTS = math.tointeger(lib.env_number("BENCH_CALLGRIND_REQUESTS", 200))
local MEM_REQUESTS = math.tointeger(lib.env_number("BENCH_MEM_REQUESTS", 100000))
local WARMUP_SECONDS = lib.env_number("BENCH_WARMUP_SECONDS", 5)
local SLOW_REQUESTS = math.max(50, REQUESTS // 5) -- a new connection each: fewer
local PROC_REQUESTS = math.max(20, REQUESTS // 25) -- a new process each
local WARMUP = 50
-- spark-mock's Retry-After is max(1, ceil((1 - tokens) / rate)): 1 s for
-- any rate >= 1; nginx's is the configured "Retry-After: 1"
local RETRY_AFTER = 1

local PARTS = {}
for p in (os.getenv("BENCH_PARTS") or "cost,callgrind,goodput,memory"):gmatch("[^,%s]+") do
  PARTS[p] = true
end

local out = {}
local function emit(s)
  out[#out + 1] = s
  io.stdout:write(s, "\n")
  io.stdout:flush()
end

local function progress(...)
  io.stderr:write("bench: ", string.format(...), "\n")
end

local function fmt(v, pattern)
  if v == nil then return "–" end
  return (pattern or "%.2f"):format(v)
end

local function thousands(n)
  local s = ("%d"):format(math.floor(n + 0.5))
  return (s:reverse():gsub("(%d%d%d)", "%1,"):reverse():gsub("^,", ""))
end

local Q = lib.quote
local LUA = lib.lua .. " "
local RAW = Q(root .. "/build/bench/raw")
local COST = LUA .. Q(root .. "/bench/cost.lua")
local GOODPUT = LUA .. Q(root .. "/bench/goodput.lua")
local AUTH = "-H 'Authorization: Bearer " .. lib.TOKEN .. "' -H 'Accept: application/json'"

-- 1. Cost per request ---------------------------------------------------------

-- Each client: how to run it for n requests (after its warm-up), what its
-- connection and decoding are. run(url) returns requests/s.
local function timed(cmd, n)
  local t0 = system.monotime()
  lib.capture(cmd)
  return n / (system.monotime() - t0)
end

local function inner(cmd)
  local r = lib.run_json(cmd)
  if r.items ~= nil and r.items ~= 100 and r.items ~= -1 then
    error("unexpected page size " .. tostring(r.items) .. " from " .. cmd, 0)
  end
  return r.requests / r.seconds
end

local CLIENTS = {
  { name = "spark `client:get_rooms{max=100}`", key = "spark", conn = "one, kept alive",
    decodes = "yes (spark)", n = REQUESTS,
    run = function(base)
      return inner(("%s spark %s %d %d"):format(COST, base, REQUESTS, WARMUP))
    end },
  { name = "raw C libcurl + lua-cjson (bench/raw.c)", key = "raw", conn = "one, kept alive",
    decodes = "yes (cjson.decode)", n = REQUESTS,
    run = function(base)
      return inner(("%s %s %d %d decode"):format(RAW, Q(base .. "/rooms?max=100"), REQUESTS,
        WARMUP))
    end },
  { name = "raw C libcurl, no decoding", key = "raw_nodecode", conn = "one, kept alive",
    decodes = "no", n = REQUESTS,
    run = function(base)
      return inner(("%s %s %d %d nodecode"):format(RAW, Q(base .. "/rooms?max=100"), REQUESTS,
        WARMUP))
    end },
  { name = "spark.core.request + plain cjson.decode (spark without its integer walk)",
    key = "core_cjson", conn = "one, kept alive", decodes = "yes (cjson.decode)", n = REQUESTS,
    run = function(base)
      return inner(("%s core_cjson %s %d %d"):format(COST, base, REQUESTS, WARMUP))
    end },
  { name = "luasocket `socket.http.request` + cjson", key = "luasocket",
    conn = "new per request (its default)", decodes = "yes (cjson.decode)", n = SLOW_REQUESTS,
    run = function(base)
      return inner(("%s luasocket %s %d %d"):format(COST, base, SLOW_REQUESTS, 20))
    end },
  { name = "curl command, all URLs in one process (URL glob)", key = "curl_glob",
    conn = "one, reused by curl", decodes = "no", n = REQUESTS,
    run = function(base)
      local cmd = ("curl -sS --noproxy '*' %s -o /dev/null -w '%%{num_connects}\\n' %s")
        :format(AUTH, Q(base .. "/rooms?max=100&n=[1-" .. REQUESTS .. "]"))
      local t0 = system.monotime()
      local o = lib.capture(cmd)
      local dt = system.monotime() - t0
      local transfers, connects = 0, 0
      for c in o:gmatch("%d+") do
        transfers, connects = transfers + 1, connects + tonumber(c)
      end
      if transfers ~= REQUESTS then error("curl glob: " .. transfers .. " transfers", 0) end
      return REQUESTS / dt, connects
    end },
  { name = "curl command, one process per request", key = "curl_proc",
    conn = "new per request", decodes = "no", n = PROC_REQUESTS,
    run = function(base)
      local script = ("i=0; while [ $i -lt %d ]; do curl -sS --noproxy '*' %s -o /dev/null %s"
        .. " || exit 1; i=$((i+1)); done"):format(PROC_REQUESTS, AUTH, Q(base .. "/rooms?max=100"))
      return timed("sh -c " .. Q(script), PROC_REQUESTS)
    end },
  { name = "Python `urllib.request` + json.loads", key = "urllib",
    conn = "new per request (its default)", decodes = "yes (json.loads)", n = SLOW_REQUESTS,
    run = function(base)
      return inner(("python3 %s %s %d %d"):format(Q(root .. "/bench/urllib_loop.py"), base,
        SLOW_REQUESTS, 20))
    end },
}

local function cost_part(ng)
  local rates, notes = {}, {}
  for _, c in ipairs(CLIENTS) do rates[c.key] = {} end
  for round = 1, ROUNDS do
    -- a different order each round, so that no client always runs first
    for i = 0, #CLIENTS - 1 do
      local c = CLIENTS[(i + round - 1) % #CLIENTS + 1]
      progress("cost round %d/%d: %s", round, ROUNDS, c.key)
      local rps, extra = c.run(ng.url)
      table.insert(rates[c.key], rps)
      if extra then notes[c.key] = extra end
    end
  end
  local med = {}
  for _, c in ipairs(CLIENTS) do med[c.key] = lib.median(rates[c.key]) end
  emit("")
  emit(("### Cost per request (nginx %s, page %s bytes, median of %d rounds)")
    :format(ng.version, thousands(#ng.page), ROUNDS))
  emit("")
  emit("| client | connection | decodes the body | requests | requests/s | µs/request "
    .. "| × raw C + cjson |")
  emit("|---|---|---|---|---|---|---|")
  for _, c in ipairs(CLIENTS) do
    local conn = c.conn
    if c.key == "curl_glob" and notes.curl_glob then
      conn = conn .. (" (%d connection%s for %d transfers)"):format(notes.curl_glob,
        notes.curl_glob == 1 and "" or "s", REQUESTS)
    end
    emit(("| %s | %s | %s | %d | %s | %s | %s |"):format(c.name, conn, c.decodes, c.n,
      thousands(med[c.key]), fmt(1e6 / med[c.key], "%.0f"),
      fmt(med.raw / med[c.key], "%.2f×")))
  end
  local ratio = med.raw / med.spark
  emit("")
  emit(("spark per request: **%.2f×** the raw C + cjson loop by wall time (target ≤ 1.10×: %s); "
    .. "the rounds (requests/s): spark %s; raw %s."):format(ratio,
    ratio <= 1.10 and "met" or "not met",
    table.concat((function()
      local t = {}
      for i, v in ipairs(rates.spark) do t[i] = thousands(v) end
      return t
    end)(), ", "),
    table.concat((function()
      local t = {}
      for i, v in ipairs(rates.raw) do t[i] = thousands(v) end
      return t
    end)(), ", ")))
  return med
end

-- 2. Callgrind -----------------------------------------------------------------

-- Instructions of one run under callgrind, and the callgrind output file.
local function callgrind(name, cmd)
  local file = ("%s/cg.%s.out"):format(lib.tmpdir(), name)
  lib.capture(("valgrind --tool=callgrind --callgrind-out-file=%s %s 2>/dev/null")
    :format(Q(file), cmd))
  local data = assert(lib.read_file(file), "no callgrind output")
  local total = data:match("\nsummary:%s*(%d+)") or data:match("\ntotals:%s*(%d+)")
  return assert(tonumber(total), "no totals in " .. file), file
end

-- Instructions by ELF object (callgrind_annotate, every function).
local function by_object(file)
  local t = {}
  local o = lib.capture(("callgrind_annotate --threshold=100 %s 2>/dev/null"):format(Q(file)))
  for line in o:gmatch("[^\n]+") do
    local n, obj = line:match("^%s*([%d,]+)%s.-%[([^%]]+)%]%s*$")
    if n and obj then
      obj = obj:match("([^/]+)$")
      -- the interpreter links Lua in statically, bench/raw links the library
      if obj == "lua5.4" or obj:match("^liblua5%.4%.so") then
        obj = "Lua 5.4 (lua5.4 / liblua5.4.so)"
      end
      t[obj] = (t[obj] or 0) + tonumber((n:gsub(",", "")))
    end
  end
  return t
end

local LADDER = {
  { key = "raw_nodecode", what = "raw C libcurl loop, no decoding",
    cmd = function(url, n)
      return ("%s %s %d 1 nodecode"):format(RAW, Q(url .. "/rooms?max=100"), n)
    end },
  { key = "core", what = "spark.core.request alone (C loop, transport, result table)",
    cmd = function(url, n) return ("%s core %s %d 1"):format(COST, url, n) end },
  { key = "raw", what = "raw C libcurl loop + cjson.decode (the limit)",
    cmd = function(url, n)
      return ("%s %s %d 1 decode"):format(RAW, Q(url .. "/rooms?max=100"), n)
    end },
  { key = "core_cjson", what = "core.request + cjson.decode",
    cmd = function(url, n) return ("%s core_cjson %s %d 1"):format(COST, url, n) end },
  { key = "core_json_decode", what = "core.request + spark.json_decode (cjson + integer walk)",
    cmd = function(url, n) return ("%s core_json_decode %s %d 1"):format(COST, url, n) end },
  { key = "spark", what = "spark `client:get_rooms{max=100}` (the whole facade)",
    cmd = function(url, n) return ("%s spark %s %d 1"):format(COST, url, n) end },
}

local function callgrind_part(ng)
  local per, files = {}, {}
  for _, step in ipairs(LADDER) do
    progress("callgrind: %s", step.key)
    local base, bfile = callgrind(step.key .. ".0", step.cmd(ng.url, 0))
    local full, ffile = callgrind(step.key .. ".n", step.cmd(ng.url, CG_REQUESTS))
    per[step.key] = (full - base) / CG_REQUESTS
    files[step.key] = { bfile, ffile }
  end
  emit("")
  emit(("### Instructions per request (callgrind: (run of 1 + %d requests − run of 1 request)"
    .. " ÷ %d)"):format(CG_REQUESTS, CG_REQUESTS))
  emit("")
  emit("| what runs per request | instructions/request | × raw C + cjson |")
  emit("|---|---|---|")
  for _, step in ipairs(LADDER) do
    emit(("| %s | %s | %.2f× |"):format(step.what, thousands(per[step.key]),
      per[step.key] / per.raw))
  end
  emit("")
  emit(("spark per request: **%.2f×** the raw C + cjson loop in instructions (target ≤ 1.10×: %s)."
    .. " Layers: spark's C core adds %s instructions/request over raw libcurl; "
    .. "spark.json_decode's integer walk adds %s over cjson.decode; the facade "
    .. "(parameters, URL, Link, res table) adds %s.")
    :format(per.spark / per.raw, per.spark / per.raw <= 1.10 and "met" or "not met",
      thousands(per.core - per.raw_nodecode), thousands(per.core_json_decode - per.core_cjson),
      thousands(per.spark - per.core_json_decode)))
  -- where the instructions go, by object, spark vs the raw loop
  local objs, rows = {}, {}
  for _, key in ipairs{ "spark", "raw" } do
    local b, f = by_object(files[key][1]), by_object(files[key][2])
    objs[key] = {}
    for o, n in pairs(f) do
      objs[key][o] = (n - (b[o] or 0)) / CG_REQUESTS
      rows[o] = true
    end
  end
  local names = {}
  for o in pairs(rows) do
    if math.max(objs.spark[o] or 0, objs.raw[o] or 0) >= 5000 then names[#names + 1] = o end
  end
  table.sort(names, function(a, b) return (objs.spark[a] or 0) > (objs.spark[b] or 0) end)
  emit("")
  emit("By object (callgrind_annotate, instructions/request; Debian's binaries are stripped, "
    .. "so functions show as addresses — the layers above name them):")
  emit("")
  emit("| object | spark | raw C + cjson | difference |")
  emit("|---|---|---|---|")
  for _, o in ipairs(names) do
    local s, r = objs.spark[o] or 0, objs.raw[o] or 0
    emit(("| %s | %s | %s | %s%s |"):format(o, thousands(s), thousands(r), s >= r and "+" or "−",
      thousands(math.abs(s - r))))
  end
  return per
end

-- 3. Goodput under a rate limit --------------------------------------------------

local STRATEGIES = {
  { key = "gate", what = "spark, default client (the gate)" },
  { key = "pacing", what = "spark, `rate = R, burst = B/2` (GCRA pacing)" },
  { key = "adaptive", what = 'spark, `rate = "adaptive"`' },
  { key = "naive", what = "naive: luasocket, hammer until 429, sleep Retry-After" },
}

-- Judges one run from the server's log. entries: array of {t (arrival),
-- t_end (when the answer left, for a 429's window), status}, in arrival
-- order, times in `unit` seconds (the mock: 1; nginx: 1/1000, integers, so
-- that ms comparisons are exact). ra: Retry-After in those units.
local function judge(entries, ra, unit, elapsed)
  local ok, n429, early, forbidden = 0, 0, 0, -math.huge
  local late, max_in_window = {}, 0
  local first = entries[1] and entries[1].t
  local steady_from = first and first + WARMUP_SECONDS / unit
  local steady_ok = 0
  for i, e in ipairs(entries) do
    if e.t < forbidden then early = early + 1 end
    if e.status == 200 then
      ok = ok + 1
      if e.t >= steady_from then steady_ok = steady_ok + 1 end
    elseif e.status == 429 then
      n429 = n429 + 1
      local until_ = e.t_end + ra
      if until_ > forbidden then forbidden = until_ end
      if entries[i + 1] then late[#late + 1] = (entries[i + 1].t - until_) * unit end
      local k = 0
      for j = i, #entries do
        if entries[j].t >= until_ then break end
        if entries[j].status == 429 then k = k + 1 end
      end
      if k > max_in_window then max_in_window = k end
    end
  end
  local steady_seconds = elapsed - WARMUP_SECONDS
  return {
    ok = ok, n429 = n429, early = early, requests = #entries,
    goodput = ok / elapsed / RATE,
    steady = steady_seconds > 0 and steady_ok / steady_seconds / RATE or nil,
    per_window = n429 / (elapsed / (ra * unit)),
    max_in_window = max_in_window,
    late_p50 = lib.percentile(late, 50), late_p99 = lib.percentile(late, 99),
    late_max = lib.percentile(late, 100), late_n = #late,
  }
end

local function run_strategy(s, url, token)
  progress("goodput: %s against %s for %g s", s.key, url, SECONDS)
  return lib.run_json(("%s %s %s %s %s %d %d"):format(GOODPUT, s.key, url, tostring(SECONDS),
    token, RATE, math.max(1, BURST // 2)))
end

local function goodput_part(ng, state)
  local rows = {}
  for _, s in ipairs(STRATEGIES) do
    -- a fresh simulator for each run: a full bucket, an empty log
    local mock = lib.start_mock(("--rate %d --burst %d"):format(RATE, BURST))
    state.mock = mock
    local client = run_strategy(s, mock.url, lib.TOKEN)
    local log = mock.stats().log
    mock.stop()
    state.mock = nil
    local entries = {}
    for _, e in ipairs(log) do
      if e.path and e.path:match("/rooms$") then
        entries[#entries + 1] = { t = e.t, t_end = e.t, status = e.status }
      end
    end
    rows[#rows + 1] = { server = "spark-mock", s = s, client = client,
      j = judge(entries, RETRY_AFTER, 1, client.elapsed) }
  end
  for _, s in ipairs(STRATEGIES) do
    local f = io.open(ng.access_log, "rb")
    local offset = f and f:seek("end") or 0
    if f then f:close() end
    -- a token of its own: limit_req keys on it, so each run starts with a full bucket
    local client = run_strategy(s, ng.limited_url, "bench-" .. s.key)
    f = assert(io.open(ng.access_log, "rb"))
    f:seek("set", offset)
    local entries = {}
    for line in f:lines() do
      local sec, ms, rsec, rms, status = line:match("^(%d+)%.(%d+) (%d+)%.(%d+) (%d+)")
      if sec then
        local t_end = tonumber(sec) * 1000 + tonumber(ms)
        entries[#entries + 1] = { t = t_end - (tonumber(rsec) * 1000 + tonumber(rms)),
          t_end = t_end, status = tonumber(status) }
      end
    end
    f:close()
    -- kept in log order: one sequential client, so the order requests were
    -- answered is the order they came in (sorting on the ms-resolution
    -- arrival time could swap two requests of the same millisecond)
    rows[#rows + 1] = { server = "nginx limit_req", s = s, client = client,
      j = judge(entries, RETRY_AFTER * 1000, 1 / 1000, client.elapsed) }
  end
  emit("")
  emit(("### Goodput under a rate limit (R = %d/s, server burst B = %d, %g s per run)")
    :format(RATE, BURST, SECONDS))
  emit("")
  emit("| server | client | 200s | 429s | 200/s ÷ R | steady ÷ R | 429s per window "
    .. "| max 429s in a window | sent early | wake p50 | wake p99 |")
  emit("|---|---|---|---|---|---|---|---|---|---|---|")
  local ms = function(v) return v and ("%.2f ms"):format(v * 1e3) or "–" end
  for _, r in ipairs(rows) do
    local j = r.j
    if r.client.ok ~= j.ok then
      progress("note: %s/%s: the client counted %d 200s, the server logged %d", r.server,
        r.s.key, r.client.ok, j.ok)
    end
    emit(("| %s | %s | %d | %d | %.3f | %s | %.2f | %d | %d | %s | %s |"):format(r.server,
      r.s.what, j.ok, j.n429, j.goodput, fmt(j.steady, "%.3f"), j.per_window, j.max_in_window,
      j.early, ms(j.late_p50), ms(j.late_p99)))
  end
  local sl = lib.run_json(("%s sleep 100 0.01"):format(COST))
  emit("")
  emit(("Wake: how late the first request after a 429 reaches the server, past the 429's "
    .. "log time + Retry-After (spark-mock: its arrival time, CLOCK_MONOTONIC; nginx: the "
    .. "429's `$msec` and the next request's `$msec − $request_time`, 1 ms resolution). "
    .. "It adds up the server answering the 429, the client receiving it, the sleep's own "
    .. "lateness and the next request's way in. spark.sleep's own lateness alone "
    .. "(100 × `spark.sleep(0.01)`): p50 %.3f ms, p99 %.3f ms, max %.3f ms.")
    :format(sl.p50 * 1e3, sl.p99 * 1e3, sl.max * 1e3))
  return rows
end

-- 4. Memory --------------------------------------------------------------------

local function memory_part(ng)
  progress("memory: %d requests on one client", MEM_REQUESTS)
  local r = lib.run_json(("%s rss %s 1000 %d"):format(COST, ng.url, MEM_REQUESTS))
  emit("")
  emit("### Memory of one spark client (nginx, `get_rooms{max=100}` back to back)")
  emit("")
  emit("| requests | VmRSS | Lua heap (after a full collection) |")
  emit("|---|---|---|")
  for _, p in ipairs(r.points) do
    emit(("| %s | %s kB | %s kB |"):format(thousands(p.requests), thousands(p.rss_kb),
      thousands(p.lua_kb)))
  end
  return r.points
end

-- Main -------------------------------------------------------------------------

local function main(state)
  local m = lib.machine()
  progress("working in %s", lib.tmpdir())
  -- the page nginx serves: spark-mock's first page of 100 rooms
  state.mock = lib.start_mock("")
  local page, status = lib.http("GET", state.mock.url .. "/rooms?max=100", nil,
    { authorization = "Bearer " .. lib.TOKEN })
  assert(status == 200, "spark-mock GET /v1/rooms: " .. tostring(status))
  state.mock.stop()
  state.mock = nil
  state.nginx = lib.start_nginx(page, RATE, BURST)
  state.nginx.page = page

  emit(("## Results, %s"):format(m.date))
  emit("")
  emit(("Machine: %s CPUs, %s; %s; %s (spark's), %s, nginx %s, %s.")
    :format(m.nproc, m.cpu, m.kernel, m.curl, m.lua, state.nginx.version,
      (lib.capture("python3 --version 2>&1"):match("[^\n]+"))))
  local env = {}
  for _, k in ipairs{ "BENCH_SECONDS", "BENCH_RATE", "BENCH_BURST", "BENCH_REQUESTS",
    "BENCH_ROUNDS", "BENCH_CALLGRIND_REQUESTS", "BENCH_MEM_REQUESTS", "BENCH_WARMUP_SECONDS",
    "BENCH_PARTS" } do
    if os.getenv(k) and os.getenv(k) ~= "" then env[#env + 1] = k .. "=" .. os.getenv(k) end
  end
  emit(("Command: `%smake bench` (spark %s)."):format(
    #env > 0 and table.concat(env, " ") .. " " or "", core.version))

  if PARTS.cost then cost_part(state.nginx) end
  if PARTS.callgrind then callgrind_part(state.nginx) end
  if PARTS.goodput then goodput_part(state.nginx, state) end
  if PARTS.memory then memory_part(state.nginx) end
end

local state = {}
local t0 = system.monotime()
local ok, err = xpcall(main, debug.traceback, state)
if state.nginx then state.nginx.stop() end
if state.mock then state.mock.stop() end
if ok then
  emit("")
  emit(("(the whole run took %.0f s)"):format(system.monotime() - t0))
  if results_file then lib.write_file(results_file, table.concat(out, "\n") .. "\n") end
  progress("done%s", results_file and ("; results in " .. results_file) or "")
else
  io.stderr:write("bench: ", tostring(err), "\n")
  os.exit(1)
end
