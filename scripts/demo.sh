#!/bin/sh
# make demo: spark-poll against spark-mock with a low rate limit (5 requests
# per second, burst 5), for DEMO_DURATION seconds (20), so that the
# 429 -> sleep Retry-After -> resume cycle shows. The simulator is stopped at
# the end, on failure and on Ctrl+C. Run from anywhere; needs build/spark/core.so
# (make all). Extra arguments go to spark-poll.
set -eu
cd "$(dirname "$0")/.."
LUA=${LUA:-lua5.4}
DURATION=${DEMO_DURATION:-20}

tmp=$(mktemp -d)
mock_pid=""
cleanup() {
  if [ -n "$mock_pid" ]; then
    kill "$mock_pid" 2>/dev/null || true
    wait "$mock_pid" 2>/dev/null || true
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# The simulator prints its base URL as its first stdout line.
mkfifo "$tmp/url"
"$LUA" lua/spark-mock --port 0 --rate 5 --burst 5 >"$tmp/url" &
mock_pid=$!
if ! read -r url <"$tmp/url"; then
  echo "demo: spark-mock did not start" >&2
  exit 1
fi

echo "demo: spark-mock at $url (rate limit: 5 requests/s, burst 5)" >&2
echo "demo: spark-poll --duration $DURATION (Ctrl+C stops it early)" >&2
status=0
WEBEX_ACCESS_TOKEN=mock-token SPARK_BASE_URL=$url \
  "$LUA" lua/spark-poll --duration "$DURATION" "$@" || status=$?
exit "$status"
