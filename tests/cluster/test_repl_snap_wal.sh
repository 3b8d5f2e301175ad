#!/usr/bin/env bash
# A snapshot reader that never reads must not make the primary's WAL grow without bound. A raw
# downstream says HELLO and SYNC as a new store (it gets a snapshot), then only sends PINGs and
# never reads, while 40 MB are written. With --snapshot-max-wal 24M the primary drops it (ERROR
# snapshot_too_slow, logged) once the -wal file is over 24 MB, and the -wal file is checkpointed
# back below the limit. A real replica then takes a snapshot and matches the primary.
set -euo pipefail
source "$(dirname "$0")/lib_repl.sh"

LIMIT_MB=24
start_node P --snapshot-max-wal ${LIMIT_MB}M --heartbeat-timeout 5s
wal=$DATA_P/store.db-wal
# puts PART COUNT: COUNT items of 60 KB under /PART, one import (one transaction)
puts() {
    python3 - "$1" "$2" >"$SHM/ops.ndjson" <<'PY'
import base64, json, os, sys
for i in range(int(sys.argv[2])):
    body = base64.b64encode(os.urandom(45000)).decode()  # 60,000 bytes
    print(json.dumps({"op": "put", "path": "/%s/%04d" % (sys.argv[1], i), "body": body}))
PY
    lsc P import "$SHM/ops.ndjson" >/dev/null
}
puts base 200 # 12 MB: more than the socket buffers, so the snapshot stalls part way
wal_mb() { echo $(($(stat -c %s "$wal" 2>/dev/null || echo 0) / 1048576)); }
log "-wal file: $(wal_mb) MB before the snapshot"

peer_port=${PEER_P##*:}
python3 - "$peer_port" >"$T/stall.out" 2>&1 <<'PY' &
import json, os, socket, sys, time
sys.path.insert(0, os.environ["CLUSTER_DIR"])
import socks
s = socks.conn(int(sys.argv[1]))
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
w = socks.hello(s, "stalled")
assert w and w[0] == 2, w
s.sendall(socks.frame(3, {"store_id": "0" * 32, "epoch": 1, "seq": 0, "snapshot_pending": False,
                          "filter": {"published_only": False, "include": []}}))
t0 = time.monotonic()
result = "still open"
while time.monotonic() - t0 < 120:
    time.sleep(1)
    try:
        s.sendall(socks.frame(11, {"name": "stalled", "seq": 0}))
    except OSError as e:
        result = "closed after %.0f s" % (time.monotonic() - t0)
        break
print(result)
PY
stall_pid=$!
bg_track "$stall_pid"
wait_until 15 grep -q 'sending stalled a snapshot' "$(node_log P)" || fail "no snapshot for the stalled peer"

for part in a b c d; do
    puts "$part" 170 # 10 MB each
    log "-wal file: $(wal_mb) MB"
done
wait_until 30 grep -q 'over --snapshot-max-wal .*dropping the snapshot sent to stalled' \
    "$(node_log P)" || fail "the stalled snapshot was not dropped (-wal file $(wal_mb) MB)"
bg_wait "$stall_pid" 30 || true
assert_contains "$(cat "$T/stall.out")" "closed after" "the stalled peer's connection"
printf 'after' | lsc P put /after >/dev/null
wal_below() { [[ $(wal_mb) -lt $LIMIT_MB ]]; }
wait_until 30 wal_below || fail "the -wal file stayed at $(wal_mb) MB after the snapshot was dropped"
log "-wal file: $(wal_mb) MB after the drop"

start_node R --role replica --upstream "$PEER_P"
wait_caught_up R P 120
assert_same_digest P R
log "OK"
