#!/usr/bin/env bash
# A hostile peer on the upstream's peer port, in the ways a tester found (docs/protocol.md
# sections 4, 12 and 13), each time with a real replica R connected all along:
#   1. 120 connections from two loopback addresses, each announcing a 8 MiB frame before HELLO
#      and sending 256 KiB of it: each is dropped at the header (before HELLO frames are
#      HELLO-sized, 64 KiB), and the server's RSS stays small;
#   2. an ACK far beyond what was sent (2^62): the peer is dropped (protocol_error), /v1/nodes
#      never shows that seq, and a write with wait_replicas=1 is not satisfied by it;
#   3. a HELLO reusing R's name while R is alive: refused with name_in_use; R stays connected
#      (live, no reconnect in its log);
#   4. 2,000 HELLOs with made-up names: /v1/nodes stays bounded (256 departed nodes at most);
#   5. a connection that never says HELLO is closed after about --heartbeat-timeout, and one
#      trickling a HELLO a byte at a time too (it is never silent, so only a deadline helps).
set -euo pipefail
source "$(dirname "$0")/lib_repl.sh"

start_node P --heartbeat-timeout 3s
start_node R --role replica --upstream "$PEER_P" --heartbeat-timeout 3s
printf 'first' | lsc P put /first >/dev/null
wait_caught_up R P 15
peer_port=${PEER_P##*:}
pid_p=$PID_P
r_follows() { grep -c 'following ' "$(node_log R)" || true; }
follows_before=$(r_follows)

# ---------------------------------------------------------------- 1. big frames before HELLO
log "1. 120 connections announcing 8 MiB frames before HELLO"
out=$(python3 - "$peer_port" "$pid_p" <<'PY'
import json, os, socket, struct, sys, time
sys.path.insert(0, os.environ["CLUSTER_DIR"])
import socks
port, pid = int(sys.argv[1]), int(sys.argv[2])
rss0 = socks.vmrss_kb(pid)
conns = []
chunk = b"{" * (256 << 10)
for i in range(120):
    s = socks.conn(port, "127.0.0.1" if i % 2 else "127.0.0.2")
    s.sendall(struct.pack(">IB", 8 << 20, 1))
    try:
        s.sendall(chunk)
    except OSError:
        pass  # already dropped
    conns.append(s)
time.sleep(0.5)
rss1 = socks.vmrss_kb(pid)
closed = sum(1 for s in conns if socks.closed_within(s, 2))
print(json.dumps({"rss0": rss0, "rss1": rss1, "closed": closed}))
PY
)
log "   $out"
closed=$(jq -r .closed <<<"$out")
grow=$(jq -r '(.rss1 - .rss0) / 1024 | floor' <<<"$out")
assert_eq 120 "$closed" "connections announcing an 8 MiB frame before HELLO dropped at once"
[[ $grow -lt 16 ]] || fail "the server grew by $grow MB for 120 unauthenticated connections"
grep -q 'frame larger than the limit' "$(node_log P)" || fail "the oversized frames were not logged"

# ---------------------------------------------------------------- 2. an ACK beyond what was sent
log "2. an ACK of 2^62"
store_id=$(lsc P status --json | jq -r .store_id)
out=$(python3 - "$peer_port" "$store_id" "$URL_P" <<'PY'
import json, os, sys, time, urllib.request, urllib.error
sys.path.insert(0, os.environ["CLUSTER_DIR"])
import socks
port, store_id, url = int(sys.argv[1]), sys.argv[2], sys.argv[3]
s = socks.conn(port)
w = socks.hello(s, "liar")
assert w and w[0] == 2, w
s.sendall(socks.frame(3, {"store_id": store_id, "epoch": 1, "seq": 0, "snapshot_pending": False,
                          "filter": {"published_only": False, "include": []}}))
s.sendall(socks.frame(10, socks.varint(1 << 62)))
time.sleep(0.3)
nodes = json.load(urllib.request.urlopen(url + "/v1/nodes"))
code = 0
req = urllib.request.Request(url + "/v1/items/lie?wait_replicas=2&wait_ms=1500", data=b"x",
                             method="PUT")
try:
    code = urllib.request.urlopen(req).status
except urllib.error.HTTPError as e:
    code = e.code
print(json.dumps({"put": code, "nodes": nodes, "closed": socks.closed_within(s, 3)}))
PY
)
log "   $out"
# R is one replica; with the liar believed, two would have "applied" the write at once
assert_eq 504 "$(jq -r .put <<<"$out")" "wait_replicas=2 with one real replica and a liar"
assert_eq true "$(jq -r .closed <<<"$out")" "the lying peer was dropped"
assert_eq 0 "$(jq -r '[.nodes.nodes[] | select(.applied_seq >= 4611686018427387904)] | length' <<<"$out")" \
    "/v1/nodes never shows the lie"
sleep 1
assert_eq 0 "$(curl -s "$URL_P/v1/nodes" | jq -r '[.nodes[] | select(.applied_seq >= 4611686018427387904)] | length')" \
    "/v1/nodes afterwards"
grep -q 'ACK of seq 4611686018427387904, beyond' "$(node_log P)" || fail "the lying ACK was not logged"

# ---------------------------------------------------------------- 3. a second HELLO with R's name
log "3. a HELLO with R's name while R is connected"
out=$(python3 - "$peer_port" <<'PY'
import json, os, sys
sys.path.insert(0, os.environ["CLUSTER_DIR"])
import socks
s = socks.conn(int(sys.argv[1]))
w = socks.hello(s, "R")
print(json.dumps({"answer": w[0] if w else None, "body": w[1] if w else None,
                  "closed": socks.closed_within(s, 3)}))
PY
)
log "   $out"
assert_eq 12 "$(jq -r .answer <<<"$out")" "the impostor gets ERROR"
assert_eq name_in_use "$(jq -r .body.code <<<"$out")" "the impostor's ERROR code"
assert_eq true "$(jq -r .closed <<<"$out")" "the impostor is closed"
printf 'after impostor' | lsc P put /after-impostor >/dev/null
wait_caught_up R P 15
sleep 1
assert_eq live "$(curl -s "$URL_P/v1/nodes" | jq -r '.nodes[] | select(.name == "R") | .state')" \
    "R's state after the impostor"
assert_eq "$follows_before" "$(r_follows)" "R never reconnected"
assert_not_contains "$(cat "$(node_log R)")" "reconnecting" "R's log"

# ---------------------------------------------------------------- 4. many made-up names
log "4. 2,000 HELLOs with made-up names"
python3 - "$peer_port" <<'PY'
import os, sys
sys.path.insert(0, os.environ["CLUSTER_DIR"])
import socks
port = int(sys.argv[1])
for i in range(2000):
    s = socks.conn(port, "127.0.0.%d" % (3 + i % 4))
    w = socks.hello(s, "fake-%05d" % i)
    assert w and w[0] == 2, (i, w)
    s.close()
PY
sleep 1
n=$(curl -s "$URL_P/v1/nodes" | jq '.nodes | length')
log "   /v1/nodes holds $n entries"
[[ $n -le 258 ]] || fail "/v1/nodes holds $n entries after 2,000 made-up names"
assert_eq live "$(curl -s "$URL_P/v1/nodes" | jq -r '.nodes[] | select(.name == "R") | .state')" \
    "R is still remembered, live"

# ---------------------------------------------------------------- 5. no HELLO in time
log "5. connections that never finish HELLO"
out=$(python3 - "$peer_port" <<'PY'
import json, os, socket, struct, sys, threading, time
sys.path.insert(0, os.environ["CLUSTER_DIR"])
import socks
port = int(sys.argv[1])
silent = socks.conn(port)
trickle = socks.conn(port)
hello = socks.frame(1, {"proto": 1, "name": "slow", "role": "replica"})
t0 = time.monotonic()
closed_at = None
# one byte every 0.5 s: never silent for the 3 s heartbeat timeout, never a whole HELLO
for i in range(len(hello) - 1):
    try:
        trickle.sendall(hello[i:i + 1])
    except OSError:
        closed_at = time.monotonic() - t0
        break
    if socks.closed_within(trickle, 0.5):
        closed_at = time.monotonic() - t0
        break
    if time.monotonic() - t0 > 10:
        break
print(json.dumps({"silent": socks.closed_within(silent, 1), "trickle": closed_at}))
PY
)
log "   $out"
assert_eq true "$(jq -r .silent <<<"$out")" "a silent connection is closed"
t=$(jq -r '.trickle // 99 | floor' <<<"$out")
[[ $t -le 5 ]] || fail "a HELLO trickled byte by byte held the connection ${t}s (heartbeat timeout 3s)"
grep -q 'no HELLO within' "$(node_log P)" || fail "the HELLO deadline was not logged"

printf 'last' | lsc P put /last >/dev/null
wait_caught_up R P 15
assert_same_digest P R
log "OK"
