#!/usr/bin/env python3
# tests/integration/bench_relay_sink_test.py: the bundled tools end to end (issue 4):
# ringrelay-bench sends N messages through ringrelay (2 shards, durable spool, --smarthost)
# to ringrelay-sink --expect N --save DIR, and every message arrives.
# Checks: the bench reports N accepted and exits 0; the sink exits 0 by itself once N
# arrived; the saved files hold X-Bench-Seq 1..N exactly once each, each with the relay's
# Received: header, the bench's envelope, recipients in the weighted domains, and the body
# the bench generated (its size); the relay's spool is empty afterwards. Then the same with
# BDAT (--chunking) for a second batch. Bounded in count and time.
import glob
import json
import os
import re
import subprocess
import sys
import time

import harness

N = 2000
SIZE = 2048


def parse_saved(path):
    with open(path, "rb") as f:
        data = f.read()
    env = {}
    pos = 0
    while True:
        end = data.index(b"\r\n", pos)
        line = data[pos:end].decode()
        pos = end + 2
        k, _, v = line.partition(": ")
        env.setdefault(k, []).append(v)
        if k == "X-Sink-Size":
            break
    body = data[pos:]
    return env, body


def run_batch(c, bench, relay, sink_bin, label, extra):
    save = harness.temp_dir("rr-sink-save-")
    port = harness.free_port()
    sink = subprocess.Popen([sink_bin, "--listen", f"127.0.0.1:{port}", "--shards", "2", "--expect", str(N),
                             "--save", save, "--quiet", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    harness.register_cleanup(lambda: sink.poll() is None and sink.kill())  # by PID, ours
    relay_obj = harness.Relay(relay, ["--smarthost", f"127.0.0.1:{port}", "--retry-intervals", "1s"], shards=2).start()
    host, rport = relay_obj.address()
    cmd = [bench, "--target", f"{host}:{rport}", "--connections", "16", "--messages", str(N), "--size", str(SIZE),
           "--domains", "one.example:1,three.example:3", "--json", "--quiet", "--timeout", "30"] + extra
    b = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    c.check(b.returncode == 0, f"{label}: ringrelay-bench exits 0", b.stderr[-500:])
    summary = json.loads(b.stdout) if b.stdout.strip().startswith("{") else {}
    c.check(summary.get("accepted") == N, f"{label}: the bench reports {N} accepted",
            {k: summary.get(k) for k in ("accepted", "failed", "replies")})
    c.info(f"{label}: {summary.get('messages_per_second', 0):.0f} msg/s into the relay, "
           f"p99 ack {summary.get('ack_latency_us', {}).get('p99', 0) / 1000:.1f} ms")
    try:
        out, err = sink.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        sink.kill()
        out, err = sink.communicate()
    c.check(sink.returncode == 0, f"{label}: ringrelay-sink --expect {N} exits 0 by itself", err[-300:])
    relay_obj.stop()
    count, _, _ = harness.list_spool(relay, relay_obj.spool)
    c.check(count == 0, f"{label}: the relay's spool is empty afterwards", count)

    files = glob.glob(os.path.join(save, "*.eml"))
    c.check(len(files) == N, f"{label}: {N} messages saved", len(files))
    seqs = []
    bad = []
    domains = {"one.example": 0, "three.example": 0}
    for path in files:
        env, body = parse_saved(path)
        m = re.search(rb"\r\nX-Bench-Seq: *(\d+)\r\n", body)
        if not m:
            bad.append((path, "no X-Bench-Seq"))
            continue
        seqs.append(int(m.group(1)))
        if int(env["X-Sink-Size"][0]) != len(body):
            bad.append((path, "size"))
        if not body.startswith(b"Received: from "):
            bad.append((path, "no Received: from the relay"))
        rcpt = env.get("X-Sink-Rcpt-To", [""])[0]
        dom = rcpt.rstrip(">").rpartition("@")[2]
        if dom in domains:
            domains[dom] += 1
        else:
            bad.append((path, f"recipient {rcpt}"))
        # After the Received: headers (the relay's, then the sink's) comes what the bench
        # generated, starting with its From: field: exactly SIZE bytes.
        start = body.find(b"\r\nFrom: ringrelay-bench")
        rest = body[start + 2:] if start >= 0 else b""
        if len(rest) != SIZE:
            bad.append((path, f"body {len(rest)} bytes, expected {SIZE}"))
    c.check(sorted(seqs) == list(range(1, N + 1)), f"{label}: X-Bench-Seq 1..{N}, each exactly once",
            f"{len(seqs)} seqs, {len(set(seqs))} distinct")
    c.check(not bad, f"{label}: every saved message has the envelope, headers and size sent", bad[:5])
    c.check(domains["three.example"] > domains["one.example"] * 2,
            f"{label}: recipients follow the domain weights (1:3)", domains)


def scenario(c):
    relay, bench, sink = sys.argv[1], sys.argv[2], sys.argv[3]
    for p in (relay, bench, sink):
        if not os.access(p, os.X_OK):
            raise harness.Skip(f"{p} is not built")
    run_batch(c, bench, relay, sink, "DATA", [])
    run_batch(c, bench, relay, sink, "BDAT", ["--chunking"])


if __name__ == "__main__":
    harness.run("bench_relay_sink", scenario)
