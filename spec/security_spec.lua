-- Security: the token goes nowhere but to base_url's origin over https (or
-- loopback http), and is never shown.
local helper = require "helper"
local spark = require "spark"

local function random_token()
  local hex = {}
  for i = 1, 16 do hex[i] = ("%02x"):format(math.random(0, 255)) end
  return "sEcReT" .. table.concat(hex)
end

describe("the token", function()
  local TOKEN = random_token()
  local m, other
  local seen = {} -- every string the calls below produced

  local function keep(v, depth)
    depth = depth or 0
    if type(v) == "string" then
      seen[#seen + 1] = v
    elseif type(v) == "table" and depth < 4 then
      for k, x in pairs(v) do
        keep(k, depth + 1)
        keep(x, depth + 1)
      end
      local mt = getmetatable(v)
      if mt and mt.__tostring then seen[#seen + 1] = tostring(v) end
    elseif v ~= nil then
      seen[#seen + 1] = tostring(v)
    end
  end

  setup(function()
    m = helper.start_mock{ "--token", TOKEN }
    other = helper.start_mock{}
  end)
  teardown(function()
    m:stop()
    other:stop()
  end)
  before_each(function()
    m:reset()
    other:reset()
  end)

  local function client(opts)
    opts = opts or {}
    opts.token = TOKEN
    opts.base_url = opts.base_url or m.base_url
    opts.sleep = function() end
    opts.max_retries = 0
    return spark.new(opts)
  end

  it("appears in no result, error, tostring or URL of many calls", function()
    local c = client()
    keep(tostring(c))
    keep({ c:get_rooms{ max = 3 } })
    local scripts = {
      { action = "drop" }, { action = "reset" }, { action = "truncate" }, { action = "badjson" },
      { status = 404 }, { status = 429, headers = { ["Retry-After"] = "999" } },
      { status = 302, headers = { Location = other.base_url .. "/rooms" } },
      { status = 200, headers = { Link = "<" .. other.base_url .. '/rooms>; rel="next"' } },
    }
    for _, entry in ipairs(scripts) do
      m:script{ entry }
      local rooms, res = c:get_rooms{ max = 3 }
      keep({ rooms, res })
      if rooms and res.next then keep({ c:get_next(res) }) end
    end
    keep({ client{ timeout = 0.2 }:request("GET", "/rooms") })
    keep({ client{ max_body = 10 }:get_rooms() })
    keep({ pcall(c.get_rooms, c, { max = 0 }) })
    keep({ pcall(spark.new, { token = TOKEN, base_url = "http://example.com/v1" }) })
    keep({ pcall(spark.new, { token = TOKEN .. " x" }) })
    keep({ pcall(spark.new, { token = TOKEN, tiemout = 1 }) })
    keep(m:stats())
    c:close()
    keep(tostring(c))
    keep({ pcall(c.get_rooms, c) })
    assert.is_true(#seen > 50)
    for _, s in ipairs(seen) do
      assert.is_nil(s:find(TOKEN, 1, true), "the token leaked into: " .. s:sub(1, 200))
    end
  end)

  it("appears in no output of spark-poll", function()
    m:script{ { status = 429, headers = { ["Retry-After"] = "1" } }, { status = 401 } }
    local out = helper.run_lua([[
      arg = { [0] = "lua/spark-poll", "--count", "3", "--progress-every", "1" }
      dofile("lua/spark-poll")
    ]], { WEBEX_ACCESS_TOKEN = TOKEN, SPARK_BASE_URL = m.base_url })
    assert.is_true(#out > 0)
    assert.is_nil(out:find(TOKEN, 1, true))
  end)

  it("is not sent along a redirect to another origin", function()
    m:script{ { status = 302, headers = { Location = other.base_url .. "/rooms" } } }
    local _, err = client():get_rooms()
    assert.are.equal("http", err.kind)
    assert.are.equal(302, err.status)
    assert.are.equal(0, other:stats().requests)
  end)

  it("is not sent along a next link to another origin", function()
    m:script{ { status = 200, headers = {
      Link = "<" .. other.base_url .. '/rooms?max=1>; rel="next"' } } }
    local c = client()
    local _, res = c:get_rooms{ max = 1 }
    local page, err = c:get_next(res)
    assert.is_nil(page)
    assert.are.equal("refused", err.kind)
    assert.has_error(function() c:request("GET", other.base_url .. "/rooms") end)
    assert.are.equal(0, other:stats().requests)
  end)

  it("needs https to a non-loopback host, unless allow_insecure", function()
    assert.has_error(function() spark.new{ token = TOKEN, base_url = "http://192.0.2.1/v1" } end)
    assert.has_error(function() spark.new{ token = TOKEN, base_url = "ftp://127.0.0.1/v1" } end)
    assert.is_userdata(spark.new{ token = TOKEN, base_url = "http://192.0.2.1/v1",
                                  allow_insecure = true })
    assert.is_userdata(spark.new{ token = TOKEN, base_url = "https://192.0.2.1/v1" })
  end)

  describe("over TLS", function()
    local dir, port, pid

    setup(function()
      -- a self-signed certificate for 127.0.0.1, and openssl's own server
      dir = os.tmpname()
      os.remove(dir)
      assert(os.execute("mkdir -p '" .. dir .. "/v1' && cd '" .. dir .. "' && "
        .. "openssl req -x509 -newkey rsa:2048 -nodes -keyout key.pem -out cert.pem "
        .. "-days 2 -subj /CN=localhost "
        .. "-addext 'subjectAltName=DNS:localhost,IP:127.0.0.1' 2>/dev/null"))
      local f = assert(io.open(dir .. "/v1/rooms", "w"))
      f:write('{"items":[{"id":"r1","title":"over tls"}]}')
      f:close()
      local s = assert(require("socket").bind("127.0.0.1", 0))
      local _
      _, port = s:getsockname()
      s:close()
      local p = assert(io.popen("cd '" .. dir .. "' && sh -c 'echo $$; exec openssl s_server "
        .. "-accept 127.0.0.1:" .. port .. " -cert cert.pem -key key.pem -WWW' 2>&1"))
      pid = assert(tonumber(p:read("l")))
      repeat local line = p:read("l") until line == nil or line:find("ACCEPT", 1, true)
      -- keep the pipe open (its close would wait for the server)
      dir = { path = dir, pipe = p }
    end)

    teardown(function()
      if pid then os.execute("kill " .. pid) end
      if dir then
        dir.pipe:close()
        os.execute("rm -rf '" .. dir.path .. "'")
      end
    end)

    it("refuses a self-signed certificate by default", function()
      local c = client{ base_url = "https://127.0.0.1:" .. port .. "/v1" }
      local body, err = c:request("GET", "/rooms")
      assert.is_nil(body)
      assert.are.equal("network", err.kind)
      assert.matches("curl: %(60%)", err.message)
    end)

    it("accepts it with ca_file", function()
      local c = client{ base_url = "https://127.0.0.1:" .. port .. "/v1",
                        ca_file = dir.path .. "/cert.pem" }
      local body, res = c:request("GET", "/rooms")
      assert.is_table(body, tostring(res))
      assert.are.equal("over tls", body.items[1].title)
    end)
  end)
end)
