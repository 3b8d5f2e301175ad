"""The chaos runner's messenger workload: a publisher of notifications on the primary and on a
replica (forwarded), and one named consumer per server reading with long polls and acks.

The check: on every server, the notifications its consumer received (repeats of an
unacknowledged page dropped) are exactly the primary's notifications, in the primary's order,
with no gap (after a reset, from the reset's oldest id); and every acknowledged publish is among
them, at the id it was acknowledged with (publishes on a replica: by payload)."""
import json
import threading
import time

from cluster import HttpError, Refused, Unknown, request  # noqa: E402

CHANNEL = "chaos"


class Publisher(threading.Thread):
    def __init__(self, cluster, name, url_of, seed):
        super().__init__(name="publisher-" + name, daemon=True)
        self.c = cluster
        self.url_of = url_of  # () -> the URL to publish to now
        self.name = name
        self.n = 0
        self.acks = []     # (tag, id or None when queued, payload)
        self.unknown = 0

    def run(self):
        while not self.c.stop.is_set():
            if self.c.pause.is_set():
                time.sleep(0.05)
                continue
            self.n += 1
            payload = "%s-%d" % (self.name, self.n)
            tag = self.c.primary_tag
            body = json.dumps({"channel": CHANNEL, "payload": payload}).encode()
            try:
                status, data = request("POST", self.url_of() + "/v1/notify?wait_ms=2000", body,
                                       timeout=10)[:2]
                reply = json.loads(data)
                if status == 200:
                    self.acks.append((tag, reply["ids"][0], payload))
                elif status == 202:
                    self.acks.append((tag, None, payload))
            except (HttpError, Refused):
                pass  # refused: nothing published
            except Exception:
                self.unknown += 1  # may or may not be published
            time.sleep(0.02)


class Consumer(threading.Thread):
    """A named consumer on one server, read with long polls and acknowledged after each page."""

    def __init__(self, cluster, server):
        super().__init__(name="consumer-" + server.name, daemon=True)
        self.c = cluster
        self.srv = server
        self.name = "chaos-" + server.name
        self.got = []      # (id, payload) in arrival order, repeats included
        self.resets = []   # reset bodies
        self.next = 0
        self.drained = threading.Event()

    def page(self, wait_ms):
        url = "%s/v1/notifications?consumer=%s&channel=%s&from=start&limit=500&wait_ms=%d" % (
            self.srv.url, self.name, CHANNEL, wait_ms)
        o = json.loads(request("GET", url, timeout=wait_ms / 1000.0 + 10)[1])
        if o.get("reset"):
            self.resets.append(o["reset"])
            self.got.append(("RESET", o["reset"].get("oldest", 0)))
        for n in o["notifications"]:
            self.got.append((n["id"], n["payload"]))
        request("POST", "%s/v1/consumers/%s/ack" % (self.srv.url, self.name),
                json.dumps({"id": o["next"]}).encode(), timeout=10)
        self.next = o["next"]
        return o

    def run(self):
        while not self.c.stop.is_set():
            try:
                self.page(1000)
            except Exception:
                time.sleep(0.2)  # the server is down, stopped or cut off: try again

    def drain(self, seconds):
        """After the run: read until the position reaches the server's head."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            try:
                o = self.page(0)
                if not o["notifications"] and not o.get("reset") and o["next"] >= o["head"]:
                    return True
            except Exception:
                time.sleep(0.2)
        return False


def primary_notes(url, channel=CHANNEL):
    """The primary's notifications on the channel, in order: [(id, payload)]."""
    out, after = [], 0
    while True:
        o = json.loads(request("GET", "%s/v1/notifications?after=%d&channel=%s&limit=1000" % (
            url, after, channel), timeout=30)[1])
        out += [(n["id"], n["payload"]) for n in o["notifications"]]
        if o["next"] <= after or not o["notifications"]:
            return out
        after = o["next"]


def check(run, publishers, consumers, prim):
    """Appends failures to run (fail_lost / fail_server); returns a summary string."""
    plist = primary_notes(prim.url)
    pids = {i: p for i, p in plist}
    ppay = {p: i for i, p in plist}
    acked = 0
    for pub in publishers:
        for tag, nid, payload in pub.acks:
            acked += 1
            if run.promoted and tag == "pre" and (nid is None or nid > run.promoted["at"]):
                continue  # acknowledged by the old primary after the takeover: set aside
            if nid is not None and pids.get(nid) != payload:
                run.fail_lost("notification %s acknowledged with id %d: the primary %s has %s there" % (
                    payload, nid, prim.name, pids.get(nid)))
            elif nid is None and payload not in ppay:
                run.fail_lost("notification %s accepted (queued) by %s: never reached the primary %s" % (
                    payload, pub.name, prim.name))
    for con in consumers:
        if not con.srv.alive():
            continue
        if not con.drain(30):
            run.fail_server(con.srv.name, "its consumer did not reach the head within 30 s")
            continue
        seen, last, oldest = [], 0, 0
        for nid, payload in con.got:
            if nid == "RESET":  # the application rebuilds: what follows starts at oldest
                oldest = payload
                seen = [x for x in seen if x[0] < oldest]
                last = oldest - 1
                continue
            if nid <= last:
                continue  # delivered again: its page was not acknowledged
            seen.append((nid, payload))
            last = nid
        want = plist
        if con.resets:  # a reset may skip what retention or another history took away
            want = [x for x in plist if x[0] >= oldest]
            seen = [x for x in seen if x[0] >= oldest]
        if seen != want:
            missing = [x for x in want if x not in seen]
            extra = [x for x in seen if x not in want]
            run.fail_server(con.srv.name, "its consumer received %d notifications, the primary has %d: "
                            "missing %s, not on the primary %s" % (
                                len(seen), len(want), missing[:5], extra[:5]))
    return "notifications: %d published and acknowledged, %d on the primary, %d consumers checked" % (
        acked, len(plist), len(consumers))


class SseConsumer(Consumer):
    """The same consumer read through Server-Sent Events: Last-Event-ID on every reconnect is
    its acknowledgement (docs/messenger.md)."""

    def __init__(self, cluster, server):
        super().__init__(cluster, server)
        self.name = "chaos-sse-" + server.name
        self.last = None

    def stream(self):
        import urllib.request
        url = "%s/v1/events?consumer=%s&channel=%s&from=start" % (self.srv.url, self.name, CHANNEL)
        headers = {"Last-Event-ID": str(self.last)} if self.last is not None else {}
        req = urllib.request.Request(url, headers=headers)
        with urllib.request.urlopen(req, timeout=5) as r:
            event, data, nid = None, None, None
            for raw in r:
                if self.c.stop.is_set():
                    return
                line = raw.decode("utf-8").rstrip("\n")
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("id: "):
                    nid = int(line[4:])
                elif line.startswith("data: "):
                    data = json.loads(line[6:])
                elif line == "" and event:
                    if event == "reset":
                        self.resets.append(data)
                        self.got.append(("RESET", data.get("oldest", 0)))
                    elif event == "notification":
                        self.got.append((data["id"], data["payload"]))
                    elif event == "error":
                        raise RuntimeError("error event: %s" % data)
                    self.last = nid
                    event, data, nid = None, None, None

    def run(self):
        while not self.c.stop.is_set():
            try:
                self.stream()
            except Exception:
                time.sleep(0.2)  # reconnect (a quiet stream times out here too)
