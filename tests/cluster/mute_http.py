"""tests/cluster/mute_http.py - a TCP server on 127.0.0.1 that accepts and never answers.

    python3 mute_http.py PORTFILE SECONDS

Binds a free port, writes it to PORTFILE, accepts every connection, reads what comes and
answers nothing; exits after SECONDS (a bound on its life, whatever the test does).
"""
import socket
import sys
import threading
import time


def hold(conn):
    try:
        while conn.recv(4096):
            pass
    except OSError:
        pass


def main():
    portfile, seconds = sys.argv[1], float(sys.argv[2])
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    s.listen(16)
    with open(portfile + ".tmp", "w") as f:
        f.write(str(s.getsockname()[1]))
    import os
    os.rename(portfile + ".tmp", portfile)
    s.settimeout(0.2)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            conn, _ = s.accept()
        except socket.timeout:
            continue
        threading.Thread(target=hold, args=(conn,), daemon=True).start()


main()
