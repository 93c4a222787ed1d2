"""bench/urllib_loop.py: the original example's HTTP client, Python's urllib.

    python3 bench/urllib_loop.py BASE_URL REQUESTS WARMUP

GET BASE_URL/rooms?max=100 with urllib.request.urlopen in a loop (a new
connection per request, urllib's default) and json.loads on each body; WARMUP
requests first, then REQUESTS timed on time.monotonic(); prints
{"requests": N, "seconds": S, "items": I}. Dummy token, loopback only. A
measurement, not a test.
"""
import json
import sys
import time
import urllib.request


def main():
    if len(sys.argv) != 4:
        sys.stderr.write("usage: python3 bench/urllib_loop.py BASE_URL REQUESTS WARMUP\n")
        return 2
    url = sys.argv[1] + "/rooms?max=100"
    n, warmup = int(sys.argv[2]), int(sys.argv[3])
    headers = {"Authorization": "Bearer mock-token", "Accept": "application/json"}
    # no proxy for loopback, whatever the environment says
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def one():
        with opener.open(urllib.request.Request(url, headers=headers)) as resp:
            if resp.status != 200:
                raise RuntimeError("HTTP %d" % resp.status)
            return json.loads(resp.read())["items"]

    rooms = []
    for _ in range(warmup):
        rooms = one()
    t0 = time.monotonic()
    for _ in range(n):
        rooms = one()
    t1 = time.monotonic()
    print(json.dumps({"requests": n, "seconds": t1 - t0, "items": len(rooms)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
