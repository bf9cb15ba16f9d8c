#!/usr/bin/env python3
# tests/integration/pipelining_test.py: PIPELINING (RFC 2920) over a raw socket.
# The client writes whole command groups at once, as RFC 2920 §3.1 allows: EHLO alone (it is
# a synchronisation point), then MAIL RCPT RCPT RCPT DATA in one write; then body, '.', a
# second envelope ending in DATA in one write; then its body, '.' and QUIT. It checks that
# exactly one reply per command comes back, in order, with the right codes: no reply lost,
# doubled or reordered, and no command swallowed into a body or the other way round. Then a
# group with a refused RCPT in the middle, and a transaction dribbled one byte per write.
# Commands pipelined past a synchronisation point (after EHLO, after DATA, after NOOP) get
# 554 5.5.0 and the connection is closed, with nothing executed or queued from them.
# The spool must hold exactly the acknowledged messages, byte for byte.
import socket

import harness
from harness import queued_id, text_of


def expect_sequence(c, client, label, expected):
    """Reads len(expected) replies; expected is a list of (code, enhanced-or-None, name)."""
    got = []
    for code, enhanced, name in expected:
        r = client.reply()
        got.append(r)
        c.reply(r, code, f"{label}: reply to {name}", enhanced)
    return got


def scenario(c):
    binary = harness.ringrelay_path()
    relay = harness.Relay(binary, shards=2).start()
    acked = {}

    body1 = b"Subject: pipelined 1\r\n\r\nfirst body\r\n..stuffed line\r\n"
    body1_unstuffed = b"Subject: pipelined 1\r\n\r\nfirst body\r\n.stuffed line\r\n"
    body2 = b"Subject: pipelined 2\r\n\r\nsecond body\r\n"

    with relay.connect() as cl:
        c.reply(cl.reply(), 220, "banner")
        ehlo = cl.cmd("EHLO pipe.test")
        c.reply(ehlo, 250, "EHLO")
        batch1 = (b"MAIL FROM:<p@example.org>\r\n"
                  b"RCPT TO:<r1@example.net>\r\n"
                  b"RCPT TO:<r2@example.net>\r\n"
                  b"RCPT TO:<r3@example.net>\r\n"
                  b"DATA\r\n")
        cl.send(batch1)
        expect_sequence(c, cl, "batch 1", [
            (250, "2.1.0", "MAIL"), (250, "2.1.5", "RCPT 1"),
            (250, "2.1.5", "RCPT 2"), (250, "2.1.5", "RCPT 3"), (354, None, "DATA")])
        c.check(any("PIPELINING" in l for l in ehlo[1]), "EHLO advertises PIPELINING", text_of(ehlo))
        # Nothing more may come before the body is sent (a doubled reply would show here).
        c.check(not cl.buf, "batch 1: no reply beyond the five expected", repr(cl.buf))

        batch2 = (body1 + b".\r\n"
                  b"MAIL FROM:<p2@example.org>\r\n"
                  b"RCPT TO:<s1@example.net>\r\n"
                  b"DATA\r\n")
        cl.send(batch2)
        replies = expect_sequence(c, cl, "batch 2", [
            (250, "2.0.0", "end of data 1"), (250, "2.1.0", "MAIL"), (250, "2.1.5", "RCPT"),
            (354, None, "DATA")])
        cl.send(body2 + b".\r\nQUIT\r\n")
        replies += expect_sequence(c, cl, "batch 3", [(250, "2.0.0", "end of data 2"), (221, "2.0.0", "QUIT")])
        id1, id2 = queued_id(text_of(replies[0])), queued_id(text_of(replies[4]))
        c.check(id1 and id2 and id1 != id2, "two distinct queue ids", (id1, id2))
        if id1:
            acked[id1] = (body1_unstuffed, [b"r1@example.net", b"r2@example.net", b"r3@example.net"])
        if id2:
            acked[id2] = (body2, [b"s1@example.net"])
        c.check(cl.closed_by_peer(harness.IO_TIMEOUT), "connection closed after 221")
        c.check(cl.buf == b"", "no reply beyond the two expected after batch 3", repr(cl.buf))

    # A group with a refused RCPT in the middle: DATA still goes ahead for the good ones.
    with relay.connect() as cl:
        c.reply(cl.reply(), 220, "mixed: banner")
        c.reply(cl.cmd("EHLO pipe.test"), 250, "mixed: EHLO")
        cl.send(b"MAIL FROM:<m@example.org>\r\nRCPT TO:<bad address\r\n"
                b"RCPT TO:<good@example.net>\r\nDATA\r\n")
        expect_sequence(c, cl, "mixed", [(250, "2.1.0", "MAIL")])
        r = cl.reply()
        c.check(500 <= r[0] < 600, "mixed: malformed RCPT refused with 5xx", text_of(r))
        expect_sequence(c, cl, "mixed", [(250, "2.1.5", "good RCPT"), (354, None, "DATA")])
        body3 = b"Subject: mixed\r\n\r\nto the good one only\r\n"
        r = cl.cmd(body3 + b".\r\n")
        id3 = queued_id(text_of(r))
        c.check(r[0] == 250 and id3, "mixed: queued", text_of(r))
        if id3:
            acked[id3] = (body3, [b"good@example.net"])
        # All recipients refused: DATA must be refused and the lines after it read as commands.
        cl.send(b"MAIL FROM:<m@example.org>\r\nRCPT TO:<bad address\r\nDATA\r\n")
        expect_sequence(c, cl, "no valid rcpt", [(250, "2.1.0", "MAIL")])
        r = cl.reply()
        c.check(500 <= r[0] < 600, "no valid rcpt: RCPT refused", text_of(r))
        r = cl.reply()
        c.check(500 <= r[0] < 600 and r[0] != 354, "no valid rcpt: DATA refused with 5xx (not 354)", text_of(r))
        c.reply(cl.cmd("NOOP"), 250, "no valid rcpt: the next line is a command", "2.0.0")
        c.reply(cl.cmd("QUIT"), 221, "mixed: QUIT")

    # Past a synchronisation point: each case in one write, on a fresh connection.
    for label, group in (
            ("MAIL after EHLO", b"EHLO sync.test\r\nMAIL FROM:<x@example.org>\r\n"),
            ("body after DATA before 354", b"MAIL FROM:<x@example.org>\r\nRCPT TO:<y@example.net>\r\n"
                                           b"DATA\r\nSubject: smuggled\r\n\r\nbody\r\n.\r\n"),
            ("command after NOOP", b"NOOP\r\nRSET\r\n")):
        with relay.connect() as cl:
            c.reply(cl.reply(), 220, f"sync {label}: banner")
            if not group.startswith(b"EHLO"):
                c.reply(cl.cmd("EHLO sync.test"), 250, f"sync {label}: EHLO")
            cl.send(group)
            codes = []
            try:
                while True:
                    r = cl.reply()
                    codes.append(r[0])
                    if r[0] == 554:
                        c.check("5.5.0" in text_of(r), f"sync {label}: 554 5.5.0", text_of(r))
                        break
            except (EOFError, OSError) as e:
                codes.append(repr(e))
            c.check(codes and codes[-1] == 554 and 354 not in codes, f"sync {label}: refused, never 354", codes)
            c.check(cl.closed_by_peer(harness.IO_TIMEOUT), f"sync {label}: connection closed")

    # One transaction dribbled a byte per write: TCP may split anywhere.
    with relay.connect() as cl:
        cl.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        c.reply(cl.reply(), 220, "dribble: banner")
        body4 = b"Subject: dribbled\r\n\r\none byte at a time\r\n.. and a stuffed dot\r\n"
        for i, ch in enumerate(b"EHLO drip.test\r\n"):
            cl.send(bytes([ch]))
        expect_sequence(c, cl, "dribble", [(250, None, "EHLO")])
        stream = (b"MAIL FROM:<d@example.org>\r\nRCPT TO:<d@example.net>\r\nDATA\r\n")
        for i in range(len(stream)):
            cl.send(stream[i:i + 1])
        expect_sequence(c, cl, "dribble", [(250, "2.1.0", "MAIL"), (250, "2.1.5", "RCPT"), (354, None, "DATA")])
        tail = body4 + b".\r\nQUIT\r\n"
        for i in range(len(tail)):
            cl.send(tail[i:i + 1])
        r4, _ = expect_sequence(c, cl, "dribble", [(250, "2.0.0", "end of data"), (221, "2.0.0", "QUIT")])
        id4 = queued_id(text_of(r4))
        if id4:
            acked[id4] = (b"Subject: dribbled\r\n\r\none byte at a time\r\n. and a stuffed dot\r\n",
                          [b"d@example.net"])

    rc = relay.stop()
    c.check(rc == 0, "graceful stop exits 0", f"status {rc}")
    count, ids, _ = harness.list_spool(binary, relay.spool)
    c.check(count == len(acked) and set(ids) == set(acked), f"spool holds exactly the {len(acked)} acked messages",
            f"count {count}, ids {ids}, acked {list(acked)}")
    log_ids = [r.get("queue_id") for r in relay.reception_log()]
    c.check(sorted(log_ids) == sorted(acked), "one Reception log line per acked message", log_ids)
    records = harness.read_spool(relay.spool)
    for qid, (body, rcpts) in acked.items():
        rec = records.get(qid)
        c.check(rec is not None and harness.strip_received(rec.message) == body and rec.rcpts == rcpts,
                f"{qid}: spooled body and recipients are what was sent",
                rec and (rec.message[-70:], rec.rcpts))


if __name__ == "__main__":
    harness.run("pipelining", scenario)
