"""tests/cluster/slowdns.py - a DNS server on 127.0.0.1 for the cluster tests, slow on purpose.

    python3 slowdns.py PORTFILE QUERYLOG DELAY

Binds a free UDP port on 127.0.0.1 and writes it to PORTFILE. Every query is logged to QUERYLOG
("NAME TYPE" a line), then, after DELAY seconds (each in its own thread: the server goes on
reading): names starting with "slow." get 127.0.0.1 for A and an empty answer for other types;
names starting with "dead." get no answer at all; any other name NXDOMAIN.
"""
import os
import socket
import struct
import sys
import threading
import time


def qname(msg):
    labels, i = [], 12
    while msg[i]:
        n = msg[i]
        labels.append(msg[i + 1:i + 1 + n].decode("ascii", "replace"))
        i += 1 + n
    qtype = struct.unpack("!H", msg[i + 1:i + 3])[0]
    return ".".join(labels).lower(), qtype, i + 5  # end of the question


def answer(sock, msg, peer, delay):
    try:
        name, qtype, end = qname(msg)
    except (IndexError, struct.error):
        return
    time.sleep(delay)
    if name.startswith("dead."):
        return
    question = msg[12:end]
    if name.startswith("slow."):
        an = b""
        if qtype == 1:  # A: 127.0.0.1, ttl 0
            an = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 0, 4) + socket.inet_aton("127.0.0.1")
        head = msg[:2] + struct.pack("!HHHHH", 0x8180, 1, 1 if an else 0, 0, 0)
    else:
        head = msg[:2] + struct.pack("!HHHHH", 0x8183, 1, 0, 0, 0)
        an = b""
    sock.sendto(head + question + an, peer)


def main():
    portfile, querylog, delay = sys.argv[1], sys.argv[2], float(sys.argv[3])
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    with open(portfile + ".tmp", "w") as f:
        f.write("%d\n" % sock.getsockname()[1])
    os.rename(portfile + ".tmp", portfile)
    log = open(querylog, "a", buffering=1)
    while True:
        msg, peer = sock.recvfrom(4096)
        try:
            name, qtype, _ = qname(msg)
            log.write("%s %d\n" % (name, qtype))
        except (IndexError, struct.error):
            continue
        threading.Thread(target=answer, args=(sock, msg, peer, delay), daemon=True).start()


if __name__ == "__main__":
    main()
