rockspec_format = "3.0"
package = "spark"
version = "scm-1"
source = {
  url = "git+https://github.com/spark-lua/spark.git",
}
description = {
  summary = "A Webex REST API client that survives its rate limits",
  detailed = [[
    spark calls the Webex REST API (formerly Cisco Spark) through libcurl and
    waits out HTTP 429 answers exactly as long as Retry-After says, through a
    sleep hook that may yield to your scheduler. It comes with spark-poll, a
    polling command, and spark-mock, an offline Webex simulator.
  ]],
  license = "MIT",
}
dependencies = {
  "lua >= 5.4",
  "lua-cjson",
  "luasocket",
  "argparse",
  "luasystem",
}
external_dependencies = {
  -- no header check: Debian keeps curl.h under a multiarch directory that
  -- the compiler searches by itself but luarocks does not
  CURL = { library = "curl" },
}
build = {
  type = "builtin",
  modules = {
    spark = "lua/spark.lua",
    ["spark.mock"] = "lua/spark/mock.lua",
    ["spark.resources"] = "lua/spark/resources.lua",
    ["spark.poll"] = "lua/spark/poll.lua",
    -- load only where cqueues / luv are installed (no hard dependency)
    ["spark.cqueues"] = "lua/spark/cqueues.lua",
    ["spark.luv"] = "lua/spark/luv.lua",
    ["spark.core"] = {
      sources = { "csrc/core.c", "csrc/transport.c", "csrc/retry.c", "csrc/link.c",
                  "csrc/pace.c", "csrc/ratelimit.c" },
      defines = { "_POSIX_C_SOURCE=200809L" },
      libraries = { "curl" },
      incdirs = { "$(CURL_INCDIR)" },
      libdirs = { "$(CURL_LIBDIR)" },
    },
  },
  install = {
    bin = {
      ["spark-mock"] = "lua/spark-mock",
      ["spark-poll"] = "lua/spark-poll",
    },
  },
}
