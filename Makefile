# spark: build, test and demo. `make` builds build/spark/core.so.
LUA      ?= lua5.4
CC       ?= cc
CFLAGS   ?= -O2 -g
WARN      = -std=c11 -Wall -Wextra -Wpedantic -Werror
LUA_CFLAGS  = $(shell pkg-config --cflags lua5.4 2>/dev/null || echo -I/usr/include/lua5.4)
CURL_CFLAGS = $(shell pkg-config --cflags libcurl 2>/dev/null)
CURL_LIBS   = $(shell pkg-config --libs libcurl 2>/dev/null || echo -lcurl)

SRCS = csrc/core.c csrc/transport.c csrc/retry.c csrc/link.c csrc/pace.c csrc/ratelimit.c
HDRS = $(wildcard csrc/*.h)
SO   = build/spark/core.so

BUSTED  ?= busted --lua=$(LUA)
LUAENV   = LUA_PATH="lua/?.lua;lua/?/init.lua;;" LUA_CPATH="build/?.so;;"

.PHONY: all deps test mock demo clean examples

all: $(SO)

# Unit tests of the pure C policy files, run by spec/c_unit_spec.lua.
PURE = csrc/retry.c csrc/link.c csrc/pace.c csrc/ratelimit.c
UNIT = build/unit
$(UNIT): spec/c/unit.c $(PURE) $(HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(WARN) -D_POSIX_C_SOURCE=200809L -o $@ spec/c/unit.c \
	  $(PURE) -lm

$(SO): $(SRCS) $(HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(WARN) -fPIC -shared -D_POSIX_C_SOURCE=200809L \
	  $(LUA_CFLAGS) $(CURL_CFLAGS) -o $@ $(SRCS) $(CURL_LIBS) $(LDFLAGS)

# examples/embed: a C host embedding Lua 5.4 with the spark C module linked
# in statically (csrc/ compiled into the binary, no core.so). Default paths
# of spark.lua and the script are this checkout's, fixed at compile time.
LUA_LIBS = $(shell pkg-config --libs lua5.4 2>/dev/null || echo -llua5.4)
EMBED    = build/examples/embed
examples: $(EMBED)
$(EMBED): examples/embed/embed.c $(SRCS) $(HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(WARN) -D_POSIX_C_SOURCE=200809L $(LUA_CFLAGS) $(CURL_CFLAGS) \
	  -DSPARK_LUA_DIR='"$(CURDIR)/lua"' \
	  -DEMBED_SCRIPT='"$(CURDIR)/examples/embed/script.lua"' \
	  -o $@ examples/embed/embed.c $(SRCS) $(LUA_LIBS) $(CURL_LIBS) -lm $(LDFLAGS)

# Installs missing Debian packages when run as root (see scripts/deps.sh).
deps:
	@sh scripts/deps.sh

test: deps
	@$(MAKE) --no-print-directory all $(UNIT) examples
	$(BUSTED)
	luacheck -q lua spec bench examples

# The simulator in the foreground: make mock MOCK_ARGS="--rate 5 --burst 5"
MOCK_ARGS ?= --port 8080
mock: deps
	$(LUAENV) $(LUA) lua/spark-mock $(MOCK_ARGS)

# The README's first command: spark-poll against spark-mock with a low rate
# limit for 20 s (the 429 -> Retry-After sleep -> resume cycle). See
# scripts/demo.sh; DEMO_DURATION=5 shortens it.
demo: deps
	@$(MAKE) --no-print-directory -s all
	@LUA=$(LUA) sh scripts/demo.sh

clean:
	rm -rf build
