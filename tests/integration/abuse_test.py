#!/usr/bin/env python3
# tests/integration/abuse_test.py: resource limits under abuse (issue 6), on loopback.
# 1. 500 slow clients (half dribble a command a byte per second, half dribble message content
#    a byte per second) are all cut off by the per-request deadline (--command-timeout 4;
#    dribbling does not restart it, see queue/connection.cc) with 421 4.4.2, nothing of theirs
#    is queued, and while they are open a normal client still gets all its messages accepted.
# 2. 10,000 idle connections: the relay's RSS per idle connection is reported (the aim is
#    under 8 KiB) and must stay under a regression bound.
# 3. One endless command line (8 MiB, no LF) and one endless DATA (64 MiB against a 1 MiB
#    --max-message-size) cost no more memory than the limits allow: after a warm-up pass
#    (which touches the 16 MiB receive buffer ring's pages once), RSS grows by less than 1 MiB for
#    the line and 2 MiB for the DATA, and the replies are 500 5.5.2 and 552 5.3.4.
# No assertion depends on timing except generous bounds on when a deadline must have fired.
import os
import selectors
import smtplib
import socket
import time

import harness

SLOW = 500
IDLE = 10000
TIMEOUT = 4
BOUND = 60.0
IDLE_RSS_BOUND_KIB = 32.0   # regression bound per idle connection (aim: 8)


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def slow_clients(c, binary):
    relay = harness.Relay(binary, shards=2, flags=["--command-timeout", str(TIMEOUT)]).start()
    host, port = relay.address()
    socks = []
    for i in range(SLOW):
        s = socket.create_connection((host, port), timeout=10)
        socks.append(s)
    in_data = []
    for i, s in enumerate(socks):
        f = s.makefile("rb")
        f.readline()  # banner
        if i % 2 == 1:
            for line in (b"EHLO slow.test\r\n", b"MAIL FROM:<s@slow.test>\r\n", b"RCPT TO:<r@example.net>\r\n",
                         b"DATA\r\n"):
                s.sendall(line)
                while True:
                    l = f.readline()
                    if l[3:4] != b"-":
                        break
            in_data.append(s)
        s.setblocking(False)
    c.info(f"{SLOW} slow clients connected ({len(in_data)} of them inside DATA)")
    # Both payloads outlast BOUND at a byte a second, so only a deadline that ignores dribbled
    # bytes can end them in time (a per-read timeout would never fire).
    payload = {s: (b"Subject: slow\r\n\r\n" + b"x" * 200 if s in in_data else b"EHLO " + b"d" * 100 + b".test\r\n")
               for s in socks}
    sent = {s: 0 for s in socks}
    closed = {}
    replies = {s: b"" for s in socks}
    sel = selectors.DefaultSelector()
    for s in socks:
        sel.register(s, selectors.EVENT_READ)

    # A normal client, while they dribble: all its messages are accepted.
    t0 = time.monotonic()
    normal_ok = 0
    latencies = []
    start = time.monotonic()
    next_drip = start
    normal_done = False
    while time.monotonic() - start < BOUND and len(closed) < SLOW:
        now = time.monotonic()
        if now >= next_drip:
            for s in socks:
                if s in closed:
                    continue
                if sent[s] < len(payload[s]):
                    try:
                        s.send(payload[s][sent[s]:sent[s] + 1])
                        sent[s] += 1
                    except OSError:
                        pass
            next_drip = now + 1.0
        if not normal_done:
            try:
                m = smtplib.SMTP(host, port, timeout=30)
                m.ehlo("normal.test")
                for k in range(20):
                    t = time.monotonic()
                    m.sendmail("n@normal.test", ["r@example.net"], f"Subject: normal {k}\r\n\r\nhello\r\n")
                    latencies.append(time.monotonic() - t)
                    normal_ok += 1
                m.quit()
            except (OSError, smtplib.SMTPException) as e:
                c.info(f"normal client error: {e!r}")
            normal_done = True
        for key, _ in sel.select(timeout=0.2):
            s = key.fileobj
            try:
                data = s.recv(4096)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                data = b""
            if data:
                replies[s] += data
            else:
                closed[s] = time.monotonic() - start
                sel.unregister(s)
    c.check(normal_ok == 20, f"with {SLOW} slow clients open, a normal client's 20 messages are all accepted",
            f"{normal_ok} accepted")
    if latencies:
        latencies.sort()
        c.info(f"normal client: median {latencies[len(latencies) // 2] * 1000:.1f} ms, "
               f"max {latencies[-1] * 1000:.1f} ms per message")
    c.check(len(closed) == SLOW, f"all {SLOW} slow clients were cut off within {BOUND:.0f}s although they "
            f"kept sending", f"{len(closed)} closed")
    got_421 = sum(1 for s in socks if b"421 4.4.2" in replies[s])
    c.check(got_421 == SLOW, "each slow client got 421 4.4.2", f"{got_421} of {SLOW}")
    if closed:
        c.info(f"slow clients cut off between {min(closed.values()):.1f}s and {max(closed.values()):.1f}s "
               f"(--command-timeout {TIMEOUT})")
    for s in socks:
        s.close()
    c.check(relay.stop() == 0, "slow clients: graceful stop exits 0")
    count, _, _ = harness.list_spool(binary, relay.spool)
    c.check(count == 20, "only the normal client's 20 messages are spooled", count)


def idle_connections(c, binary):
    relay = harness.Relay(binary, shards=2, flags=["--max-connections", str(IDLE + 100)]).start()
    host, port = relay.address()
    pid = relay.proc.pid
    # Warm up: one full session so pools and buffers exist before the baseline.
    m = smtplib.SMTP(host, port, timeout=30)
    m.sendmail("w@idle.test", ["r@example.net"], "Subject: warm\r\n\r\nup\r\n")
    m.quit()
    time.sleep(0.5)
    before = rss_kib(pid)
    socks = []
    try:
        for i in range(IDLE):
            socks.append(socket.create_connection((host, port), timeout=10))
        greeted = 0
        for s in socks:
            s.settimeout(10)
            if s.recv(100).startswith(b"220"):
                greeted += 1
        c.check(greeted == IDLE, f"{IDLE} idle connections are open and greeted", greeted)
        time.sleep(1.0)
        after = rss_kib(pid)
        per = (after - before) * 1024 / IDLE
        c.info(f"RSS {before} KiB before, {after} KiB with {IDLE} idle connections: "
               f"{per:.0f} bytes per idle connection")
        c.check(per < IDLE_RSS_BOUND_KIB * 1024, f"RSS per idle connection under {IDLE_RSS_BOUND_KIB:.0f} KiB",
                f"{per:.0f} bytes")
    finally:
        for s in socks:
            s.close()
    c.check(relay.stop() == 0, "idle connections: graceful stop exits 0")


def huge_inputs(c, binary):
    relay = harness.Relay(binary, shards=1, flags=["--max-message-size", str(1 << 20)]).start()
    pid = relay.proc.pid
    with relay.connect() as cl:
        c.reply(cl.reply(), 220, "huge line: banner")
        c.reply(cl.cmd("EHLO huge.test"), 250, "huge line: EHLO")
        chunk = b"A" * 65536
        # The first pass (24 MiB) warms the shard's receive buffer ring: the kernel takes its
        # 16 MiB of buffers in turn, touching each page once (a fixed cost). The second (8 MiB)
        # is measured.
        for attempt, chunks in (("warm-up", 384), ("measured", 128)):
            before = rss_kib(pid)
            for _ in range(chunks):  # without a line feed
                cl.send(chunk)
            r = cl.cmd(b"\r\n")
            grown = rss_kib(pid) - before
            c.reply(r, 500, f"huge line ({attempt}): refused once it ends", "5.5.2")
        c.info(f"8 MiB line: RSS grew by {grown} KiB")
        c.check(grown < 1024, "huge line: RSS grew by less than 1 MiB", f"{grown} KiB")
        line = b"y" * 998 + b"\r\n"
        block = line * 64
        # The first pass may grow the session's body buffer up to the 1 MiB limit (kept for
        # reuse); the second is measured.
        for attempt in ("warm-up", "measured"):
            c.reply(cl.cmd("MAIL FROM:<h@huge.test>"), 250, f"endless DATA ({attempt}): MAIL")
            c.reply(cl.cmd("RCPT TO:<r@example.net>"), 250, f"endless DATA ({attempt}): RCPT")
            c.reply(cl.cmd("DATA"), 354, f"endless DATA ({attempt}): DATA")
            before = rss_kib(pid)
            for _ in range(1024):  # 64 MiB of content
                cl.send(block)
            r = cl.cmd(b".\r\n", timeout=60)
            grown = rss_kib(pid) - before
            c.reply(r, 552, f"endless DATA ({attempt}): refused at the end", "5.3.4")
        c.info(f"64 MiB DATA against a 1 MiB limit: RSS grew by {grown} KiB")
        c.check(grown < 2048, "endless DATA: RSS grew by less than 2 MiB (limit 1 MiB)", f"{grown} KiB")
        c.reply(cl.cmd("QUIT"), 221, "huge inputs: the session goes on to QUIT")
    c.check(relay.stop() == 0, "huge inputs: graceful stop exits 0")


def scenario(c):
    binary = harness.ringrelay_path()
    slow_clients(c, binary)
    idle_connections(c, binary)
    huge_inputs(c, binary)


if __name__ == "__main__":
    harness.run("abuse", scenario)
