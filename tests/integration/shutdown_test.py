#!/usr/bin/env python3
# tests/integration/shutdown_test.py: SIGTERM behaviour of the daemon.
# 1. Graceful stop: a client inside DATA (354 received, half the body sent) when SIGTERM
#    arrives may finish and gets 250; an idle client gets "421 4.3.2 ... Service shutting
#    down" and is closed; new connections are refused; the process exits 0; the finished
#    message is in the spool.
# 2. Grace period: a transaction that does not finish within --shutdown-timeout is closed
#    and the process still exits 0, with nothing half-written queued.
# 3. A second SIGTERM exits at once with status 1; mail acknowledged before it is on disk.
import signal
import socket
import time

import harness
from harness import queued_id, text_of

BOUND = 30.0


def wait_stderr(relay, text, timeout=BOUND):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if text in relay.stderr():
            return True
        time.sleep(0.05)
    return False


def start_transaction(c, relay, label):
    cl = relay.connect()
    c.reply(cl.reply(), 220, f"{label}: banner")
    c.reply(cl.cmd("EHLO busy.test"), 250, f"{label}: EHLO")
    c.reply(cl.cmd("MAIL FROM:<busy@example.org>"), 250, f"{label}: MAIL")
    c.reply(cl.cmd("RCPT TO:<b@example.net>"), 250, f"{label}: RCPT")
    c.reply(cl.cmd("DATA"), 354, f"{label}: DATA")
    return cl


def connect_after_stop(host, port):
    """'refused' if the connect fails, else what the server said first."""
    try:
        s = socket.create_connection((host, port), timeout=5)
    except (ConnectionRefusedError, socket.timeout, OSError) as e:
        return "refused", repr(e)
    try:
        s.settimeout(5)
        data = s.recv(512)
        return ("closed" if not data else "answered"), data
    except OSError as e:
        return "closed", repr(e)
    finally:
        s.close()


def graceful(c, binary):
    # 4 shards for 2 clients: some shard surely has no connection when SIGTERM arrives (a
    # shard with nothing to drain must still close its listener before it stops).
    relay = harness.Relay(binary, ["--shutdown-timeout", "20"], shards=4).start()
    host, port = relay.address()
    busy = start_transaction(c, relay, "graceful")
    first_half = b"Subject: finishing after SIGTERM\r\n\r\nfirst half of the body\r\n"
    second_half = b"second half, sent after SIGTERM\r\n"
    busy.send(first_half)

    idle = relay.connect()
    c.reply(idle.reply(), 220, "idle: banner")
    c.reply(idle.cmd("EHLO idle.test"), 250, "idle: EHLO")

    relay.signal(signal.SIGTERM)
    c.check(wait_stderr(relay, "stopping"), "daemon logs that it is stopping")
    try:
        r = idle.reply(timeout=BOUND)
    except Exception as e:  # noqa: BLE001
        r = (0, [repr(e)])
    c.reply(r, 421, "idle client is told", "4.3.2", contains="shutting down")
    c.check(idle.closed_by_peer(BOUND), "idle client is disconnected")
    idle.close()

    c.check(relay.running(), "daemon waits while a transaction is in progress")
    outcome, detail = connect_after_stop(host, port)
    c.check(outcome != "answered" or not detail.startswith(b"220"),
            "a new connection after SIGTERM gets no 220 banner", f"{outcome}: {detail!r}")
    c.check(outcome == "refused", "a new connection after SIGTERM is refused", f"{outcome}: {detail!r}")

    busy.send(second_half)
    r = busy.cmd(b".\r\n")
    qid = queued_id(text_of(r))
    c.check(r[0] == 250 and qid, "client inside DATA finishes and gets 250 queued as <ID>", text_of(r))
    try:
        r = busy.cmd("QUIT")
        c.check(r[0] in (221, 421), "after its transaction the client is let go (221/421)", text_of(r))
    except (EOFError, ConnectionResetError, BrokenPipeError):
        c.check(True, "after its transaction the client is let go (closed)")
    c.check(busy.closed_by_peer(BOUND), "busy client's connection closed")
    busy.close()

    rc = relay.wait(BOUND)
    c.check(rc == 0, "daemon exits 0 once the transaction is done", f"status {rc}")
    count, ids, _ = harness.list_spool(binary, relay.spool)
    c.check(count == 1 and ids == [qid], "the finished message is in the spool", (count, ids))
    rec = harness.read_spool(relay.spool).get(qid)
    c.check(rec is not None and harness.strip_received(rec.message) == first_half + second_half,
            "spooled body holds both halves", rec and rec.message[-80:])


def grace_period(c, binary):
    relay = harness.Relay(binary, ["--shutdown-timeout", "2"]).start()
    stuck = start_transaction(c, relay, "stuck")
    stuck.send(b"Subject: never finished\r\n\r\nthis client stops talking")
    t0 = time.monotonic()
    relay.signal(signal.SIGTERM)
    rc = relay.wait(BOUND)
    c.check(rc == 0, "grace period over: daemon exits 0 anyway", f"status {rc}")
    c.info(f"grace period: exited {time.monotonic() - t0:.2f}s after SIGTERM (--shutdown-timeout 2)")
    c.check(stuck.closed_by_peer(5), "the stuck client's connection is closed")
    stuck.close()
    count, ids, _ = harness.list_spool(binary, relay.spool)
    c.check(count == 0, "the unfinished message is not queued", ids)


def second_signal(c, binary):
    relay = harness.Relay(binary, ["--shutdown-timeout", "60"]).start()
    with relay.connect() as cl:
        cl.reply()
        cl.cmd("EHLO before.test")
        cl.cmd("MAIL FROM:<a@example.org>")
        cl.cmd("RCPT TO:<b@example.net>")
        cl.cmd("DATA")
        r = cl.cmd(b"Subject: acked before the signals\r\n\r\nx\r\n.\r\n")
        acked = queued_id(text_of(r))
        c.check(r[0] == 250 and acked, "message acknowledged before the signals", text_of(r))
    stuck = start_transaction(c, relay, "second signal")
    stuck.send(b"Subject: half\r\n\r\nhalf")
    relay.signal(signal.SIGTERM)
    # Two SIGTERMs sent back to back may merge into one pending signal: wait for the first.
    c.require(wait_stderr(relay, "stopping"), "first SIGTERM taken")
    c.check(relay.running(), "after the first SIGTERM the daemon waits for the open transaction")
    relay.signal(signal.SIGTERM)
    rc = relay.wait(10)
    c.check(rc == 1, "second SIGTERM: exits at once with status 1", f"status {rc}")
    stuck.close()
    count, ids, _ = harness.list_spool(binary, relay.spool)
    c.check(ids == [acked], "mail acknowledged before the second SIGTERM is on disk", (count, ids))


def scenario(c):
    binary = harness.ringrelay_path()
    graceful(c, binary)
    grace_period(c, binary)
    second_signal(c, binary)


if __name__ == "__main__":
    harness.run("shutdown", scenario)
