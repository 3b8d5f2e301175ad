#!/usr/bin/env bash
# A fake upstream (Python, on the peer protocol) continues a replica from seq 0, sends CHANGES up
# to seq 5, then CHANGES up to seq 3: the replica's position must never go backwards. It drops the
# upstream with ERROR protocol_error, logs why, and keeps seq 5.
set -euo pipefail
source "$(dirname "$0")/lib_repl.sh"

cat >"$T/fake.py" <<'PY'
import json, socket, struct, sys, time

portfile, out = sys.argv[1], sys.argv[2]
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", 0))
srv.listen(4)
open(portfile, "w").write("%d\n" % srv.getsockname()[1])

def recv_exact(c, n):
    b = b""
    while len(b) < n:
        x = c.recv(n - len(b))
        if not x:
            raise EOFError
        b += x
    return b

def read_frame(c):
    n, t = struct.unpack("!IB", recv_exact(c, 5))
    return t & 0x7F, recv_exact(c, n - 1)

def send(c, t, payload):
    if isinstance(payload, dict):
        payload = json.dumps(payload).encode()
    c.sendall(struct.pack("!IB", len(payload) + 1, t) + payload)

def varint(v):
    b = bytearray()
    while True:
        x = v & 0x7F
        v >>= 7
        b.append(x | (0x80 if v else 0))
        if not v:
            return bytes(b)

ID = "ab" * 16
c, _ = srv.accept()
c.settimeout(10)
t, p = read_frame(c)
assert t == 1, t  # HELLO
send(c, 2, {"proto": 1, "name": "fake", "role": "primary", "version": "0.1.0", "zstd": False,
            "primary": "", "node_id": ID, "filtered": False, "chain": [ID]})
t, p = read_frame(c)
assert t == 3, t  # SYNC
sync = json.loads(p)
send(c, 4, {"store_id": sync["store_id"], "epoch": sync["epoch"], "from": 0,
            "epochs": sync["epochs"]})
send(c, 8, varint(5))
time.sleep(0.5)
send(c, 8, varint(3))
got = "none"
try:
    while True:
        t, p = read_frame(c)
        if t == 12:  # ERROR
            got = json.loads(p)["code"]
            break
except (EOFError, socket.timeout, ConnectionError):
    pass
open(out, "w").write(got + "\n")
PY
python3 "$T/fake.py" "$T/fake.port" "$T/fake.out" 2>"$T/fake.err" &
FAKE=$!
bg_track $FAKE
wait_until 10 test -s "$T/fake.port" || fail "the fake upstream did not start: $(cat "$T/fake.err")"

start_node R --role replica --upstream "127.0.0.1:$(cat "$T/fake.port")"
bg_wait $FAKE 20 || fail "the fake upstream failed: $(cat "$T/fake.err")"
assert_eq protocol_error "$(cat "$T/fake.out")" "what R answered to CHANGES going backwards"
grep -q "CHANGES up to seq 3 after seq 5" "$T/R.log" || fail "R's log does not say why"
assert_eq 5 "$(seq_of R)" "R's seq (never backwards)"
echo ok
