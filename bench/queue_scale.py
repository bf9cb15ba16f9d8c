#!/usr/bin/env python3
# bench/queue_scale.py: a large queue at rest and its restart (issue 15), run by
# bench/queue_scale (which installs and builds what it needs first). For each message size:
#
#   ringrelay  ringrelay-bench -> ringrelay --hold           COUNT messages accepted and spooled
#              ringrelay stopped (SIGTERM), ringrelay-sink --expect COUNT started, ringrelay
#              started again on the same spool without --hold (--smarthost the sink)
#   Postfix    ringrelay-bench -> a private Postfix (bench/lib/common.sh through bench/e2e.py's
#              start_postfix) with defer_transports = smtp relay: every message accepted and
#              deferred by its queue manager (the deferred queue holds them all); Postfix
#              stopped, defer_transports removed and relayhost set to ringrelay-sink --expect
#              COUNT, Postfix started and flushed (postqueue -f)
#
# Figures per system and size:
#   acceptance msg/s           ringrelay-bench's, closed loop, --connections (default 50)
#   RSS after acceptance       VmRSS of ringrelay; of Postfix's queue manager (qmgr), and
#                              the PSS of every Postfix process added up, once all are deferred
#   spool before               disk use (du: allocated blocks) of ringrelay's spool or
#                              Postfix's queue directory, after acceptance
#   restart to listening       ringrelay: from its start until it says it is listening and
#                              how many messages it holds (recovery done); Postfix:
#                              until `postfix start` returned and smtpd listens
#   RSS after restart          VmRSS right after listening (ringrelay; Postfix: qmgr after the
#                              flush) and the largest sampled every 0.2 s until the last
#                              delivery ("peak")
#   restart to first / last    from the start command to the first and the last delivery:
#     delivery                 ringrelay's Delivery records (microseconds); Postfix's maillog
#                              has whole seconds, so its first is when a status=sent line was
#                              first found (polled every 0.2 s) and its last when the sink had
#                              every message (--expect COUNT met, polled every 0.2 s); the sink's
#                              exit confirms every message arrived for both
#   spool after                disk use once the queue is empty and, for ringrelay, each shard
#                              is down to its current segment (waited for up to 70 s)
#
# Nothing is asserted about speed or memory; the exit status is non-zero only when a run broke
# (a process failed to start, a count is wrong, delivery did not finish in time, not enough
# disk). Output: a Markdown table on stdout and RESULTS_DIR/queue-scale-COUNT.{md,json} (the
# JSON records the commit measured and the load before the run). Loopback only; every wait is
# bounded (the bounds grow with the count: 600 s + 1 s per 50 messages per phase).
#
#   bench/queue_scale.py [--count N] [--sizes 2048,20480] [--postfix-count M] [--connections C]
#                        [--shards S]
# or the environment: QUEUE_COUNT, QUEUE_SIZES, PF_QUEUE_COUNT (default 20,000, or the count if
# smaller; 0 = no Postfix: Postfix accepts a few hundred messages a second here and defers each
# through its queue manager, so a million would take hours), CONNECTIONS, SHARDS, RESULTS_DIR,
# BENCH_TMP (default /var/tmp), PORT_BASE.
import argparse
import datetime
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e as base  # noqa: E402 (processes, ports, the private Postfix, ringrelay-bench runs)

ROOT = base.ROOT
RINGRELAY, BENCH, RSINK = base.RINGRELAY, base.BENCH, base.RSINK
RESULTS_DIR = os.environ.get("RESULTS_DIR", os.path.join(ROOT, "bench", "results"))
TMP = os.environ.get("BENCH_TMP", "/var/tmp")
SEGMENT_COLLECT_WAIT = 70.0   # issue 15: within a minute of the last delivery (+10 s)
SAMPLE = 0.2                  # seconds between RSS samples during delivery
PF_MAILLOG_TIME = re.compile(r"^(\w{3}\s+\d+ \d\d:\d\d:\d\d)(\.\d{1,6})? ")


def log(msg):
    print(f"queue_scale: {msg}", file=sys.stderr, flush=True)


def die(msg):
    log(f"error: {msg}")
    base.cleanup()
    sys.exit(1)



# ---------------------------------------------------------------------------------------
# Measurements.

def status_kib(pid, field="VmRSS"):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def du_bytes(path):
    """Disk use of a directory tree, as du counts it (allocated blocks)."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
            except FileNotFoundError:
                pass
    return total


def free_bytes(path):
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def need_disk(path, n_bytes, what):
    free = free_bytes(path)
    if free < n_bytes:
        die(f"{what} needs about {n_bytes / 1e9:.1f} GB free under {path}; it has {free / 1e9:.1f} GB. "
            f"Lower --count (or --postfix-count), or point BENCH_TMP at a larger file system.")


def mib(n_bytes):
    return None if n_bytes is None else round(n_bytes / (1 << 20), 1)


def iso_us(text):
    """ringrelay's log time ("2026-12-06T18:19:24.711907Z") as Unix seconds."""
    return datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=datetime.timezone.utc).timestamp()


def maillog_time(seconds, fraction, year):
    """Postfix's maillog time ("Dec 06 18:19:24", local time; a fraction if it has one) as Unix
    seconds."""
    t = time.mktime(time.strptime(f"{year} {' '.join(seconds.split())}", "%Y %b %d %H:%M:%S"))
    return t + (float(fraction) if fraction else 0.0)


class deliveries:
    """The sender's record of deliveries, read incrementally: ringrelay's delivery log (JSON
    lines, type Delivery, times in microseconds) or Postfix's maillog (status=sent, times in
    whole seconds here). first/last: the logged times, in Unix seconds; first_seen: when a
    poll first found one (the caller polls every SAMPLE seconds)."""

    def __init__(self, path, kind):
        self.path, self.kind = path, kind
        self.pos, self.partial = 0, b""
        self.count, self.first, self.last, self.first_seen = 0, None, None, None
        self.year = time.localtime().tm_year

    def poll(self):
        try:
            with open(self.path, "rb") as f:
                f.seek(self.pos)
                data = f.read()
        except FileNotFoundError:
            return self
        self.pos += len(data)
        data = self.partial + data
        end = data.rfind(b"\n") + 1
        self.partial = data[end:]
        for line in data[:end].splitlines():
            t = None
            if self.kind == "ringrelay":
                if b'"type":"Delivery"' in line:
                    t = iso_us(json.loads(line)["time"])
            elif b" status=sent " in line:
                m = PF_MAILLOG_TIME.match(line.decode(errors="replace"))
                if m:
                    t = maillog_time(m.group(1), m.group(2), self.year)
            if t is not None:
                if self.first_seen is None:
                    self.first_seen = time.time()
                self.count += 1
                self.first = t if self.first is None else min(self.first, t)
                self.last = t if self.last is None else max(self.last, t)
        return self


def run_bench(port, count, size, conns):
    kept, base.RUN_TIMEOUT = base.RUN_TIMEOUT, run_timeout(count)  # e2e's bound is for 30,000 messages
    try:
        summary, _t0, _elapsed = base.run_bench(port, conns, count, size)
    finally:
        base.RUN_TIMEOUT = kept
    return summary


# Postfix's default count (see --postfix-count): a million 2 KiB messages took it over 25 minutes
# to accept and defer about half of them (2026-12-07, this machine).
PF_DEFAULT_COUNT = 20000


def run_timeout(count):
    return 600 + count / 50


def wait_sink(sink, count, sampler, timeout):
    """Samples until the sink exits (--expect met); returns the exit time (Unix seconds)."""
    deadline = time.monotonic() + timeout
    while sink.poll() is None:
        if time.monotonic() > deadline:
            die(f"ringrelay-sink had not received {count} messages after {timeout:.0f} s")
        sampler()
        time.sleep(SAMPLE)
    if sink.returncode != 0:
        die(f"ringrelay-sink --expect {count} exited {sink.returncode}")
    sampler()
    return time.time()


# ---------------------------------------------------------------------------------------
# ringrelay.

class ready_line:
    """Reads a ringrelay's stderr (a pipe) to its end on a thread: the time its "listening on
    ... holds N message(s)" line arrived, and N. The relay binds its ports before it reads its
    spool, so a port that listens does not yet mean recovery is done; that line does."""

    def __init__(self, proc):
        self.at, self.holds, self.lines = None, None, []
        self.event = threading.Event()
        threading.Thread(target=self._read, args=(proc,), daemon=True).start()

    def _read(self, proc):
        for line in proc.stderr:
            if len(self.lines) < 200:
                self.lines.append(line)
            m = re.search(r"listening on .* holds (\d+) message\(s\)", line)
            if m and not self.event.is_set():
                self.at, self.holds = time.time(), int(m.group(1))
                self.event.set()

    def wait(self, proc, timeout, what):
        deadline = time.monotonic() + timeout
        while not self.event.wait(0.05):
            if proc.poll() is not None:
                die(f"{what} exited ({proc.returncode}) before listening: {''.join(self.lines)[-800:]}")
            if time.monotonic() > deadline:
                die(f"{what} did not say it is listening within {timeout:.0f} s")
        return self.at


def one_segment_each(spool):
    shards = [os.path.join(spool, d) for d in os.listdir(spool) if d.startswith("shard-")]
    return all(sum(n.endswith(".seg") for n in os.listdir(d)) == 1 for d in shards)


def ringrelay_case(work, size, count, conns, shards):
    need_disk(work, count * (size + 1024) + (1 << 30), f"ringrelay's spool of {count} x {size} B")
    spool = os.path.join(work, "rr-spool")
    port = base.pick_port()
    common = [RINGRELAY, "--listen", f"127.0.0.1:{port}", "--spool", spool, "--hostname", "queue-scale.example",
              "--shards", str(shards)]
    relay = base.spawn(common + ["--hold", "--log", os.path.join(work, "rr-accept.jsonl")])
    base.wait_listening(port, relay, "ringrelay --hold")
    summary = run_bench(port, count, size, conns)
    time.sleep(2)
    r = {"system": "ringrelay", "size": size, "messages": count, "accept_msg_s": summary["messages_per_second"],
         "rss_after_accept_mib": mib(status_kib(relay.pid) * 1024), "spool_before_mib": mib(du_bytes(spool))}
    t = time.monotonic()
    if base.stop(relay, 120) != 0:
        die("ringrelay --hold did not stop cleanly")
    r["stop_s"] = round(time.monotonic() - t, 2)
    listed = subprocess.run([RINGRELAY, "--list-spool", "--spool", spool], capture_output=True, text=True,
                            timeout=run_timeout(count))
    if not listed.stdout.startswith(f"{count} message(s)"):
        die(f"ringrelay's spool holds {listed.stdout.splitlines()[:1]}, expected {count}")

    sink, sport, _ = base.start_rsink(expect=count)
    delivery_log = os.path.join(work, "rr-deliver.jsonl")
    seen = deliveries(delivery_log, "ringrelay")
    t0 = time.time()
    relay = base.spawn(common + ["--smarthost", f"127.0.0.1:{sport}", "--log", delivery_log],
                       stderr=subprocess.PIPE)
    ready = ready_line(relay)
    r["restart_to_listening_s"] = round(ready.wait(relay, run_timeout(count), "ringrelay (restart)") - t0, 3)
    if ready.holds != count:
        die(f"the restarted ringrelay holds {ready.holds} messages, expected {count}")
    rss = [status_kib(relay.pid) or 0]
    r["rss_after_restart_mib"] = mib(rss[0] * 1024)

    def sample():
        rss.append(status_kib(relay.pid) or 0)
        seen.poll()
    t_sink = wait_sink(sink, count, sample, run_timeout(count))
    deadline = time.monotonic() + 60
    while True:  # every Delivery record written (the log is asynchronous) and the queue empty
        seen.poll()
        listed = subprocess.run([RINGRELAY, "--list-spool", "--spool", spool], capture_output=True, text=True,
                                timeout=run_timeout(count))
        if seen.count >= count and listed.stdout.startswith("0 message(s)"):
            break
        if time.monotonic() > deadline:
            die(f"after the sink had everything: {seen.count} Delivery records, spool {listed.stdout[:40]!r}")
        time.sleep(0.5)
    r["rss_peak_during_delivery_mib"] = mib(max(rss) * 1024)
    r["restart_to_first_delivery_s"] = round(seen.first - t0, 3)
    r["restart_to_last_delivery_s"] = round(seen.last - t0, 3)
    r["restart_to_sink_complete_s"] = round(t_sink - t0, 3)
    r["spool_after_delivery_mib"] = mib(du_bytes(spool))
    t = time.monotonic()
    while not one_segment_each(spool) and time.monotonic() - t < SEGMENT_COLLECT_WAIT:
        time.sleep(1)
    r["spool_after_mib"] = mib(du_bytes(spool))
    r["segments_collected_s"] = round(time.monotonic() - t, 1) if one_segment_each(spool) else None
    if base.stop(relay, 120) != 0:
        die("ringrelay did not stop cleanly after delivery")
    shutil.rmtree(spool, ignore_errors=True)
    for name in ("rr-accept.jsonl", "rr-deliver.jsonl"):
        os.unlink(os.path.join(work, name))
    return r


# ---------------------------------------------------------------------------------------
# Postfix.

def postfix_pids(d):
    """{pid: command name} of the private instance's master and its children."""
    try:
        with open(os.path.join(d, "queue", "pid", "master.pid")) as f:
            master = int(f.read().strip())
    except (OSError, ValueError):
        return {}
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        if int(entry) == master or ppid == master:
            out[int(entry)] = comm
    return out


def pss_kib(pid):
    """The process's proportional set size (shared pages divided among their users), in KiB:
    what adding up many processes' memory should use (their RSS counts shared pages in each)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def postfix_rss(d):
    """(qmgr's VmRSS, the PSS of every process of the instance added up), in KiB."""
    pids = postfix_pids(d)
    qmgr = sum(status_kib(p) or 0 for p, comm in pids.items() if comm == "qmgr")
    return qmgr, sum(pss_kib(p) for p in pids)


def queue_files(d, sub):
    return sum(len(files) for _r, _d, files in os.walk(os.path.join(d, "queue", sub)))


def postfix_case(work, size, count, conns):
    need_disk(work, count * (size + 4096) + (1 << 30), f"Postfix's queue of {count} x {size} B")
    closed = base.pick_port()
    d, port, _group, version = base.start_postfix(work, [
        "# every message is deferred by its queue manager until the restart (defer_transports)",
        "defer_transports = smtp relay",
        f"relayhost = [127.0.0.1]:{closed}",
        "default_process_limit = 300",
        "smtp_destination_concurrency_limit = 32",
        "smtp_connection_cache_on_demand = yes"])
    conf = os.path.join(d, "etc")
    summary = run_bench(port, count, size, conns)
    deadline = time.monotonic() + run_timeout(count)
    while queue_files(d, "deferred") < count or queue_files(d, "incoming") or queue_files(d, "active"):
        if time.monotonic() > deadline:
            die(f"Postfix deferred {queue_files(d, 'deferred')} of {count} messages in time")
        time.sleep(1)
    time.sleep(2)
    qmgr, total = postfix_rss(d)
    r = {"system": f"Postfix {version}", "size": size, "messages": count,
         "accept_msg_s": summary["messages_per_second"], "rss_after_accept_mib": mib(qmgr * 1024),
         "pss_all_processes_after_accept_mib": mib(total * 1024), "spool_before_mib": mib(du_bytes(
             os.path.join(d, "queue")))}
    t = time.monotonic()
    subprocess.run(["postfix", "-c", conf, "stop"], capture_output=True, timeout=120)
    deadline = time.monotonic() + 60
    while postfix_pids(d) and time.monotonic() < deadline:
        time.sleep(0.1)
    r["stop_s"] = round(time.monotonic() - t, 2)

    sink, sport, _ = base.start_rsink(expect=count)
    subprocess.run(["postconf", "-c", conf, "-e", "defer_transports =", f"relayhost = [127.0.0.1]:{sport}"],
                   check=True, capture_output=True)
    seen = deliveries(os.path.join(d, "maillog"), "postfix")
    seen.poll()  # skip what the acceptance logged
    seen.count, seen.first, seen.last, seen.first_seen = 0, None, None, None
    t0 = time.time()
    started = subprocess.run(["postfix", "-c", conf, "start"], capture_output=True, text=True, timeout=120)
    if started.returncode != 0:
        die(f"Postfix did not start again: {started.stderr[-400:]}")
    base.wait_listening(port, None, "Postfix (restart)", timeout=60)
    r["restart_to_listening_s"] = round(time.time() - t0, 3)
    subprocess.run(["postqueue", "-c", conf, "-f"], capture_output=True, timeout=120)
    rss = [postfix_rss(d)[0]]
    r["rss_after_restart_mib"] = mib(rss[0] * 1024)

    def sample():
        rss.append(postfix_rss(d)[0])
        seen.poll()
    t_sink = wait_sink(sink, count, sample, run_timeout(count))
    deadline = time.monotonic() + 60
    while not base.postfix_queue_empty(d) or seen.poll().count < count:
        if time.monotonic() > deadline:
            die(f"Postfix: {seen.count} status=sent lines, queue empty: {base.postfix_queue_empty(d)}")
        time.sleep(0.5)
    r["rss_peak_during_delivery_mib"] = mib(max(rss) * 1024)
    # Postfix's maillog has whole seconds: the first status=sent line as the sampler found it
    # (within SAMPLE s), the last delivery when the sink had every message (--expect met).
    r["restart_to_first_delivery_s"] = round(seen.first_seen - t0, 3)
    r["restart_to_last_delivery_s"] = round(t_sink - t0, 3)
    r["restart_to_sink_complete_s"] = round(t_sink - t0, 3)
    r["maillog_first_last_sent_s"] = [round(seen.first - t0), round(seen.last - t0)]
    r["spool_after_delivery_mib"] = r["spool_after_mib"] = mib(du_bytes(os.path.join(d, "queue")))
    base.stop_postfix(d)
    shutil.rmtree(d, ignore_errors=True)
    return r


# ---------------------------------------------------------------------------------------
# Report.

COLUMNS = [("system", "system"), ("size", "size"), ("messages", "messages"), ("accept_msg_s", "accepted msg/s"),
           ("rss_after_accept_mib", "RSS after acceptance MiB"), ("spool_before_mib", "spool before MiB"),
           ("restart_to_listening_s", "restart to listening s"), ("rss_after_restart_mib", "RSS after restart MiB"),
           ("rss_peak_during_delivery_mib", "RSS peak until last delivery MiB"),
           ("restart_to_first_delivery_s", "restart to first delivery s"),
           ("restart_to_last_delivery_s", "restart to last delivery s"), ("spool_after_mib", "spool after MiB")]


def cell(key, v):
    if v is None:
        return "-"
    if key == "size":
        return f"{v // 1024} KiB"
    if key in ("messages", "accept_msg_s"):
        return f"{v:,.0f}"
    return str(v)


def table(rows):
    lines = ["| " + " | ".join(h for _k, h in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        lines.append("| " + " | ".join(cell(k, r.get(k)) for k, _h in COLUMNS) + " |")
    return "\n".join(lines)


def notes(rows):
    out = ["ringrelay: accepted with `--hold`, stopped (SIGTERM), started again on the same spool "
           "without `--hold`, `--smarthost` ringrelay-sink. Postfix: deferred by `defer_transports`, "
           "stopped, started with `relayhost` ringrelay-sink and flushed (`postqueue -f`); its RSS is "
           "the queue manager's (qmgr). Times from the start command: ringrelay's first and last delivery "
           "are its Delivery records' times; Postfix's maillog has whole seconds, so its first delivery is "
           "when its first `status=sent` line was found (polled every 0.2 s) and its last is when the sink "
           "had every message."]
    for r in rows:
        if "pss_all_processes_after_accept_mib" in r:
            out.append(f"Postfix, {r['size'] // 1024} KiB: every process of the instance together "
                       f"{r['pss_all_processes_after_accept_mib']} MiB after acceptance (PSS: shared pages "
                       f"divided among the processes; its smtpd processes stay until they time out).")
        if r.get("system") == "ringrelay":
            collected = ("not within 70 s" if r.get("segments_collected_s") is None
                         else f"{r['segments_collected_s']} s after the queue was empty")
            out.append(f"ringrelay, {r['size'] // 1024} KiB: spool {r['spool_after_delivery_mib']} MiB when the "
                       f"queue was empty, down to one segment per shard {collected}; stop took {r['stop_s']} s; "
                       f"the sink had every message {r['restart_to_sink_complete_s']} s after the restart.")
    return "\n\n".join(out)


def main():
    base.log, base.die = log, die  # e2e's helpers report under this script's name
    ap = argparse.ArgumentParser(description="bench/queue_scale: a large queue at rest and its restart "
                                             "(see the header)")
    ap.add_argument("--count", type=int, default=int(os.environ.get("QUEUE_COUNT", "1000000")),
                    help="messages per size (default 1,000,000)")
    ap.add_argument("--sizes", default=os.environ.get("QUEUE_SIZES", "2048,20480"),
                    help="message sizes in bytes, comma-separated (default 2048,20480)")
    ap.add_argument("--postfix-count", type=int, default=int(os.environ.get("PF_QUEUE_COUNT", "-1")),
                    help="messages per size for Postfix (default 20,000, or --count if smaller; 0: no Postfix)")
    ap.add_argument("--connections", type=int, default=int(os.environ.get("CONNECTIONS", "50")))
    ap.add_argument("--shards", type=int, default=int(os.environ.get("SHARDS", str(os.cpu_count() or 1))))
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    pf_count = min(args.count, PF_DEFAULT_COUNT) if args.postfix_count < 0 else args.postfix_count
    for path, what in ((RINGRELAY, "ringrelay"), (BENCH, "ringrelay-bench"), (RSINK, "ringrelay-sink")):
        if not os.access(path, os.X_OK):
            die(f"{what} not found at {path} (bench/queue_scale builds it first)")
    if pf_count and shutil.which("postfix") is None:
        die("postfix is not installed (bench/queue_scale installs it: scripts/install-deps --bench)")
    # The largest run must fit before anything starts (each run's spool is removed after it).
    need_disk(TMP, max(args.count * (max(sizes) + 1024), pf_count * (max(sizes) + 4096)) + (1 << 30),
              f"the largest run ({max(args.count, pf_count)} x {max(sizes)} B)")
    os.makedirs(RESULTS_DIR, exist_ok=True)
    work = tempfile.mkdtemp(prefix="rr-queue-scale-", dir=TMP)
    os.chmod(work, 0o755)
    started = time.time()
    load_before = os.getloadavg()[0]
    git = base.git_state()
    rows = []
    try:
        for size in sizes:
            for case, n in ((lambda: ringrelay_case(work, size, args.count, args.connections, args.shards),
                             args.count),
                            (lambda: postfix_case(work, size, pf_count, args.connections), pf_count)):
                if n <= 0:
                    continue
                r = case()
                log(" ".join(f"{k}={v}" for k, v in r.items()))
                rows.append(r)
    finally:
        base.cleanup()
        shutil.rmtree(work, ignore_errors=True)
    result = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(started)),
              "command": "bench/queue_scale " + " ".join(sys.argv[1:]), **git,
              "machine": {"cpus": os.cpu_count(), "kernel": os.uname().release, "load_before": load_before},
              "connections": args.connections, "shards": args.shards,
              "seconds": round(time.time() - started, 1), "rows": rows}
    name = f"queue-scale-{args.count}"
    with open(os.path.join(RESULTS_DIR, f"{name}.json"), "w") as f:
        json.dump(result, f, indent=1)
    md = (f"Queue at scale (issue 15), {time.strftime('%Y-%m-%d', time.localtime(started))}, commit "
          f"{(git.get('commit') or '?')[:12]}{' (modified)' if git.get('tracked_files_modified') else ''}, "
          f"{os.cpu_count()} CPUs, load {load_before:.1f} before; ringrelay-bench with {args.connections} "
          f"connections, ringrelay with {args.shards} shard(s).\n\n{table(rows)}\n\n{notes(rows)}\n")
    with open(os.path.join(RESULTS_DIR, f"{name}.md"), "w") as f:
        f.write(md)
    print(md)
    log(f"done in {result['seconds']:.0f}s; {RESULTS_DIR}/{name}.md and .json")


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: (base.cleanup(), sys.exit(1)))
    try:
        main()
    except KeyboardInterrupt:
        base.cleanup()
        sys.exit(1)
