#!/usr/bin/env bash
# Limits on the HTTP port, with real sockets:
# 1. --max-conns-per-addr 3: a fourth connection from 127.0.0.1 is closed (and logged with its
#    address) while the first three keep being served; another address is not counted with it.
# 2. --request-timeout 2s: a client that sends its request one byte every half second
#    (slow-loris) is cut off after about 2 s although it never stops sending, and everyone else
#    is served meanwhile; an idle keep-alive connection is closed after the same time.
# 3. A header block larger than evhttp's limit gets 4xx or a close, never a crash.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

start_server L --max-conns-per-addr 3 --request-timeout 2s

python3 - "$PORT_L" >"$T/limits.out" 2>&1 <<'PY' || fail "HTTP limits: $(cat "$T/limits.out")"
import os, socket, sys, time
sys.path.insert(0, os.environ["CLUSTER_DIR"])
import socks
from socks import closed_within
port = int(sys.argv[1])


def conn(src="127.0.0.1"):
    return socks.conn(port, src)
bad = []


def status(s):
    """One GET /v1/status on s: the HTTP status, or None when the server closed s."""
    try:
        s.settimeout(5)
        s.sendall(b"GET /v1/status HTTP/1.1\r\nHost: t\r\n\r\n")
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                return None
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            k, _, v = line.partition(b":")
            if k.strip().lower() == b"content-length":
                length = int(v)
        while len(rest) < length:
            chunk = s.recv(4096)
            if not chunk:
                return None
            rest += chunk
        return int(head.split()[1])
    except (ConnectionResetError, BrokenPipeError, socket.timeout):
        return None


# 1. the per-address cap
first = [conn() for _ in range(3)]
for s in first:
    if status(s) != 200:
        bad.append("one of the first three connections was not served")
time.sleep(0.2)
fourth = conn()
t0 = time.time()
if not closed_within(fourth, 2.5):
    bad.append("a fourth connection from 127.0.0.1 stayed open")
print("fourth connection closed after %.2f s" % (time.time() - t0))
other = conn("127.0.0.2")
if status(other) != 200:
    bad.append("a connection from 127.0.0.2 was not served beside three from 127.0.0.1")
for s in first:
    if status(s) != 200:
        bad.append("one of the first three connections was dropped with the fourth")
for s in first + [other]:
    s.close()

# 2. slow-loris: one byte every 0.5 s, for at most 8 s
slow = conn("127.0.0.3")
req = b"GET /v1/status HTTP/1.1\r\nHost: t\r\nX-Slow: " + b"a" * 100
t0 = time.time()
cut = None
for i, b in enumerate(req):
    try:
        slow.send(bytes([b]))
    except (BrokenPipeError, ConnectionResetError):
        cut = time.time() - t0
        break
    if i % 2 == 0:  # everyone else is served meanwhile
        s = conn("127.0.0.4")
        if status(s) != 200:
            bad.append("another client was not served during the slow request")
        s.close()
    if closed_within(slow, 0.5):
        cut = time.time() - t0
        break
    if time.time() - t0 > 8:
        break
if cut is None:
    bad.append("a request sent one byte every 0.5 s was never cut off (%.1f s)" % (time.time() - t0))
elif not 1.5 <= cut <= 4.5:
    bad.append("the slow request was cut after %.1f s, not about 2 s" % cut)
else:
    print("slow request cut off after %.2f s" % cut)

# an idle keep-alive connection goes after the same time
idle = conn("127.0.0.5")
if status(idle) != 200:
    bad.append("the idle connection's first request")
t0 = time.time()
if not closed_within(idle, 5):
    bad.append("an idle keep-alive connection stayed open past --request-timeout")
else:
    print("idle connection closed after %.2f s" % (time.time() - t0))

# 3. a header block of 1 MiB
big = conn("127.0.0.6")
try:
    big.sendall(b"GET /v1/status HTTP/1.1\r\nHost: t\r\nX-Big: " + b"b" * (1 << 20) + b"\r\n\r\n")
except (BrokenPipeError, ConnectionResetError):
    pass
code = None
try:
    big.settimeout(5)
    data = big.recv(4096)
    code = int(data.split()[1]) if data else None
except (ConnectionResetError, socket.timeout, IndexError, ValueError):
    pass
if code is not None and not 400 <= code < 500:
    bad.append("a 1 MiB header block got HTTP %s" % code)
print("1 MiB of headers: %s" % (code or "closed"))

if bad:
    print("\n".join(bad))
    sys.exit(1)
PY
cat "$T/limits.out" >&2
grep -q "closing the HTTP connection of 127.0.0.1:[0-9]*: too many connections" "$T/L.log" ||
    fail "the refused connection is not logged with its address"
grep -q "closing the HTTP connection of 127.0.0.3:[0-9]*: no whole request within --request-timeout" "$T/L.log" ||
    fail "the slow request is not logged with its address"
assert_exit 0 lsc L status
stop_server L
echo "HTTP limits: ok"
