--- spark.luv: spark clients whose waits yield to a libuv loop (luv).
--
--   local uv = require "luv"
--   local sluv = require "spark.luv"
--   coroutine.wrap(function()
--     local client = sluv.new{ token = "..." }     -- spark.new with sluv.sleep
--     local rooms, res = client:get_rooms{ max = 10 }
--   end)()
--   uv.run()
--
-- sluv.sleep(seconds, info) is a spark sleep hook. It must run inside a
-- coroutine (it raises a clear error otherwise): it starts a one-shot uv
-- timer of `seconds` (rounded up to whole milliseconds) whose callback
-- resumes that coroutine, then yields; the loop runs everything else
-- meanwhile. The hook follows spark's protocol: libuv measures timers
-- against its cached loop time, in whole milliseconds, so a timer can fire
-- a little early; the hook then returns the seconds left (CLOCK_MONOTONIC,
-- spark.monotime) and spark calls it again for them. It also returns the
-- rest when something else resumed the coroutine early.
--
-- The callback resumes the coroutine with coroutine.resume. An error the
-- coroutine raises after that is raised in the timer callback, where luv
-- handles it like any callback error (by default it prints it and exits):
-- catch errors inside your coroutine (pcall yields fine in Lua 5.4) to
-- handle them yourself.
--
-- The HTTP transfer itself still blocks the loop (curl_easy_perform): only
-- the waits yield.
local ok, uv = pcall(require, "luv")
if not ok then
  error("spark.luv needs the luv module (Debian: apt-get install lua-luv;"
    .. " luarocks install luv): " .. tostring(uv), 0)
end
local spark = require "spark"

local M = { uv = uv }

local monotime = spark.monotime

--- The sleep hook: yields the running coroutine to the uv loop for `seconds`.
function M.sleep(seconds, _info)
  spark.check_seconds("spark.luv.sleep", seconds)
  local co, main = coroutine.running()
  if main or not coroutine.isyieldable() then
    error("spark.luv.sleep: call it inside a coroutine (the uv loop resumes it when the"
      .. " wait is over), e.g. coroutine.wrap(function() client:get_rooms() end)()", 2)
  end
  local deadline = monotime() + seconds
  local ms = math.ceil(seconds * 1000)
  if ms > 0x7fffffff then ms = 0x7fffffff end
  local timer = assert(uv.new_timer())
  local waiting = true
  uv.update_time() -- a stale loop time would make the timer fire earlier
  assert(timer:start(ms, 0, function()
    waiting = false
    timer:close()
    local resumed, err = coroutine.resume(co)
    if not resumed then error(debug.traceback(co, err), 0) end
  end))
  coroutine.yield()
  if waiting then timer:close() end -- something else resumed us: the wait ends here
  local left = deadline - monotime()
  if left > 0 then return left end
end

--- spark.new(opts) with `sleep = spark.luv.sleep`. opts must not set
-- `sleep` (use spark.new for a hook of your own).
M.new = spark.new_with_sleep("spark.luv", M.sleep)

return M
