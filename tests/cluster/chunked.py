"""tests/cluster/chunked.py - chunked request bodies sent byte for byte, for the cluster tests.

    python3 chunked.py PORT [--tls CAFILE]

Sends well-formed and malformed `Transfer-Encoding: chunked` PUTs to 127.0.0.1:PORT (over TLS
with --tls) and checks each answer: a malformed chunk size line or trailer gets one JSON
400 bad_request and the connection is closed; well-formed bodies are stored, also when their
lines arrive split across reads, on a keep-alive connection and pipelined. Writes only the
paths under /chunked/ok/ (GOOD_WRITES of them); nothing under /chunked/bad/. Prints what went
wrong and exits 1 on the first failure.
"""
import json
import socket
import ssl
import sys
import time

GOOD_WRITES = 7  # the caller checks that the seq moved by exactly this much

MSG_HEX = ("malformed chunked body: a chunk size must be hexadecimal digits, "
           "without chunk extensions")
MSG_LONG = "malformed chunked body: a chunk size line is longer than 256 bytes"
MSG_RANGE = "malformed chunked body: a chunk size does not fit in 64 bits"
MSG_TRAILER = "malformed chunked body: a trailer line is not a header field"

port = int(sys.argv[1])
tls = None
if len(sys.argv) == 4 and sys.argv[2] == "--tls":
    tls = ssl.create_default_context(cafile=sys.argv[3])


def fail(msg):
    print("chunked.py%s: %s" % (" (TLS)" if tls else "", msg))
    sys.exit(1)


def connect():
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if tls:
        s = tls.wrap_socket(s, server_hostname="127.0.0.1")
    return s


def head(path, extra=b""):
    return (b"PUT /v1/items" + path.encode() + b" HTTP/1.1\r\nHost: x\r\n"
            b"Transfer-Encoding: chunked\r\n" + extra + b"\r\n")


class Reader:
    """Reads HTTP/1.1 replies (each with a Content-Length) off one connection."""

    def __init__(self, s):
        self.s, self.buf, self.eof = s, b"", False

    def fill(self):
        try:
            b = self.s.recv(65536)
        except (ConnectionResetError, ssl.SSLError):
            b = b""
        if not b:
            self.eof = True
        self.buf += b

    def reply(self, what):
        while b"\r\n\r\n" not in self.buf:
            if self.eof:
                fail("%s: the connection ended before a reply (got %r)" % (what, self.buf[:300]))
            self.fill()
        top, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = top.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {}
        for line in lines[1:]:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
        if status == 100:  # Expect: 100-continue
            return self.reply(what)
        n = int(headers.get("content-length", "-1"))
        if n < 0:
            fail("%s: a reply without Content-Length: %r" % (what, top))
        while len(self.buf) < n and not self.eof:
            self.fill()
        body, self.buf = self.buf[:n], self.buf[n:]
        return status, headers, body

    def closed(self, what):
        while not self.eof:
            self.fill()
        if self.buf:
            fail("%s: more bytes after the last reply: %r" % (what, self.buf[:300]))


def expect_ok(r, what):
    status, _, body = r.reply(what)
    if status != 200:
        fail("%s: expected 200, got %d %r" % (what, status, body))


def expect_refused(r, what, message):
    status, headers, body = r.reply(what)
    if status != 400:
        fail("%s: expected 400, got %d %r" % (what, status, body[:300]))
    if headers.get("content-type") != "application/json":
        fail("%s: Content-Type %r" % (what, headers.get("content-type")))
    want = {"error": {"code": "bad_request", "message": message}}
    try:
        got = json.loads(body)
    except ValueError:
        fail("%s: the body is not JSON: %r" % (what, body[:300]))
    if got != want:
        fail("%s: expected %s, got %s" % (what, json.dumps(want), json.dumps(got)))
    r.closed(what)


def send_parts(parts, pause=0.0):
    s = connect()
    for i, p in enumerate(parts):
        if i and pause:
            time.sleep(pause)
        s.sendall(p)
    return s


# --- malformed chunk size lines and trailers: 400 in JSON, the connection closed
bad = {
    "a chunk extension": (b"5;x=y\r\nhello\r\n0\r\n\r\n", MSG_HEX),
    "bad hex": (b"zz\r\nabc\r\n0\r\n\r\n", MSG_HEX),
    "bad hex after a good chunk": (b"5\r\nhello\r\nzz\r\nabc\r\n0\r\n\r\n", MSG_HEX),
    "a negative chunk size": (b"-5\r\nhello\r\n0\r\n\r\n", MSG_HEX),
    "a chunk size line of 300 bytes": (b"0" * 299 + b"5\r\nhello\r\n0\r\n\r\n", MSG_LONG),
    "a chunk size line that never ends": (b"0" * 5000, MSG_LONG),
    "a chunk size over 64 bits": (b"FFFFFFFFFFFFFFFFFF\r\nabc\r\n", MSG_RANGE),
    "a trailer that is not a header": (b"5\r\nhello\r\n0\r\nnot a header\r\n\r\n", MSG_TRAILER),
}
for name, (body, message) in bad.items():
    s = send_parts([head("/chunked/bad/x") + body])
    expect_refused(Reader(s), name, message)
    s.close()

# a malformed line split across reads, and one that arrives after the headers were read
for name, parts in {
    "an extension split across reads": [head("/chunked/bad/x") + b"5;", b"x=y\r\nhello\r\n"],
    "bad hex in a later read": [head("/chunked/bad/x"), b"5\r\nhel", b"lo\r\nz", b"z\r\n"],
}.items():
    s = send_parts(parts, pause=0.2)
    expect_refused(Reader(s), name, MSG_HEX)
    s.close()

# --- well-formed bodies are stored (GOOD_WRITES of them)
good = b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
s = send_parts([head("/chunked/ok/plain") + good])
expect_ok(Reader(s), "a chunked PUT")
s.close()

# every byte in its own read (TCP_NODELAY, a pause between sends), with a trailer
whole = head("/chunked/ok/bytewise") + b"5\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\n"
s = send_parts([whole[i:i + 1] for i in range(len(whole))], pause=0.002)
expect_ok(Reader(s), "a chunked PUT sent byte by byte")
s.close()

# keep-alive: two good chunked requests on one connection, then a malformed one
s = connect()
r = Reader(s)
s.sendall(head("/chunked/ok/ka1") + good)
expect_ok(r, "the first chunked PUT on a keep-alive connection")
s.sendall(head("/chunked/ok/ka2") + b"3\r\nabc\r\n0\r\n\r\n")
expect_ok(r, "the second chunked PUT on a keep-alive connection")
s.sendall(head("/chunked/bad/ka3") + b"3;x\r\nabc\r\n0\r\n\r\n")
expect_refused(r, "a malformed chunked PUT after two good ones", MSG_HEX)
s.close()

# pipelined, in one send: a good one, a malformed one, and a request that must not be served
s = send_parts([head("/chunked/ok/pipe1") + good + head("/chunked/bad/pipe2") + b"zz\r\n"
                + b"PUT /v1/items/chunked/bad/pipe3 HTTP/1.1\r\nHost: x\r\n"
                b"Content-Length: 1\r\n\r\nx"])
r = Reader(s)
expect_ok(r, "a pipelined good chunked PUT")
expect_refused(r, "a pipelined malformed chunked PUT", MSG_HEX)
s.close()

# pipelined good ones, then a GET, all in one send (Connection: close on the last)
s = send_parts([head("/chunked/ok/pipe4") + good + head("/chunked/ok/pipe5") + good
                + b"GET /v1/status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"])
r = Reader(s)
expect_ok(r, "pipelined good chunked PUT 1 of 2")
expect_ok(r, "pipelined good chunked PUT 2 of 2")
expect_ok(r, "a GET after two pipelined chunked PUTs")
r.closed("after Connection: close")
s.close()
