#!/usr/bin/env python3
# bench/restart_recovery.py: restart time of a relay holding a large queue, with and without
# the segment indexes (issue 15, "Recovery by descriptor"). Fills a spool through SMTP
# (ringrelay --hold, ringrelay-bench), stops the relay cleanly (which indexes the segment it
# was writing), then starts it again several times and measures from the start of the process
# to its "listening on ... holds N message(s)" line (printed after every shard has recovered):
# with the indexes, and with them moved aside (every segment scanned); with a warm page cache,
# and with DROP_CACHES=1 (root) also after dropping it: the cold start after a reboot.
#
# Usage: bench/restart_recovery.py BUILD_DIR [--messages N] [--size 20k] [--shards 2] [--runs 3]
# Loopback only; the spool goes to a temporary directory under /var/tmp, removed at the end.
import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(relay, spool, port, shards):
    t0 = time.monotonic()
    p = subprocess.Popen([relay, "--hold", "--spool", spool, "--listen", f"127.0.0.1:{port}", "--shards", str(shards)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = t0 + 600
    for line in p.stderr:
        m = re.search(r"listening on .* holds (\d+) message", line)
        if m:
            return p, time.monotonic() - t0, int(m.group(1))
        if time.monotonic() > deadline:
            break
    p.kill()
    raise SystemExit("the relay did not start")


def stop(p):
    p.send_signal(signal.SIGTERM)
    try:
        p.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        p.kill()
        raise SystemExit("the relay did not stop")


def drop_caches():
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3")


def move_indexes(spool, to_dir, back=False):
    for shard in sorted(os.listdir(spool)):
        if not shard.startswith("shard-"):
            continue
        src = os.path.join(to_dir, shard) if back else os.path.join(spool, shard)
        dst = os.path.join(spool, shard) if back else os.path.join(to_dir, shard)
        os.makedirs(dst, exist_ok=True)
        for name in os.listdir(src):
            if name.endswith(".idx"):
                os.rename(os.path.join(src, name), os.path.join(dst, name))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("build")
    ap.add_argument("--messages", type=int, default=200000)
    ap.add_argument("--size", default="20k")
    ap.add_argument("--shards", type=int, default=2)
    ap.add_argument("--connections", type=int, default=20)
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    relay = os.path.join(a.build, "tools/ringrelay")
    bench = os.path.join(a.build, "tools/bench/ringrelay-bench")
    cold = os.environ.get("DROP_CACHES") == "1"
    work = tempfile.mkdtemp(prefix="ringrelay-restart-", dir="/var/tmp")
    spool = os.path.join(work, "spool")
    aside = os.path.join(work, "aside")
    try:
        port = free_port()
        p, _, _ = start(relay, spool, port, a.shards)
        t0 = time.monotonic()
        subprocess.run([bench, "--target", f"127.0.0.1:{port}", "--connections", str(a.connections),
                        "--messages", str(a.messages), "--size", a.size], check=True, stdout=subprocess.DEVNULL)
        fill_s = time.monotonic() - t0
        stop(p)
        du = subprocess.run(["du", "-sb", spool], capture_output=True, text=True).stdout.split()[0]
        idx_bytes = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(spool) for f in fs if f.endswith(".idx"))
        print(f"filled {a.messages} x {a.size} in {fill_s:.1f} s; spool {int(du) / 2**20:.0f} MiB, "
              f"indexes {idx_bytes / 2**20:.1f} MiB", flush=True)
        caches = ["warm", "cold"] if cold else ["warm"]
        results = {(c, m): [] for c in caches for m in ("indexed", "scanned")}
        for run in range(a.runs):
            for cache in caches:
                for mode in ("indexed", "scanned"):
                    if mode == "scanned":
                        move_indexes(spool, aside)
                    if cache == "cold":
                        drop_caches()
                    port = free_port()
                    p, seconds, held = start(relay, spool, port, a.shards)
                    stop(p)
                    if mode == "scanned":
                        move_indexes(spool, aside, back=True)
                    if held != a.messages:
                        raise SystemExit(f"{mode}: the relay holds {held} messages, not {a.messages}")
                    results[(cache, mode)].append(seconds)
                    print(f"run {run + 1} {cache} {mode}: {seconds * 1000:.0f} ms to 'listening' ({held} messages)",
                          flush=True)
        for (cache, mode), xs in results.items():
            xs = sorted(xs)
            print(f"{cache} page cache, {mode}: median {xs[len(xs) // 2] * 1000:.0f} ms "
                  f"(min {xs[0] * 1000:.0f}, max {xs[-1] * 1000:.0f})")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
