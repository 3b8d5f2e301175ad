#!/usr/bin/env python3
# stream_peer.py PORT STORE_ID FROM END MODE READY : a raw downstream (tests/cluster/socks.py)
# that says HELLO with "txn": true and, in MODE "stream", "stream": true too (MODE "txn": a peer
# that knows CHANGES_PART but not streaming, as lockstep before it). It SYNCs from seq FROM,
# creates the file READY once the upstream answered, and reads frames until a CHANGES reaches
# END. Prints one JSON object: WELCOME's stream, the count of each frame type, the records kept
# (those of CHANGES_PART frames an ABORT discarded are counted apart), every ABORT's `after`.
# Used by test_repl_stream.sh (docs/streaming.md, step 2).
import json
import os
import sys

sys.path.insert(0, os.environ["CLUSTER_DIR"])
import socks  # noqa: E402

port, store_id, start, end, mode, ready = (int(sys.argv[1]), sys.argv[2], int(sys.argv[3]),
                                           int(sys.argv[4]), sys.argv[5], sys.argv[6])


def varint(b, i):
    v = shift = 0
    while True:
        c = b[i]
        i += 1
        v |= (c & 0x7F) << shift
        shift += 7
        if not c & 0x80:
            return v, i


def string(b, i):
    n, i = varint(b, i)
    return b[i:i + n], i + n


def count_records(b, i):
    n = 0
    while i < len(b):
        _, i = varint(b, i)      # seq
        op, flags = b[i], b[i + 1]
        i += 2
        _, i = varint(b, i)      # ts
        _, i = string(b, i)      # path
        if op in (4, 7):         # move, notify: to
            _, i = string(b, i)
        _, i = varint(b, i)      # version
        if flags & 2:
            _, i = string(b, i)  # kind
            _, i = string(b, i)  # meta
            _, i = varint(b, i)  # size
            _, i = string(b, i)  # sha
            kind = b[i]
            i += 1
            if kind == 1:
                _, i = string(b, i)
        n += 1
    return n


s = socks.conn(port)
extra = {"txn": True}
if mode == "stream":
    extra["stream"] = True
w = socks.hello(s, "raw-" + mode, **extra)
assert w and w[0] == 2, w
s.sendall(socks.frame(3, {"store_id": store_id, "epoch": 1, "seq": start, "snapshot_pending": False,
                          "filter": {"published_only": False, "include": []}}))
types, kept, pending, discarded, aborts, upto = {}, 0, 0, 0, [], start
first = True
while True:
    f = socks.read_frame(s, 120)
    if f is None:
        break
    if first:
        open(ready, "w").close()
        first = False
    t, body = f
    types[t] = types.get(t, 0) + 1
    if t == 11:  # heartbeat: a silent downstream is dropped as stalled
        s.sendall(socks.frame(11, {}))
    if t in (8, 16):
        upto, i = varint(body, 0)
        pending += count_records(body, i)
        if t == 8:
            kept += pending
            pending = 0
            s.sendall(socks.frame(10, socks.varint(upto)))
            if upto >= end:
                break
    elif t == 17:
        aborts.append(json.loads(body)["after"])
        discarded += pending
        pending = 0
print(json.dumps({"welcome_stream": w[1].get("stream"), "types": types, "records": kept,
                  "discarded": discarded, "aborts": aborts, "upto": upto}))
