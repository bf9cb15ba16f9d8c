#!/usr/bin/env python3
# tests/integration/limits_test.py: --max-connections and --max-connections-per-ip (issue 6).
# Two shards, so the counts must be shared across shards (SO_REUSEPORT spreads the
# connections). Clients bind distinct loopback sources (127.0.0.1, .2, ...) to be distinct
# addresses. Above a limit the new connection gets "421 4.7.0" as its greeting and is
# closed; connections already admitted keep working; a closed connection frees its place.
import time

import harness

BOUND = 30.0


def connect_from(relay, source):
    host, port = relay.address()
    return harness.RawClient(host, port, source=source)


def greeting(cl):
    try:
        return cl.reply(timeout=BOUND)
    except Exception as e:  # noqa: BLE001
        return (0, [f"no greeting: {e!r}"])


def scenario(c):
    binary = harness.ringrelay_path()
    relay = harness.Relay(binary, shards=2, flags=["--max-connections", "4", "--max-connections-per-ip", "2"])
    relay.start()

    a1 = connect_from(relay, "127.0.0.1")
    a2 = connect_from(relay, "127.0.0.1")
    c.reply(greeting(a1), 220, "first connection from 127.0.0.1 is greeted")
    c.reply(greeting(a2), 220, "second connection from 127.0.0.1 is greeted")
    a3 = connect_from(relay, "127.0.0.1")
    c.reply(greeting(a3), 421, "third connection from 127.0.0.1 (per-IP limit 2)", "4.7.0")
    c.check(a3.closed_by_peer(BOUND), "the refused connection is closed")
    a3.close()

    b1 = connect_from(relay, "127.0.0.2")
    b2 = connect_from(relay, "127.0.0.3")
    c.reply(greeting(b1), 220, "a connection from 127.0.0.2 is greeted (its own per-IP count)")
    c.reply(greeting(b2), 220, "a connection from 127.0.0.3 is greeted (4 of 4)")
    b3 = connect_from(relay, "127.0.0.4")
    c.reply(greeting(b3), 421, "a fifth connection from a new address (total limit 4)", "4.7.0")
    c.check(b3.closed_by_peer(BOUND), "the refused connection is closed")
    b3.close()

    # Admitted connections are unaffected: a whole transaction on one of them.
    c.reply(a1.cmd("EHLO limits.test"), 250, "admitted session: EHLO")
    c.reply(a1.cmd("MAIL FROM:<a@limits.test>"), 250, "admitted session: MAIL")
    c.reply(a1.cmd("RCPT TO:<b@example.org>"), 250, "admitted session: RCPT")
    c.reply(a1.cmd("DATA"), 354, "admitted session: DATA")
    c.reply(a1.cmd("Subject: limits\r\n\r\nbody\r\n."), 250, "admitted session: message queued")
    c.reply(a1.cmd("QUIT"), 221, "admitted session: QUIT")
    a1.close()

    # The place a1 held comes free (the count is released once the connection is gone).
    got = None
    deadline = time.monotonic() + BOUND
    while time.monotonic() < deadline:
        again = connect_from(relay, "127.0.0.1")
        got = greeting(again)
        if got[0] == 220:
            c.reply(again.cmd("QUIT"), 221, "the re-admitted connection works")
            again.close()
            break
        again.close()
        time.sleep(0.2)
    c.reply(got, 220, "after one connection from 127.0.0.1 closed, a new one is greeted")

    for cl in (a2, b1, b2):
        cl.close()
    c.check("refusing connections" in relay.stderr(), "refusals are reported on stderr",
            relay.stderr()[-500:])
    c.check(relay.stop() == 0, "graceful stop exits 0")


if __name__ == "__main__":
    harness.run("limits", scenario)
