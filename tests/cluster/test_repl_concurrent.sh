#!/usr/bin/env bash
# Concurrent writers, no fault at all: a primary P, three replicas R1-R3 and R4, a replica of R1.
# Four threads PUT small bodies over keep-alive connections for a few seconds, so groups commit
# back to back while downstreams stream. Every replica must end live at P's seq with P's log,
# entry by entry: the writer can commit a group before the in-memory tail holds it, and a
# downstream that took that for "caught up" once jumped its position past entries it never sent
# (gaps of 1-3 seqs on an unbroken connection, with wait_replicas and min_seq satisfied).
set -euo pipefail
source "$(dirname "$0")/lib_repl.sh"

start_node P
start_node R1 --role replica --upstream "$PEER_P"
start_node R2 --role replica --upstream "$PEER_P"
start_node R3 --role replica --upstream "$PEER_P"
start_node R4 --role replica --upstream "$PEER_R1"
for r in R1 R2 R3 R4; do wait_until 20 _caught_up "$r" P || fail "$r never went live"; done

# 4 threads, each its own keep-alive connection, for SECONDS seconds (bounded in count too)
python3 - "$URL_P" 6 <<'PY' >"$T/writers.out"
import http.client, sys, threading, time, urllib.parse
url = urllib.parse.urlparse(sys.argv[1]); secs = float(sys.argv[2])
acked = [0] * 4
def run(k):
    c = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
    end = time.time() + secs
    i = 0
    while time.time() < end and i < 50000:
        i += 1
        c.request("PUT", "/v1/items/c%d/%d" % (k, i % 50), body=b"body %d %d" % (k, i))
        r = c.getresponse(); r.read()
        if r.status == 200: acked[k] += 1
ts = [threading.Thread(target=run, args=(k,)) for k in range(4)]
for t in ts: t.start()
for t in ts: t.join()
print(sum(acked))
PY
acked=$(cat "$T/writers.out")
log "$acked writes acknowledged"
((acked > 500)) || fail "only $acked writes acknowledged"

for r in R1 R2 R3; do wait_caught_up "$r" P 60; done
wait_caught_up R4 R1 60
for r in R1 R2 R3 R4; do
    assert_same_log P "$r"
    assert_same_digest P "$r"
done
# what P tells of its downstreams matches what they hold
for r in R1 R2 R3; do
    applied=$(lsc P nodes --json | jq -r --arg n "$r" '.nodes[] | select(.name == $n) | .applied_seq')
    assert_eq "$applied" "$(seq_of P)" "applied_seq of $r in P's nodes"
done
