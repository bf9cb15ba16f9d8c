#!/usr/bin/env python3
# bench/e2e.py: the end-to-end benchmark (issue 4), run by bench/e2e (which installs and
# builds what it needs first). One run, one machine, every system side by side:
#
#   for each message size (2 KiB, 100 KiB) and each concurrency (connections):
#   (a) ceiling     ringrelay-bench -> ringrelay-sink        smtp-source -> smtp-sink (-d)
#   (b) acceptance  ringrelay-bench -> ringrelay --hold      ringrelay-bench -> Postfix (hold)
#   (c) end to end  ringrelay-bench -> ringrelay -> ringrelay-sink
#                   ringrelay-bench -> Postfix (relayhost) -> ringrelay-sink
#   (c') at 50 connections, ringrelay end to end again with --body-cache-size 0: every first
#       attempt reads the body back from the spool (what a cache miss costs, issue 15);
#   and the p99 acknowledgement latency of ringrelay (acceptance, 2 KiB, 50 connections) at
#   half of the peak those 50 connections reached closed-loop, open loop (ringrelay-bench --rate);
#   (d) TLS (issue 5), at one size and concurrency (2 KiB, 50 connections): durable acceptance,
#       plaintext and STARTTLS on every connection, against ringrelay --hold (STARTTLS with its
#       self-signed certificate from SPOOL/tls) and against Postfix (hold) with smtpd TLS
#       (bench/lib/common.sh pf_tls_setup: a self-signed EC P-256 certificate, as ringrelay's).
#       The client is ringrelay-bench for all four (smtp-source cannot do TLS), without and
#       with --starttls; both servers offer STARTTLS in all four, only the client differs.
#       TLS_ROUNDS rounds, each running the four in turn; each figure is the median of its
#       rounds. Ratios: ringrelay TLS / ringrelay plaintext, ringrelay TLS / Postfix TLS.
#
#   (e) DKIM (issue 16), 2 KiB, 50 connections, end to end (ringrelay-bench -> ringrelay ->
#       ringrelay-sink): unsigned, Ed25519-signed and RSA-2048-signed (keys from
#       ringrelay-dkim-keygen for the bench's From: domain; every Reception record must name
#       the signature), DKIM_ROUNDS rounds each running the three in turn, medians; beside them
#       `openssl speed -multi CPUS ed25519 rsa2048`'s sign rate (the machine's physical limit)
#       and the peer: Postfix end to end unsigned, then signing with OpenDKIM as its milter
#       (the same RSA-2048 and Ed25519 keys, relaxed/relaxed, milter_default_action = tempfail;
#       one more message through a saving sink must carry the signature), OpenDKIM's CPU
#       counted with Postfix's. Ratios: Ed25519 / unsigned, RSA / (openssl's RSA-2048 signs per
#       second on every core), ringrelay signed / Postfix + OpenDKIM signed.
#
#   (f) queue at rest and its restart (issue 15), bench/queue_scale.py's two cases at a smaller
#       count: QUEUE_RR_MSGS (default 100,000) messages of QUEUE_SIZE (2 KiB) accepted by
#       ringrelay --hold, the relay restarted without it delivering to ringrelay-sink; a
#       private Postfix holding QUEUE_PF_MSGS (default 10,000: Postfix accepts about 600/s
#       here) deferred by defer_transports, restarted and flushed. RSS at rest and after the
#       restart, restart to first and last delivery, spool before and after (bench/queue_scale
#       measures 1,000,000 and 20 KiB).
#
#   bench/e2e.py [--only all|main|tls|dkim|queue]   (or ONLY=...): main is (a)-(c) and the latency
#   row, tls is (d) alone, dkim is (e) alone, queue is (f) alone. A partial run writes RESULTS_DIR/e2e-<only>.{md,json}, leaving a full
#   run's e2e.{md,json,png} as they are.
#
# Both servers are durable as shipped: ringrelay fdatasyncs every group commit before its
# 250s; Postfix fsyncs each queue file before its 250. Spools live on the same file system.
# Figures: messages/s (for (c): from the first message sent until the sink has every one of
# them; the relay's queue must then be empty within a minute, untimed), messages/hour, p99 acknowledgement latency (from the
# bench; smtp-source reports none), and CPU seconds per 1,000 messages of the system under
# test (ringrelay, or every Postfix process; sinks and load generators excluded), from a
# cpuacct cgroup per system. Ratios are ringrelay / Postfix in the same row.
#
# Output: a table on stdout (Markdown), RESULTS_DIR/e2e.json, RESULTS_DIR/e2e.md and
# RESULTS_DIR/e2e.png (gnuplot: messages/s against concurrency; (a)-(c) only, not the
# latency or TLS rows, which are at one concurrency). Nothing is asserted about
# speed; the exit status is non-zero only when a run broke (a process failed to start, a
# count is wrong, delivery did not finish in time). Loopback only; every run is bounded.
import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.environ.get("BUILD_DIR", os.path.join(ROOT, "build"))
RINGRELAY = os.path.join(BUILD, "tools", "ringrelay")
BENCH = os.path.join(BUILD, "tools", "bench", "ringrelay-bench")
RSINK = os.path.join(BUILD, "tools", "sink", "ringrelay-sink")
SOURCE = shutil.which("smtp-source") or "/usr/sbin/smtp-source"
SINK = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"
COMMON = os.path.join(ROOT, "bench", "lib", "common.sh")

SIZES = [int(s) for s in os.environ.get("SIZES", "2048,102400").split(",")]
CONCURRENCY = [int(c) for c in os.environ.get("CONCURRENCY", "10,50,200").split(",")]
# Messages per run, by size: ringrelay / tools, and Postfix (slower: fewer, same duration order).
RR_MSGS = {2048: int(os.environ.get("RR_MSGS_2K", "30000")), 102400: int(os.environ.get("RR_MSGS_100K", "6000"))}
PF_MSGS = {2048: int(os.environ.get("PF_MSGS_2K", "3000")), 102400: int(os.environ.get("PF_MSGS_100K", "1500"))}
RESULTS_DIR = os.environ.get("RESULTS_DIR", os.path.join(ROOT, "bench", "results"))
RUN_TIMEOUT = float(os.environ.get("RUN_TIMEOUT", "300"))
TMP = os.environ.get("BENCH_TMP", "/var/tmp")
# (d) TLS: one size, one concurrency, messages per run for ringrelay and for Postfix, rounds.
TLS_SIZE = int(os.environ.get("TLS_SIZE", "2048"))
TLS_CONNECTIONS = int(os.environ.get("TLS_CONNECTIONS", "50"))
TLS_RR_MSGS = int(os.environ.get("TLS_RR_MSGS", "30000"))
TLS_PF_MSGS = int(os.environ.get("TLS_PF_MSGS", "3000"))
TLS_ROUNDS = int(os.environ.get("TLS_ROUNDS", "3"))
DKIM_SIZE = int(os.environ.get("DKIM_SIZE", "2048"))
DKIM_CONNECTIONS = int(os.environ.get("DKIM_CONNECTIONS", "50"))
DKIM_RR_MSGS = int(os.environ.get("DKIM_RR_MSGS", "20000"))
DKIM_PF_MSGS = int(os.environ.get("DKIM_PF_MSGS", "3000"))
DKIM_ROUNDS = int(os.environ.get("DKIM_ROUNDS", "3"))
# (f) queue: one size, messages for ringrelay and for Postfix (0: that system is left out).
QUEUE_SIZE = int(os.environ.get("QUEUE_SIZE", "2048"))
QUEUE_RR_MSGS = int(os.environ.get("QUEUE_RR_MSGS", "100000"))
QUEUE_PF_MSGS = int(os.environ.get("QUEUE_PF_MSGS", "10000"))
KEYGEN = os.path.join(BUILD, "tools", "ringrelay-dkim-keygen")
BENCH_FROM_DOMAIN = "ringrelay-bench.test"  # ringrelay-bench's default From: bench@ringrelay-bench.test

CGROOT = "/sys/fs/cgroup/cpuacct"
_started = []   # (kind, handle) to stop at exit
_cgroups = []
_next_port = [int(os.environ.get("PORT_BASE", "27100"))]


def log(msg):
    print(f"e2e: {msg}", file=sys.stderr, flush=True)


def die(msg):
    log(f"error: {msg}")
    cleanup()
    sys.exit(1)


# ---------------------------------------------------------------------------------------
# Processes, ports and CPU accounting.

def port_listening(port):
    hexport = f"{port:04X}"
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(path) as f:
                next(f)
                for line in f:
                    parts = line.split()
                    if parts[1].rsplit(":", 1)[1] == hexport and parts[3] == "0A":
                        return True
        except OSError:
            pass
    return False


def pick_port():
    while True:
        p = _next_port[0]
        _next_port[0] += 1
        if not port_listening(p):
            return p


def wait_listening(port, proc, what, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_listening(port):
            return
        if proc is not None and proc.poll() is not None:
            die(f"{what} exited ({proc.returncode}) before listening on {port}")
        time.sleep(0.05)
    die(f"{what} is not listening on {port} after {timeout}s")


class cpu_group:
    """A cpuacct cgroup (v1); usage() in seconds of every process started inside it."""

    def __init__(self, name):
        self.path = None
        if os.path.isdir(CGROOT) and os.access(CGROOT, os.W_OK):
            path = os.path.join(CGROOT, f"rr-e2e-{os.getpid()}-{name}")
            try:
                os.mkdir(path)
                self.path = path
                _cgroups.append(path)
            except OSError:
                self.path = None

    def prefix(self):
        """A shell prefix that moves the shell into the group before exec."""
        if self.path is None:
            return ""
        return f"echo $$ > {self.path}/cgroup.procs; "

    def usage(self):
        if self.path is None:
            return None
        with open(os.path.join(self.path, "cpuacct.usage")) as f:
            return int(f.read()) / 1e9


def spawn(args, group=None, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL):
    """Starts args (exec'd by a shell that first joins `group`); the Popen's pid is the program."""
    cmd = (group.prefix() if group else "") + "exec " + " ".join(_q(a) for a in args)
    p = subprocess.Popen(["bash", "-c", cmd], stdout=stdout, stderr=stderr, text=True)
    _started.append(("proc", p))
    return p


def _q(s):
    return "'" + str(s).replace("'", "'\\''") + "'"


def stop(p, secs=20):
    if p.poll() is not None:
        return p.returncode
    p.send_signal(signal.SIGTERM)
    try:
        return p.wait(secs)
    except subprocess.TimeoutExpired:
        log(f"pid {p.pid} ignored SIGTERM for {secs}s; killing it")
        p.kill()
        return p.wait()


def cleanup():
    for kind, h in reversed(_started):
        try:
            if kind == "proc":
                stop(h, 10)
            elif kind == "postfix":
                subprocess.run(["postfix", "-c", h, "stop"], capture_output=True, timeout=30)
        except Exception:  # noqa: BLE001
            pass
    _started.clear()
    time.sleep(0.5)
    for path in _cgroups:
        try:
            os.rmdir(path)
        except OSError:
            pass


# ---------------------------------------------------------------------------------------
# The systems.

def start_rsink(expect=None, save=None):
    port = pick_port()
    group = cpu_group(f"rsink-{port}")
    args = [RSINK, "--listen", f"127.0.0.1:{port}", "--quiet", "--json"]
    if expect:
        args += ["--expect", str(expect)]
    if save:
        args += ["--save", save]
    p = spawn(args, group, stdout=subprocess.PIPE)
    wait_listening(port, p, "ringrelay-sink")
    return p, port, group


def start_ringrelay(work, extra):
    port = pick_port()
    group = cpu_group(f"ringrelay-{port}")
    spool = os.path.join(work, f"spool-{port}")
    args = [RINGRELAY, "--listen", f"127.0.0.1:{port}", "--spool", spool, "--log",
            os.path.join(work, f"log-{port}.jsonl"), "--hostname", "ringrelay-bench.example"] + extra
    p = spawn(args, group)
    wait_listening(port, p, "ringrelay")
    return p, port, group, spool


def start_postfix(work, main_cf_lines, tls=False):
    """A private Postfix instance (bench/lib/common.sh); with tls, smtpd offers STARTTLS (pf_tls_setup)."""
    port = pick_port()
    group = cpu_group(f"postfix-{port}")
    d = os.path.join(work, f"postfix-{port}")
    os.makedirs(d)
    extra = os.path.join(d, "main.cf.extra")  # the main.cf lines after pf_setup_dir's own
    with open(extra, "w") as f:
        f.write("\n".join(main_cf_lines) + "\n")
    script = (group.prefix() +
              f"BENCH_NAME=e2e ROOT={_q(ROOT)} SOURCE={_q(SOURCE)} SINK={_q(SINK)} PORT_BASE={port}; "
              f"set -euo pipefail; source {_q(COMMON)}; "
              + (f"pf_tls_setup {_q(d)} >>{_q(extra)}; " if tls else "")
              + f"pf_setup_dir {_q(d)} {port} 'bench/e2e' <{_q(extra)}; echo \"$PF_VERSION\"")
    _started.append(("postfix", os.path.join(d, "etc")))  # stopped at exit even if the start broke halfway
    r = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        die(f"private Postfix did not start: {r.stderr[-800:]}")
    return d, port, group, r.stdout.strip()


def stop_postfix(d):
    subprocess.run(["postfix", "-c", os.path.join(d, "etc"), "stop"], capture_output=True, timeout=60)
    _started[:] = [(k, h) for k, h in _started if not (k == "postfix" and h == os.path.join(d, "etc"))]


def postfix_queue_empty(d):
    for sub in ("maildrop", "incoming", "active", "deferred"):
        p = os.path.join(d, "queue", sub)
        for _root, _dirs, files in os.walk(p):
            if files:
                return False
    return True


def run_bench(port, connections, count, size, rate=None, extra=()):
    args = [BENCH, "--target", f"127.0.0.1:{port}", "--connections", str(connections), "--messages", str(count),
            "--size", str(size), "--json", "--quiet", "--timeout", "30"] + list(extra)
    if rate:
        args += ["--rate", str(rate)]
    t0 = time.monotonic()
    r = subprocess.run(args, capture_output=True, text=True, timeout=RUN_TIMEOUT)
    elapsed = time.monotonic() - t0
    try:
        summary = json.loads(r.stdout)
    except json.JSONDecodeError:
        die(f"ringrelay-bench printed no JSON (exit {r.returncode}): {r.stderr[-500:]}")
    if r.returncode != 0 or summary.get("accepted") != count:
        die(f"ringrelay-bench: {summary.get('accepted')} of {count} accepted (exit {r.returncode}); "
            f"replies {summary.get('replies')} failures {summary.get('failures')}")
    return summary, t0, elapsed


def run_smtp_source(port, connections, count, size):
    args = [SOURCE, "-d", "-s", str(connections), "-l", str(size), "-m", str(count), "-M", "client.example.org",
            "-f", "sender@example.org", "-t", "rcpt@example.net", f"127.0.0.1:{port}"]
    t0 = time.monotonic()
    r = subprocess.run(args, capture_output=True, text=True, timeout=RUN_TIMEOUT)
    elapsed = time.monotonic() - t0
    if r.returncode != 0:
        die(f"smtp-source failed ({r.returncode}): {r.stderr[-500:]}")
    return elapsed


def wait_exit(p, timeout, what):
    try:
        p.wait(timeout)
    except subprocess.TimeoutExpired:
        die(f"{what} did not finish within {timeout}s")
    return time.monotonic()


def row(kind, system, size, conns, count, seconds, cpu, p99_ms=None, note=""):
    rate = count / seconds if seconds > 0 else 0.0
    return {"scenario": kind, "system": system, "size": size, "connections": conns, "messages": count,
            "seconds": round(seconds, 3), "messages_per_second": round(rate, 1),
            "messages_per_hour": int(rate * 3600), "p99_ack_ms": None if p99_ms is None else round(p99_ms, 2),
            "cpu_s_per_1000": None if cpu is None else round(cpu / count * 1000, 3), "note": note}


# ---------------------------------------------------------------------------------------
# One measurement each.

def ceiling_ringrelay(work, size, conns):
    n = RR_MSGS[size]
    sink, port, group = start_rsink(expect=n)
    c0 = group.usage()
    summary, t0, _ = run_bench(port, conns, n, size)
    done = wait_exit(sink, RUN_TIMEOUT, "ringrelay-sink --expect")
    cpu = None if c0 is None else group.usage() - c0
    return row("ceiling", "ringrelay-bench -> ringrelay-sink", size, conns, n, done - t0, cpu,
               summary["ack_latency_us"]["p99"] / 1000)


def ceiling_postfix_tools(work, size, conns):
    n = PF_MSGS[size] * 3
    port = pick_port()
    group = cpu_group(f"smtpsink-{port}")
    sink = spawn([SINK, "-u", "nobody", f"127.0.0.1:{port}", "1000"], group)
    wait_listening(port, sink, "smtp-sink")
    c0 = group.usage()
    elapsed = run_smtp_source(port, conns, n, size)
    cpu = None if c0 is None else group.usage() - c0
    stop(sink)
    return row("ceiling", "smtp-source -> smtp-sink", size, conns, n, elapsed, cpu)


def ringrelay_tls_receptions(log_path):
    """(Reception records, how many were under TLS, the TLS values seen) in a ringrelay log."""
    total, tls, seen = 0, 0, set()
    with open(log_path) as f:
        for line in f:
            if '"Reception"' not in line:
                continue
            rec = json.loads(line)
            if rec.get("type") != "Reception":
                continue
            total += 1
            if rec.get("tls"):
                tls += 1
                seen.add(rec["tls"])
    return total, tls, seen


def acceptance_ringrelay(work, size, conns, rate=None, starttls=False, n=None, scenario=None):
    n = n or RR_MSGS[size]
    relay, port, group, spool = start_ringrelay(work, ["--hold"])
    c0 = group.usage()
    summary, _, elapsed = run_bench(port, conns, n, size, rate=rate, extra=["--starttls"] if starttls else [])
    cpu = None if c0 is None else group.usage() - c0
    if stop(relay) != 0:
        die("ringrelay did not stop cleanly")
    listed = subprocess.run([RINGRELAY, "--list-spool", "--spool", spool], capture_output=True, text=True)
    if not listed.stdout.startswith(f"{n} message(s)"):
        die(f"ringrelay spool holds {listed.stdout.splitlines()[:1]}, expected {n}")
    shutil.rmtree(spool, ignore_errors=True)
    note = ""
    if scenario == "tls":
        # Every message received under TLS with --starttls, none without: from the Reception log.
        log_path = os.path.join(work, f"log-{port}.jsonl")
        total, tls, seen = ringrelay_tls_receptions(log_path)
        if total != n or tls != (n if starttls else 0):
            die(f"ringrelay logged {total} receptions, {tls} under TLS; expected {n}, {n if starttls else 0}")
        note = ", ".join(sorted(seen))
        os.unlink(log_path)
    client = "ringrelay-bench --starttls" if starttls else "ringrelay-bench"
    name = f"{client} -> ringrelay --hold" + (f" (open loop {rate}/s)" if rate else "")
    return row(scenario or ("acceptance" if not rate else "latency"), name, size, conns, n, summary["seconds"], cpu,
               summary["ack_latency_us"]["p99"] / 1000, note)


PF_HOLD = ["# acceptance only: everything stays in the hold queue",
           "smtpd_end_of_data_restrictions = check_client_access static:hold",
           "default_process_limit = 300"]


PF_TLS_LOG = re.compile(r"TLS connection established from [^:]*: (\S+) with cipher (\S+)")


def acceptance_postfix(work, size, conns, starttls=False, n=None, scenario=None):
    n = n or PF_MSGS[size]
    # The TLS scenario offers STARTTLS in both of its Postfix runs; only the client differs.
    d, port, group, version = start_postfix(work, PF_HOLD, tls=scenario == "tls")
    c0 = group.usage()
    summary, _, elapsed = run_bench(port, conns, n, size, extra=["--starttls"] if starttls else [])
    cpu = None if c0 is None else group.usage() - c0
    stop_postfix(d)
    held = sum(len(f) for _r, _d, f in os.walk(os.path.join(d, "queue", "hold")))
    if held != n:
        die(f"Postfix hold queue has {held} messages, expected {n}")
    note = ""
    if scenario == "tls":
        # smtpd_tls_loglevel 1: one line per TLS connection, with its protocol and cipher.
        try:
            with open(os.path.join(d, "maillog"), errors="replace") as f:
                found = PF_TLS_LOG.findall(f.read())
        except OSError:
            found = []
        if starttls and not found:
            die("Postfix logged no TLS connection for the --starttls run")
        if not starttls and found:
            die(f"Postfix logged {len(found)} TLS connections for the plaintext run")
        note = ", ".join(sorted({f"{p} {c}" for p, c in found}))
    shutil.rmtree(d, ignore_errors=True)
    client = "ringrelay-bench --starttls" if starttls else "ringrelay-bench"
    return row(scenario or "acceptance", f"{client} -> Postfix {version} (hold)", size, conns, n, summary["seconds"],
               cpu, summary["ack_latency_us"]["p99"] / 1000, note)


def median_rows(runs, case_field):
    """{case: [row per round]} -> {case: one row with each figure's median over the rounds,
    the rounds' msg/s in "runs_messages_per_second", and the case's name in case_field}."""
    rows = {}
    for key, rs in runs.items():
        med = dict(rs[0])
        del med["round"]
        for field in ("seconds", "messages_per_second", "p99_ack_ms", "cpu_s_per_1000"):
            vals = [r[field] for r in rs if r[field] is not None]
            med[field] = round(statistics.median(vals), 3) if vals else None
        med["messages_per_hour"] = int(med["messages_per_second"] * 3600)
        med["runs_messages_per_second"] = [r["messages_per_second"] for r in rs]
        med[case_field] = key
        rows[key] = med
    return rows


def tls_comparison(work, log_row):
    """(d): the four TLS-scenario systems, TLS_ROUNDS rounds of all four in turn. Returns the
    median rows (one per system, each with its runs' msg/s) and the ratios."""
    size, conns = TLS_SIZE, TLS_CONNECTIONS
    runs = {}
    for rnd in range(TLS_ROUNDS):
        for key, fn in (("ringrelay plaintext", lambda: acceptance_ringrelay(work, size, conns, n=TLS_RR_MSGS,
                                                                               scenario="tls")),
                        ("ringrelay TLS", lambda: acceptance_ringrelay(work, size, conns, starttls=True,
                                                                         n=TLS_RR_MSGS, scenario="tls")),
                        ("Postfix plaintext", lambda: acceptance_postfix(work, size, conns, n=TLS_PF_MSGS,
                                                                           scenario="tls")),
                        ("Postfix TLS", lambda: acceptance_postfix(work, size, conns, starttls=True, n=TLS_PF_MSGS,
                                                                     scenario="tls"))):
            r = fn()
            r["round"] = rnd + 1
            log_row(r)
            runs.setdefault(key, []).append(r)
    rows = median_rows(runs, "tls_case")

    def ratio(a, b, field="messages_per_second"):
        x, y = rows[a][field], rows[b][field]
        return float(f"{x / y:.4g}") if x is not None and y else None

    ratios = {}
    for a, b in (("ringrelay TLS", "ringrelay plaintext"), ("ringrelay TLS", "Postfix TLS"),
                 ("Postfix TLS", "Postfix plaintext"), ("ringrelay plaintext", "Postfix plaintext")):
        ratios[f"{a} / {b}"] = {"messages_per_second": ratio(a, b), "cpu_s_per_1000": ratio(a, b, "cpu_s_per_1000")}
    return list(rows.values()), ratios, [r for rs in runs.values() for r in rs]


def e2e_ringrelay(work, size, conns, n=None, extra=(), scenario="end to end", label="", signatures=0):
    n = n or RR_MSGS[size]
    sink, sport, _ = start_rsink(expect=n)
    relay, port, group, spool = start_ringrelay(work, ["--smarthost", f"127.0.0.1:{sport}"] + list(extra))
    c0 = group.usage()
    summary, t0, _ = run_bench(port, conns, n, size)
    done = wait_exit(sink, RUN_TIMEOUT, "end to end through ringrelay: the sink")
    # The spool empties as the outcomes are journaled; count it done when --list-spool is 0.
    deadline = time.monotonic() + 60
    while True:
        listed = subprocess.run([RINGRELAY, "--list-spool", "--spool", spool], capture_output=True, text=True)
        if listed.stdout.startswith("0 message(s)"):
            break
        if time.monotonic() > deadline:
            die(f"ringrelay still holds {listed.stdout.splitlines()[:1]} after the sink got everything")
        time.sleep(0.2)
    cpu = None if c0 is None else group.usage() - c0
    if stop(relay) != 0:
        die("ringrelay did not stop cleanly")
    shutil.rmtree(spool, ignore_errors=True)
    note = ""
    if scenario == "dkim":
        # Every message got the signatures asked for: from the Reception records.
        log_path = os.path.join(work, f"log-{port}.jsonl")
        total = signed = 0
        with open(log_path) as f:
            for line in f:
                rec = json.loads(line)
                if rec.get("type") == "Reception":
                    total += 1
                    signed += len(rec.get("dkim", [])) == signatures
        if total != n or signed != n:
            die(f"ringrelay logged {total} receptions, {signed} with {signatures} signature(s); expected {n}")
        note = f"{signatures} signature(s) per message" if signatures else "unsigned"
        os.unlink(log_path)
    return row(scenario, f"ringrelay-bench -> ringrelay{label} -> ringrelay-sink", size, conns, n, done - t0, cpu,
               summary["ack_latency_us"]["p99"] / 1000, note)


def start_opendkim(work, key_file, selector, algorithm):
    """OpenDKIM as a signing milter for Postfix (the DKIM peer): `algorithm` rsa-sha256 or
    ed25519-sha256 (OpenDKIM 2.11 needs it named for an Ed25519 key), relaxed/relaxed like
    ringrelay's default; returns (process, port, cpu group)."""
    port = pick_port()
    group = cpu_group(f"opendkim-{port}")
    conf = os.path.join(work, f"opendkim-{port}.conf")
    with open(conf, "w") as f:
        f.write("\n".join([
            "Mode s", f"Domain {BENCH_FROM_DOMAIN}", f"Selector {selector}", f"KeyFile {key_file}",
            f"Socket inet:{port}@127.0.0.1", "Canonicalization relaxed/relaxed", f"SignatureAlgorithm {algorithm}",
            "Syslog no",
            "RequireSafeKeys no",  # the bench's throwaway keys live under /tmp (world-writable)
            "Background no", f"PidFile {os.path.join(work, f'opendkim-{port}.pid')}", ""]))
    with open(os.path.join(work, f"opendkim-{port}.log"), "w") as err:  # its complaints, if it stops
        p = spawn(["opendkim", "-f", "-x", conf], group, stderr=err)
    wait_listening(port, p, "opendkim")
    return p, port, group


def e2e_postfix(work, size, conns, n=None, scenario="end to end", milter=None, label=""):
    """Postfix end to end; with milter=(process, port, group) its smtpd calls that milter (OpenDKIM)
    for every message, whose CPU then counts with Postfix's."""
    n = n or PF_MSGS[size]
    sink, sport, _ = start_rsink(expect=n)
    main_cf = [f"relayhost = [127.0.0.1]:{sport}",
               "default_process_limit = 300",
               "smtp_destination_concurrency_limit = 32",
               "smtp_connection_cache_on_demand = yes"]
    if milter:
        # tempfail, not accept: a message the milter did not see must not pass unsigned.
        main_cf += [f"smtpd_milters = inet:127.0.0.1:{milter[1]}", "milter_default_action = tempfail"]
    d, port, group, version = start_postfix(work, main_cf)
    groups = [group] + ([milter[2]] if milter else [])
    usage = lambda: None if any(g.usage() is None for g in groups) else sum(g.usage() for g in groups)
    c0 = usage()
    summary, t0, _ = run_bench(port, conns, n, size)
    done = wait_exit(sink, RUN_TIMEOUT, "end to end through Postfix: the sink")
    deadline = time.monotonic() + 60
    while not postfix_queue_empty(d):
        if time.monotonic() > deadline:
            die("Postfix did not empty its queue after the sink got everything")
        time.sleep(0.1)
    cpu = None if c0 is None else usage() - c0
    note = "unsigned" if scenario == "dkim" else ""
    if milter:
        # Every message the sink got was signed: one more through a saving sink, and look.
        save = os.path.join(work, f"pf-signed-{port}")
        os.makedirs(save)
        check, cport, _ = start_rsink(expect=1, save=save)
        subprocess.run(["postconf", "-c", os.path.join(d, "etc"), f"relayhost = [127.0.0.1]:{cport}"], check=True,
                       capture_output=True)
        subprocess.run(["postfix", "-c", os.path.join(d, "etc"), "reload"], check=True, capture_output=True)
        run_bench(port, 1, 1, size)
        wait_exit(check, RUN_TIMEOUT, "Postfix + OpenDKIM: the saving sink")
        saved = [os.path.join(save, f) for f in os.listdir(save) if f.endswith(".eml")]
        text = ""
        if saved:
            with open(saved[0], errors="replace") as f:
                text = f.read()
        if f"d={BENCH_FROM_DOMAIN}" not in text or "DKIM-Signature:" not in text:
            die(f"Postfix + OpenDKIM delivered a message without its DKIM-Signature: {saved}")
        shutil.rmtree(save, ignore_errors=True)
        note = "1 signature(s) per message"
    stop_postfix(d)
    shutil.rmtree(d, ignore_errors=True)
    return row(scenario, f"ringrelay-bench -> Postfix {version}{label} -> ringrelay-sink", size, conns, n, done - t0,
               cpu, summary["ack_latency_us"]["p99"] / 1000, note)


def openssl_sign_rates():
    """Signatures per second on every core together: {"ed25519": x, "rsa2048": y}, from
    `openssl speed -mr -multi CPUS` (its machine-readable lines with -multi hold the summed
    rates: "+F2:n:2048:SIGN/S:VERIFY/S" for RSA, "+F6:n:253:Ed25519:SIGN/S:VERIFY/S")."""
    cpus = os.cpu_count() or 1
    r = subprocess.run(["openssl", "speed", "-mr", "-multi", str(cpus), "-seconds", "3", "rsa2048", "ed25519"],
                       capture_output=True, text=True, timeout=120)
    rates = {}
    for line in r.stdout.splitlines():
        f = line.split(":")
        if f[0] == "+F2" and len(f) >= 4 and f[2] == "2048":
            rates["rsa2048"] = float(f[3])
        if f[0] == "+F6" and len(f) >= 5 and f[3] == "Ed25519":
            rates["ed25519"] = float(f[4])
    if "rsa2048" not in rates or "ed25519" not in rates:
        die(f"openssl speed printed no sign rates: {r.stdout[-800:]} {r.stderr[-400:]}")
    return {k: round(v, 1) for k, v in rates.items()}


def dkim_comparison(work, log_row):
    """(e): unsigned, Ed25519 and RSA-2048 end to end, DKIM_ROUNDS rounds of the three in turn,
    medians; Postfix end to end once, unsigned and with OpenDKIM; openssl's sign rates."""
    size, conns = DKIM_SIZE, DKIM_CONNECTIONS
    keys, key_files = {}, {}
    for kind in ("ed25519", "rsa"):
        out = os.path.join(work, f"bench-{kind}.pem")
        if os.path.exists(out):
            os.unlink(out)
        r = subprocess.run([KEYGEN, BENCH_FROM_DOMAIN, f"bench-{kind}", "--type", kind, "--out", out],
                           capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            die(f"ringrelay-dkim-keygen: {r.stderr}")
        keys[kind] = ["--dkim-key", f"{BENCH_FROM_DOMAIN}:bench-{kind}:{out}"]
        key_files[kind] = out
    cases = (("unsigned", [], "", 0), ("Ed25519", keys["ed25519"], " (DKIM Ed25519)", 1),
             ("RSA-2048", keys["rsa"], " (DKIM RSA-2048)", 1))
    runs = {}
    for rnd in range(DKIM_ROUNDS):
        for key, extra, label, sigs in cases:
            r = e2e_ringrelay(work, size, conns, n=DKIM_RR_MSGS, extra=extra, scenario="dkim", label=label,
                              signatures=sigs)
            r["round"] = rnd + 1
            log_row(r)
            runs.setdefault(key, []).append(r)
    peer = e2e_postfix(work, size, conns, n=DKIM_PF_MSGS, scenario="dkim")
    log_row(peer)
    # The same peer signing: Postfix with OpenDKIM as its milter, RSA-2048 and Ed25519 keys.
    peers_signed = {}
    for kind, alg, case, label in (
            ("rsa", "rsa-sha256", "Postfix + OpenDKIM RSA-2048", " + OpenDKIM (RSA-2048)"),
            ("ed25519", "ed25519-sha256", "Postfix + OpenDKIM Ed25519", " + OpenDKIM (Ed25519)")):
        milter = start_opendkim(work, key_files[kind], f"bench-{kind}", alg)
        r = e2e_postfix(work, size, conns, n=DKIM_PF_MSGS, scenario="dkim", milter=milter, label=label)
        stop(milter[0])
        r["runs_messages_per_second"] = [r["messages_per_second"]]
        r["dkim_case"] = case
        log_row(r)
        peers_signed[case] = r
    limit = openssl_sign_rates()
    log(f"      dkim openssl speed -multi {os.cpu_count()}: {limit['ed25519']:,.0f} Ed25519 and "
        f"{limit['rsa2048']:,.0f} RSA-2048 signatures/s")
    rows = median_rows(runs, "dkim_case")
    peer["runs_messages_per_second"] = [peer["messages_per_second"]]
    peer["dkim_case"] = "Postfix"
    rows["Postfix"] = peer
    rows.update(peers_signed)
    mps = {k: v["messages_per_second"] for k, v in rows.items()}
    ratios = {
        "Ed25519-signed / unsigned": round(mps["Ed25519"] / mps["unsigned"], 3),
        "RSA-2048-signed / openssl RSA-2048 signs per second (all cores)": round(mps["RSA-2048"] / limit["rsa2048"], 3),
        "Ed25519-signed / openssl Ed25519 signs per second (all cores)": round(mps["Ed25519"] / limit["ed25519"], 3),
        "ringrelay unsigned / Postfix unsigned": round(mps["unsigned"] / mps["Postfix"], 3),
        "ringrelay RSA-2048-signed / Postfix unsigned": round(mps["RSA-2048"] / mps["Postfix"], 3),
        "ringrelay RSA-2048-signed / Postfix + OpenDKIM RSA-2048": round(
            mps["RSA-2048"] / mps["Postfix + OpenDKIM RSA-2048"], 3),
        "ringrelay Ed25519-signed / Postfix + OpenDKIM Ed25519": round(
            mps["Ed25519"] / mps["Postfix + OpenDKIM Ed25519"], 3),
    }
    return list(rows.values()), ratios, limit, [r for rs in runs.values() for r in rs]


def dkim_table(dkim):
    rows, ratios = dkim["rows"], dkim["ratios"]
    if not rows:
        return ""
    lim = dkim["openssl"]
    lines = [f"DKIM: end to end (ringrelay-bench -> relay -> ringrelay-sink), {dkim['size'] // 1024} KiB, "
             f"{dkim['connections']} connections; median of {dkim['rounds']} round(s), each running the three "
             f"ringrelay cases in turn (msg/s of each run in brackets). Physical limit, `openssl speed -multi "
             f"{dkim['cpus']} rsa2048 ed25519`: {fmt_rate(lim['rsa2048'])} RSA-2048 and "
             f"{fmt_rate(lim['ed25519'])} Ed25519 signatures/s on all cores.",
             "",
             "| system | msgs/run | msg/s | msg/hour | p99 ack ms | CPU s / 1000 msgs | signing |",
             "|---|---|---|---|---|---|---|"]
    lines += [median_row_line(r) for r in rows]
    lines += ["", "| ratio | value |", "|---|---|"]
    for name, v in ratios.items():
        lines.append(f"| {name} | **{v:.3g}** |")
    return "\n".join(lines)


def queue_comparison(work):
    """(f): bench/queue_scale.py's ringrelay and Postfix cases at QUEUE_RR_MSGS / QUEUE_PF_MSGS."""
    # queue_scale imports this module as e2e: when this file runs as __main__, let that import
    # find this very module (one list of started processes, one cleanup).
    sys.modules.setdefault("e2e", sys.modules[__name__])
    import queue_scale
    rows = []
    for n, case in ((QUEUE_RR_MSGS, lambda: queue_scale.ringrelay_case(work, QUEUE_SIZE, QUEUE_RR_MSGS, 50,
                                                                        os.cpu_count() or 1)),
                    (QUEUE_PF_MSGS, lambda: queue_scale.postfix_case(work, QUEUE_SIZE, QUEUE_PF_MSGS, 50))):
        if n > 0:
            r = case()
            log(f"     queue {r['system']}: {r['messages']} messages, RSS {r['rss_after_accept_mib']} MiB at rest, "
                f"{r['rss_after_restart_mib']} MiB after the restart; restart to first delivery "
                f"{r['restart_to_first_delivery_s']} s, to last {r['restart_to_last_delivery_s']} s")
            rows.append(r)
    return rows


def queue_table(queue):
    if not queue["rows"]:
        return ""
    import queue_scale
    return (f"Queue at rest and its restart (issue 15; bench/queue_scale at a smaller count), "
            f"{queue['size'] // 1024} KiB, ringrelay-bench with {queue['connections']} connections.\n\n"
            f"{queue_scale.table(queue['rows'])}\n\n{queue_scale.notes(queue['rows'])}")


# ---------------------------------------------------------------------------------------
# Report.

def fmt_rate(r):
    return f"{r:,.0f}"


def fmt_hour(h):
    return f"{h / 1e6:.2f} M" if h >= 1e6 else f"{h / 1e3:.0f} k"


def table(rows):
    lines = ["| scenario | size | conns | system | msgs | msg/s | msg/hour | p99 ack ms | CPU s / 1000 msgs | ratio |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    by_key = {}
    for r in rows:
        if r["scenario"] in ("tls", "dkim"):
            continue  # tls_table, dkim_table
        by_key.setdefault((r["scenario"], r["size"], r["connections"]), []).append(r)
    for (scenario, size, conns), group in by_key.items():
        ours = [r for r in group if r["system"].startswith("ringrelay-bench -> ring")]
        theirs = [r for r in group if "Postfix" in r["system"] or r["system"].startswith("smtp-source")]
        ratio = ""
        if ours and theirs and theirs[0]["messages_per_second"] > 0:
            ratio = f"**{ours[0]['messages_per_second'] / theirs[0]['messages_per_second']:.1f}x**"
        for r in group:
            lines.append(
                f"| {scenario} | {size // 1024} KiB | {conns} | {r['system']} | {r['messages']} | "
                f"{fmt_rate(r['messages_per_second'])} | {fmt_hour(r['messages_per_hour'])} | "
                f"{'' if r['p99_ack_ms'] is None else r['p99_ack_ms']} | "
                f"{'' if r['cpu_s_per_1000'] is None else r['cpu_s_per_1000']} | "
                f"{ratio if r is group[0] else ''} |")
    return "\n".join(lines)


def median_row_line(r):
    """One table line of a median row (median_rows): its runs' msg/s in brackets, its note last."""
    each = ", ".join(fmt_rate(v) for v in r["runs_messages_per_second"])
    return (f"| {r['system']} | {r['messages']} | {fmt_rate(r['messages_per_second'])} ({each}) | "
            f"{fmt_hour(r['messages_per_hour'])} | {'' if r['p99_ack_ms'] is None else r['p99_ack_ms']} | "
            f"{'' if r['cpu_s_per_1000'] is None else r['cpu_s_per_1000']} | {r['note'] or '-'} |")


def tls_table(tls):
    rows, ratios = tls["rows"], tls["ratios"]
    if not rows:
        return ""
    lines = [f"TLS: durable acceptance, {tls['size'] // 1024} KiB, {tls['connections']} connections; "
             f"both servers offer STARTTLS, the client uses it on every connection or not at all; "
             f"median of {tls['rounds']} round(s), each running the four in turn (msg/s of each run in brackets).",
             "",
             "| system | msgs/run | msg/s | msg/hour | p99 ack ms | CPU s / 1000 msgs | TLS negotiated |",
             "|---|---|---|---|---|---|---|"]
    lines += [median_row_line(r) for r in rows]
    lines += ["", "| ratio | msg/s | CPU s per message |", "|---|---|---|"]
    for name, v in ratios.items():
        mps = "" if v["messages_per_second"] is None else f"**{v['messages_per_second']:.3g}x**"
        cpu = "" if v["cpu_s_per_1000"] is None else f"{v['cpu_s_per_1000']:.3g}x"
        lines.append(f"| {name} | {mps} | {cpu} |")
    return "\n".join(lines)


def chart(rows, png):
    if shutil.which("gnuplot") is None:
        log("gnuplot missing: no chart")
        return
    series = {}
    for r in rows:
        if r["scenario"] in ("latency", "tls", "dkim", "end to end, cache miss"):
            continue
        key = (r["size"], r["scenario"], r["system"].split(" -> ")[-1] if r["scenario"] == "ceiling"
               else ("ringrelay" if "-> ringrelay" in r["system"] and "Postfix" not in r["system"] else "Postfix"))
        series.setdefault(key, []).append((r["connections"], r["messages_per_second"]))
    data_dir = tempfile.mkdtemp(prefix="rr-e2e-plot-")
    plots = {}
    for i, (key, pts) in enumerate(sorted(series.items())):
        path = os.path.join(data_dir, f"s{i}.dat")
        with open(path, "w") as f:
            for c, v in sorted(pts):
                f.write(f"{c} {v}\n")
        size, scenario, system = key
        plots.setdefault(size, []).append(f"'{path}' using 1:2 with linespoints lw 2 title '{scenario}: {system}'")
    script = [f"set terminal pngcairo size 1400,600 font 'sans,10'", f"set output '{png}'",
              f"set multiplot layout 1,{len(plots)} title 'ringrelay and Postfix on one 2-core machine "
              f"(bench/e2e, {time.strftime('%Y-%m-%d')})'",
              "set logscale y", "set logscale x 2", "set grid", "set key bottom right font ',8'",
              "set xlabel 'concurrent connections'", "set ylabel 'messages per second (log)'"]
    for size in sorted(plots):
        script.append(f"set title '{size // 1024} KiB messages'")
        script.append("plot " + ", ".join(plots[size]))
    script.append("unset multiplot")
    r = subprocess.run(["gnuplot"], input="\n".join(script), capture_output=True, text=True)
    shutil.rmtree(data_dir, ignore_errors=True)
    if r.returncode != 0:
        log(f"gnuplot failed: {r.stderr[-300:]}")


def git_state():
    def out(*args):
        r = subprocess.run(["git", "-C", ROOT] + list(args), capture_output=True, text=True)
        return r.stdout.strip() if r.returncode == 0 else None
    status = out("status", "--porcelain", "--untracked-files=no")
    return {"commit": out("rev-parse", "HEAD"), "tracked_files_modified": None if status is None else bool(status)}


def main():
    ap = argparse.ArgumentParser(description="bench/e2e: ringrelay and Postfix side by side (see the header)")
    ap.add_argument("--only", choices=("all", "main", "tls", "dkim", "queue"), default=os.environ.get("ONLY", "all"),
                    help="main: ceiling, acceptance, end to end and latency; tls: the TLS comparison alone; "
                         "dkim: unsigned, Ed25519 and RSA end to end alone; queue: a queue at rest and its restart alone")
    only = ap.parse_args().only
    for path, what in ((RINGRELAY, "ringrelay"), (BENCH, "ringrelay-bench"), (RSINK, "ringrelay-sink"),
                       (SOURCE, "smtp-source"), (SINK, "smtp-sink"), (KEYGEN, "ringrelay-dkim-keygen")):
        if not os.access(path, os.X_OK):
            die(f"{what} not found at {path} (bench/e2e builds and installs everything first)")
    os.makedirs(RESULTS_DIR, exist_ok=True)
    work = tempfile.mkdtemp(prefix="rr-e2e-", dir=TMP)
    os.chmod(work, 0o755)
    started = time.time()
    load_before = os.getloadavg()[0]
    git = git_state()
    rows = []
    tls = {"size": TLS_SIZE, "connections": TLS_CONNECTIONS, "rounds": TLS_ROUNDS, "rows": [], "ratios": {},
           "runs": []}
    dkim = {"size": DKIM_SIZE, "connections": DKIM_CONNECTIONS, "rounds": DKIM_ROUNDS, "cpus": os.cpu_count(),
            "rows": [], "ratios": {}, "openssl": {}, "runs": []}
    queue = {"size": QUEUE_SIZE, "connections": 50, "rows": []}

    def log_row(r):
        log(f"{r['scenario']:>10} {r['size'] // 1024:>3} KiB x{r['connections']:<3} {r['system']}: "
            f"{fmt_rate(r['messages_per_second'])} msg/s, p99 {r['p99_ack_ms']} ms, "
            f"CPU {r['cpu_s_per_1000']} s/1000")

    try:
        for size in (SIZES if only in ("all", "main") else []):
            for conns in CONCURRENCY:
                for fn in (ceiling_ringrelay, ceiling_postfix_tools, acceptance_ringrelay, acceptance_postfix,
                           e2e_ringrelay, e2e_postfix):
                    r = fn(work, size, conns)
                    log_row(r)
                    rows.append(r)
            if 50 in CONCURRENCY:
                # What a first attempt costs when the body cache misses: every body read back
                # from the spool (issue 15). Beside the "end to end" row of the same size.
                r = e2e_ringrelay(work, size, 50, extra=("--body-cache-size", "0"), scenario="end to end, cache miss",
                                  label=" (--body-cache-size 0)")
                r["note"] = "every first attempt reads the body back from the spool"
                log_row(r)
                rows.append(r)
        # p99 acknowledgement latency at half of the peak acceptance rate that the same
        # concurrency (2 KiB, 50 connections) reached closed-loop.
        peak = max((r["messages_per_second"] for r in rows
                    if r["scenario"] == "acceptance" and r["system"].endswith("--hold") and r["size"] == SIZES[0]
                    and r["connections"] == 50),
                   default=0)
        if peak > 0:
            half = int(peak / 2)
            r = acceptance_ringrelay(work, SIZES[0], 50, rate=half)
            r["note"] = f"half of the peak acceptance rate ({fmt_rate(peak)}/s)"
            log(f"   latency at {half}/s: p99 {r['p99_ack_ms']} ms")
            rows.append(r)
        if only in ("all", "tls") and TLS_ROUNDS > 0:
            t0 = time.monotonic()
            tls["rows"], tls["ratios"], tls["runs"] = tls_comparison(work, log_row)
            rows += tls["rows"]
            tls["seconds"] = round(time.monotonic() - t0, 1)
            for name, v in tls["ratios"].items():
                log(f"       tls {name}: {v['messages_per_second']}x msg/s, {v['cpu_s_per_1000']}x CPU per message")
        if only in ("all", "dkim") and DKIM_ROUNDS > 0:
            t0 = time.monotonic()
            dkim["rows"], dkim["ratios"], dkim["openssl"], dkim["runs"] = dkim_comparison(work, log_row)
            rows += dkim["rows"]
            dkim["seconds"] = round(time.monotonic() - t0, 1)
            for name, v in dkim["ratios"].items():
                log(f"      dkim {name}: {v}")
        if only in ("all", "queue"):
            t0 = time.monotonic()
            queue["rows"] = queue_comparison(work)
            queue["seconds"] = round(time.monotonic() - t0, 1)
    finally:
        cleanup()
        shutil.rmtree(work, ignore_errors=True)
    result = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(started)),
              "command": "bench/e2e" + ("" if only == "all" else f" --only {only}"), **git,
              "machine": {"cpus": os.cpu_count(), "kernel": os.uname().release, "load_before": load_before},
              "seconds": round(time.time() - started, 1), "rows": rows, "tls": tls, "dkim": dkim, "queue": queue}
    # A partial run never overwrites a full run's files.
    base = "e2e" if only == "all" else f"e2e-{only}"
    with open(os.path.join(RESULTS_DIR, f"{base}.json"), "w") as f:
        json.dump(result, f, indent=1)
    md = "\n\n".join(part for part in (table(rows) if only in ("all", "main") else "", tls_table(tls),
                                        dkim_table(dkim), queue_table(queue)) if part)
    with open(os.path.join(RESULTS_DIR, f"{base}.md"), "w") as f:
        f.write(md + "\n")
    outputs = f"{base}.json, {base}.md"
    if only in ("all", "main"):
        chart(rows, os.path.join(RESULTS_DIR, f"{base}.png"))
        outputs += f", {base}.png"
    print(md)
    log(f"done in {result['seconds']:.0f}s (load average {load_before:.1f} before); {RESULTS_DIR}/: {outputs}")


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: (cleanup(), sys.exit(1)))
    try:
        main()
    except KeyboardInterrupt:
        cleanup()
        sys.exit(1)
