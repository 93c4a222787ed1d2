-- The rockspec builds the same module: `luarocks make` into a temporary tree
-- gives a `require "spark"` that works, and the commands.
describe("spark-scm-1.rockspec", function()
  it("builds and installs with luarocks make #packaging", function()
    local tree = os.tmpname()
    os.remove(tree)
    finally(function() os.execute("rm -rf '" .. tree .. "'") end)
    local p = io.popen("luarocks --lua-version 5.4 make --deps-mode=none --tree '" .. tree
      .. "' spark-scm-1.rockspec 2>&1")
    local out = p:read("a")
    assert.is_true(p:close(), out)
    local check = io.popen("LUA_PATH='" .. tree .. "/share/lua/5.4/?.lua;;' LUA_CPATH='"
      .. tree .. "/lib/lua/5.4/?.so;;' lua5.4 -e '"
      .. "local s = require \"spark\"; require \"spark.poll\"; require \"spark.mock\";"
      .. "assert(s.new{ token = \"t\" }.rooms);"
      .. "io.write(package.searchpath(\"spark.core\", package.cpath), \" \","
      .. " tostring(s.new{ token = \"t\", base_url = \"http://127.0.0.1:9/v1\" }))' 2>&1")
    local got = check:read("a")
    assert.is_true(check:close(), got)
    assert.are.equal(tree .. "/lib/lua/5.4/spark/core.so spark.client (http://127.0.0.1:9/v1)", got)
    for _, cmd in ipairs{ "spark-poll", "spark-mock" } do
      local f = io.open(tree .. "/bin/" .. cmd)
      assert.is_not_nil(f, cmd .. " not installed")
      f:close()
    end
  end)
end)
