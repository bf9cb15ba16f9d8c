#!/usr/bin/env python3
# tests/integration/early_talker_test.py: a client that talks before the greeting (RFC 5321
# §3.1: the client waits for the 220) is an early talker (Postfix postscreen's PREGREET).
# To make "before" certain, the relay is paused (SIGSTOP) while the client connects (the
# kernel completes the handshake) and sends a whole dialogue; then it resumes (SIGCONT). The
# client connects only once every thread of the relay is seen stopped in /proc.
# Expected: the banner, then 521 5.5.1, the connection closed, nothing executed or queued, a
# report on stderr; a well-behaved client right after is served normally.
import os
import signal
import time

import harness

BOUND = 30.0


def all_threads_stopped(pid):
    """Every thread of `pid` is in the stopped state (T): SIGSTOP is asynchronous, and a shard
    thread still running could accept the connection and send its banner before the client
    talks (seen on a loaded CI machine: the client's bytes then arrive after the banner)."""
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                if f.read().startswith("iou-"):  # io_uring's kernel workers run no code of ours
                    continue
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
            if state not in ("T", "t"):
                return False
    except OSError:
        return False
    return True


def scenario(c):
    binary = harness.ringrelay_path()
    relay = harness.Relay(binary, shards=1)
    relay.start()

    relay.signal(signal.SIGSTOP)
    try:
        c.require(harness.wait_until(lambda: all_threads_stopped(relay.proc.pid), 10),
                  "every thread of the relay is stopped before the client connects")
        cl = relay.connect()
        cl.send(b"EHLO early.test\r\nMAIL FROM:<bot@early.test>\r\nRCPT TO:<x@example.net>\r\nDATA\r\n"
                b"Subject: canned\r\n\r\nspam\r\n.\r\nQUIT\r\n")
        time.sleep(0.2)
    finally:
        relay.signal(signal.SIGCONT)
    try:
        first = cl.reply(timeout=BOUND)
        second = cl.reply(timeout=BOUND)
    except Exception as e:  # noqa: BLE001
        first, second = (0, [repr(e)]), (0, [])
    c.reply(first, 220, "early talker: the banner still comes first")
    c.reply(second, 521, "early talker: dropped", "5.5.1")
    c.check(cl.closed_by_peer(BOUND), "early talker: connection closed")
    c.check(not cl.buf, "early talker: no other reply (nothing it sent was executed)", repr(cl.buf))
    cl.close()

    with relay.connect() as ok:
        c.reply(ok.reply(), 220, "polite client: banner")
        c.reply(ok.cmd("EHLO polite.test"), 250, "polite client: EHLO")
        c.reply(ok.cmd("MAIL FROM:<p@polite.test>"), 250, "polite client: MAIL")
        c.reply(ok.cmd("RCPT TO:<x@example.net>"), 250, "polite client: RCPT")
        c.reply(ok.cmd("DATA"), 354, "polite client: DATA")
        c.reply(ok.cmd("Subject: fine\r\n\r\nhello\r\n."), 250, "polite client: queued")
        c.reply(ok.cmd("QUIT"), 221, "polite client: QUIT")

    c.check("early talker" in relay.stderr(), "the early talker is reported on stderr", relay.stderr()[-400:])
    c.check(relay.stop() == 0, "graceful stop exits 0")
    count, _, _ = harness.list_spool(binary, relay.spool)
    c.check(count == 1, "only the polite client's message is spooled", count)


if __name__ == "__main__":
    harness.run("early_talker", scenario)
