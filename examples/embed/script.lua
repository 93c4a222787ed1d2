-- The script the embed host runs in a coroutine (examples/embed/embed.c).
-- `host` is the host's C module: host.sleep records each wait and yields
-- to the host, which waits in its own loop and resumes the script.
-- The token and base URL come from WEBEX_ACCESS_TOKEN / SPARK_BASE_URL.
local spark = require "spark"
local host = require "host"

local client <close> = spark.new{ sleep = host.sleep }
local rooms, res = client:get_rooms{ max = tonumber(os.getenv("EMBED_MAX")) or 10 }
if not rooms then error(tostring(res), 0) end
print(("script: %d rooms, HTTP %d, %d attempt(s), waited %g s")
  :format(#rooms, res.status, res.attempts, res.waited))
