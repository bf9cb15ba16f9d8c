#!/usr/bin/env python3
# tests/integration/shared_limits_test.py: connection_limit shared across nodes through Redis
# (issue 19, "Shared limits in Redis"). Two ringrelay nodes, each with its own spool and N
# messages queued (spooled under --hold, then restarted to deliver), relay to one ringrelay-sink
# that refuses a third connection from 127.0.0.1 (--max-connections-per-ip 2, --delay-ms 25 so
# connections stay busy); a --shaping rule sets connection_limit 2 for the site.
#   1. Without --redis (the control: the test can fail): each node opens its own 2, and the sink
#      refuses connections (its refused_connections > 0).
#   2. With --redis (a redis-server the test starts on a loopback port) and --cluster-size 2:
#      the nodes together stay within 2: the sink refuses none, over the whole run, through
#      Redis killed mid-run (both nodes log the fallback, to limit / cluster-size = 1 each, and
#      keep delivering) and started again (both log that they count in Redis again).
# Every message arrives in both runs. Counts only (the sink's own statistics, the relays' delivery
# logs and stderr), never timings. Bounded: the sink stops itself after --duration; every process
# is ours, stopped by PID.
import json
import os
import signal
import subprocess
import sys
import time

import harness

N = int(os.environ.get("RR_SHARED_MESSAGES", "600"))  # per node
SINK_SECONDS = 240
LIMIT = 2


def redis_binary():
    for p in ("/usr/bin/redis-server", "/usr/sbin/redis-server"):
        if os.access(p, os.X_OK):
            return p
    return None


class RedisServer:
    """redis-server on 127.0.0.1:port, no persistence; start() again after stop() on the same port."""

    def __init__(self, binary, work):
        self.binary = binary
        self.work = work
        self.port = harness.free_port()
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen([self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no", "--dir", self.work, "--daemonize", "no"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        p = self.proc
        harness.register_cleanup(lambda: p.poll() is None and p.kill())  # by PID, ours
        if not harness.connectable(self.port):
            raise harness.Failed("redis-server does not listen")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def spool_messages(c, relay, bench, spool, n):
    held = harness.Relay(relay, ["--hold"], spool=spool, shards=1, log=False).start()
    host, port = held.address()
    b = subprocess.run([bench, "--target", f"{host}:{port}", "--connections", "4", "--messages", str(n),
                        "--size", "1024", "--json", "--quiet", "--timeout", "30"],
                       capture_output=True, text=True, timeout=120)
    summary = json.loads(b.stdout) if b.stdout.strip().startswith("{") else {}
    c.require(b.returncode == 0 and summary.get("accepted") == n, f"{n} messages spooled under --hold",
              (b.returncode, summary.get("accepted"), b.stderr[-300:]))
    held.stop()


def delivered(relays):
    return sum(sum(1 for x in harness.log_records(r.log_path) if x.get("type") == "Delivery") for r in relays)


def run(c, label, relay, bench, sink_bin, redis=None):
    work = harness.temp_dir("rr-shared-")
    rules = os.path.join(work, "rules.json")
    with open(rules, "w") as f:
        json.dump({"default": {"connection_limit": LIMIT}}, f)
    spools = [os.path.join(work, f"node{i}", "spool") for i in range(2)]
    for s in spools:
        spool_messages(c, relay, bench, s, N)
    port = harness.free_port()
    sink = harness.start_sink(sink_bin, port, ["--max-connections-per-ip", str(LIMIT), "--delay-ms", "25",
                                               "--expect", str(2 * N), "--duration", str(SINK_SECONDS)])
    flags = ["--smarthost", f"127.0.0.1:{port}", "--retry-intervals", "1s", "--no-default-shaping", "--shaping", rules]
    if redis:
        flags += ["--redis", f"redis://127.0.0.1:{redis.port}/0", "--cluster-size", "2"]
    relays = [harness.Relay(relay, flags, spool=s, shards=1).start() for s in spools]
    if redis:
        for r in relays:
            c.check(harness.wait_until(lambda: "counting connection_limit in Redis" in r.stderr(), 30),
                    f"{label}: a node counts in Redis once it is up", r.stderr()[-400:])
        c.require(harness.wait_until(lambda: delivered(relays) >= 2 * N // 4, 120),
                  f"{label}: a quarter of the messages delivered while Redis is up", delivered(relays))
        redis.stop()
        for r in relays:
            c.check(harness.wait_until(lambda: "shared limits: Redis unreachable" in r.stderr(), 30),
                    f"{label}: Redis killed: the node says it falls back to its share", r.stderr()[-400:])
        before = delivered(relays)
        c.check(harness.wait_until(lambda: delivered(relays) >= before + 2 * N // 4, 120),
                f"{label}: the nodes keep delivering while Redis is down", (before, delivered(relays)))
        redis.start()
        for r in relays:
            c.check(harness.wait_until(lambda: r.stderr().count("counting connection_limit in Redis") >= 2, 30),
                    f"{label}: Redis back: the node counts in Redis again", r.stderr()[-400:])
    stats, err = harness.sink_result(sink, SINK_SECONDS + 30)
    for r in relays:
        r.stop()
    received = stats.get("received", 0)
    refused = stats.get("refused_connections", 0)
    c.info(f"{label}: sink received {received} of {2 * N}, {stats.get('connections', 0)} connections, "
           f"{refused} refused")
    c.check(received == 2 * N, f"{label}: every message of both nodes arrives", (received, err[-300:]))
    return refused


def scenario(c):
    relay, bench, sink = sys.argv[1], sys.argv[2], sys.argv[3]
    for p in (relay, bench, sink):
        if not os.access(p, os.X_OK):
            raise harness.Skip(f"{p} is not built")
    binary = redis_binary()
    if not binary:
        raise harness.Skip("redis-server is not installed (apt install redis-server)")
    refused = run(c, "without --redis", relay, bench, sink)
    c.check(refused > 0, "without --redis: each node uses the whole limit, and the sink refuses connections "
            "(the test can fail)", refused)
    redis = RedisServer(binary, harness.temp_dir("rr-shared-redis-"))
    redis.start()
    refused = run(c, "with --redis", relay, bench, sink, redis)
    c.check(refused == 0, f"with --redis: the sink refused no connection (the nodes together kept to {LIMIT}, "
            "Redis up, down and back)", refused)
    redis.stop()


if __name__ == "__main__":
    harness.run("shared_limits", scenario)
