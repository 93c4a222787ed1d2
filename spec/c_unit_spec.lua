-- Runs the C unit tests of the pure policy files (built by `make build/unit`)
-- and turns each of their checks into a busted test.
local lines = {}
local p = assert(io.popen("build/unit 2>&1"))
for line in p:lines() do lines[#lines + 1] = line end
local ok_exit = p:close()

describe("pure C policy (spec/c/unit.c)", function()
  it("ran", function()
    assert.is_true(#lines > 1, "build/unit printed nothing: run `make build/unit`")
  end)
  for _, line in ipairs(lines) do
    local verdict, name = line:match("^(n?o?t? ?ok) %- (.*)$")
    if verdict then
      it(name, function()
        assert.are.equal("ok", verdict, line)
      end)
    end
  end
  it("exits 0", function() assert.is_true(ok_exit == true) end)
end)
