#!/usr/bin/env python3
# unit_poll.py URL BASE END PATH... : reads a server's seq and whether each PATH exists, every
# ~10 ms, until the seq reaches END (or 120 s pass), and prints one line per reading:
# "SEQ BITS" (BITS: 1 for a PATH that exists, in the order given, read in that order).
# Used by test_repl_txn.sh: a replica must never show part of one request (docs/streaming.md).
import http.client
import json
import sys
import time
import urllib.parse

url = urllib.parse.urlparse(sys.argv[1])
base, end, paths = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10)


def get(path):
    conn.request("GET", path)
    r = conn.getresponse()
    body = r.read()
    return r.status, body


deadline = time.time() + 120
while time.time() < deadline:
    st, body = get("/v1/status")
    seq = json.loads(body)["seq"] if st == 200 else -1
    bits = "".join("1" if get("/v1/stat" + p)[0] == 200 else "0" for p in paths)
    print(seq, bits, flush=True)
    if seq >= end:
        break
    time.sleep(0.01)
