#!/usr/bin/env python3
# tests/integration/bench_tls_test.py: ringrelay-bench --starttls and --auth USER:PASS (issue 5):
# - --starttls to ringrelay-sink --tls: every message accepted, and the sink counts them all as
#   received under TLS;
# - --starttls to a sink without TLS: nothing is sent in clear (the sink receives 0), the bench
#   exits 1 and names the reason (4.7.4);
# - --starttls --auth to ringrelay --hold --auth-users FILE (a user made by ringrelay-passwd):
#   every message accepted (the relay's Reception log records the user and TLS); a wrong
#   password: nothing accepted, the bench exits 1 and reports the 535.
# argv: ringrelay ringrelay-bench ringrelay-sink ringrelay-passwd. Bounded in count and time.
import json
import os
import subprocess
import sys

import harness

N = 200


def start_sink(sink_bin, extra):
    port = harness.free_port()
    proc = subprocess.Popen([sink_bin, "--listen", f"127.0.0.1:{port}", "--shards", "1", "--quiet", "--json"] + extra,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    harness.register_cleanup(lambda: proc.poll() is None and proc.kill())  # by PID, ours
    if not harness.connectable(port):
        raise RuntimeError("ringrelay-sink did not start")
    return proc, port


def stop_sink(proc):
    proc.terminate()
    try:
        out, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    try:
        return json.loads(out.strip().splitlines()[-1]), proc.returncode, err
    except (ValueError, IndexError):
        return {}, proc.returncode, err


def bench(bench_bin, port, extra, messages=N):
    cmd = [bench_bin, "--target", f"127.0.0.1:{port}", "--connections", "4", "--messages", str(messages),
           "--size", "2048", "--json", "--quiet", "--timeout", "10"] + extra
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    try:
        summary = json.loads(r.stdout)
    except ValueError:
        summary = {}
    return r.returncode, summary, r.stderr


def scenario(c):
    if len(sys.argv) < 5:
        raise harness.Skip("usage: bench_tls_test.py RINGRELAY BENCH SINK PASSWD")
    relay_bin, bench_bin, sink_bin, passwd_bin = sys.argv[1:5]
    for p in (relay_bin, bench_bin, sink_bin, passwd_bin):
        if not os.access(p, os.X_OK):
            raise harness.Skip(f"{p} is not built")

    # 1. --starttls to a TLS sink.
    proc, port = start_sink(sink_bin, ["--tls"])
    code, summary, err = bench(bench_bin, port, ["--starttls"])
    c.check(code == 0 and summary.get("accepted") == N, f"--starttls to a TLS sink: {N} accepted, exit 0",
            f"exit {code}, {summary.get('accepted')} accepted, {err[-300:]}")
    sink_summary, sink_code, sink_err = stop_sink(proc)
    c.check(sink_summary.get("received_tls") == N and sink_summary.get("tls_handshakes", 0) >= 1,
            f"--starttls: the sink received all {N} under TLS", sink_summary)
    c.check(sink_code == 0, "the TLS sink stops cleanly", sink_err[-300:])

    # 2. --starttls to a sink without TLS: nothing in clear.
    proc, port = start_sink(sink_bin, [])
    code, summary, err = bench(bench_bin, port, ["--starttls"], messages=20)
    c.check(code == 1 and summary.get("accepted") == 0, "--starttls to a sink without TLS: nothing accepted, exit 1",
            f"exit {code}, {summary}")
    c.check("4.7.4" in json.dumps(summary) or "4.7.4" in err, "the bench says TLS was not offered (4.7.4)",
            err[-300:])
    sink_summary, _, _ = stop_sink(proc)
    c.check(sink_summary.get("received") == 0, "the sink without TLS received no message", sink_summary)

    # 3. --starttls --auth to ringrelay with an AUTH users file.
    work = harness.temp_dir("rr-bench-tls-")
    users = os.path.join(work, "users")
    made = subprocess.run([passwd_bin, "--cost", "10", "bench"], input="s3cret:pw\n", capture_output=True,
                          text=True, timeout=60)
    c.require(made.returncode == 0 and made.stdout.startswith("bench:"), "ringrelay-passwd makes the users line",
              made.stderr)
    with open(users, "w") as f:
        f.write(made.stdout)
    relay = harness.Relay(relay_bin, ["--auth-users", users], hold=True).start()
    code, summary, err = bench(bench_bin, relay.port, ["--starttls", "--auth", "bench:s3cret:pw"])
    c.check(code == 0 and summary.get("accepted") == N, f"--starttls --auth to ringrelay: {N} accepted, exit 0",
            f"exit {code}, {summary.get('accepted')} accepted, {err[-300:]}")
    log = relay.reception_log()
    c.check(len(log) == N and all(r.get("tls") and r.get("auth") == "bench" for r in log),
            "every Reception record has TLS and the authenticated user", log[:1])
    code, summary, err = bench(bench_bin, relay.port, ["--starttls", "--auth", "bench:wrong"], messages=4)
    c.check(code == 1 and summary.get("accepted") == 0, "a wrong password: nothing accepted, exit 1",
            f"exit {code}, {summary}")
    c.check("535" in err, "the bench reports the 535", err[-400:])
    c.check(relay.stop() == 0, "the relay stops cleanly")


if __name__ == "__main__":
    harness.run("bench_tls", scenario)
