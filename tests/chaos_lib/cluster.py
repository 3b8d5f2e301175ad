"""tests/chaos_lib/cluster.py - the processes of a chaos run: lockstep servers, faultproxy
instances between each replica and its upstream, the small tmpfs that fills up, and a plain
HTTP client that tells "refused" (nothing was sent) from "unknown" (it may have committed).

Every process is started by Popen and tracked by its handle, so that only processes this run
started are ever signalled, and all of them are stopped at exit.
"""
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request


# ---------------------------------------------------------------- HTTP


class Refused(Exception):
    """The server was not there: the request was never sent, nothing was written."""


class Unknown(Exception):
    """The connection broke or timed out after the request may have reached the server."""


class HttpError(Exception):
    """The server answered with an error: the request changed nothing (docs/api.md)."""

    def __init__(self, status, code, message):
        super().__init__("HTTP %d %s: %s" % (status, code, message))
        self.status = status
        self.code = code
        self.message = message


def request(method, url, body=None, headers=None, timeout=30.0):
    """Returns (status, reply bytes); raises Refused, Unknown or HttpError."""
    if body is None and method in ("POST", "PUT"):
        body = b""
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        try:
            data = e.read()
        except Exception:  # the error reply itself was cut
            raise Unknown("HTTP %d with a cut reply" % e.code)
        code, msg = None, data[:200].decode("utf-8", "replace")
        try:
            err = json.loads(data)["error"]
            code, msg = err.get("code"), err.get("message")
        except Exception:
            pass
        raise HttpError(e.code, code, msg)
    except urllib.error.URLError as e:
        if isinstance(e.reason, ConnectionRefusedError):
            raise Refused(str(e.reason))
        raise Unknown(str(e.reason))
    except ConnectionRefusedError as e:
        raise Refused(str(e))
    except (OSError, EOFError, ValueError) as e:  # resets, timeouts, http.client errors
        raise Unknown("%s: %s" % (type(e).__name__, e))


def get_json(url, timeout=10.0):
    return json.loads(request("GET", url, timeout=timeout)[1])


def quote_path(path):
    return urllib.parse.quote(path, safe="/")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def log_has(path, needle, start=0):
    try:
        with open(path, "rb") as f:
            f.seek(start)
            return needle.encode() in f.read()
    except OSError:
        return False


def file_size(path):
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def wait_for(pred, seconds, step=0.05):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(step)
    return pred()


# ---------------------------------------------------------------- servers


class Server:
    """One `lockstep serve`: the same data dir and ports across restarts; `args` holds its role
    flags (changed by a promotion or a rejoin)."""

    def __init__(self, run, name, data, args):
        self.run = run
        self.name = name
        self.data = data
        self.args = list(args)
        self.http_port = free_port()
        self.peer_port = free_port()
        while self.peer_port == self.http_port:
            self.peer_port = free_port()
        self.log = os.path.join(run.dir, name + ".log")
        self.proc = None
        self.stopped = False  # SIGSTOPped by us

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.http_port

    @property
    def peer(self):
        return "127.0.0.1:%d" % self.peer_port

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def start(self, first=False):
        """Starts the server and waits until it answers as itself; False (log kept) when it
        does not come up."""
        if self.alive():
            return True
        for attempt in range(40):
            with open(self.log, "ab") as logf:
                cmd = [self.run.lockstep, "serve", "--data", self.data,
                       "--http", "127.0.0.1:%d" % self.http_port,
                       "--listen", "127.0.0.1:%d" % self.peer_port,
                       "--name", self.name, "--heartbeat-timeout", "3s"] + self.args
                logf.write(("=== %s %s\n" % (time.strftime("%H:%M:%S"), " ".join(cmd))).encode())
                logf.flush()
                start_at = file_size(self.log)
                self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=logf,
                                             stderr=subprocess.STDOUT)
            self.stopped = False
            end = time.monotonic() + 30
            while time.monotonic() < end and self.proc.poll() is None:
                try:
                    st = get_json(self.url + "/v1/status", timeout=2)
                    if st.get("name") == self.name:
                        return True
                except Exception:
                    pass
                time.sleep(0.05)
            if self.proc.poll() is None:
                self.kill9()
                return False
            self.proc.wait()
            in_use = log_has(self.log, "Address already in use", start_at)
            if not in_use:
                return False
            if first:  # a port taken meanwhile: pick others (nobody points at them yet)
                self.http_port, self.peer_port = free_port(), free_port()
            time.sleep(0.25)  # a port just released may take a moment
        return False

    def kill9(self):
        if self.alive():
            self.proc.send_signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait()
        self.stopped = False

    def terminate(self, seconds=20):
        """SIGTERM and wait; returns the exit code (None if it had to be killed)."""
        if not self.alive():
            return self.proc.returncode if self.proc else 0
        if self.stopped:
            self.cont()
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            self.kill9()
            return None

    def stop(self):
        if self.alive():
            self.proc.send_signal(signal.SIGSTOP)
            self.stopped = True

    def cont(self):
        if self.alive() and self.stopped:
            self.proc.send_signal(signal.SIGCONT)
        self.stopped = False

    def status(self, timeout=5):
        return get_json(self.url + "/v1/status", timeout=timeout)


# ---------------------------------------------------------------- faultproxy


class Proxy:
    """A faultproxy on a fixed port in front of an upstream's peer port, driven by its control
    file (tests/tools/faultproxy.c): delay, stall (drop), refuse, cut."""

    def __init__(self, run, name, target):
        self.run = run
        self.name = name
        self.target = target
        self.port = free_port()
        self.ctl = os.path.join(run.dir, "proxy-%s.ctl" % name)
        self.log = os.path.join(run.dir, "proxy-%s.log" % name)
        self.proc = None
        self.gen = 0
        self.cuts = 0
        self.state = {"delay": 0, "stall": 0, "refuse": 0}

    @property
    def addr(self):
        return "127.0.0.1:%d" % self.port

    def _write_ctl(self):
        self.gen += 1
        tmp = self.ctl + ".tmp"
        with open(tmp, "w") as f:
            f.write("gen %d\ndelay %d\nstall %d\nrefuse %d\ncut %d\n" % (
                self.gen, self.state["delay"], self.state["stall"], self.state["refuse"],
                self.cuts))
        os.rename(tmp, self.ctl)
        return self.gen

    def start(self):
        for attempt in range(20):
            self._write_ctl()
            start_at = file_size(self.log)
            with open(self.log, "ab") as logf:
                self.proc = subprocess.Popen(
                    [self.run.faultproxy, "--listen", str(self.port), "--target", self.target,
                     "--control", self.ctl, "--max-runtime", str(self.run.max_runtime)],
                    stdin=subprocess.DEVNULL, stdout=logf, stderr=logf)
            needle = "listening on 127.0.0.1:%d" % self.port
            if wait_for(lambda: log_has(self.log, needle, start_at) or self.proc.poll() is not None, 5) \
                    and self.proc.poll() is None:
                return True
            self.stop_proc()
            time.sleep(0.25)
        raise RuntimeError("faultproxy %s did not start on port %d" % (self.name, self.port))

    def stop_proc(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def retarget(self, target):
        """The same port, another upstream (as a failover moves an address)."""
        self.stop_proc()
        self.target = target
        self.state = {"delay": 0, "stall": 0, "refuse": 0}
        self.start()

    def set(self, cut=False, **state):
        """Sets the whole fault state (what is not given is cleared); waits until applied."""
        self.state = {"delay": 0, "stall": 0, "refuse": 0}
        self.state.update(state)
        if cut:
            self.cuts += 1
        gen = self._write_ctl()
        needle = "control gen %d applied" % gen
        if not wait_for(lambda: log_has(self.log, needle), 5):
            raise RuntimeError("faultproxy %s did not apply control gen %d" % (self.name, gen))


# ---------------------------------------------------------------- a disk that fills up


class SmallDisk:
    """A tmpfs for one server's data dir: full = remounted just above what it holds (no memory
    is taken by that), room = remounted large again. Needs root; `ok` is False otherwise."""

    ROOM = "2g"

    def __init__(self, path):
        self.path = path
        self.ok = False
        self.why = ""
        os.makedirs(path, exist_ok=True)
        if os.geteuid() != 0:
            self.why = "not root"
            return
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=" + self.ROOM, "tmpfs", path],
                           capture_output=True, text=True)
        if r.returncode != 0:
            self.why = "mount failed: " + r.stderr.strip()
            return
        self.ok = True

    def fill(self):
        st = os.statvfs(self.path)
        used_kb = (st.f_blocks - st.f_bfree) * st.f_frsize // 1024
        return self._remount("%dk" % (used_kb + 256))

    def room(self):
        return self._remount(self.ROOM)

    def _remount(self, size):
        if not self.ok:
            return False
        r = subprocess.run(["mount", "-o", "remount,size=" + size, self.path],
                           capture_output=True, text=True)
        return r.returncode == 0

    def unmount(self):
        if self.ok:
            subprocess.run(["umount", "-l", self.path], capture_output=True)
            self.ok = False
