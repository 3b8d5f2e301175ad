"""tests/cluster/socks.py - raw-socket helpers for the cluster tests' Python snippets.

A snippet imports it with sys.path.insert(0, os.environ["CLUSTER_DIR"]) (lib.sh exports it).
"""
import socket
import time


def conn(port, src="127.0.0.1"):
    """A TCP connection to 127.0.0.1:port from the loopback address src."""
    s = socket.socket()
    s.bind((src, 0))
    s.connect(("127.0.0.1", port))
    return s


def closed_within(s, limit):
    """True when the server closes s within limit seconds (data such as pings is skipped)."""
    end = time.time() + limit
    while True:
        left = end - time.time()
        if left <= 0:
            return False
        s.settimeout(left)
        try:
            if not s.recv(4096):
                return True
        except socket.timeout:
            return False
        except ConnectionResetError:
            return True


# ---------------------------------------------------------------- the peer protocol, raw


def frame(ftype, payload):
    """One frame of the peer protocol (docs/protocol.md section 2); payload bytes or a dict."""
    import json
    import struct
    if isinstance(payload, dict):
        payload = json.dumps(payload).encode()
    return struct.pack(">IB", 1 + len(payload), ftype) + payload


def read_frame(s, limit=10):
    """(type, payload) of the next frame from s, or None when the server closed first."""
    import struct
    s.settimeout(limit)
    buf = b""
    try:
        while len(buf) < 5:
            d = s.recv(5 - len(buf))
            if not d:
                return None
            buf += d
        n, t = struct.unpack(">IB", buf)
        body = b""
        while len(body) < n - 1:
            d = s.recv(n - 1 - len(body))
            if not d:
                return None
            body += d
    except ConnectionResetError:
        return None
    return t, body


def hello(s, name, **extra):
    """Sends HELLO (no zstd) and returns the answer frame as (type, dict), or None."""
    import json
    h = {"proto": 1, "name": name, "role": "replica", "version": "test", "zstd": False}
    h.update(extra)
    s.sendall(frame(1, h))
    f = read_frame(s)
    if f is None:
        return None
    try:
        return f[0], json.loads(f[1])
    except ValueError:
        return f[0], {}


def varint(v):
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def vmrss_kb(pid):
    """The process's resident memory (VmRSS) in kB."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0
