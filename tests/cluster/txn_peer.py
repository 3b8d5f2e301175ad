#!/usr/bin/env python3
# txn_peer.py PORT STORE_ID FROM END TXN : a raw downstream (tests/cluster/socks.py) that says
# HELLO with "txn": TXN (true/false) or without the field (TXN "absent", as lockstep before it),
# SYNCs from seq FROM and reads frames until a CHANGES reaches END. Prints one JSON object: the
# WELCOME's txn, the count of each frame type, the records seen and those flagged MORE (16), and
# the upto of every CHANGES_PART. Used by test_repl_txn_fault.sh (docs/streaming.md).
import json
import os
import sys

sys.path.insert(0, os.environ["CLUSTER_DIR"])
import socks  # noqa: E402

port, store_id, start, end, txn = (int(sys.argv[1]), sys.argv[2], int(sys.argv[3]),
                                   int(sys.argv[4]), sys.argv[5])


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


def records(b, i):
    while i < len(b):
        seq, i = varint(b, i)
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
        yield seq, flags


s = socks.conn(port)
extra = {} if txn == "absent" else {"txn": txn == "true"}
w = socks.hello(s, "raw-" + txn, **extra)
assert w and w[0] == 2, w
s.sendall(socks.frame(3, {"store_id": store_id, "epoch": 1, "seq": start, "snapshot_pending": False,
                          "filter": {"published_only": False, "include": []}}))
types, nrec, nmore, parts, upto = {}, 0, 0, [], start
while upto < end:
    f = socks.read_frame(s, 60)
    if f is None:
        break
    t, body = f
    types[t] = types.get(t, 0) + 1
    if t in (8, 16):
        upto, i = varint(body, 0)
        for seq, flags in records(body, i):
            nrec += 1
            nmore += (flags & 16) != 0
        if t == 16:
            parts.append(upto)
        s.sendall(socks.frame(10, socks.varint(upto)))
print(json.dumps({"welcome_txn": w[1].get("txn"), "types": types, "records": nrec, "more": nmore,
                  "parts": parts, "upto": upto}))
