#!/usr/bin/env bash
# Allow-lists and the per-address connection cap.
#
# 1. --allow 10.0.0.0/8 on a server bound to 127.0.0.1: every request from 127.0.0.1 gets 403
#    (with Connection: close), writes included, which change nothing; the log names the address.
#    --allow 127.0.0.0/8 lets 127.0.0.1 and 127.0.0.77 in; --allow 10.0.0.0/8 --allow 127.0.0.1
#    (repeatable; a bare address is a /32) lets 127.0.0.1 in and refuses 127.0.0.2. A malformed
#    --allow or --peer-allow stops the server at start.
# 2. --peer-allow 10.0.0.0/8: a replica from 127.0.0.1 never gets data, the primary logs the
#    refusal with the address, a raw connection is closed at once, and the HTTP port is not
#    affected; --peer-allow 127.0.0.0/8: the replica follows.
# 3. --max-conns-per-addr 2 on the peer port: two raw TCP connections from 127.0.0.1 stay open,
#    a third is closed at once (log line); another address still gets in; when one of the two
#    closes, 127.0.0.1 may connect again.
set -euo pipefail
source "$(dirname "$0")/lib_tls.sh"
unset LOCKSTEP_TOKEN

# is_refused: READY for a server that refuses us (it answers, with 403)
is_refused() { [[ "$(http_code "$URL/v1/status")" == 403 ]]; }
_count_at_least() { (($(grep -c "$1" "$2" || true) >= $3)); }

# ---------------------------------------------------------------- 1. --allow
launch_node A --allow 10.0.0.0/8
launch_node B --allow 10.0.0.0/8 --allow 127.0.0.1
launch_node C --allow 127.0.0.0/8
await_node A is_refused
await_node B status_ok
await_node C status_ok

code=$(curl -s -D "$T/h" -o "$T/body" -w '%{http_code}' "$URL_A/v1/status")
assert_eq 403 "$code" "GET /v1/status on A from 127.0.0.1"
assert_eq forbidden "$(jq -r .error.code "$T/body")" "error code on A"
grep -qi '^Connection: close' "$T/h" || fail "A's 403 without Connection: close: $(cat "$T/h")"
assert_eq 403 "$(http_code -X PUT --data-binary x "$URL_A/v1/items/x")" "PUT on A"
assert_eq 403 "$(http_code -X POST "$URL_A/v1/batch" --data-binary '{"op":"put","path":"/y","body":"y"}')" "batch on A"
assert_eq 403 "$(http_code -X POST "$URL_A/v1/tokens?role=admin")" "POST /v1/tokens on A"
assert_eq 403 "$(http_code -H "Authorization: Bearer lst_$(openssl rand -hex 32)" "$URL_A/v1/status")" "a token does not get past --allow"
assert_exit 1 lsc A status
assert_contains "$ERR" "may not use this server" "CLI against A"
grep -qE "refused an HTTP request from 127\.0\.0\.1:[0-9]+: not in --allow" "$T/A.log" ||
    fail "A's log does not name 127.0.0.1: $(grep -v '^===' "$T/A.log" | tail -3)"
# the refused writes changed nothing (read the store offline once A has stopped)
stop_server A
python3 - "$T/A/store.db" <<'PY' || fail "A's store after the refused writes"
import sqlite3, sys
c = sqlite3.connect("file:%s?mode=ro" % sys.argv[1], uri=True)
items = c.execute("SELECT count(*) FROM items").fetchone()[0]
tokens = c.execute("SELECT count(*) FROM tokens").fetchone()[0]
if items or tokens:
    print("items %d, tokens %d" % (items, tokens)); sys.exit(1)
PY

# B: 127.0.0.1 in, 127.0.0.2 out
assert_eq 200 "$(http_code "$URL_B/v1/status")" "B from 127.0.0.1"
echo b | lsc B put /b - >/dev/null || fail "put on B from 127.0.0.1"
assert_eq 403 "$(http_code --interface 127.0.0.2 "$URL_B/v1/status")" "B from 127.0.0.2"
assert_eq 403 "$(http_code --interface 127.0.0.2 -X PUT --data-binary x "$URL_B/v1/items/b")" "PUT on B from 127.0.0.2"
assert_eq b "$(lsc B get /b)" "/b on B after the refused PUT"
grep -qE "refused an HTTP request from 127\.0\.0\.2:[0-9]+: not in --allow" "$T/B.log" ||
    fail "B's log does not name 127.0.0.2"
! grep -qE "refused an HTTP request from 127\.0\.0\.1:" "$T/B.log" || fail "B refused 127.0.0.1"
# C: the whole of 127/8
assert_eq 200 "$(http_code "$URL_C/v1/status")" "C from 127.0.0.1"
assert_eq 200 "$(http_code --interface 127.0.0.77 "$URL_C/v1/status")" "C from 127.0.0.77"
! grep -q "not in --allow" "$T/C.log" || fail "C refused someone"

# malformed lists stop the server at once
for bad in "--allow 10.0.0.0/33" "--allow nonsense" "--peer-allow 300.1.2.3/8" "--allow 10.0.0.0/x"; do
    rc=0
    # shellcheck disable=SC2086
    timeout 20 "$LOCKSTEP" serve --data "$T/bad" --http "127.0.0.1:$(free_port)" \
        --listen "127.0.0.1:$(free_port)" $bad >"$T/bad.out" 2>&1 || rc=$?
    [[ "$rc" != 0 && "$rc" != 124 ]] || fail "serve $bad: exit $rc"
    grep -q -- "${bad%% *}" "$T/bad.out" || fail "serve $bad: the message does not name ${bad%% *}: $(cat "$T/bad.out")"
done

# ---------------------------------------------------------------- 2. --peer-allow
launch_node P1 --peer-allow 10.0.0.0/8
launch_node P2 --peer-allow 127.0.0.0/8 --peer-allow 10.0.0.0/8
await_node P1 status_ok # the HTTP port is not affected
await_node P2 status_ok
for p in P1 P2; do
    for i in 1 2 3; do echo "$p-$i" | lsc "$p" put "/d/$i" - >/dev/null; done
done
launch_node R1 --role replica --upstream "$PEER_P1"
launch_node R2 --role replica --upstream "$PEER_P2"
await_node R1 status_ok
await_node R2 status_ok
wait_caught_up R2 P2 20
assert_same_digest P2 R2
wait_until 10 grep -qE "refused a peer connection from 127\.0\.0\.1:[0-9]+: not in --peer-allow" "$T/P1.log" ||
    fail "P1's log does not refuse 127.0.0.1"
sleep 1 # a few retries
assert_ne live "$(status_field R1 state)" "state of R1"
assert_eq 0 "$(seq_of R1)" "seq of R1"
assert_eq 0 "$(lsc R1 digest --json | jq -r .items)" "items on R1"
! grep -q "downstream R1 (" "$T/P1.log" || fail "P1 accepted R1"
! grep -q "not in --peer-allow" "$T/P2.log" || fail "P2 refused a peer"
# refused connections are closed at once: the client reads end-of-stream, not a hello
python3 - "${PEER_P1##*:}" <<'PY' || fail "P1 did not close a refused connection at once"
import socket, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5)
t0 = time.time()
s.settimeout(2)
try:
    data = s.recv(100)
except ConnectionResetError:
    data = b""
except socket.timeout:
    print("still open after 2 s"); sys.exit(1)
dt = time.time() - t0
if data or dt > 1.0:
    print("got %r after %.2fs" % (data, dt)); sys.exit(1)
PY
stop_server R1
stop_server R2
stop_server P1
stop_server P2

# ---------------------------------------------------------------- 3. --max-conns-per-addr 2
launch_node M --max-conns-per-addr 2
await_node M status_ok
before=$(grep -c "it holds 2 already" "$T/M.log" || true)
python3 - "${PEER_M##*:}" >"$T/conns.out" 2>&1 <<'PY' || fail "peer connection cap: $(cat "$T/conns.out")"
import os, socket, sys, time
sys.path.insert(0, os.environ["CLUSTER_DIR"])
import socks
from socks import closed_within
port = int(sys.argv[1])


def conn(src="127.0.0.1"):
    return socks.conn(port, src)


bad = []
a = conn(); time.sleep(0.3)
b = conn(); time.sleep(0.3)
t0 = time.time()
c = conn()
if not closed_within(c, 1.5):
    bad.append("the third connection from 127.0.0.1 stayed open")
print("third closed after %.2fs" % (time.time() - t0))
for name, s in (("first", a), ("second", b)):
    if closed_within(s, 0.3):
        bad.append("the %s connection was closed" % name)
d = conn("127.0.0.2")  # another address has its own allowance
if closed_within(d, 1.0):
    bad.append("a connection from 127.0.0.2 was closed")
a.close()
time.sleep(0.8)  # the server notices
e = conn()
if closed_within(e, 1.0):
    bad.append("after one closed, a new connection from 127.0.0.1 was closed")
f = conn()
if not closed_within(f, 1.5):
    bad.append("with two held again, one more from 127.0.0.1 stayed open")
for s in (b, d, e):
    s.close()
print("\n".join(bad))
sys.exit(1 if bad else 0)
PY
log "$(head -1 "$T/conns.out")"
wait_until 5 _count_at_least "it holds 2 already" "$T/M.log" $((before + 2)) ||
    fail "M logged $(grep -c 'it holds 2 already' "$T/M.log") refusals, expected $((before + 2))"
grep -qE "refused a peer connection from 127\.0\.0\.1:[0-9]+: it holds 2 already" "$T/M.log" ||
    fail "M's refusal does not name 127.0.0.1"
! grep -q "refused a peer connection from 127\.0\.0\.2" "$T/M.log" || fail "M refused 127.0.0.2"
# M still serves, and a replica still gets in once the raw connections are gone
launch_node RM --role replica --upstream "$PEER_M"
await_node RM status_ok
echo m | lsc M put /m - >/dev/null
wait_caught_up RM M 20
assert_same_digest M RM
stop_server RM
stop_server M
stop_server B
stop_server C
