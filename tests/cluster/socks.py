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
