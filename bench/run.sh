#!/bin/sh
# bench/run.sh: runs bench/run.lua (the whole benchmark) in a fresh temporary
# directory, and on any exit (normal, error, Ctrl+C, TERM) kills whatever it
# started that is still running (nginx, spark-mock, clients: their PIDs are
# in $BENCH_TMP/pids) and removes the directory. `make bench` calls it; the
# results also go to build/bench/results.md.
set -u
here=$(cd "$(dirname "$0")/.." && pwd)
LUA=${LUA:-lua5.4}
BENCH_TMP=$(mktemp -d "${TMPDIR:-/tmp}/spark-bench.XXXXXX") || exit 1
export BENCH_TMP LUA

lua_pid=
cleanup() {
  if [ -n "$lua_pid" ]; then
    kill -TERM "$lua_pid" 2>/dev/null
    wait "$lua_pid" 2>/dev/null
  fi
  if [ -f "$BENCH_TMP/pids" ]; then
    # only processes still running are listed (bench/lib.lua removes a PID
    # once it has waited for its process)
    while read -r pid; do
      kill -TERM "$pid" 2>/dev/null
    done < "$BENCH_TMP/pids"
    while read -r pid; do
      n=0
      while kill -0 "$pid" 2>/dev/null && [ $n -lt 20 ]; do sleep 0.1; n=$((n + 1)); done
      kill -KILL "$pid" 2>/dev/null
    done < "$BENCH_TMP/pids"
  fi
  rm -rf "$BENCH_TMP"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

mkdir -p "$here/build/bench"
# in the background, so that the traps run at once on a signal (a shell runs
# them only after its foreground command); asynchronous commands of a
# non-interactive shell ignore SIGINT, so Ctrl+C reaches this shell alone
# and the cleanup stops everything
"$LUA" "$here/bench/run.lua" "$here/build/bench/results.md" &
lua_pid=$!
wait "$lua_pid"
rc=$?
lua_pid=
exit "$rc"
