#!/usr/bin/env python3
# tests/integration/timeout_test.py: session limits (RFC 5321 §4.5.3.2; Postfix
# smtpd_timeout and smtpd_hard_error_limit).
# --command-timeout 2: a client that goes quiet (at the command prompt, or halfway through
# DATA) gets "421 4.4.2" and the connection is closed, within a generous bound; the half
# message is not queued. A client that keeps talking is not cut off. --max-errors 3: a
# client that keeps sending bad commands gets "421 4.7.0" and is disconnected.
# No test asserts tight timing: only "not before half the timeout" and "within ~15x it".
import threading
import time

import harness

TIMEOUT = 2
BOUND = 30.0  # seconds: how long a 421 may take to arrive on a very slow machine


def expect_timeout(c, cl, label):
    t0 = time.monotonic()
    try:
        r = cl.reply(timeout=BOUND)
    except Exception as e:  # noqa: BLE001
        c.check(False, f"{label}: 421 4.4.2 within {BOUND:.0f}s", repr(e))
        return
    elapsed = time.monotonic() - t0
    c.reply(r, 421, f"{label}: idle client gets", "4.4.2")
    c.check(elapsed >= TIMEOUT / 2, f"{label}: not before half the timeout", f"{elapsed:.2f}s")
    c.check(cl.closed_by_peer(BOUND), f"{label}: connection closed after the 421")
    c.info(f"{label}: 421 after {elapsed:.2f}s (timeout {TIMEOUT}s)")


def keep_talking(relay, result):
    """NOOP every 0.5s for 7s against a 5s timeout; records the replies."""
    try:
        with relay.connect() as cl:
            cl.reply()
            cl.cmd("EHLO busy.test")
            end = time.monotonic() + 7
            codes = []
            while time.monotonic() < end:
                codes.append(cl.cmd("NOOP")[0])
                time.sleep(0.5)
            codes.append(cl.cmd("QUIT")[0])
            result["codes"] = codes
    except Exception as e:  # noqa: BLE001
        result["error"] = repr(e)


def scenario(c):
    binary = harness.ringrelay_path()
    relay = harness.Relay(binary, ["--command-timeout", str(TIMEOUT), "--max-errors", "3"]).start()
    busy_relay = harness.Relay(binary, ["--command-timeout", "5"]).start()
    busy = {}
    busy_thread = threading.Thread(target=keep_talking, args=(busy_relay, busy), daemon=True)
    busy_thread.start()

    # Idle right after the banner.
    with relay.connect() as cl:
        c.reply(cl.reply(), 220, "banner")
        expect_timeout(c, cl, "idle after banner")

    # Idle after a few commands (the timer restarts per command, then still fires).
    with relay.connect() as cl:
        cl.reply()
        c.reply(cl.cmd("EHLO idle.test"), 250, "EHLO")
        c.reply(cl.cmd("MAIL FROM:<a@example.org>"), 250, "MAIL")
        expect_timeout(c, cl, "idle inside a transaction")

    # Idle halfway through DATA: nothing may be queued.
    with relay.connect() as cl:
        cl.reply()
        cl.cmd("EHLO idle.test")
        cl.cmd("MAIL FROM:<half@example.org>")
        cl.cmd("RCPT TO:<b@example.net>")
        c.reply(cl.cmd("DATA"), 354, "DATA")
        cl.send(b"Subject: half\r\n\r\nthis body never ends")
        expect_timeout(c, cl, "idle inside DATA")

    # Too many errors: like Postfix's smtpd_hard_error_limit, the 421 follows the third error
    # reply at once, without waiting for a fourth command.
    with relay.connect() as cl:
        cl.reply()
        c.reply(cl.cmd("EHLO errors.test"), 250, "errors: EHLO")
        for i in range(3):
            c.reply(cl.cmd(f"BOGUS{i}"), 500, f"errors: bad command {i + 1} gets", "5.5.2")
        try:
            r = cl.reply(timeout=BOUND)
        except Exception as e:  # noqa: BLE001
            r = (0, [f"no reply: {e!r}"])
        c.reply(r, 421, "errors: after the third error reply, unprompted", "4.7.0")
        c.check(cl.closed_by_peer(BOUND), "errors: connection closed after 421 4.7.0")

    # A good session on the same relay is unaffected by the others' errors.
    with relay.connect() as cl:
        c.reply(cl.reply(), 220, "fresh session: banner")
        c.reply(cl.cmd("NOOP"), 250, "fresh session: NOOP")
        c.reply(cl.cmd("QUIT"), 221, "fresh session: QUIT")

    busy_thread.join(BOUND)
    c.check(busy.get("codes") and all(x == 250 for x in busy["codes"][:-1]) and busy["codes"][-1] == 221,
            "a client sending NOOP every 0.5s for 7s is not cut off by a 5s timeout", busy)

    c.check(relay.stop() == 0, "graceful stop exits 0")
    c.check(busy_relay.stop() == 0, "busy relay: graceful stop exits 0")
    count, ids, _ = harness.list_spool(binary, relay.spool)
    c.check(count == 0, "nothing queued (the half message was dropped)", ids)


if __name__ == "__main__":
    harness.run("timeout", scenario)
