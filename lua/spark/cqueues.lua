--- spark.cqueues: spark clients whose waits yield to a cqueues controller.
--
--   local cqueues = require "cqueues"
--   local scq = require "spark.cqueues"
--   local cq = cqueues.new()
--   cq:wrap(function()
--     local client = scq.new{ token = "..." }      -- spark.new with scq.sleep
--     local rooms, res = client:get_rooms{ max = 10 }
--   end)
--   assert(cq:loop())
--
-- scq.sleep(seconds, info) is a spark sleep hook: inside a coroutine that a
-- cqueues controller runs, a Retry-After (or gate, backoff, pacing) wait is
-- a cqueues.sleep, so the controller runs its other coroutines meanwhile.
-- Outside a controller cqueues.sleep blocks (cqueues' own fallback). The
-- hook follows spark's protocol: when it woke before the time was up, it
-- returns the seconds left (measured on CLOCK_MONOTONIC, spark.monotime)
-- and spark calls it again for them; otherwise it returns nothing.
--
-- The HTTP transfer itself still blocks the controller (curl_easy_perform):
-- only the waits yield.
--
-- A coroutine of your own inside a controller's coroutine must be resumed
-- with cqueues' auxlib.resume / auxlib.wrap for its waits to reach the
-- controller (as for any cqueues I/O).
local ok, cqueues = pcall(require, "cqueues")
if not ok then
  error("spark.cqueues needs the cqueues module (Debian: apt-get install lua-cqueues;"
    .. " luarocks install cqueues): " .. tostring(cqueues), 0)
end
local spark = require "spark"

local M = { cqueues = cqueues }

local monotime = spark.monotime

--- The sleep hook: yields to the running cqueues controller for `seconds`.
function M.sleep(seconds, _info)
  spark.check_seconds("spark.cqueues.sleep", seconds)
  local deadline = monotime() + seconds
  cqueues.sleep(seconds)
  local left = deadline - monotime()
  if left > 0 then return left end
end

--- spark.new(opts) with `sleep = spark.cqueues.sleep`. opts must not set
-- `sleep` (use spark.new for a hook of your own).
M.new = spark.new_with_sleep("spark.cqueues", M.sleep)

return M
