"""tests/chaos_lib/workload.py - the writers of a chaos run and the model they check against.

Each writer owns one path space (/wN/...), so the expected state of each of its paths follows
from its own acknowledged operations alone. A writer keeps that model (per path: tombstone or
live, latest version, published version, SHA-256 of the latest body), picks operations that
the model says are valid, and records:

  - every acknowledged write, with the seq(s) the server returned and the log entry it must
    have produced (op, path, version, to, published);
  - every write whose outcome is unknown (the connection broke or timed out): before writing
    again it reads the primary's state of its paths and decides whether the write was applied
    entirely or not at all; a state that is neither is a torn write and is reported.
"""
import base64
import copy
import hashlib
import json
import random
import threading
import time

from cluster import HttpError, Refused, Unknown, get_json, quote_path, request

UPLOAD_PART = 4 << 20
LARGE_SIZE = (9 << 20) + 12345  # above the CLI's 8 MiB upload threshold
PATHS_PER_WRITER = 8


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def item(deleted, latest, pub, sha):
    return {"deleted": deleted, "latest": latest, "pub": pub, "sha": sha}


def apply_op(model, op):
    """Applies op to model (a dict path -> item) and returns the log entry it makes, as
    {op, path, version[, to][, published]}. The op must be valid for the model."""
    kind, path = op["op"], op["path"]
    cur = model.get(path)
    if kind == "put":
        v = cur["latest"] + 1 if cur else 1
        pub = v if op.get("publish") else (cur["pub"] if cur and not cur["deleted"] else None)
        model[path] = item(False, v, pub, op["sha"])
        e = {"op": "put", "path": path, "version": v}
        if op.get("publish"):
            e["published"] = True
        return e
    if kind == "publish":
        cur["pub"] = op["version"]
        return {"op": "publish", "path": path, "version": op["version"]}
    if kind == "unpublish":
        v = cur["pub"]
        cur["pub"] = None
        return {"op": "unpublish", "path": path, "version": v}
    if kind == "delete":
        cur["deleted"] = True
        cur["pub"] = None
        return {"op": "delete", "path": path, "version": cur["latest"]}
    if kind == "purge":
        del model[path]
        return {"op": "purge", "path": path, "version": cur["latest"]}
    if kind == "move":
        del model[path]
        model[op["to"]] = cur
        return {"op": "move", "path": path, "version": cur["latest"], "to": op["to"]}
    raise ValueError(kind)


def observed_state(base_url, prefix, timeout=10):
    """The server's state of every path under prefix (tombstones included), as model items."""
    out, after = {}, None
    while True:
        url = "%s/v1/list?prefix=%s&deleted=1&limit=1000" % (base_url, quote_path(prefix))
        if after:
            url += "&after=" + quote_path(after)
        page = get_json(url, timeout=timeout)
        for it in page["items"]:
            out[it["path"]] = item(bool(it.get("deleted")), it["latest_version"],
                                   it.get("published_version"), it["sha256"])
        after = page.get("next")
        if not after:
            return out


class Cluster:
    """What the writers share with the runner: where the primary is, and the pause switch."""

    def __init__(self, primary_url):
        self.lock = threading.Lock()
        self.primary_url = primary_url
        self.primary_tag = "pre"  # which history the acknowledgements belong to
        self.pause = threading.Event()
        self.stop = threading.Event()


class Writer(threading.Thread):
    def __init__(self, cluster, index, seed, allow_large):
        super().__init__(name="writer-%d" % index, daemon=True)
        self.c = cluster
        self.index = index
        self.prefix = "/w%d" % index
        self.paths = ["%s/p%d" % (self.prefix, k) for k in range(PATHS_PER_WRITER)]
        self.rng = random.Random(seed * 1000 + index)
        self.allow_large = allow_large
        self.model = {}
        self.acks = []        # dicts: tag, seq, entry, sha (for puts), what
        self.pending = None   # an unresolved unknown write: (ops, before, after, tag, what)
        self.unknown = 0      # writes whose outcome was unknown
        self.unknown_applied = 0
        self.torn = []        # descriptions of writes that were neither applied nor not
        self.rejected = {}    # error code -> count
        self.anomalies = []   # replies that contradict the model
        self.counter = 0
        self.large_done = 0
        self.parked = threading.Event()
        self.ops_sent = 0

    # ------------------------------------------------------------ choosing operations

    def _body(self):
        self.counter += 1
        head = ("%s #%d %d\n" % (self.prefix, self.counter, self.rng.getrandbits(32))).encode()
        r = self.rng.random()
        if r < 0.08:  # a blob (above 64 KiB: stored as a file)
            return head + bytes(self.rng.getrandbits(8) for _ in range(64)) * self.rng.randint(1100, 3000)
        return head * self.rng.randint(1, 40)

    def _gen(self, model, allow_batch=True):
        """One operation valid for model, or None."""
        rng = self.rng
        live = [p for p in self.paths if p in model and not model[p]["deleted"]]
        kinds = ["put", "put_pub", "publish", "unpublish", "move", "delete", "purge"]
        weights = [34, 10, 10, 6, 8, 8, 6]
        if allow_batch:
            kinds.append("batch")
            weights.append(10)
        for _ in range(10):
            k = rng.choices(kinds, weights)[0]
            if k in ("put", "put_pub"):
                body = self._body()
                op = {"op": "put", "path": rng.choice(self.paths), "body": body,
                      "sha": sha256(body), "publish": k == "put_pub"}
                if rng.random() < 0.1:
                    op["kind"] = rng.choice(["page", "image", "document"])
                if rng.random() < 0.1:
                    op["meta"] = {"n": self.counter, "w": self.index}
                return op
            if k == "publish" and live:
                p = rng.choice(live)
                it = model[p]
                choices = [v for v in range(max(1, it["latest"] - 40), it["latest"] + 1)
                           if v != it["pub"]]
                if choices:
                    return {"op": "publish", "path": p, "version": rng.choice(choices)}
            if k == "unpublish":
                pubs = [p for p in live if model[p]["pub"] is not None]
                if pubs:
                    return {"op": "unpublish", "path": rng.choice(pubs)}
            if k == "move" and live:
                src = rng.choice(live)
                dsts = [p for p in self.paths if p != src and not (p in model and not model[p]["deleted"])]
                if dsts:
                    return {"op": "move", "path": src, "to": rng.choice(dsts)}
            if k == "delete" and live:
                return {"op": "delete", "path": rng.choice(live)}
            if k == "purge":
                there = [p for p in self.paths if p in model]
                if there:
                    return {"op": "purge", "path": rng.choice(there)}
            if k == "batch":
                m = copy.deepcopy(model)
                ops = []
                for _ in range(rng.randint(2, 5)):
                    op = self._gen(m, allow_batch=False)
                    if op is None:
                        break
                    apply_op(m, op)
                    ops.append(op)
                if ops:
                    return {"op": "batch", "ops": ops}
        return None

    # ------------------------------------------------------------ sending

    def _single(self, base, op):
        """Sends one non-batch op; returns the reply."""
        p, k = quote_path(op["path"]), op["op"]
        if k == "put":
            q = []
            if op.get("publish"):
                q.append("publish=1")
            if "kind" in op:
                q.append("kind=" + op["kind"])
            headers = {}
            if "meta" in op:
                headers["X-Lockstep-Meta"] = json.dumps(op["meta"])
            url = base + "/v1/items" + p + ("?" + "&".join(q) if q else "")
            return json.loads(request("PUT", url, op["body"], headers)[1])
        if k == "delete":
            return json.loads(request("DELETE", base + "/v1/items" + p)[1])
        if k == "publish":
            return json.loads(request("POST", "%s/v1/publish%s?version=%d" % (base, p, op["version"]))[1])
        if k == "unpublish":
            return json.loads(request("POST", base + "/v1/unpublish" + p)[1])
        if k == "purge":
            return json.loads(request("POST", base + "/v1/purge" + p)[1])
        if k == "move":
            return json.loads(request("POST", "%s/v1/move%s?to=%s" % (base, p, quote_path(op["to"])))[1])
        raise ValueError(k)

    def _batch_line(self, op):
        line = {"op": op["op"], "path": op["path"]}
        if op["op"] == "put":
            line["body_base64"] = base64.b64encode(op["body"]).decode()
            if op.get("publish"):
                line["status"] = "published"
            if "kind" in op:
                line["kind"] = op["kind"]
            if "meta" in op:
                line["meta"] = op["meta"]
        elif op["op"] == "publish":
            line["version"] = op["version"]
        elif op["op"] == "move":
            line["to"] = op["to"]
        return json.dumps(line)

    def _large(self, base, op):
        """A put through an upload session (docs/api.md, Uploads). Only the commit writes:
        a failure before it is a plain failure, the commit's own outcome may be unknown."""
        sess = json.loads(request("POST", base + "/v1/uploads")[1])["id"]
        body, off = op["body"], 0
        try:
            while off < len(body):
                part = body[off:off + UPLOAD_PART]
                off = json.loads(request("PUT", "%s/v1/uploads/%s?offset=%d" % (base, sess, off), part)[1])["size"]
        except (Unknown, HttpError) as e:
            try:
                request("DELETE", "%s/v1/uploads/%s" % (base, sess), timeout=5)
            except Exception:
                pass
            raise HttpError(0, "upload_part", str(e)) if isinstance(e, Unknown) else e
        url = "%s/v1/uploads/%s/commit?path=%s&sha256=%s%s" % (
            base, sess, quote_path(op["path"]), op["sha"], "&publish=1" if op.get("publish") else "")
        return json.loads(request("POST", url, timeout=60)[1])

    def step(self):
        with self.c.lock:
            base, tag = self.c.primary_url, self.c.primary_tag
        if self.allow_large and self.large_done < 2 and self.rng.random() < 0.004:
            self.counter += 1
            body = (("%s large #%d\n" % (self.prefix, self.counter)).encode() * 1)
            body += bytes([self.rng.getrandbits(8)]) * (LARGE_SIZE - len(body))
            op = {"op": "put", "path": self.rng.choice(self.paths), "body": body,
                  "sha": sha256(body), "publish": self.rng.random() < 0.5, "large": True}
            self.large_done += 1
        else:
            op = self._gen(self.model)
            if op is None:
                return
        ops = op["ops"] if op["op"] == "batch" else [op]
        before = copy.deepcopy(self.model)
        after = copy.deepcopy(self.model)
        entries = [apply_op(after, o) for o in ops]
        what = self._describe(op)
        self.ops_sent += 1
        try:
            if op["op"] == "batch":
                body = ("\n".join(self._batch_line(o) for o in ops) + "\n").encode()
                reply = json.loads(request("POST", base + "/v1/batch", body)[1])
                seqs = list(range(reply["first_seq"], reply["last_seq"] + 1))
                if reply.get("applied") != len(ops) or len(seqs) != len(ops):
                    self.anomalies.append("%s: reply %s" % (what, reply))
            elif op.get("large"):
                reply = self._large(base, op)
                seqs = [reply["seq"]]
            else:
                reply = self._single(base, op)
                seqs = [reply["seq"]]
            if op["op"] != "batch" and reply.get("version") != entries[0]["version"]:
                self.anomalies.append("%s: the reply says version %s, the model %s" % (
                    what, reply.get("version"), entries[0]["version"]))
        except HttpError as e:
            self.rejected[e.code or str(e.status)] = self.rejected.get(e.code or str(e.status), 0) + 1
            if e.code in ("not_found", "conflict", "exists", "bad_request", "bad_batch"):
                self.anomalies.append("%s: refused although the model allows it: %s" % (what, e))
            time.sleep(0.05)
            return
        except Refused:
            self.rejected["refused"] = self.rejected.get("refused", 0) + 1
            time.sleep(0.2)
            return
        except Unknown as e:
            self.unknown += 1
            self.pending = (before, after, what, time.monotonic(), "timed out" in str(e) or "timeout" in str(e))
            time.sleep(0.2)
            return
        self.model = after
        for s, e, o in zip(seqs, entries, ops):
            self.acks.append({"tag": tag, "seq": s, "entry": e,
                              "sha": o.get("sha") if o["op"] == "put" else None, "what": what})

    def _describe(self, op):
        if op["op"] == "batch":
            return "batch[" + ", ".join(self._describe(o) for o in op["ops"]) + "]"
        s = "%s %s" % (op["op"], op["path"])
        if op["op"] == "move":
            s += " -> " + op["to"]
        if op["op"] == "publish":
            s += " v%d" % op["version"]
        if op["op"] == "put" and op.get("publish"):
            s += " (publish)"
        if op.get("large"):
            s += " (upload session)"
        return s

    def resolve(self, base):
        """Decides a pending unknown write from the primary's state: True once decided."""
        before, after, what, when, timed_out = self.pending
        if timed_out and time.monotonic() - when < 5:
            return False  # a request that timed out may still be queued on the server
        try:
            seen = observed_state(base, self.prefix)
        except Exception:
            return False
        mine = {p: v for p, v in seen.items() if p in self.paths}
        if mine == after:
            self.unknown_applied += 1
            self.model = after
        elif mine != before:
            self.torn.append("%s (outcome unknown): the primary holds neither the state before "
                             "nor the state after it: before %s, after %s, primary %s" % (
                                 what, before, after, mine))
            self.model = mine
        self.pending = None
        return True

    def rebuild(self, base):
        """After a promotion: the new primary's state is the model (what the old primary alone
        had is checked against its fork export instead)."""
        seen = observed_state(base, self.prefix)
        self.model = {p: v for p, v in seen.items() if p in self.paths}
        self.pending = None

    def run(self):
        while not self.c.stop.is_set():
            if self.c.pause.is_set():
                self.parked.set()
                time.sleep(0.02)
                continue
            self.parked.clear()
            try:
                if self.pending:
                    with self.c.lock:
                        base = self.c.primary_url
                    if not self.resolve(base):
                        time.sleep(0.3)
                    continue
                self.step()
            except Exception as e:  # a runner bug must not pass silently
                self.anomalies.append("writer exception: %s: %s" % (type(e).__name__, e))
                time.sleep(0.2)
        self.parked.set()
