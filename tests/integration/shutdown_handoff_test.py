#!/usr/bin/env python3
# tests/integration/shutdown_handoff_test.py: a graceful stop does not send delivered mail again
# (issue 17 review finding 8).
#
# With two shards, a message accepted by one shard is delivered by the shard that owns its site
# (hash(site) % shards): its outcome crosses back to the message's shard, which journals it.
# Before the fix a shard left its loop as soon as it had nothing of its own in flight, so a
# message whose delivery another shard's connection was finishing at SIGTERM was delivered, its
# outcome sent to a shard that had gone, never journaled, and delivered again after the restart.
#
#   ringrelay-sink --delay-ms 2500 --save DIR   (answers each end of data 2.5 s late)
#   ringrelay --shards 2 --smarthost sink       (one site: one owner shard)
# N messages, each on its own connection (both shards accept some: checked); 1 s after the
# last 250, SIGTERM (the deliveries are waiting for the sink's answers); the relay must exit 0
# by itself; then the relay starts again on the same spool and delivers what was left. Every
# Message-ID must be saved by the sink exactly once.
#
# Arguments: ringrelay, ringrelay-sink. Loopback only; every wait bounded.
import os
import re
import smtplib
import subprocess
import sys
import time

import harness

N = 12
DELAY_MS = 2500


def saved_ids(save):
    ids = []
    for text in harness.saved_texts(save):
        m = re.search(r"^Message-ID: <([^>]+)>", text, re.M | re.I)
        ids.append(m.group(1) if m else None)
    return ids


def scenario(c):
    relay_bin, sink_bin = sys.argv[1], sys.argv[2]
    port = harness.free_port()
    work = harness.temp_dir("rr-shutdown-handoff-")
    save = os.path.join(work, "saved")
    os.makedirs(save)
    sink = harness.start_sink(sink_bin, port, ["--delay-ms", str(DELAY_MS), "--save", save, "--duration", "120"])
    flags = ["--smarthost", f"127.0.0.1:{port}", "--retry-intervals", "1s", "--shutdown-timeout", "30"]
    relay = harness.Relay(relay_bin, flags, shards=2).start()
    host, rport = relay.address()
    shards = set()
    for i in range(N):
        s = smtplib.SMTP(host, rport, timeout=30)
        s.sendmail("sender@example.org", [f"rcpt{i}@example.net"],
                   f"Subject: handoff {i}\r\nMessage-ID: <handoff{i}@example.org>\r\n\r\nbody {i}\r\n")
        s.quit()
    records = lambda: harness.log_records(relay.log_path)  # noqa: E731
    c.require(harness.wait_until(lambda: sum(1 for r in records() if r.get("type") == "Reception") >= N, 10),
              f"{N} Reception records")
    for r in records():
        if r.get("type") == "Reception":
            shards.add(int(r.get("queue_id", r.get("id", "0")), 16) & 0xff)
    c.require(len(shards) == 2, "both shards accepted some of the messages (so some cross to the site's owner)",
              shards)
    time.sleep(1.0)  # the deliveries are on the wire, waiting for the sink's late answers
    relay.proc.send_signal(15)
    try:
        status = relay.proc.wait(60)
    except subprocess.TimeoutExpired:
        status = None
    c.check(status == 0, "the relay exits 0 by itself after SIGTERM", (status, relay.stderr()[-600:]))
    first = saved_ids(save)
    c.info(f"{len(first)} message(s) saved by the sink before the restart")
    relay.stop()
    again = harness.Relay(relay_bin, flags, shards=2, spool=relay.spool).start()
    c.check(harness.wait_until(lambda: len(set(saved_ids(save))) >= N, 60), f"all {N} messages arrive after the restart",
            sorted(set(saved_ids(save))))
    time.sleep(DELAY_MS / 1000 + 2)  # anything sent twice would be saved by now
    again.stop()
    sink.terminate()
    harness.sink_result(sink, 30)
    ids = saved_ids(save)
    twice = sorted({i for i in ids if ids.count(i) > 1})
    c.check(None not in ids, "every saved message has its Message-ID", ids.count(None))
    c.check(not twice, "no message was delivered twice (each outcome was journaled before its shard left)",
            twice)
    c.check(sorted(set(ids)) == sorted(f"handoff{i}@example.org" for i in range(N)), "exactly the messages sent",
            sorted(set(ids)))


if __name__ == "__main__":
    harness.run("shutdown_handoff", scenario)
