--- Spec helper: starts and stops the spark-mock command, and a small raw
-- HTTP/1.1 client on luasocket.
--
--   local helper = require "helper"
--   local m = helper.start_mock{ "--rate", "2" } -- adds --port 0 --control
--   finally(function() m:stop() end)            -- or m:stop() in teardown
--
-- Always stop what you start (m:stop() in `finally` or `teardown`): stop is
-- idempotent, and helper.stop_all() stops every mock still running. As a
-- last resort a mock that is garbage collected is stopped too, before its
-- pipe would wait for the process forever.

local socket = require "socket"
local cjson = require "cjson"
local system = require "system"

local json = cjson.new()

local helper = { TOKEN = "mock-token", lua = "lua5.4" }

-- The repository root, from this file's path (busted runs from the root).
local ROOT = (debug.getinfo(1, "S").source:match("^@(.*)/spec/[^/]*$")) or "."
local LUA_PATH = ROOT .. "/lua/?.lua;" .. ROOT .. "/lua/?/init.lua;;"
local LUA_CPATH = ROOT .. "/build/?.so;;"

local function shell_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

--- Integral floats (cjson decodes every number as a float) -> integers.
local function integers(v)
  if type(v) == "number" then return math.tointeger(v) or v end
  if type(v) == "table" then
    for k, x in pairs(v) do v[k] = integers(x) end
  end
  return v
end

function helper.json(s)
  return integers(json.decode(s))
end

function helper.encode(v)
  return json.encode(v)
end

---------------------------------------------------------------------------
-- Raw HTTP client

local Conn = {}
Conn.__index = Conn

--- A blocking connection (10 s timeout) to host:port, or nil, err.
function helper.connect(port, host)
  local sock, err = socket.connect(host or "127.0.0.1", port)
  if not sock then return nil, err end
  sock:settimeout(10)
  return setmetatable({ sock = sock }, Conn)
end

--- The text of one request. opts: headers (table), body (string),
-- token (default helper.TOKEN; false: no Authorization), version ("1.1").
function helper.request_text(method, target, opts)
  opts = opts or {}
  local lines = { ("%s %s HTTP/%s"):format(method, target, opts.version or "1.1"),
    "Host: 127.0.0.1" }
  local token = opts.token
  if token == nil then token = helper.TOKEN end
  if token then lines[#lines + 1] = "Authorization: Bearer " .. token end
  local names = {}
  for name in pairs(opts.headers or {}) do names[#names + 1] = name end
  table.sort(names)
  for _, name in ipairs(names) do lines[#lines + 1] = name .. ": " .. opts.headers[name] end
  if opts.body then lines[#lines + 1] = "Content-Length: " .. #opts.body end
  return table.concat(lines, "\r\n") .. "\r\n\r\n" .. (opts.body or "")
end

function Conn:send(text)
  return self.sock:send(text)
end

--- Reads one response: res {status, headers (lower-case names, repeated
-- ones joined with ", "), list ({{name, value}, ...} as sent), body}; or
-- nil, err, res-so-far (e.g. body shorter than Content-Length: "closed").
function Conn:receive()
  local res = { headers = {}, list = {}, body = "" }
  local line, err = self.sock:receive("*l")
  if not line then return nil, err, res end
  res.status = tonumber(line:match("^HTTP/1%.%d (%d%d%d)"))
  while true do
    line, err = self.sock:receive("*l")
    if not line then return nil, err, res end
    if line == "" then break end
    local name, value = line:match("^([^:]+):%s*(.-)%s*$")
    res.list[#res.list + 1] = { name, value }
    name = name:lower()
    res.headers[name] = res.headers[name] and res.headers[name] .. ", " .. value or value
  end
  if res.status < 200 then return res end -- 1xx: no body
  local length = tonumber(res.headers["content-length"])
  local body, partial
  if length then
    body, err, partial = self.sock:receive(length)
  else -- the body ends with the connection
    body, err, partial = self.sock:receive("*a")
    if err == "closed" then body, err = partial, nil end
  end
  res.body = body or partial
  if not body then return nil, err, res end
  return res
end

--- Sends one request and reads its response (see helper.request_text).
function Conn:request(method, target, opts)
  local ok, err = self:send(helper.request_text(method, target, opts))
  if not ok then return nil, err end
  return self:receive()
end

--- true when the server closed the connection (reads what remains).
function Conn:closed()
  local data, err, partial = self.sock:receive("*a")
  return data ~= nil or (err == "closed" and partial == ""), err
end

function Conn:close()
  self.sock:close()
end

local function split_url(url)
  local host, port, target = url:match("^http://([^:/]+):(%d+)(.*)$")
  return host, tonumber(port), target ~= "" and target or "/"
end

--- One request on a fresh connection: status, headers (lower-case names),
-- body; or nil, err. opts as for helper.request_text.
function helper.http(method, url, opts)
  local host, port, target = split_url(url)
  local conn, err = helper.connect(port, host)
  if not conn then return nil, err end
  opts = opts or {}
  local headers = { Connection = "close" }
  for k, v in pairs(opts.headers or {}) do headers[k] = v end
  local res
  res, err = conn:request(method, target, { headers = headers, body = opts.body,
    token = opts.token, version = opts.version })
  conn:close()
  if not res then return nil, err end
  return res.status, res.headers, res.body
end

---------------------------------------------------------------------------
-- The mock process

local Mock = {}
Mock.__index = Mock
local running = setmetatable({}, { __mode = "k" })

--- Sends `signal` ("TERM" by default) and waits for the process to end.
-- Returns what closing the pipe returned (true, "exit", 0 after SIGINT;
-- nil, "signal", 15 after SIGTERM); later calls return the same. What the
-- process wrote to stdout after its URL line is kept in m.stdout.
function Mock:stop(signal)
  if not self.result then
    os.execute(("kill -%s %d 2>/dev/null"):format(signal or "TERM", self.pid))
    self.stdout = self.pipe:read("a")
    self.result = table.pack(self.pipe:close())
    running[self] = nil
  end
  return table.unpack(self.result, 1, self.result.n)
end

Mock.__gc = Mock.stop

local function control(self, method, name, body)
  local status, _, text = helper.http(method, self.control_url .. name,
    { token = false, body = body })
  if status ~= 200 then
    error(("%s /_mock/%s: %s %s"):format(method, name, tostring(status), tostring(text)), 3)
  end
  return helper.json(text)
end

--- Queues script entries (POST /_mock/script); errors unless 200.
function Mock:script(entries)
  return control(self, "POST", "script", json.encode{ responses = entries })
end

function Mock:reset()
  return control(self, "POST", "reset", "")
end

function Mock:stats()
  return control(self, "GET", "stats")
end

--- Starts `lua5.4 lua/spark-mock <argv...>` and reads its PID and URL.
-- opts.stderr: a file to send its stderr to; opts.lua_path = false: run
-- with LUA_PATH unset (the command must find spark.mock by itself).
function helper.spawn_mock(argv, opts)
  opts = opts or {}
  local env = "LUA_PATH=" .. shell_quote(LUA_PATH) .. "; export LUA_PATH;"
  if opts.lua_path == false then env = "unset LUA_PATH LUA_PATH_5_4;" end
  local words = { "echo $$;", env, "exec", helper.lua, shell_quote(ROOT .. "/lua/spark-mock") }
  for _, a in ipairs(argv) do words[#words + 1] = shell_quote(a) end
  if opts.stderr then words[#words + 1] = "2>" .. shell_quote(opts.stderr) end
  -- popen runs `sh -c`: $$ is that shell, which exec turns into lua5.4.
  local pipe = assert(io.popen(table.concat(words, " "), "r"))
  local pid = tonumber(pipe:read("l"))
  local url = pipe:read("l")
  local port = url and tonumber(url:match("^http://127%.0%.0%.1:(%d+)/v1$"))
  if not (pid and port) then
    if pid then os.execute("kill -KILL " .. pid .. " 2>/dev/null") end
    pipe:close()
    error("spark-mock did not start: " .. tostring(url), 2)
  end
  local m = setmetatable({ pid = pid, pipe = pipe, port = port, base_url = url,
    control_url = url:gsub("/v1$", "/_mock/") }, Mock)
  running[m] = true
  return m
end

--- Starts the mock with --port 0 --control and the extra `args`. When
-- `args` name tokens (--token), helper.TOKEN is added to them, so that it
-- is always accepted.
function helper.start_mock(args)
  args = args or {}
  local argv = { "--port", "0", "--control" }
  for _, a in ipairs(args) do
    if a == "--token" then
      table.move({ "--token", helper.TOKEN }, 1, 2, #argv + 1, argv)
      break
    end
  end
  table.move(args, 1, #args, #argv + 1, argv)
  return helper.spawn_mock(argv)
end

--- Runs Lua `code` in a fresh helper.lua with the checkout's LUA_PATH and
-- LUA_CPATH and the variables of `env` ({NAME = value}); returns its stdout
-- and what closing the pipe returned.
function helper.run_lua(code, env)
  local file = os.tmpname()
  local f = assert(io.open(file, "w"))
  f:write(code)
  f:close()
  local words = { "env", shell_quote("LUA_PATH=" .. LUA_PATH),
    shell_quote("LUA_CPATH=" .. LUA_CPATH) }
  for name, value in pairs(env or {}) do words[#words + 1] = shell_quote(name .. "=" .. value) end
  words[#words + 1] = helper.lua
  words[#words + 1] = shell_quote(file)
  local pipe = assert(io.popen(table.concat(words, " "), "r"))
  local out = pipe:read("a")
  local result = table.pack(pipe:close())
  os.remove(file)
  return out, table.unpack(result, 1, result.n)
end

--- Stops every mock still running.
function helper.stop_all()
  for m in pairs(running) do m:stop() end
end

--- Polls until nothing accepts connections on `port` (at most `timeout`
-- seconds, default 5): true when closed.
function helper.wait_port_closed(port, timeout)
  local deadline = system.monotime() + (timeout or 5)
  repeat
    local sock = socket.connect("127.0.0.1", port)
    if not sock then return true end
    sock:close()
    system.sleep(0.02)
  until system.monotime() > deadline
  return false
end

--- The log of the event-loop specs (spark.cqueues, spark.luv): client A
-- (max=3) met a 429, client B (max=2&type=group, its own connection) made
-- 10 calls meanwhile, all of them before A's retry.
function helper.assert_b_between_a(log)
  local assert = require "luassert"
  assert.are.equal(12, #log)
  local a_conns, b_conns, order = {}, {}, {}
  for _, e in ipairs(log) do
    if e.query == "max=3" then
      a_conns[e.conn] = true
      order[#order + 1] = "A" .. e.status
    else
      assert.are.equal("max=2&type=group", e.query)
      b_conns[e.conn] = true
      order[#order + 1] = "B" .. e.status
    end
  end
  for conn in pairs(a_conns) do
    assert.is_nil(b_conns[conn], "A and B shared a connection")
  end
  assert.are.same({ "A429", "B200", "B200", "B200", "B200", "B200", "B200", "B200",
    "B200", "B200", "B200", "A200" }, order)
  for i = 2, 11 do assert.is_true(log[i].t < log[12].t) end
end

return helper
