--- spark.poll: the polling loop of the original Cisco example, as a library.
--
-- It sends `GET /rooms` again and again on one client, reports one event per
-- response, waits out every 429 for exactly its Retry-After (in chunks, with
-- a progress event between chunks) and stops at the first error the client
-- gives up on, at a count or duration bound, or on Ctrl+C. The spark-poll
-- command is a thin argparse layer over it; hosts and tests drive it here.
--
--   local poll = require "spark.poll"
--   local summary, code = poll.run{
--     client = { token = "...", base_url = "..." },  -- options of spark.new
--     params = { max = 10 },        -- of client:get_rooms (validated by spark)
--     count = 5,                    -- polls (calls of get_rooms); nil: no bound
--     duration = 20,                -- seconds; nil: no bound
--     interval = 0,                 -- pause between polls, seconds
--     progress_every = 10,          -- seconds between progress events
--     emit = poll.text_writer{},    -- function(event); the default writes text
--   }
--   -- summary: see below; code: 0 normal end, 1 API error, 130 interrupted
--
-- `client` is either a table of spark.new options (poll.run adds its `sleep`
-- and `on_retry` hooks and a large `max_rate_limited`, makes the client and
-- closes it at the end) or a client. A client made elsewhere has hooks the
-- poller does not see, so it gets no rate_limited/retry/asleep events; to
-- have them, make the poller first and give its hooks to spark.new:
--
--   local p = poll.new{ emit = ..., count = 5 }
--   local c = spark.new{ sleep = p.sleep, on_retry = p.on_retry, ... }
--   local summary, code = p:run(c)
--
-- Events (tables; `time` is unix time in seconds, rounded to milliseconds):
--   {type="start", url=, count=, duration=, interval=, forever=true|nil}
--   {type="response", time=, status=, tracking_id=, attempts=, items=}
--   {type="rate_limited", time=, status=429, tracking_id=, retry_after=,
--    delay=, attempt=}                a 429 the client will wait out
--   {type="retry", time=, status=, tracking_id=, reason=, delay=, attempt=}
--                                      a transient failure it will retry
--   {type="wait", time=, reason=, seconds=}  a wait no response announced
--                                      (reason "gate")
--   {type="asleep", time=, remaining=, reason=}  progress of a long wait
--   {type="error", time=, kind=, status=, message=, tracking_id=,
--    retry_after=, text=}              the error that ended the run
--   {type="summary", ...}              the summary table, always last
--
-- The summary: reason ("count", "duration", "error", "interrupted"),
-- requests (HTTP requests sent: every attempt), ok (2xx answers),
-- rate_limited (429 answers), errors (the other answers and failed
-- attempts), polls (calls of get_rooms), slept (seconds waited for the
-- client: Retry-After, gate, backoff), paused (seconds of `interval`),
-- elapsed (seconds), rate (requests per second), exit_code; note (a
-- sentence) when the run ended early for its duration.
--
-- Ctrl+C: under lua5.4, SIGINT makes the next Lua instruction raise
-- "interrupted!"; spark.sleep returns early on the signal, so the error
-- comes at once even during a long Retry-After. run() catches it, emits the
-- summary and returns exit code 130.

local spark = require "spark"
local system = require "system"
local cjson = require "cjson"

local json = cjson.new()

local poll = {
  DEFAULT_PROGRESS_EVERY = 10,
  DEFAULT_MAX_WAIT = 3600,
  DEFAULT_MAX_RATE_LIMITED = 1000000,
}

local EPSILON = 1e-9

-- Numbers -------------------------------------------------------------------

-- Integral floats -> integers, so that 12.0 is shown (and encoded) as 12.
local function tidy(v)
  if math.type(v) == "float" then
    local i = math.tointeger(v)
    if i then return i end
    local r = math.floor(v + 0.5)
    if math.abs(v - r) < EPSILON and math.abs(r) < 2 ^ 53 then return math.tointeger(r) end
  end
  return v
end

-- Rounds to `digits` decimals, giving an integer when the result is one.
local function round(v, digits)
  local f = 10 ^ (digits or 3)
  return tidy(math.floor(v * f + 0.5) / f)
end

--- A number for people: an integer when it is one, else at most 3 decimals.
function poll.format_number(v)
  v = round(v, 3)
  if math.type(v) == "integer" then return string.format("%d", v) end
  return (string.format("%.3f", v):gsub("0+$", ""))
end

-- Unix time with milliseconds, as text: 1733338800.123 (always 3 decimals).
local function format_time(t)
  return string.format("%.3f", t)
end

-- Writers ---------------------------------------------------------------------

local function line(f, s)
  f:write(s, "\n")
  f:flush()
end

--- The text of a summary (without the "spark-poll: " prefix).
function poll.summary_text(s)
  local why = ({
    count = "count reached", duration = "duration over", error = "stopped on an error",
    interrupted = "interrupted",
  })[s.reason] or tostring(s.reason)
  local text = string.format(
    "summary (%s): %d requests, %d 2xx, %d 429, %d other errors; "
    .. "slept %s s, paused %s s, elapsed %s s, %s requests/s",
    why, s.requests, s.ok, s.rate_limited, s.errors, poll.format_number(s.slept),
    poll.format_number(s.paused), poll.format_number(s.elapsed), string.format("%.2f", s.rate))
  if s.note then text = text .. " (" .. s.note .. ")" end
  return text
end

--- An emit function writing text: one line per response on `out`
-- `<status> <unix time> <TrackingID>`, 429 lines with `sleeping N s
-- (Retry-After)`, progress lines `asleep for N more seconds`; the start
-- notice, the error and the summary on `err`. opts: out (io.stdout), err
-- (io.stderr), quiet (only the summary, the error and the notice of an
-- unbounded run), prefix ("spark-poll: ").
function poll.text_writer(opts)
  opts = opts or {}
  local out, errf = opts.out or io.stdout, opts.err or io.stderr
  local quiet, prefix = opts.quiet, opts.prefix or "spark-poll: "
  local fmt = poll.format_number
  return function(e)
    local t = e.type
    if t == "summary" then
      line(errf, prefix .. poll.summary_text(e))
    elseif t == "error" then
      if e.status and not quiet then
        line(out, string.format("%d %s %s", e.status, format_time(e.time), e.tracking_id or "-"))
      end
      line(errf, prefix .. e.text)
    elseif t == "start" then
      if e.forever then
        line(errf, prefix .. "polling " .. e.url .. " until interrupted (Ctrl+C stops it)")
      elseif not quiet then
        local bounds = {}
        if e.count then bounds[#bounds + 1] = e.count .. (e.count == 1 and " poll" or " polls") end
        if e.duration then bounds[#bounds + 1] = fmt(e.duration) .. " s" end
        line(errf, prefix .. "polling " .. e.url .. " for " .. table.concat(bounds, " or "))
      end
    elseif quiet then
      return
    elseif t == "response" then
      line(out, string.format("%d %s %s", e.status, format_time(e.time), e.tracking_id or "-"))
    elseif t == "rate_limited" then
      line(out, string.format("%d %s %s sleeping %s s (Retry-After)", e.status,
        format_time(e.time), e.tracking_id or "-", fmt(e.delay)))
    elseif t == "retry" then
      line(out, string.format("%03d %s %s retrying in %s s (%s)", e.status or 0,
        format_time(e.time), e.tracking_id or "-", fmt(e.delay), e.reason))
    elseif t == "wait" then
      line(out, string.format("waiting %s s (%s)", fmt(e.seconds), e.reason))
    elseif t == "asleep" then
      line(out, string.format("asleep for %s more seconds", fmt(e.remaining)))
    end
  end
end

--- An emit function writing one JSON object per event on `out`
-- (io.stdout); the error's text and the notice of an unbounded run also go
-- to `err` (io.stderr) for people. opts.quiet: only summary events (and the
-- error) on `out`.
function poll.json_writer(opts)
  opts = opts or {}
  local out, errf = opts.out or io.stdout, opts.err or io.stderr
  local quiet, prefix = opts.quiet, opts.prefix or "spark-poll: "
  return function(e)
    if e.type == "error" then
      line(errf, prefix .. e.text)
    elseif e.type == "start" and e.forever then
      line(errf, prefix .. "polling " .. e.url .. " until interrupted (Ctrl+C stops it)")
    end
    if quiet and e.type ~= "summary" and e.type ~= "error" then return end
    local copy = {}
    for k, v in pairs(e) do copy[k] = tidy(v) end
    line(out, json.encode(copy))
  end
end

-- The poller ------------------------------------------------------------------

local Poller = {}
Poller.__index = Poller

-- Raised by the sleep hook to end the run when a wait would outlast the
-- duration; propagates unchanged through the client's call.
local STOP = setmetatable({}, { __tostring = function() return "spark.poll: duration over" end })

local function check_number(opts, name, min, exclusive, integer)
  local v = opts[name]
  if v == nil then return end
  local bad = type(v) ~= "number" or v ~= v or v == math.huge
    or (integer and math.type(v) ~= "integer" and v ~= math.floor(v))
    or v < min or (exclusive and v == min)
  if bad then
    error(string.format("spark.poll: option '%s' must be %s %s %s", name,
      integer and "an integer" or "a number", exclusive and ">" or ">=", min), 3)
  end
  return v
end

--- A poller: poll.new(opts) with the options of poll.run but `client`.
-- p.sleep and p.on_retry are the hooks to give to spark.new.
function poll.new(opts)
  opts = opts or {}
  if type(opts) ~= "table" then error("spark.poll: bad argument 'opts' (table expected)", 2) end
  local self = setmetatable({
    params = opts.params,
    count = tidy(check_number(opts, "count", 0, false, true)),
    duration = check_number(opts, "duration", 0, true),
    interval = check_number(opts, "interval", 0) or 0,
    progress_every = check_number(opts, "progress_every", 0, true)
      or poll.DEFAULT_PROGRESS_EVERY,
    emit = opts.emit or poll.text_writer(),
    base_sleep = opts.sleep or spark.sleep,
    clock = opts.clock or system.gettime,
    monotime = opts.monotime or spark.monotime,
  }, Poller)
  if opts.params ~= nil and type(opts.params) ~= "table" then
    error("spark.poll: option 'params' must be a table", 2)
  end
  self:reset()
  self.sleep = function(seconds, info) return self:wait(seconds, info) end
  self.on_retry = function(info) self:retried(info) end
  return self
end

function Poller:reset()
  self.requests, self.ok, self.rate_limited, self.polls = 0, 0, 0, 0
  self.slept, self.paused = 0, 0
  self.call_attempts = 0
  self.note, self.asleep_since = nil, nil
end

function Poller:now()
  return round(self.clock(), 3)
end

-- Sleeps `seconds` in chunks of progress_every through the base sleeper,
-- with an asleep event between chunks (when `progress`). Honours the sleep
-- protocol: returns the unslept seconds when the base sleeper reports some
-- (a signal woke it), nothing when it slept the whole time.
function Poller:chunked(seconds, info, progress, counter)
  local remaining = seconds
  while remaining > EPSILON do
    local chunk = math.min(self.progress_every, remaining)
    -- Ctrl+C raises right as the base sleeper returns: run() then counts
    -- the time since `asleep_since`.
    self.asleep_since, self.asleep_counter = self.monotime(), counter
    local left = self.base_sleep(chunk, info)
    self.asleep_since = nil
    if type(left) ~= "number" or left < 0 then left = 0 end
    if left > chunk then left = chunk end
    self[counter] = self[counter] + (chunk - left)
    remaining = remaining - (chunk - left)
    if left > 0 then return remaining end
    if progress and remaining > EPSILON then
      self.emit{ type = "asleep", time = self:now(), remaining = tidy(remaining),
        reason = info and info.reason }
    end
  end
end

-- Ends the run (STOP) instead of starting a wait the duration cannot hold.
function Poller:fit(seconds, what)
  if self.deadline and self.monotime() + seconds > self.deadline + EPSILON then
    self.note = string.format("the %s of %s s would outlast the duration", what,
      poll.format_number(seconds))
    error(STOP, 0)
  end
end

--- The sleep hook: sleep(seconds, info).
function Poller:wait(seconds, info)
  info = info or {}
  if info.reason == "gate" then
    self.emit{ type = "wait", time = self:now(), reason = "gate", seconds = tidy(seconds) }
  end
  self:fit(seconds, "wait")
  return self:chunked(seconds, info, true, "slept")
end

--- The on_retry hook: reports each retry before its wait.
function Poller:retried(info)
  self.call_attempts = info.attempt or self.call_attempts + 1
  local e = { time = self:now(), status = info.status, tracking_id = info.tracking_id,
    delay = tidy(info.delay), attempt = info.attempt }
  if info.status == 429 then
    self.rate_limited = self.rate_limited + 1
    e.type, e.retry_after = "rate_limited", tidy(info.retry_after)
  else
    e.type, e.reason = "retry", info.reason
  end
  self.emit(e)
end

function Poller:summary(reason, code)
  local elapsed = math.max(self.monotime() - self.started, 0)
  local requests = self.requests
  return {
    type = "summary", reason = reason, exit_code = code,
    requests = requests, ok = self.ok, rate_limited = self.rate_limited,
    errors = math.max(requests - self.ok - self.rate_limited, 0),
    polls = self.polls, slept = round(self.slept, 3), paused = round(self.paused, 3),
    elapsed = round(elapsed, 3),
    rate = elapsed > 0 and round(requests / elapsed, 3) or 0,
    note = self.note,
  }
end

-- One poll: true to go on, or the reason to stop.
function Poller:poll_once(client)
  self.call_attempts = 0
  local rooms, res = client:get_rooms(self.params)
  self.polls = self.polls + 1
  local time = self:now()
  if rooms then
    self.requests = self.requests + (res.attempts or 1)
    if res.status >= 200 and res.status <= 299 then self.ok = self.ok + 1 end
    self.call_attempts = 0
    self.emit{ type = "response", time = time, status = res.status,
      tracking_id = res.tracking_id, attempts = res.attempts, items = #rooms }
    return true
  end
  local err = res
  self.requests = self.requests + (err.attempts or self.call_attempts)
  self.call_attempts = 0
  if err.status == 429 then self.rate_limited = self.rate_limited + 1 end
  self.emit{ type = "error", time = time, kind = err.kind, status = err.status,
    message = err.message, tracking_id = err.tracking_id,
    retry_after = err.retry_after and tidy(err.retry_after), text = tostring(err) }
  return "error"
end

function Poller:loop(client)
  while true do
    if self.count and self.polls >= self.count then return "count" end
    if self.deadline and self.monotime() >= self.deadline then return "duration" end
    local go = self:poll_once(client)
    if go ~= true then return go end
    if self.interval > 0 and not (self.count and self.polls >= self.count) then
      self:fit(self.interval, "interval")
      self:chunked(self.interval, { reason = "interval" }, false, "paused")
    end
  end
end

local CODES = { count = 0, duration = 0, error = 1, interrupted = 130 }

local function interrupted(e)
  return type(e) == "string" and e:find("interrupted!", 1, true) ~= nil
end

--- Runs the loop on `client` until a bound, an error or Ctrl+C; emits the
-- summary event last and returns the summary and the exit code. Errors
-- other than the client's (bugs, a hook's) are re-raised after the summary.
function Poller:run(client)
  self:reset()
  self.started = self.monotime()
  self.deadline = self.duration and self.started + self.duration
  local ok, reason = pcall(function()
    self.emit{ type = "start", url = client:base_url() .. "/rooms", count = self.count,
      duration = self.duration, interval = self.interval,
      forever = (not self.count and not self.duration) or nil }
    return self:loop(client)
  end)
  local raised
  if not ok then
    if reason == STOP then
      reason = "duration"
    elseif interrupted(reason) then
      reason = "interrupted"
    else
      raised, reason = reason, "error"
    end
    if self.asleep_since then -- a sleep broken off
      local c = self.asleep_counter
      self[c] = self[c] + math.max(self.monotime() - self.asleep_since, 0)
      self.asleep_since = nil
    end
    -- attempts of a call cut short (a 429 seen, then the wait broken off)
    self.requests = self.requests + self.call_attempts
    self.call_attempts = 0
  end
  local code = CODES[reason]
  local summary = self:summary(reason, code)
  self.emit(summary)
  if raised ~= nil then error(raised, 0) end
  return summary, code
end

--- Runs a poller made from `opts` (see the top of this file).
function poll.run(opts)
  opts = opts or {}
  if type(opts) ~= "table" then error("spark.poll: bad argument 'opts' (table expected)", 2) end
  local p = poll.new(opts)
  local client, own = opts.client, false
  if client == nil or type(client) == "table" then
    local o = { max_rate_limited = poll.DEFAULT_MAX_RATE_LIMITED, max_wait = poll.DEFAULT_MAX_WAIT }
    for k, v in pairs(client or {}) do o[k] = v end
    o.sleep, o.on_retry = p.sleep, p.on_retry
    client, own = spark.new(o), true
  end
  local results = table.pack(pcall(p.run, p, client))
  if own then client:close() end
  if not results[1] then error(results[2], 0) end
  return results[2], results[3]
end

poll.STOP = STOP

return poll
