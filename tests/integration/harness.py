# tests/integration/harness.py: shared helpers for the integration scenarios.
#
# Each scenario (<scenario>_test.py) is an executable script that starts one or more
# ringrelay daemons on loopback with a temporary spool, talks SMTP to them with independent
# peers (smtplib, raw sockets, Postfix's smtp-source) and exits 0 (pass), 1 (fail) or
# 77 (skip, which Meson counts as skipped). Python 3 standard library only.
#
# The ringrelay binary is argv[1], else $RINGRELAY, else build/tools/ringrelay beside the
# source tree. Every daemon started here is stopped by PID (SIGTERM, then SIGKILL only if it
# hangs) and every temp dir removed, from atexit, also when the test itself fails, raises or
# is sent SIGTERM/SIGINT by the test runner.
# SECURITY: nothing here leaves loopback; every wait is bounded.
import atexit
import contextlib
import datetime
import json
import os
import random
import re
import select
import shlex
import shutil
import signal
import smtplib
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback

EXIT_PASS, EXIT_FAIL, EXIT_SKIP = 0, 1, 77

START_TIMEOUT = 20.0   # seconds for "listening on" to appear (a loaded 2-core machine)
STOP_TIMEOUT = 30.0    # seconds for a graceful stop before SIGKILL
IO_TIMEOUT = 20.0      # seconds for any one SMTP reply

_QUEUED_RE = re.compile(r"queued as ([0-9A-F]{16})")
_LISTEN_RE = re.compile(r"listening on (.+?) with ")
_ENDPOINT_RE = re.compile(r"^\[?([^\]]+?)\]?:(\d+)$")
_HOLDS_RE = re.compile(r"holds (\d+) message\(s\)")


class Skip(Exception):
    """Raised to end the scenario with exit 77."""


class Failed(Exception):
    """Raised by Checker.require to end the scenario at once."""


# ---------------------------------------------------------------------------------------------
# Cleanup registry: relays and temp dirs, released in reverse order at exit.

_cleanups = []
_cleanup_lock = threading.Lock()


def _run_cleanups():
    with _cleanup_lock:
        items = list(reversed(_cleanups))
        _cleanups.clear()
    for fn in items:
        try:
            fn()
        except Exception:  # noqa: BLE001 (cleanup must go on)
            traceback.print_exc()


atexit.register(_run_cleanups)


def _on_signal(signum, _frame):
    # Meson sends SIGTERM on timeout: turn it into a normal exit so atexit stops the daemons.
    print(f"harness: got signal {signum}; cleaning up", flush=True)
    sys.exit(EXIT_FAIL)


signal.signal(signal.SIGTERM, _on_signal)
signal.signal(signal.SIGINT, _on_signal)


def register_cleanup(fn):
    """Runs fn() at exit (after the scenario, or on a signal), like the daemons' stop()."""
    with _cleanup_lock:
        _cleanups.append(fn)


def temp_dir(prefix="rr-it-"):
    d = tempfile.mkdtemp(prefix=prefix)
    if os.environ.get("RR_KEEP_TEMP"):  # for debugging a failure: keep spools and logs
        print(f"harness: keeping {d}")
        return d
    with _cleanup_lock:
        _cleanups.append(lambda: shutil.rmtree(d, ignore_errors=True))
    return d


# ---------------------------------------------------------------------------------------------
# Locating the binary and peers.

def ringrelay_path():
    if len(sys.argv) > 1 and sys.argv[1]:
        path = sys.argv[1]
    elif os.environ.get("RINGRELAY"):
        path = os.environ["RINGRELAY"]
    else:
        here = os.path.dirname(os.path.abspath(__file__))
        path = os.path.join(here, "..", "..", "build", "tools", "ringrelay")
    path = os.path.abspath(path)
    if not os.access(path, os.X_OK):
        print(f"harness: ringrelay binary not found or not executable: {path}")
        sys.exit(EXIT_FAIL)
    return path


def missing(what):
    """A peer or tool the test needs is not there: a skip on a developer's machine, a failure
    under CI (CI set in the environment), where scripts/install-deps --test must have installed
    everything, so that a missing install step cannot hide behind a skipped test."""
    if os.environ.get("CI"):
        raise Failed(f"{what}, and CI is set: scripts/install-deps --test must install it")
    raise Skip(what)


def find_tool(name, candidates=()):
    for c in candidates:
        if os.access(c, os.X_OK):
            return c
    found = shutil.which(name)
    if found:
        return found
    missing(f"{name} not installed")


def npm_package(binary, name, version, sha512):
    """(node, the unpacked package's directory) for npm package `name` at `version`: its one
    tarball from the npm registry, unpacked into BUILD/NAME-VERSION/package on first use (BUILD:
    the build directory above `binary`, build/tools/ringrelay). No npm client (Debian's npm pulls
    in about 400 node-* packages), so only packages without dependencies. Pinned by version and
    by the registry's sha512 integrity value, checked before anything is unpacked. node missing,
    the fetch failing or a bad tarball: missing() (a failure under CI)."""
    import base64
    import hashlib
    import io
    import tarfile
    import urllib.request
    node = shutil.which("node")
    if node is None:
        missing("node is not installed")
    build = os.path.dirname(os.path.dirname(os.path.abspath(binary)))
    base = name.rsplit("/", 1)[-1]
    url = f"https://registry.npmjs.org/{name}/-/{base}-{version}.tgz"
    module = os.path.join(build, f"{base}-{version}", "package")
    if os.path.exists(os.path.join(module, "package.json")):
        return node, module
    try:
        with urllib.request.urlopen(url, timeout=120) as r:
            data = r.read()
    except OSError as e:
        missing(f"fetching {url} failed: {e}")
    got = base64.b64encode(hashlib.sha512(data).digest()).decode()
    if got != sha512:
        missing(f"{url}: sha512 {got}, expected {sha512}")
    # Unpacked beside, then renamed into place: a run cut short leaves no half package behind.
    staging = tempfile.mkdtemp(prefix=f".{base}-", dir=build)
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as t:
            # Only plain files and directories under package/ (Python before 3.11.4 has no
            # extraction filters; Debian 12's is one).
            for m in t.getmembers():
                if not (m.isfile() or m.isdir()) or not m.name.startswith("package/") or ".." in m.name.split("/"):
                    missing(f"{url}: unexpected member {m.name!r}")
            t.extractall(staging)
        os.makedirs(os.path.dirname(module), exist_ok=True)
        if not os.path.exists(module):
            os.rename(os.path.join(staging, "package"), module)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return node, module


def private_postfix(work, name, main_cf, tls=False):
    """A private Postfix instance (bench/lib/common.sh pf_setup_dir; with tls, smtpd offers
    STARTTLS with a self-signed certificate, pf_tls_setup) in a new directory under `work`,
    listening on a free loopback port, `main_cf` lines added to its main.cf. Needs root.
    Stopped at exit. Returns (directory, port)."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    common = os.path.join(root, "bench", "lib", "common.sh")
    port = free_port()
    d = os.path.join(work, f"postfix-{port}")
    os.makedirs(d)
    extra = os.path.join(d, "main.cf.extra")
    with open(extra, "w") as f:
        f.write(main_cf)
    q = shlex.quote
    script = (f"BENCH_NAME={q(name)} ROOT={q(root)} PORT_BASE={port}; set -euo pipefail; source {q(common)}; "
              + (f"pf_tls_setup {q(d)} >>{q(extra)}; " if tls else "")
              + f"pf_setup_dir {q(d)} {port} {q(name + '_test')} <{q(extra)}")
    register_cleanup(lambda: subprocess.run(["postfix", "-c", os.path.join(d, "etc"), "stop"],
                                            capture_output=True, timeout=60))
    r = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        raise RuntimeError(f"private Postfix did not start: {r.stderr[-800:]}")
    return d, port


def postfix_work_dir(prefix):
    """A new directory for private_postfix() instances, after checking that one can run here:
    Postfix installed (else harness.missing()) and root (else a skip)."""
    if shutil.which("postfix") is None or shutil.which("postconf") is None:
        missing("Postfix is not installed (scripts/install-deps --test installs it)")
    if os.geteuid() != 0:
        raise Skip("a private Postfix instance needs root")
    work = temp_dir(prefix)
    os.chmod(work, 0o755)  # Postfix's own users must reach the queue under it (mkdtemp makes 0700)
    return work


def maillog(d):
    """What a private_postfix() in directory `d` has logged so far ("" before its first line)."""
    try:
        with open(os.path.join(d, "maillog"), errors="replace") as f:
            return f.read()
    except OSError:
        return ""


class Peer:
    """A peer server the test starts (smtp-sink, dnsmasq): output discarded, stopped by PID
    (SIGTERM, then SIGKILL) by stop() or at exit."""

    def __init__(self, args):
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        _cleanups.append(self.stop)

    def running(self):
        return self.proc.poll() is None

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


class ClientThreads:
    """Load from `count` client threads running self.client(tid); subclasses define client()
    and what they record. stop is set to end the loops; join() says whether all ended."""

    def __init__(self, count):
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.client, args=(t,), daemon=True) for t in range(count)]

    def client(self, tid):
        raise NotImplementedError

    def start(self):
        for t in self.threads:
            t.start()

    def join(self, timeout):
        end = time.monotonic() + timeout
        for t in self.threads:
            t.join(max(0.1, end - time.monotonic()))
        return not any(t.is_alive() for t in self.threads)


class KillLoad(ClientThreads):
    """The load of a test that SIGKILLs the relay under it: `threads` smtplib clients, each
    sending `per_connection` messages a connection and reconnecting until stop is set or the
    relay is gone. The body goes out unstuffed after DATA (its CRLF lines must not start with
    '.'), so a test knows which bodies were sent in full. Subclasses define message() and what
    they record in on_sent() and on_acked() (both called under self.lock). Recorded here: in_flight
    (Message-IDs whose body was sent in full but got no reply), refused (a non-250 reply while
    the relay was alive) and errors (a connection lost before the test set killing)."""

    def __init__(self, relay, round_no, threads, per_connection, seed, helo):
        super().__init__(threads)
        self.relay = relay
        self.round_no = round_no
        self.per_connection = per_connection
        self.seed = seed        # the random.Random seed of thread tid: f"{seed}{round_no}-{tid}"
        self.helo = helo        # the EHLO name of thread tid: f"client{tid}.{helo}"
        self.killing = threading.Event()
        self.in_flight = set()
        self.refused = []
        self.errors = []

    def message(self, tid, n, rng):
        """Message n of thread tid: (Message-ID, sender, [recipients], CRLF message bytes)."""
        raise NotImplementedError

    def on_sent(self, mid, msg, rcpts):
        """The body of `mid` was sent in full."""

    def on_acked(self, mid, qid):
        """`mid` got "250 ... queued as `qid`"."""

    def client(self, tid):
        host, port = self.relay.address()
        n = 0
        rng = random.Random(f"{self.seed}{self.round_no}-{tid}")
        while not self.stop.is_set():
            try:
                s = smtplib.SMTP(host, port, timeout=15)
                s.ehlo(f"client{tid}.{self.helo}")
            except (OSError, smtplib.SMTPException):
                return  # relay gone
            try:
                for _ in range(self.per_connection):
                    if self.stop.is_set():
                        break
                    n += 1
                    mid, sender, rcpts, msg = self.message(tid, n, rng)
                    code, _ = s.mail(sender)
                    if code != 250:
                        self.refused.append(("MAIL", code))
                        continue
                    for r in rcpts:
                        code, _ = s.rcpt(r)
                        if code != 250:
                            break
                    if code != 250:
                        self.refused.append(("RCPT", code, mid))
                        s.rset()
                        continue
                    sent_body = False
                    try:
                        code, _ = s.docmd("DATA")
                        if code != 354:
                            self.refused.append(("DATA", code))
                            s.rset()
                            continue
                        s.send(msg + b".\r\n")  # CRLF lines, none starting with '.'
                        sent_body = True
                        with self.lock:
                            self.on_sent(mid, msg, rcpts)
                        code, text = s.getreply()
                    except (OSError, smtplib.SMTPException):
                        if sent_body:
                            with self.lock:
                                self.in_flight.add(mid)
                        raise
                    qid = queued_id(text)
                    if code == 250 and qid:
                        with self.lock:
                            self.on_acked(mid, qid)
                    else:
                        self.refused.append(("end of data", code))
                s.quit()
            except (OSError, smtplib.SMTPException) as e:
                # An error after the kill was ordered is the kill's doing, not the relay's.
                if not self.killing.is_set() and not self.stop.is_set() and self.relay.running():
                    self.errors.append(repr(e))
                return
            finally:
                try:
                    s.close()
                except Exception:  # noqa: BLE001
                    pass


def message_id(body):
    """The Message-ID header value of a message (bytes, LF or CRLF lines), or None."""
    for line in body.split(b"\n"):
        line = line.rstrip(b"\r")
        if line.lower().startswith(b"message-id: "):
            return line[12:].decode(errors="replace").strip()
        if not line:
            break
    return None


def require_bindable(addresses):
    """Skips the test unless each of `addresses` (e.g. 127.0.0.2) can be bound here."""
    for address in addresses:
        try:
            with socket.socket() as s:
                s.bind((address, 0))
        except OSError as e:
            raise Skip(f"cannot bind {address} here: {e}")


def free_port(host="127.0.0.1"):
    """A port that was free a moment ago. Relay() prefers port 0 (no race); this is for
    tests that need a port number before anything listens on it."""
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(fam, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def ipv6_loopback_available():
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


# ---------------------------------------------------------------------------------------------
# The daemon.

class Relay:
    """One ringrelay daemon. Lifecycle: Relay(...) -> start() -> ... -> stop() | kill().
    stop()/kill() are idempotent and are also run at exit."""

    def __init__(self, binary, flags=(), spool=None, shards=1, listen=None, log=True,
                 hostname="mx.test.invalid", hold=None, log_gate=False):
        self.binary = binary
        self.spool = spool or os.path.join(temp_dir(), "spool")
        self.work = os.path.dirname(self.spool)
        self.log_path = os.path.join(self.work, "delivery.log") if log else ""
        self.hostname = hostname
        self.listen = listen or ["127.0.0.1:0"]
        # log_gate: the relay logs into a FIFO that a LogGate copies to log_path line by line,
        # so that a test can hold its records back (log_held()) the way a slow log write does.
        self.log_gate = LogGate(self.log_path, os.path.join(self.work, "delivery.fifo")) \
            if log and log_gate else None
        self.args = [binary, "--spool", self.spool, "--shards", str(shards),
                     "--hostname", hostname, "--log", self.log_gate.fifo if self.log_gate else self.log_path]
        for l in self.listen:
            self.args += ["--listen", l]
        # Acceptance-side tests keep their mail in the spool (--hold), as before delivery
        # existed; a test that passes delivery flags (routes, DNS) delivers.
        if hold is None:
            hold = not any(f in ("--smarthost", "--route", "--dns-server") for f in flags)
        if hold:
            self.args.append("--hold")
        self.args += list(flags)
        self.proc = None
        self.host = None
        self.port = None
        self.holds = None
        self.endpoints = []  # [(host, port)] as bound, in --listen order
        self.returncode = None
        self._stderr_lines = []
        self._stderr_lock = threading.Lock()
        self._ready = threading.Event()
        self._reader = None

    # -- start/stop ------------------------------------------------------------------------

    def start(self, timeout=START_TIMEOUT):
        os.makedirs(self.work, exist_ok=True)
        if self.log_gate:
            self.log_gate.open()  # the read end first: the relay's open of the FIFO then returns
        self.proc = subprocess.Popen(self.args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True, errors="replace")
        with _cleanup_lock:
            _cleanups.append(self.stop)
        self._reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._ready.wait(0.1):
                return self
            if self.proc.poll() is not None:
                self._reader.join(2)
                raise RuntimeError(f"ringrelay exited with {self.proc.returncode} before listening; "
                                   f"stderr:\n{self.stderr()}")
        self.kill()
        raise RuntimeError(f"ringrelay did not print 'listening on' within {timeout}s; stderr:\n{self.stderr()}")

    def _read_stderr(self):
        for line in self.proc.stderr:
            with self._stderr_lock:
                self._stderr_lines.append(line)
            if not self._ready.is_set():
                m = _LISTEN_RE.search(line)
                if m:
                    for ep in m.group(1).split(", "):
                        e = _ENDPOINT_RE.match(ep.strip())
                        if e:
                            self.endpoints.append((e.group(1), int(e.group(2))))
                    self.host, self.port = self.endpoints[0] if self.endpoints else (None, None)
                    h = _HOLDS_RE.search(line)
                    self.holds = int(h.group(1)) if h else None
                    self._ready.set()

    def stderr(self):
        with self._stderr_lock:
            return "".join(self._stderr_lines)

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig):
        if self.running():
            os.kill(self.proc.pid, sig)

    def wait(self, timeout):
        """Waits up to `timeout` for exit; returns the status or None if still running."""
        try:
            self.returncode = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        if self._reader:
            self._reader.join(5)
        return self.returncode

    def stop(self, timeout=STOP_TIMEOUT):
        """SIGTERM, wait; SIGKILL only if it hangs. Returns the exit status (negative: signal)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
            if self.wait(timeout) is None:
                print(f"harness: ringrelay pid {self.proc.pid} ignored SIGTERM for {timeout}s; SIGKILL")
                self.proc.kill()
                self.wait(10)
        else:
            self.wait(1)
        self.returncode = self.proc.returncode
        if self.log_gate:
            self.log_gate.close()  # everything the relay wrote is in log_path after this
        return self.returncode

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        if self.proc is not None:
            self.wait(10)
        return self.returncode

    # -- talking to it -----------------------------------------------------------------------

    def address(self):
        return (self.host, self.port)

    def connect(self, timeout=IO_TIMEOUT, endpoint=0):
        host, port = self.endpoints[endpoint]
        return RawClient(host, port, timeout)

    def reception_log(self):
        return read_reception_log(self.log_path)

    def log_held(self):
        """Context manager: with a log_gate, no record reaches log_path inside the block (they
        wait in the FIFO and follow at its end); without one, nothing happens. The relay's own
        log writes are asynchronous (core/log.h): a client can have its 250 before the
        Reception line is in the file, and a test must not depend on that order."""
        return self.log_gate.held() if self.log_gate else contextlib.nullcontext()


class LogGate:
    """The relay's --log is a FIFO; a thread copies it to `path`, whole lines only, except while
    held. Lifecycle: open() before the relay starts, close() after it exited (drains the rest).
    For a relay with one shard: the FIFO keeps a write whole only up to PIPE_BUF (4 KiB), so
    two shards' writes could interleave in it (a file opened O_APPEND keeps each whole). Keep
    held sections short: past the pipe's 64 KiB the relay's log write waits for the gate."""

    def __init__(self, path, fifo):
        self.path = path
        self.fifo = fifo
        self._fd = None
        self._hold = threading.Event()
        self._stop = threading.Event()
        self._thread = None
        self._partial = b""

    def open(self):
        os.mkfifo(self.fifo, 0o600)
        # O_NONBLOCK: the open does not wait for the writer; reads return b"" until it comes.
        self._fd = os.open(self.fifo, os.O_RDONLY | os.O_NONBLOCK)
        open(self.path, "ab").close()
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()
        register_cleanup(self.close)

    @contextlib.contextmanager
    def held(self):
        self._hold.set()
        try:
            yield
        finally:
            self._hold.clear()

    def _copy(self, wait):
        """Copies what the FIFO holds now; returns False when it was empty (or, from the pump,
        held: the hold is looked at after the select, so a record that arrives once the hold
        is set stays in the FIFO)."""
        if wait and (not select.select([self._fd], [], [], wait)[0] or self._hold.is_set()):
            return False
        try:
            data = os.read(self._fd, 65536)
        except BlockingIOError:
            return False
        if not data:
            if wait:
                time.sleep(wait)  # no writer (yet, or any more)
            return False
        data = self._partial + data
        end = data.rfind(b"\n") + 1
        self._partial = data[end:]
        if end:
            with open(self.path, "ab") as f:
                f.write(data[:end])
        return True

    def _pump(self):
        while not self._stop.is_set():
            if self._hold.is_set():
                time.sleep(0.02)
            else:
                self._copy(0.05)

    def close(self):
        if self._fd is None:
            return
        self._hold.clear()
        self._stop.set()
        if self._thread:
            self._thread.join(5)
        while self._copy(0):
            pass
        os.close(self._fd)
        self._fd = None


def list_spool(binary, spool, timeout=60):
    """Runs `ringrelay --list-spool`; returns (count, [ids], stderr)."""
    r = subprocess.run([binary, "--list-spool", "--spool", spool], stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, errors="replace", timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"--list-spool exited {r.returncode}: {r.stderr}")
    lines = r.stdout.splitlines()
    m = re.match(r"(\d+) message\(s\) in ", lines[0] if lines else "")
    if not m:
        raise RuntimeError(f"--list-spool: unexpected first line: {lines[:1]!r}")
    ids = []
    for line in lines[1:]:
        mm = re.match(r"([0-9A-F]{16})\b", line)
        if not mm:
            raise RuntimeError(f"--list-spool: unexpected line: {line!r}")
        ids.append(mm.group(1))
    return int(m.group(1)), ids, r.stderr


def read_reception_log(path):
    out = []
    if not path or not os.path.exists(path):
        return out
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            rec = json.loads(line)
            if rec.get("type") == "Reception":
                out.append(rec)
    return out


def log_records(path):
    """Every JSON record in a delivery log so far (a line still being written is skipped)."""
    out = []
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass
    except OSError:
        pass
    return out


def record_time(record):
    """A log record's "time" (ISO 8601, UTC) as seconds since the epoch."""
    return datetime.datetime.fromisoformat(record["time"].replace("Z", "+00:00")).timestamp()


def wait_until(pred, timeout):
    """Polls pred() every 50 ms for up to `timeout` seconds; its last value."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.05)
    return pred()


def send_numbered(relay, n, tag, domain="example.net", sender="sender@example.org"):
    """n messages over one SMTP session, message i to rcpt{i}@domain with Subject "{tag} {i}" and
    Message-ID <{tag}{i}@example.org>."""
    host, port = relay.address()
    s = smtplib.SMTP(host, port, timeout=30)
    for i in range(n):
        s.sendmail(sender, [f"rcpt{i}@{domain}"],
                   f"Subject: {tag} {i}\r\nMessage-ID: <{tag}{i}@example.org>\r\n\r\nbody {i}\r\n")
    s.quit()


def ringrelayctl(ctl, base):
    """Runners of tools/ringrelayctl against `base` (an --http URL): run(*args, env=None, url=base)
    -> (exit status, stdout, stderr), url=None giving no --url; run_json(*args) the same with
    --json appended and stdout parsed (None if it is not JSON, then stderr or stdout as the text)."""
    def run(*args, env=None, url=base):
        r = subprocess.run([sys.executable, ctl] + (["--url", url] if url else []) + list(args),
                           capture_output=True, text=True, timeout=60, env=env)
        return r.returncode, r.stdout, r.stderr

    def run_json(*args):
        rc, out, err = run(*args, "--json")
        try:
            return rc, json.loads(out), err
        except ValueError:
            return rc, None, err or out

    return run, run_json


def saved_texts(save_dir):
    """The messages a ringrelay-sink --save DIR wrote (its X-Sink-* lines, then the message), in
    file-name order, as text."""
    out = []
    for name in sorted(os.listdir(save_dir)):
        if name.endswith(".eml"):
            with open(os.path.join(save_dir, name), "rb") as f:
                out.append(f.read().decode("utf-8", "replace"))
    return out


def start_sink(binary, port, args):
    """ringrelay-sink on 127.0.0.1:`port` with one shard, --quiet --json and `args`; killed (by
    PID) at exit if still running. Returns the Popen once the port accepts connections."""
    p = subprocess.Popen([binary, "--listen", f"127.0.0.1:{port}", "--shards", "1", "--quiet", "--json"] + list(args),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    register_cleanup(lambda: p.poll() is None and p.kill())
    if not connectable(port):
        raise Failed("ringrelay-sink does not listen")
    return p


def sink_result(p, timeout):
    """Waits up to `timeout` for a start_sink() sink to end (then kills it): (its --json
    statistics, {} if none, and its stderr)."""
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
    try:
        return json.loads(out), err
    except ValueError:
        return {}, err


def reception_record(relay, qid, timeout=10):
    """The Reception record of `qid` in the relay's log, waiting up to `timeout` (None if absent)."""
    deadline = time.monotonic() + timeout
    while True:
        for r in relay.reception_log():
            if r.get("queue_id") == qid:
                return r
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.1)


def spooled_message(spool, qid, timeout=10):
    """The message text of `qid` as stored in `spool`, waiting up to `timeout` (None if absent)."""
    deadline = time.monotonic() + timeout
    while qid:
        rec = read_spool(spool).get(qid)
        if rec:
            return rec.message
        if time.monotonic() >= deadline:
            break
        time.sleep(0.1)
    return None


def unverified_tls():
    """A client TLS context that accepts any certificate (the relay's is self-signed)."""
    import ssl
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def connectable(port, host="127.0.0.1", timeout=10.0):
    """Whether something accepts TCP connections on host:port within `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=1):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def queued_id(text):
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    m = _QUEUED_RE.search(text)
    return m.group(1) if m else None


def proc_status_kib(pid, field):
    """A size field of /proc/PID/status (VmRSS, VmHWM, ...) in KiB; None once `pid` has
    exited or when the field is not there."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


# ---------------------------------------------------------------------------------------------
# A raw SMTP client: exact bytes out, parsed replies in.

class RawClient:
    def __init__(self, host, port, timeout=IO_TIMEOUT, source=None):
        """source: the local address to connect from (a distinct loopback address, say)."""
        fam = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(fam, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        if source is not None:
            self.sock.bind((source, 0))
        self.sock.connect((host, port))
        self.buf = b""
        self.timeout = timeout

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def _fill(self, deadline):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise socket.timeout("reply deadline passed")
        self.sock.settimeout(remaining)
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError("connection closed by server")
        self.buf += chunk

    def reply(self, timeout=None):
        """One (code, [lines]) reply; raises EOFError on close, socket.timeout on timeout."""
        deadline = time.monotonic() + (timeout or self.timeout)
        lines = []
        while True:
            while b"\r\n" not in self.buf:
                self._fill(deadline)
            line, self.buf = self.buf.split(b"\r\n", 1)
            text = line.decode("utf-8", "replace")
            if len(text) < 3 or not text[:3].isdigit():
                raise ValueError(f"malformed reply line {text!r}")
            lines.append(text)
            if len(text) == 3 or text[3] == " ":
                return int(text[:3]), lines

    def cmd(self, line, timeout=None):
        """str: one command line (CRLF added); bytes: sent exactly as given."""
        if isinstance(line, str) and not line.endswith("\r\n"):
            line += "\r\n"
        self.send(line)
        return self.reply(timeout)

    def closed_by_peer(self, timeout):
        """True once the server closes the connection (EOF or reset) within timeout; any
        bytes that arrive first are kept in self.buf."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self._fill(deadline)
            except EOFError:
                return True
            except ConnectionResetError:
                return True
            except socket.timeout:
                return False
        return False

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def text_of(reply):
    code, lines = reply
    if isinstance(lines, bytes):
        return f"{code} " + lines.decode("utf-8", "replace")
    if isinstance(lines, str):
        return f"{code} {lines}"
    return " | ".join(lines)


# ---------------------------------------------------------------------------------------------
# An independent reader of the spool's on-disk format (queue/record.h), so tests can check
# the bytes that were made durable, not only what --list-spool says about them.

RECORD_MAGIC = b"RRS1"
RECORD_HEADER = 32


def _crc32c_table():
    t = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        t.append(c)
    return t


_CRC_TABLE = _crc32c_table()


def crc32c(data, crc=0):
    c = crc ^ 0xFFFFFFFF
    for b in data:
        c = _CRC_TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


class SpoolRecord:
    __slots__ = ("queue_id", "received_us", "body_8bit", "smtputf8", "helo", "client",
                 "mail_from", "auth_user", "rcpts", "message", "segment", "offset", "size", "copy")


def parse_segment(path, check_crc=True, problems=None):
    """Yields SpoolRecord for every well-formed record. Like the relay's recovery, the segment
    record at offset 0 gives the salt every other record's CRC is seeded with (queue/record.h),
    and a bad record is skipped by resynchronising on the next magic; (offset, reason) goes to
    `problems`."""
    import struct
    with open(path, "rb") as f:
        data = f.read()
    pos = 0
    salt = 0
    # Two copies of the segment record (the second in case the first is damaged).
    for at in (0, RECORD_HEADER + 8):
        if len(data) < at + RECORD_HEADER + 8:
            break
        magic, rtype, _v, _r, plen, crc, _q, _t = struct.unpack_from("<4sBBHIIQQ", data, at)
        head = data[at:at + RECORD_HEADER + 8]
        if (magic == RECORD_MAGIC and rtype == 3 and plen == 8 and
                (not check_crc or crc32c(head[32:40], crc32c(head[16:32], crc32c(head[4:12]))) == crc)):
            (salt,) = struct.unpack_from("<I", data, at + RECORD_HEADER)
            pos = 2 * (RECORD_HEADER + 8)
            break
    if pos == 0 and data:
        if problems is not None:
            problems.append((path, 0, "no segment record"))
        return

    def bad(reason):
        if problems is not None:
            problems.append((path, pos, reason))
        return data.find(RECORD_MAGIC, pos + 1)

    while pos < len(data):
        if pos + RECORD_HEADER > len(data):
            pos = bad("truncated header")
            if pos < 0:
                return
            continue
        magic, rtype, version, _res, plen, crc, qid, rus = struct.unpack_from("<4sBBHIIQQ", data, pos)
        if magic != RECORD_MAGIC:
            reason = "bad magic"
        elif pos + RECORD_HEADER + plen > len(data):
            reason = "truncated payload"
        else:
            reason = None
        if reason is None:
            payload = data[pos + RECORD_HEADER:pos + RECORD_HEADER + plen]
            # crc32c over header bytes 4..11 and 16..31, then the payload (queue/record.h).
            if check_crc and crc32c(payload, crc32c(data[pos + 16:pos + 32], crc32c(data[pos + 4:pos + 12], salt))) != crc:
                reason = "checksum mismatch"
        if reason is not None:
            pos = bad(reason)
            if pos < 0:
                return
            continue
        if rtype in (2, 3, 4):
            # An outcome record (a recipient's delivery result), a stray segment record or a
            # suppression record (they have their own journal): skip it.
            pos += RECORD_HEADER + plen
            continue
        r = SpoolRecord()
        r.queue_id, r.received_us, r.segment, r.offset = f"{qid:016X}", rus, path, pos
        r.size = RECORD_HEADER + plen
        # A message copy (type 5, compaction) starts with one 16-byte state per recipient.
        r.copy = rtype == 5
        p = 0
        if r.copy:
            (states,) = struct.unpack_from("<I", payload, 0)
            p = 4 + 16 * states
        r.body_8bit, r.smtputf8 = payload[p], payload[p + 1]
        p += 2

        def field16():
            nonlocal p
            (n,) = struct.unpack_from("<H", payload, p)
            v = payload[p + 2:p + 2 + n]
            p += 2 + n
            return v
        r.helo, r.client, r.mail_from = field16(), field16(), field16()
        # Version 2 message records carry the AUTH user after the sender (queue/record.h).
        r.auth_user = field16() if version == 2 else b""
        (count,) = struct.unpack_from("<I", payload, p)
        p += 4
        r.rcpts = [field16() for _ in range(count)]
        r.message = payload[p:]
        yield r
        pos += RECORD_HEADER + plen


def strip_received(message):
    """The message without the one Received: header the relay prepends (None if absent)."""
    if not message.startswith(b"Received: "):
        return None
    pos = 0
    while True:
        end = message.find(b"\r\n", pos)
        if end < 0:
            return None
        pos = end + 2
        if message[pos:pos + 1] not in (b" ", b"\t"):
            return message[pos:]


def spool_segments(spool):
    out = []
    for shard in sorted(os.listdir(spool)) if os.path.isdir(spool) else []:
        d = os.path.join(spool, shard)
        if shard.startswith("shard-") and os.path.isdir(d):
            out += [os.path.join(d, n) for n in sorted(os.listdir(d)) if n.endswith(".seg")]
    return out


def read_spool(spool, problems=None):
    """{queue_id: SpoolRecord} over every segment of every shard (a repeated id keeps the
    last copy; count them with parse_segment if that matters)."""
    out = {}
    for seg in spool_segments(spool):
        for r in parse_segment(seg, problems=problems):
            out[r.queue_id] = r
    return out


# ---------------------------------------------------------------------------------------------
# Checks and the scenario runner.

class Checker:
    """Collects named checks; prints each as it happens."""

    def __init__(self, name):
        self.name = name
        self.passed = 0
        self.failed = []

    def check(self, cond, what, detail=""):
        if cond:
            self.passed += 1
            print(f"ok    {what}", flush=True)
        else:
            self.failed.append(what)
            print(f"FAIL  {what}" + (f"  [{detail}]" if detail else ""), flush=True)
        return bool(cond)

    def require(self, cond, what, detail=""):
        if not self.check(cond, what, detail):
            raise Failed(what)

    def reply(self, reply, code, what, enhanced=None, contains=None):
        """Checks a (code, lines) reply's code, and optionally its enhanced status code and text."""
        got_code, lines = reply
        if isinstance(lines, (bytes, str)):  # smtplib's (code, b"text without the code")
            text = lines.decode("utf-8", "replace") if isinstance(lines, bytes) else lines
            lines = [f"{got_code} {l}" for l in text.split("\n")]
            reply = (got_code, lines)
        first = lines[0][4:] if lines and len(lines[0]) > 4 else ""
        ok = got_code == code
        if enhanced is not None:
            ok = ok and first.startswith(enhanced)
        if contains is not None:
            ok = ok and contains in " ".join(lines)
        want = f"{code}" + (f" {enhanced}" if enhanced else "") + (f" ...{contains}..." if contains else "")
        return self.check(ok, f"{what}: {want}", f"got {text_of(reply)}")

    def info(self, text):
        print(f"info  {text}", flush=True)


def run(name, scenario):
    """Runs scenario(checker) and exits with 0/1/77."""
    checker = Checker(name)
    started = time.monotonic()
    print(f"== {name}", flush=True)
    status = EXIT_PASS
    try:
        scenario(checker)
    except Skip as e:
        print(f"SKIP  {e}", flush=True)
        status = EXIT_SKIP
    except Failed as e:
        print(f"ABORT after failed requirement: {e}", flush=True)
        status = EXIT_FAIL
    except Exception:  # noqa: BLE001 (any error is a failed test, reported in full)
        traceback.print_exc()
        print("ABORT on exception", flush=True)
        status = EXIT_FAIL
    _run_cleanups()
    if status == EXIT_PASS and checker.failed:
        status = EXIT_FAIL
    if status == EXIT_PASS and checker.passed == 0:
        print("FAIL  no checks ran", flush=True)
        status = EXIT_FAIL
    elapsed = time.monotonic() - started
    verdict = {EXIT_PASS: "PASS", EXIT_FAIL: "FAIL", EXIT_SKIP: "SKIP"}[status]
    print(f"== {name}: {verdict} ({checker.passed} ok, {len(checker.failed)} failed, {elapsed:.1f}s)", flush=True)
    for f in checker.failed:
        print(f"   failed: {f}")
    sys.stdout.flush()
    os._exit(status)  # daemon threads (stderr readers, clients) must not hold the exit
