#!/usr/bin/env bash
# TLS handshakes that never finish on the peer port are not held for ever. A TLS primary
# (--heartbeat-timeout 2s) gets 100 plain TCP connections from two loopback addresses that send
# nothing (and one that sends half a TLS ClientHello): the TLS handshake never completes, so no
# HELLO ever comes; each is closed within the bound (the heartbeat timeout, checked every
# second) and logged, and a real replica still connects and replicates afterwards.
set -euo pipefail
source "$(dirname "$0")/lib_tls.sh"

D=$T/pki
make_test_pki "$D"
unset LOCKSTEP_TOKEN LOCKSTEP_CACERT LOCKSTEP_CERT LOCKSTEP_KEY
export LOCKSTEP_CACERT=$D/ca.pem LOCKSTEP_CERT=$D/client.pem LOCKSTEP_KEY=$D/client.key
MT=(--tls-cert "$D/server.pem" --tls-key "$D/server.key" --tls-ca "$D/ca.pem")
start_node_sec P status_ok "${MT[@]}" --heartbeat-timeout 2s
printf 'first' | lsc P put /first >/dev/null
peer_port=${PEER_P##*:}

out=$(python3 - "$peer_port" <<'PY'
import json, os, sys, time
sys.path.insert(0, os.environ["CLUSTER_DIR"])
import socks
port = int(sys.argv[1])
conns = [socks.conn(port, "127.0.0.1" if i % 2 else "127.0.0.2") for i in range(100)]
# the first bytes of a TLS record (handshake, ClientHello) announcing more than is sent
conns[0].sendall(bytes([0x16, 0x03, 0x01, 0x02, 0x00, 0x01]))
t0 = time.monotonic()
closed = sum(1 for s in conns if socks.closed_within(s, max(0.1, 6 - (time.monotonic() - t0))))
print(json.dumps({"closed": closed, "elapsed": round(time.monotonic() - t0, 1)}))
PY
)
log "$out"
assert_eq 100 "$(jq -r .closed <<<"$out")" "unfinished TLS handshakes closed within 6 s (timeout 2s)"
grep -Eq 'no HELLO within|no data for' "$T/P.log" || fail "P did not log the closed handshakes"

start_node_sec R status_ok --role replica --upstream "$PEER_P" --heartbeat-timeout 2s \
    --tls-cert "$D/node2.pem" --tls-key "$D/node2.key" --tls-ca "$D/ca.pem"
wait_caught_up R P 20
printf 'later' | lsc P put /later >/dev/null
wait_caught_up R P 15
assert_same_digest P R
log "OK"
