-- spark.sleep, the default sleep hook.
local spark = require "spark"
local helper = require "helper"

describe("spark.sleep", function()
  it("sleeps and returns 0 when nothing interrupted it", function()
    local before = spark.monotime()
    assert.are.equal(0, spark.sleep(0.05))
    assert.is_true(spark.monotime() - before >= 0.05)
  end)

  it("returns at once for 0", function()
    assert.are.equal(0, spark.sleep(0))
  end)

  it("raises on a bad argument, naming it", function()
    assert.has_error(function() spark.sleep("1") end,
      "spark.sleep: bad argument 'seconds' (a non-negative number expected, got string)")
    assert.has_error(function() spark.sleep(-1) end)
    assert.has_error(function() spark.sleep(0 / 0) end)
    assert.has_error(function() spark.sleep() end)
  end)

  it("is interrupted by SIGINT under lua5.4, at once", function()
    -- The child says when it starts sleeping 30 s; SIGINT must end it with
    -- lua5.4's "interrupted!" instead of letting it print "slept".
    local code = [[io.write(\"ready\\n\") io.stdout:flush() ]]
      .. [[require(\"spark\").sleep(30) print(\"slept\")]]
    local p = assert(io.popen("LUA_PATH='lua/?.lua;;' LUA_CPATH='build/?.so;;' "
      .. "sh -c 'echo $$; exec " .. helper.lua .. ' -e "' .. code .. '"\' 2>&1'))
    local pid = assert(tonumber(p:read("l")))
    assert.are.equal("ready", p:read("l"))
    os.execute("kill -INT " .. pid)
    local rest = p:read("a")
    local ok, how, status = p:close()
    assert.is_nil(ok)
    assert.are.equal("exit", how)
    assert.are.equal(1, status)
    assert.matches("interrupted!", rest)
    assert.is_nil(rest:find("slept", 1, true))
  end)
end)
