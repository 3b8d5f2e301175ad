#!/usr/bin/env bash
# bench/stall.sh - does anything wait behind a long read? A primary holding BENCH_STALL_ITEMS
# (1M) items and a live replica, both in /dev/shm. While GET /v1/digest of the whole store runs
# BENCH_STALL_DIGESTS (3) times in a row on the primary, one client sends GET /v1/status every
# 2 ms and a writer PUTs 200 small items a second; the replica's status is polled every 2 ms.
# Printed: p50 / p99 / max of the status latency, and of the replica's lag (from a put's reply
# to the first poll that shows the replica at its seq), during the digests and, for reference,
# with no digest running. Goal: status p99 under 10 ms while a digest runs.
#
# Usage: bench/stall.sh  (LOCKSTEP=path/to/lockstep to measure another build)
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BENCH_NAME=stall
source "$ROOT/bench/lib.sh"

LOCKSTEP=${LOCKSTEP:-$ROOT/build/lockstep}
ITEMS=${BENCH_STALL_ITEMS:-1000000}
DIGESTS=${BENCH_STALL_DIGESTS:-3}
[ -x "$LOCKSTEP" ] || { say "stall: $LOCKSTEP not built (make)"; exit 1; }

dir=$(mktemp -d /dev/shm/lockstep-stall.XXXXXX)
DIRS+=("$dir")

start() { # NAME ARGS...: sets URL_NAME, PEER_NAME
    local name=$1 http peer
    shift
    pick_port || exit 1
    http=$PORT
    pick_port || exit 1
    peer=$PORT
    "$LOCKSTEP" serve --data "$dir/$name" --http "127.0.0.1:$http" --listen "127.0.0.1:$peer" \
        --name "$name" --log-retention 7d,100G "$@" 2>"$dir/$name.log" &
    PIDS+=($!)
    printf -v "URL_$name" 'http://127.0.0.1:%s' "$http"
    printf -v "PEER_$name" '127.0.0.1:%s' "$peer"
    for ((i = 0; i < 100; i++)); do
        curl -sf "http://127.0.0.1:$http/v1/status" >/dev/null && return 0
        sleep 0.1
    done
    say "stall: $name did not start: $(tail -n 3 "$dir/$name.log")"
    exit 1
}

start P
start R --role replica --upstream "$PEER_P"
say "stall: loading $ITEMS items into the primary..."
python3 - "$URL_P" "$ITEMS" <<'PY' || exit 1
import http.client, sys, urllib.parse
u = urllib.parse.urlparse(sys.argv[1]); n = int(sys.argv[2])
c = http.client.HTTPConnection(u.hostname, u.port, timeout=300)
step = 20000
for base in range(0, n, step):
    body = "".join('{"op":"put","path":"/d/%07d","body":"item %d"}\n' % (i, i)
                   for i in range(base, min(n, base + step)))
    c.request("POST", "/v1/batch", body=body.encode())
    r = c.getresponse(); r.read()
    if r.status != 200:
        sys.exit("batch failed: %d" % r.status)
PY
for ((i = 0; i < 600; i++)); do
    p=$(curl -sf "$URL_P/v1/status" | jq -r .seq)
    r=$(curl -sf "$URL_R/v1/status" | jq -r .seq)
    [ "$p" = "$r" ] && break
    sleep 0.5
done
say "stall: primary at seq $p, replica at $r; measuring"

python3 - "$URL_P" "$URL_R" "$DIGESTS" <<'PY'
import http.client, json, sys, threading, time, urllib.parse
P, R, digests = urllib.parse.urlparse(sys.argv[1]), urllib.parse.urlparse(sys.argv[2]), int(sys.argv[3])
stop = threading.Event()
phase = ["idle"]
status_lat = {"idle": [], "digest": [], "after": []}
acked = []      # (seq, time acknowledged, phase)
replica = []    # (time, seq)

def conn(u):
    return http.client.HTTPConnection(u.hostname, u.port, timeout=120)

def get(c, path):
    c.request("GET", path)
    r = c.getresponse()
    return r.status, r.read()

def status_loop():
    c = conn(P)
    while not stop.is_set():
        ph = phase[0]
        t = time.perf_counter()
        get(c, "/v1/status")
        status_lat[ph].append((time.perf_counter() - t) * 1000)
        time.sleep(0.002)

def writer_loop():
    c = conn(P)
    i = 0
    while not stop.is_set():
        i += 1
        ph = phase[0]
        c.request("PUT", "/v1/items/w/%d" % (i % 1000), body=b"w %d" % i)
        r = c.getresponse()
        body = r.read()
        if r.status == 200:
            acked.append((json.loads(body)["seq"], time.perf_counter(), ph))
        time.sleep(0.005)

def replica_loop():
    c = conn(R)
    while not stop.is_set():
        st, body = get(c, "/v1/status")
        replica.append((time.perf_counter(), json.loads(body)["seq"]))
        time.sleep(0.002)

threads = [threading.Thread(target=f) for f in (status_loop, writer_loop, replica_loop)]
for t in threads: t.start()
time.sleep(3)                       # reference: no digest
phase[0] = "digest"
c = conn(P)
dt = []
for _ in range(digests):
    t = time.perf_counter()
    st, body = get(c, "/v1/digest")
    dt.append(time.perf_counter() - t)
    items = json.loads(body)["items"]
phase[0] = "after"
time.sleep(1)
stop.set()
for t in threads: t.join()

def pct(v, q):
    v = sorted(v)
    return v[min(len(v) - 1, int(q * len(v)))] if v else float("nan")

def lags(ph):
    """ms from a put's reply to the first replica poll that shows its seq"""
    import bisect
    times = [t for t, _ in replica]
    out = []
    for seq, t, p in acked:
        if p != ph: continue
        k = bisect.bisect_left(times, t)
        while k < len(replica) and replica[k][1] < seq: k += 1
        if k < len(replica): out.append((replica[k][0] - t) * 1000)
    return out

print("digest of %d items: %.2f s each (%d runs)" % (items, sum(dt) / len(dt), len(dt)))
print("%-34s %8s %8s %8s %7s" % ("", "p50 ms", "p99 ms", "max ms", "n"))
for ph, label in (("idle", "GET /v1/status, no digest"), ("digest", "GET /v1/status, digest running")):
    v = status_lat[ph]
    print("%-34s %8.2f %8.2f %8.2f %7d" % (label, pct(v, .5), pct(v, .99), max(v) if v else 0, len(v)))
for ph, label in (("idle", "replica lag, no digest"), ("digest", "replica lag, digest running")):
    v = lags(ph)
    print("%-34s %8.2f %8.2f %8.2f %7d" % (label, pct(v, .5), pct(v, .99), max(v) if v else 0, len(v)))
PY
