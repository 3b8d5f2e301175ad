"""The chaos runner's mirroring workload: a --live, --delete job on the replica R1 mirrors its
whole store (store:/) to a directory while the writers and the faults go on (kill -9, SIGSTOP,
restarts, link faults, a promotion that makes R1 the primary).

The check, after the heal, once R1 has its upstream's seq: the directory converges (within a
bound) to R1's live items: the same paths, each file with the SHA-256 of the item's latest body,
and nothing else. A job whose run ended (a fault made it fail) is run again first; temporary
files left in the directory are noted."""
import hashlib
import json
import os
import time

from cluster import HttpError, request  # noqa: E402
from workload import observed_state  # noqa: E402

JOB = "chaos"


def _post(url, body=None):
    return request("POST", url, json.dumps(body).encode() if body is not None else b"", timeout=10)


def setup(srv, target_dir):
    """Creates the job on srv and starts its first run (which then follows the log)."""
    _post(srv.url + "/v1/mirrors", {"name": JOB, "source": "store:/", "targets": ["dir:" + target_dir],
                                    "delete": True, "live": True, "package_items": 50})
    _post("%s/v1/mirrors/%s/run" % (srv.url, JOB))


def store_items(url):
    """The server's live items: {path: SHA-256 of the latest body}."""
    return {p: it["sha"] for p, it in observed_state(url, "/", timeout=30).items() if not it["deleted"]}


def dir_files(root):
    """{"/path": sha256} of the files under root, and the temporary names found."""
    out, tmp = {}, []
    for d, _, files in os.walk(root):
        for f in files:
            p = os.path.join(d, f)
            if f.startswith(".lsmirror-"):
                tmp.append(p)
                continue
            h = hashlib.sha256()
            with open(p, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 16), b""):
                    h.update(chunk)
            out["/" + os.path.relpath(p, root)] = h.hexdigest()
    return out, tmp


def _diff(want, got):
    missing = sorted(p for p in want if p not in got)
    extra = sorted(p for p in got if p not in want)
    differ = sorted(p for p in want if p in got and got[p] != want[p])
    return missing, extra, differ


def check(run, srv, target_dir, seconds=90):
    """Waits until target_dir equals srv's live items; appends a failure to run otherwise."""
    end = time.monotonic() + seconds
    runs_started, last = 0, None
    while True:
        try:
            job = json.loads(request("GET", "%s/v1/mirrors/%s" % (srv.url, JOB), timeout=10)[1])
            if not job.get("running") and not job.get("paused"):
                try:  # the last run ended (a fault made it fail): run it again
                    _post("%s/v1/mirrors/%s/run" % (srv.url, JOB))
                    runs_started += 1
                except HttpError:
                    pass
            want = store_items(srv.url)
            got, tmp = dir_files(target_dir)
            last = _diff(want, got)
            if not any(last):
                hist = json.loads(request("GET", "%s/v1/mirrors/%s/history?limit=100" % (srv.url, JOB),
                                          timeout=30)[1])["runs"]
                states = {}
                for r in hist:
                    states[r["state"]] = states.get(r["state"], 0) + 1
                if tmp:
                    run.notes.append("mirror: %d temporary files left in the target: %s" % (
                        len(tmp), tmp[:3]))
                return "mirror: %d items converged on %s's target (%d runs: %s; %d started by the check)" % (
                    len(want), srv.name, len(hist),
                    ", ".join("%d %s" % (n, s) for s, n in sorted(states.items())), runs_started)
        except Exception as e:  # noqa: BLE001 - the server may still be settling
            last = ("error", str(e))
        if time.monotonic() > end:
            break
        time.sleep(0.5)
    if last and last[0] == "error":
        run.fail_server(srv.name, "mirror: cannot check the job: %s" % last[1])
    else:
        missing, extra, differ = last
        run.fail_server(srv.name, "mirror: the target did not converge within %d s: %d missing %s, "
                        "%d extra %s, %d differ %s" % (seconds, len(missing), missing[:5], len(extra),
                                                       extra[:5], len(differ), differ[:5]))
    return "mirror: did not converge"
