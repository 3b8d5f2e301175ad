#!/usr/bin/env bash
# Hostile or broken peers on a server's peer port: garbage, an HTTP request, an oversized frame
# header (length 0x7fffffff), a HELLO with a wrong protocol version, a HELLO with a bad role, a
# frame of the wrong type before HELLO, a JSON frame that is not JSON, and a partial frame then
# silence (closed within about --heartbeat-timeout 2s). Each time the server closes the connection
# and logs it (naming the client's address), and a normal replica connected all along keeps
# replicating: a write made afterwards reaches it.
set -euo pipefail
source "$(dirname "$0")/lib_repl.sh"

start_node P --heartbeat-timeout 2s
start_node R --role replica --upstream "$PEER_P" --heartbeat-timeout 2s
printf 'first' | lsc P put /first >/dev/null
wait_caught_up R P 15
peer_port=${PEER_P##*:}

# badpeer MODE: connects, misbehaves, then reads until the server closes (at most 10 s). Prints
# one JSON line: local port, whether the server closed, how long after the last byte sent, and
# the frames it sent back.
badpeer() {
    python3 - "$peer_port" "$1" <<'PY'
import json, socket, struct, sys, time
port, mode = int(sys.argv[1]), sys.argv[2]

def frame(ftype, payload):
    return struct.pack(">IB", 1 + len(payload), ftype) + payload

s = socket.create_connection(("127.0.0.1", port), timeout=10)
local = s.getsockname()[1]
if mode == "garbage":
    s.sendall(bytes(range(7, 250)) * 20)
elif mode == "http":
    s.sendall(b"GET /v1/status HTTP/1.1\r\nHost: x\r\n\r\n")
elif mode == "oversized":
    s.sendall(struct.pack(">IB", 0x7FFFFFFF, 1) + b"{" * 100)
elif mode == "zero-length":
    s.sendall(struct.pack(">I", 0) + b"\x01")
elif mode == "bad-type":
    s.sendall(frame(99, b"{}"))
elif mode == "wrong-version":
    s.sendall(frame(1, json.dumps({"proto": 99, "name": "x", "role": "replica"}).encode()))
elif mode == "bad-role":
    s.sendall(frame(1, json.dumps({"proto": 1, "name": "x", "role": "primary"}).encode()))
elif mode == "ack-first":
    s.sendall(frame(10, b"\x05"))
elif mode == "not-json":
    s.sendall(frame(1, b"this is not json"))
elif mode == "partial":
    s.sendall(struct.pack(">IB", 200, 1) + b'{"proto":1')  # 200 bytes announced, 11 sent
else:
    sys.exit("unknown mode " + mode)
t0 = time.monotonic()
buf = b""
closed = False
try:
    while True:
        d = s.recv(65536)
        if not d:
            closed = True
            break
        buf += d
except ConnectionResetError:
    closed = True
except socket.timeout:
    pass
elapsed = time.monotonic() - t0
frames = []
while len(buf) >= 5:
    n, t = struct.unpack(">IB", buf[:5])
    body = buf[5:4 + n]
    if len(body) < n - 1:
        break
    buf = buf[4 + n:]
    try:
        frames.append({"type": t, "json": json.loads(body)})
    except ValueError:
        frames.append({"type": t})
print(json.dumps({"port": local, "closed": closed, "elapsed": round(elapsed, 3), "frames": frames}))
PY
}

# still_replicating TAG: a write on P reaches R
still_replicating() {
    printf 'after %s' "$1" | lsc P put "/after/$1" >/dev/null
    wait_caught_up R P 15
    assert_eq "after $1" "$(lsc R get "/after/$1")" "the replica after the $1 peer"
}

F_ERROR=12
for mode in ${MODES:-garbage http oversized zero-length bad-type wrong-version bad-role ack-first not-json partial}; do
    out=$(badpeer "$mode")
    log "$mode: $out"
    assert_eq true "$(jq -r .closed <<<"$out")" "the server closed the $mode connection"
    port=$(jq -r .port <<<"$out")
    elapsed=$(jq -r .elapsed <<<"$out")
    _logged() { grep -q "peer 127.0.0.1:$1: .*closing the connection" "$(node_log P)"; }
    wait_until 5 _logged "$port" || fail "the server did not log closing the $mode connection (port $port)"
    why=$(grep "peer 127.0.0.1:$port: " "$(node_log P)" | head -1)
    case $mode in
    partial)
        # announced but never completed: the heartbeat timeout (2 s) or the HELLO deadline (the
        # same 2 s), whichever fires first, closes it
        awk -v e="$elapsed" 'BEGIN { exit !(e >= 1.5 && e <= 3.5) }' ||
            fail "the partial frame was closed after $elapsed s, expected about 2 s"
        [[ $why == *"stalled peer"* || $why == *"no HELLO within"* ]] ||
            fail "the log line for the partial frame names neither timeout: $why"
        ;;
    *)
        awk -v e="$elapsed" 'BEGIN { exit !(e < 1.5) }' ||
            fail "the $mode connection was closed only after $elapsed s"
        ;;
    esac
    case $mode in
    oversized)
        assert_contains "$why" "larger than the limit" "the log line for the oversized frame"
        assert_eq protocol_error "$(jq -r '.frames[-1].json.code' <<<"$out")" "the ERROR frame's code"
        ;;
    wrong-version)
        assert_eq "$F_ERROR" "$(jq -r '.frames[-1].type' <<<"$out")" "the frame answering a wrong version"
        assert_eq bad_version "$(jq -r '.frames[-1].json.code' <<<"$out")" "the ERROR frame's code"
        assert_contains "$(jq -r '.frames[-1].json.message' <<<"$out")" "99" "the ERROR message"
        assert_contains "$why" "protocol version 99" "the log line for the wrong version"
        ;;
    bad-role)
        assert_eq bad_hello "$(jq -r '.frames[-1].json.code' <<<"$out")" "the ERROR frame's code"
        ;;
    ack-first | not-json | bad-type | zero-length)
        assert_eq protocol_error "$(jq -r '.frames[-1].json.code' <<<"$out")" "the ERROR frame's code ($mode)"
        ;;
    esac
    still_replicating "$mode"
done
# none of them shows up as a downstream
assert_eq "R" "$(lsc P nodes --json | jq -r '[.nodes[].name] | join(" ")')" "downstreams of P"

# many at once: 40 connections sending partial frames, 40 sending garbage, while writes go on
python3 - "$peer_port" <<'PY' &
import socket, struct, sys, time
port = int(sys.argv[1])
socks = []
for i in range(40):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(struct.pack(">IB", 1000, 1) + b"{")
    socks.append(s)
for i in range(40):
    s = socket.create_connection(("127.0.0.1", port))
    try:
        s.sendall(b"\xff" * 5000)
    except OSError:
        pass
    socks.append(s)
time.sleep(4)
PY
flood=$!
bg_track $flood
for i in 1 2 3 4 5; do
    printf 'during %d' "$i" | lsc P put "/during/$i" >/dev/null
    sleep 0.3
done
wait_pids 20 $flood
still_replicating flood
assert_same_digest P R
assert_eq live "$(lsc P nodes --json | jq -r '.nodes[] | select(.name == "R") | .state')" "R's state on P"
assert_eq 1 "$(grep -c 'receiving a snapshot' "$(node_log R)")" "snapshots the replica received (its first only)"
if grep -q 'upstream .*reconnecting' "$(node_log R)"; then
    fail "the replica lost its connection: $(grep 'reconnecting' "$(node_log R)" | head -2)"
fi

stop_server R
stop_server P
