#!/usr/bin/env python3
# tests/integration/spool_shards_test.py: a spool written by more shards than a start has.
# Shard K reads SPOOL/shard-K only, so a relay started with fewer --shards than the spool was
# written with would leave the mail in the other directories unread. It refuses to start,
# naming the directories and the --shards to use; started with enough shards, every message is
# there.
#   1. --shards 3 --hold: 30 messages, each on its own connection (the kernel spreads them over
#      the three shards' listeners), then SIGTERM.
#   2. --shards 1 on that spool: exits non-zero before listening; the error names --shards 1,
#      the message count in the other directories and "--shards 3".
#   3. --shards 3 again: listening, the spool holds the 30 messages.
# Loopback only; every wait bounded.
import os
import smtplib

import harness


def scenario(c):
    binary = harness.ringrelay_path()
    spool = os.path.join(harness.temp_dir(), "spool")
    first = harness.Relay(binary, spool=spool, shards=3).start()
    accepted = 0
    for i in range(30):
        with smtplib.SMTP(first.host, first.port, timeout=10) as s:
            s.sendmail("sender@example.org", ["rcpt@example.net"], f"Subject: m{i}\r\n\r\nbody {i}\r\n")
            accepted += 1
    c.check(accepted == 30, "30 messages accepted by a 3-shard relay")
    c.check(first.stop() == 0, "it stops cleanly")
    count, _, _ = harness.list_spool(binary, spool)
    c.check(count == 30, "--list-spool (every shard directory) lists 30", count)
    has_mail = [d for d in sorted(os.listdir(spool)) if d.startswith("shard-") and d != "shard-0" and
                any(os.path.getsize(os.path.join(spool, d, f)) > 0 for f in os.listdir(os.path.join(spool, d)))]
    c.require(has_mail, "the kernel put mail on shards other than 0", sorted(os.listdir(spool)))

    second = harness.Relay(binary, spool=spool, shards=1)
    try:
        second.start(timeout=20)
        started = True
    except RuntimeError:
        started = False
    err = second.stderr()
    c.check(not started and second.proc.returncode not in (0, None),
            "--shards 1 on that spool: the relay refuses to start", err[-600:])
    c.check("--shards 1" in err and "undelivered message(s) in shard directories 1 to 2" in err and
            "start with --shards 3 or more" in err, "the error names the directories and the --shards to use",
            err[-600:])

    third = harness.Relay(binary, spool=spool, shards=3).start()
    c.check(third.holds == 30, "--shards 3 again: the spool holds all 30 messages", third.holds)
    c.check(third.stop() == 0, "it stops cleanly")


if __name__ == "__main__":
    harness.run("spool_shards", scenario)
