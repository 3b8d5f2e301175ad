#!/usr/bin/env python3
"""A webhook endpoint for tests/cluster/test_messenger_webhook.sh (standard library only).

    webhook_sink.py --port PORT --out BODIES --log ATTEMPTS [--fail N] [--status CODE]

Listens on 127.0.0.1:PORT (HTTP/1.1, keep-alive). The first N POSTs are answered CODE (500)
and not recorded; every later one is answered 200 after its body is appended to BODIES, one
line each (compact JSON). Every POST, answered or not, adds a line to ATTEMPTS:
{"t": seconds since the epoch, "status": CODE, "path", "content_type", "n": notifications}.
"""
import argparse
import json
import sys
import time
from http.server import BaseHTTPRequestHandler, HTTPServer


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--log", required=True)
    ap.add_argument("--fail", type=int, default=0)
    ap.add_argument("--status", type=int, default=500)
    args = ap.parse_args()
    state = {"failed": 0}
    out = open(args.out, "a", buffering=1)
    log = open(args.log, "a", buffering=1)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *a):  # quiet: ATTEMPTS says it all
            pass

        def reply(self, code, text):
            data = text.encode()
            self.send_response(code)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            try:
                doc = json.loads(body)
                n = len(doc.get("notifications", []))
            except ValueError:
                doc, n = None, -1
            status = 200
            if state["failed"] < args.fail:
                state["failed"] += 1
                status = args.status
            log.write(json.dumps({"t": time.time(), "status": status, "path": self.path,
                                  "content_type": self.headers.get("Content-Type"),
                                  "bytes": len(body), "n": n}) + "\n")
            if status != 200:
                self.reply(status, "not yet (%d of %d)" % (state["failed"], args.fail))
                return
            if doc is None:
                self.reply(400, "not JSON")
                return
            out.write(json.dumps(doc, separators=(",", ":")) + "\n")
            self.reply(200, "ok")

    srv = HTTPServer(("127.0.0.1", args.port), Handler)
    print("listening", flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
