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

.PHONY: all deps test spec mock demo clean examples lint check fuzz check-deps bench

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

# make test, the README's test command (and CI's): the specs, the static
# checks, the sanitizer and valgrind runs, and the fuzzers. `make spec` is
# the quick part: the specs and luacheck.
test: deps check-deps
	@$(MAKE) --no-print-directory spec lint check fuzz

spec: deps
	@$(MAKE) --no-print-directory all $(UNIT) examples
	$(BUSTED)
	luacheck -q lua spec bench examples

# Static checks: luacheck, cppcheck, clang-tidy (.clang-tidy) and
# clang-format (.clang-format) on the C sources.
CSOURCES = $(wildcard csrc/*.c csrc/*.h fuzz/*.c spec/c/*.c examples/embed/*.c)
lint:
	luacheck -q lua spec bench examples
	cppcheck --enable=warning,style,performance,portability --inline-suppr \
	  --error-exitcode=1 --std=c11 -q -I csrc csrc/
	clang-tidy -quiet csrc/*.c -- -std=c11 -D_POSIX_C_SOURCE=200809L \
	  $(LUA_CFLAGS) $(CURL_CFLAGS)
	clang-format --dry-run -Werror $(CSOURCES)

# The tools of `make check` and `make fuzz`.
check-deps:
	@sh scripts/deps.sh clang libclang-rt-14-dev valgrind cppcheck clang-tidy \
	  clang-format openssl

# make check: the C module built with AddressSanitizer and UBSan and the
# whole suite run against it (the sanitizer runtimes preloaded into lua5.4),
# then the integration specs under valgrind memcheck. Any report fails it.
ASAN_SO  = build/asan/spark/core.so
SAN      = -fsanitize=address,undefined -fno-sanitize-recover=undefined \
           -fno-omit-frame-pointer
$(ASAN_SO): $(SRCS) $(HDRS)
	@mkdir -p $(dir $@)
	gcc -O1 -g $(SAN) $(WARN) -fPIC -shared -D_POSIX_C_SOURCE=200809L \
	  $(LUA_CFLAGS) $(CURL_CFLAGS) -o $@ $(SRCS) $(CURL_LIBS)
# Only lua5.4 processes get the preloads, through a wrapper first on PATH
# that starts it as `ld.so --preload ...` (LD_PRELOAD would be inherited by
# every program the specs start: sh, timeout, openssl).
CHECK_BIN = build/check-bin
LDSO      = $(firstword $(wildcard /lib64/ld-linux-x86-64.so.2 /lib/ld-linux-aarch64.so.1))
$(CHECK_BIN)/lua5.4:
	@mkdir -p $(dir $@)
	printf '#!/bin/sh\nexec %s --preload "%s %s" %s "$$@"\n' "$(LDSO)" \
	  "$$(gcc -print-file-name=libasan.so)" "$$(gcc -print-file-name=libubsan.so)" \
	  "$$(command -v $(LUA))" > $@
	chmod +x $@
check: check-deps
	@$(MAKE) --no-print-directory all $(UNIT) examples $(ASAN_SO) $(CHECK_BIN)/lua5.4
	PATH="$(CURDIR)/$(CHECK_BIN):$$PATH" \
	  ASAN_OPTIONS=detect_leaks=1:exitcode=23 \
	  LSAN_OPTIONS=suppressions=$(CURDIR)/spec/lsan.supp:print_suppressions=0 \
	  UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
	  $(BUSTED) --run=asan
	valgrind -q --leak-check=full \
	  --errors-for-leak-kinds=definite --error-exitcode=99 \
	  $(LUA) /usr/bin/busted --run=valgrind

# make fuzz: libFuzzer harnesses of the parsers, FUZZ_SECONDS each (10, or
# 60 under CI). The seed corpus is fuzz/corpus/; runs grow a copy in build/.
FUZZERS      = retry_after link ratelimit header
FUZZ_SECONDS ?= $(if $(CI),60,10)
FUZZ_CFLAGS  = -g -O1 -fsanitize=fuzzer,address,undefined \
               -fno-sanitize-recover=undefined -I csrc -D_POSIX_C_SOURCE=200809L
fuzz: check-deps
	@mkdir -p build/fuzz
	clang $(FUZZ_CFLAGS) -o build/fuzz/retry_after fuzz/retry_after.c csrc/retry.c $(CURL_LIBS)
	clang $(FUZZ_CFLAGS) -o build/fuzz/link fuzz/link.c csrc/link.c
	clang $(FUZZ_CFLAGS) -o build/fuzz/ratelimit fuzz/ratelimit.c csrc/ratelimit.c -lm
	clang $(FUZZ_CFLAGS) $(CURL_CFLAGS) -o build/fuzz/header fuzz/header.c \
	  csrc/transport.c $(CURL_LIBS)
	@for f in $(FUZZERS); do \
	  mkdir -p build/fuzz/corpus-$$f && \
	  echo "fuzz: $$f for $(FUZZ_SECONDS) s" && \
	  build/fuzz/$$f -max_total_time=$(FUZZ_SECONDS) -timeout=10 -print_final_stats=1 \
	    -artifact_prefix=build/fuzz/$$f- build/fuzz/corpus-$$f fuzz/corpus/$$f \
	    2>build/fuzz/$$f.log || { tail -n 40 build/fuzz/$$f.log; exit 1; }; \
	  grep -E '^(Done|stat::new_units_added)' build/fuzz/$$f.log; \
	done

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

# make bench: the benchmarks (bench/README.md), not tests: never part of
# `make test`, they print what one run measured and fail on no number. nginx
# and spark-mock on loopback, about 6 minutes; BENCH_SECONDS and friends
# tune it. bench/deps.sh installs nginx-light, valgrind, curl and python3
# when run as root.
BENCH_RAW = build/bench/raw
$(BENCH_RAW): bench/raw.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(WARN) -D_POSIX_C_SOURCE=200809L $(LUA_CFLAGS) $(CURL_CFLAGS) \
	  -o $@ bench/raw.c $(LUA_LIBS) $(CURL_LIBS) $(LDFLAGS)
bench: deps
	@sh bench/deps.sh
	@$(MAKE) --no-print-directory all $(BENCH_RAW)
	@LUA=$(LUA) sh bench/run.sh

clean:
	rm -rf build
