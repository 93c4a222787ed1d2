-- bench/lib.lua: what the benchmarks share. Paths, processes started in the
-- background (and registered for bench/run.sh to kill on any exit), the
-- nginx server with its generated configuration, spark-mock, small
-- statistics. Not a test helper: nothing here asserts on a timing.

local socket = require "socket"
local http = require "socket.http"
local ltn12 = require "ltn12"
local cjson = require "cjson"

local lib = {}

-- The checkout: bench/lib.lua is found through package.path, set by the
-- scripts from their own arg[0].
lib.root = (arg and arg[0] or ""):match("^(.*)/bench/[^/]*$") or "."
lib.lua = os.getenv("LUA") or "lua5.4"
lib.json = cjson.new()
lib.TOKEN = "mock-token" -- a dummy: only loopback servers see it

function lib.quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

-- Environment numbers, with defaults.
function lib.env_number(name, default)
  local v = os.getenv(name)
  if v == nil or v == "" then return default end
  local n = tonumber(v)
  if not n or n <= 0 then error(name .. " must be a positive number (got " .. v .. ")") end
  return n
end

-- The temporary directory of this run: BENCH_TMP (made by bench/run.sh,
-- which removes it and kills what it lists in BENCH_TMP/pids), else a new
-- one from mktemp.
function lib.tmpdir()
  if lib._tmp then return lib._tmp end
  local t = os.getenv("BENCH_TMP")
  if not t or t == "" then
    local p = assert(io.popen("mktemp -d", "r"))
    t = p:read("l")
    p:close()
  end
  assert(t and t ~= "", "no temporary directory")
  lib._tmp = t
  return t
end

function lib.write_file(path, data)
  local f = assert(io.open(path, "wb"))
  assert(f:write(data))
  f:close()
end

function lib.read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

-- Runs a shell command; returns its stdout (all of it) or raises. Its PID
-- is registered while it runs (see lib.spawn).
function lib.capture(cmd)
  local p = assert(io.popen("echo $$; exec " .. cmd, "r"))
  local pid = tonumber(p:read("l"))
  if pid then lib.register(pid) end
  local out = p:read("a")
  local ok, how, code = p:close()
  if pid then lib.unregister(pid) end
  if not ok then
    error(("command failed (%s %s): %s\n%s"):format(tostring(how), tostring(code), cmd, out), 0)
  end
  return out
end

-- The last line of a command's stdout that is a JSON object, decoded.
function lib.run_json(cmd)
  local out = lib.capture(cmd)
  local last
  for line in out:gmatch("[^\n]+") do
    if line:match("^%s*{") then last = line end
  end
  if not last then error("no JSON result from: " .. cmd .. "\n" .. out, 0) end
  return lib.json.decode(last)
end

-- Background processes ------------------------------------------------------

-- Starts `cmd` in the background (through sh, exec'd, so the PID is the
-- program's own); its stdout comes through the returned pipe. The PID is
-- appended to TMP/pids so that bench/run.sh kills it even if Lua dies.
function lib.spawn(cmd)
  local pipe = assert(io.popen("echo $$; exec " .. cmd, "r"))
  local pid = tonumber(pipe:read("l"))
  if not pid then
    pipe:close()
    error("could not start: " .. cmd, 0)
  end
  lib.register(pid)
  local proc = { pid = pid, pipe = pipe }
  function proc.stop(signal)
    if proc.pipe then
      os.execute(("kill -%s %d 2>/dev/null"):format(signal or "TERM", pid))
      proc.pipe:close() -- waits for it to end
      proc.pipe = nil
      lib.unregister(pid)
    end
  end
  return proc
end

-- Lists a PID in TMP/pids, for bench/run.sh to kill on an early exit.
function lib.register(pid)
  local f = io.open(lib.tmpdir() .. "/pids", "a")
  if f then
    f:write(pid, "\n")
    f:close()
  end
end

-- Forgets a PID (its process has ended and been waited for), so that
-- bench/run.sh never signals a PID the system may have reused.
function lib.unregister(pid)
  local path = lib.tmpdir() .. "/pids"
  local keep = {}
  for line in (lib.read_file(path) or ""):gmatch("[^\n]+") do
    if tonumber(line) ~= pid then keep[#keep + 1] = line .. "\n" end
  end
  lib.write_file(path, table.concat(keep))
end

-- A free TCP port on loopback (the kernel's choice; closed again at once).
function lib.free_port()
  local s = assert(socket.bind("127.0.0.1", 0))
  local _, port = s:getsockname()
  s:close()
  return math.tointeger(tonumber(port))
end

-- Waits until something accepts on 127.0.0.1:port.
function lib.wait_port(port, seconds)
  local deadline = socket.gettime() + (seconds or 5)
  repeat
    local c = socket.tcp()
    c:settimeout(0.2)
    local ok = c:connect("127.0.0.1", port)
    c:close()
    if ok then return true end
    socket.sleep(0.05)
  until socket.gettime() > deadline
  return false
end

-- One HTTP request with luasocket: body, status, headers.
function lib.http(method, url, body, headers)
  local out = {}
  headers = headers or {}
  if body then
    headers["content-type"] = "application/json"
    headers["content-length"] = tostring(#body)
  end
  local _, status, h = http.request{
    method = method, url = url, headers = headers, sink = ltn12.sink.table(out),
    source = body and ltn12.source.string(body) or nil,
  }
  return table.concat(out), status, h
end

-- spark-mock -------------------------------------------------------------------

-- Starts spark-mock (--port 0 --control and `args`; its stderr goes to
-- TMP/spark-mock.err): {url, origin, stop, stats()}.
function lib.start_mock(args)
  local errfile = lib.tmpdir() .. "/spark-mock.err"
  local cmd = ("env LUA_PATH=%s %s %s --port 0 --control %s 2>>%s")
    :format(lib.quote(lib.root .. "/lua/?.lua;;"), lib.lua,
      lib.quote(lib.root .. "/lua/spark-mock"), args or "", lib.quote(errfile))
  local proc = lib.spawn(cmd)
  local url = proc.pipe:read("l")
  if not (url and url:match("^http://")) then
    proc.stop()
    error("spark-mock did not start: " .. tostring(url), 0)
  end
  local mock = { url = url, origin = url:match("^(http://[^/]+)"), proc = proc }
  function mock.stop() proc.stop() end
  function mock.stats()
    local body, status = lib.http("GET", mock.origin .. "/_mock/stats")
    if status ~= 200 then
      error("GET /_mock/stats: " .. tostring(status) .. "; spark-mock's stderr: "
        .. (lib.read_file(errfile) or ""), 0)
    end
    return lib.json.decode(body)
  end
  return mock
end

-- nginx ------------------------------------------------------------------------

local function nginx_binary()
  for _, p in ipairs{ "nginx", "/usr/sbin/nginx", "/usr/local/sbin/nginx" } do
    if os.execute("command -v " .. p .. " >/dev/null 2>&1") then return p end
  end
  error("nginx not found: run `make bench` as root, or apt-get install nginx-light", 0)
end

-- The configuration: everything under `dir` (pid, logs, temp paths), one
-- worker, loopback only, the page `dir`/www/rooms.json at /v1/rooms (no
-- limit, keep-alive for ever, no access log) and at /limited/v1/rooms
-- behind limit_req (per Authorization header: every scenario brings its own
-- dummy token, so each starts with a full bucket) answering 429 with
-- Retry-After: 1 and a Webex-like JSON body; that location logs
-- "$msec $request_time $status $connection" to `dir`/access.log.
function lib.nginx_conf(dir, port, rate, burst)
  local user = ""
  if lib.capture("id -u"):match("^0%s*$") then
    -- as root the workers would switch to nobody, who cannot read `dir`
    user = "user " .. lib.capture("id -un"):match("%S+") .. ";\n"
  end
  local origin = "http://127.0.0.1:" .. port
  return (([[
# generated by bench/lib.lua for one benchmark run
%USER%worker_processes 1;
daemon off;
master_process on;
pid %DIR%/nginx.pid;
error_log %DIR%/error.log warn;
events { worker_connections 256; }
http {
  client_body_temp_path %DIR%/tmp/body;
  proxy_temp_path %DIR%/tmp/proxy;
  fastcgi_temp_path %DIR%/tmp/fastcgi;
  uwsgi_temp_path %DIR%/tmp/uwsgi;
  scgi_temp_path %DIR%/tmp/scgi;
  types { }
  default_type application/json;
  charset utf-8;
  charset_types application/json;
  keepalive_requests 100000000;
  keepalive_timeout 600s;
  server_tokens off;
  log_format bench '$msec $request_time $status $connection';
  access_log %DIR%/access.log bench;
  limit_req_zone $http_authorization zone=api:1m rate=%RATE%r/s;
  server {
    listen 127.0.0.1:%PORT%;
    root %DIR%/www;
    location = /v1/rooms {
      access_log off;
      add_header TrackingID ROUTER_BENCH;
      add_header Link '<%ORIGIN%/v1/rooms?max=100&cursor=bench>; rel="next"';
      try_files /rooms.json =404;
    }
    location = /limited/v1/rooms {
      limit_req zone=api burst=%BURST% nodelay;
      limit_req_status 429;
      limit_req_log_level info;
      error_page 429 @limited;
      add_header TrackingID ROUTER_BENCH;
      try_files /rooms.json =404;
    }
    location @limited {
      add_header Retry-After 1 always;
      add_header TrackingID ROUTER_BENCH_429 always;
      return 429 '{"message":"Too Many Requests","trackingId":"ROUTER_BENCH_429"}';
    }
  }
}
]]):gsub("%%(%u+)%%", {
    USER = user, DIR = dir, PORT = tostring(port), ORIGIN = origin,
    RATE = tostring(math.tointeger(rate) or rate), BURST = tostring(math.tointeger(burst) or burst),
  }))
end

-- Starts nginx on a free loopback port serving `page` (a string):
-- {origin, url (the unlimited /v1), limited_url, access_log, stop}.
function lib.start_nginx(page, rate, burst)
  local bin = nginx_binary()
  local dir = lib.tmpdir() .. "/nginx"
  assert(os.execute("mkdir -p " .. lib.quote(dir .. "/www") .. " " .. lib.quote(dir .. "/tmp")))
  lib.write_file(dir .. "/www/rooms.json", page)
  for _ = 1, 3 do -- a port taken between free_port and nginx's bind: again
    local port = lib.free_port()
    lib.write_file(dir .. "/nginx.conf", lib.nginx_conf(dir, port, rate, burst))
    local proc = lib.spawn(("%s -p %s -c %s -e %s </dev/null"):format(bin,
      lib.quote(dir .. "/"), lib.quote(dir .. "/nginx.conf"), lib.quote(dir .. "/error.log")))
    if lib.wait_port(port, 5) then
      local origin = "http://127.0.0.1:" .. port
      return {
        origin = origin, url = origin .. "/v1", limited_url = origin .. "/limited/v1",
        access_log = dir .. "/access.log", error_log = dir .. "/error.log",
        version = lib.capture(bin .. " -v 2>&1"):match("nginx/(%S+)"),
        stop = function() proc.stop("QUIT") end,
      }
    end
    proc.stop()
  end
  error("nginx did not start; see " .. dir .. "/error.log:\n"
    .. (lib.read_file(dir .. "/error.log") or ""), 0)
end

-- Statistics -------------------------------------------------------------------

function lib.sorted(t)
  local s = {}
  for i, v in ipairs(t) do s[i] = v end
  table.sort(s)
  return s
end

-- The p-th percentile (nearest rank) of an array, or nil when empty.
function lib.percentile(t, p)
  if #t == 0 then return nil end
  local s = lib.sorted(t)
  return s[math.max(1, math.ceil(p / 100 * #s))]
end

function lib.median(t)
  if #t == 0 then return nil end
  local s = lib.sorted(t)
  local n = #s
  if n % 2 == 1 then return s[(n + 1) // 2] end
  return (s[n // 2] + s[n // 2 + 1]) / 2
end

-- The machine, for the results table.
function lib.machine()
  local cpu = (lib.read_file("/proc/cpuinfo") or ""):match("model name%s*:%s*([^\n]+)")
  local spark_core = package.loaded["spark.core"]
  return {
    date = lib.capture("date -u '+%Y-%m-%d %H:%M UTC'"):match("[^\n]+"),
    nproc = lib.capture("nproc"):match("%d+"),
    cpu = cpu or "unknown",
    kernel = lib.capture("uname -sr"):match("[^\n]+"),
    curl = spark_core and spark_core.curl_version:match("^(%S+)") or "?",
    lua = _VERSION,
  }
end

return lib
