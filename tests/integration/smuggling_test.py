#!/usr/bin/env python3
# tests/integration/smuggling_test.py: SMTP smuggling (CVE-2023-51764/51765/51766 class).
# A DATA body carries a non-standard end-of-data sequence (bare LF or CR around a dot)
# followed by a whole second transaction. Only CRLF.CRLF ends DATA (RFC 5321 §4.1.1.4); the
# relay must not end DATA at the fake one, must refuse the message with a 5xx at the real
# end (bare CR/LF in data, Postfix-style 554 5.5.2 / 5xx), answer exactly one reply for the
# whole body, and queue nothing: neither the carrier nor the smuggled message. The session
# must still work afterwards. Each variant is sent in one write and split right after the
# fake terminator (TCP may deliver it either way).
import harness
from harness import queued_id, text_of

VARIANTS = {
    "LF.LF": b"\n.\n",
    "CR.CR": b"\r.\r",
    "LF.CRLF": b"\n.\r\n",
    "CRLF.LF": b"\r\n.\n",
    "CR.CRLF": b"\r.\r\n",
    "CRLF.CR": b"\r\n.\r",
    "LF.CR": b"\n.\r",
}

SMUGGLED = (b"MAIL FROM:<evil@smuggler.example>\r\n"
            b"RCPT TO:<victim@example.net>\r\n"
            b"DATA\r\n"
            b"From: ceo@bank.example\r\nSubject: SMUGGLED\r\n\r\nsmuggled body\r\n")


def one_variant(c, relay, name, seq, split):
    label = f"{name} ({'split' if split else 'one write'})"
    acked = []
    with relay.connect() as cl:
        c.reply(cl.reply(), 220, f"{label}: banner")
        c.reply(cl.cmd("EHLO smuggle.test"), 250, f"{label}: EHLO")
        c.reply(cl.cmd("MAIL FROM:<carrier@example.org>"), 250, f"{label}: MAIL")
        c.reply(cl.cmd("RCPT TO:<rcpt@example.net>"), 250, f"{label}: RCPT")
        c.reply(cl.cmd("DATA"), 354, f"{label}: DATA")
        head = b"From: carrier@example.org\r\nSubject: carrier\r\n\r\nhello" + seq
        tail = SMUGGLED + b".\r\n"
        if split:
            cl.send(head)
            # Give the relay a chance to act on the fake terminator on its own; any reply
            # now is already wrong (nothing may be answered before the real end).
            early = cl.closed_by_peer(0.5)
            c.check(not early and cl.buf == b"", f"{label}: no reply and no close at the fake terminator",
                    repr(cl.buf))
            cl.send(tail + b"QUIT\r\n")
        else:
            cl.send(head + tail + b"QUIT\r\n")
        replies = []
        try:
            while len(replies) < 8:
                replies.append(cl.reply())
        except (EOFError, ConnectionResetError):
            pass
        texts = [text_of(r) for r in replies]
        c.info(f"{label}: replies {texts}")
        c.check(len(replies) >= 1 and 500 <= replies[0][0] < 600,
                f"{label}: the real end of data is answered with 5xx", texts)
        c.check(len(replies) == 2 and replies[1][0] in (221, 421),
                f"{label}: exactly one reply for the whole body, then QUIT's", texts)
        for r in replies:
            qid = queued_id(text_of(r))
            if qid:
                acked.append(qid)
        c.check(not acked, f"{label}: nothing acknowledged as queued", texts)
    return acked


def scenario(c):
    binary = harness.ringrelay_path()
    relay = harness.Relay(binary, shards=2).start()
    acked = []
    for name, seq in VARIANTS.items():
        for split in (False, True):
            acked += one_variant(c, relay, name, seq, split)

    # The session is still usable after a refused body, and a clean message gets through.
    with relay.connect() as cl:
        cl.reply()
        cl.cmd("EHLO smuggle.test")
        cl.cmd("MAIL FROM:<carrier@example.org>")
        cl.cmd("RCPT TO:<rcpt@example.net>")
        cl.cmd("DATA")
        r = cl.cmd(b"Subject: x\r\n\r\nbare\nLF\r\n.\r\n")
        c.check(500 <= r[0] < 600, "bare LF inside a line: 5xx at the end", text_of(r))
        c.reply(cl.cmd("MAIL FROM:<clean@example.org>"), 250, "after a refused body: new MAIL accepted")
        c.reply(cl.cmd("RCPT TO:<rcpt@example.net>"), 250, "clean: RCPT")
        c.reply(cl.cmd("DATA"), 354, "clean: DATA")
        r = cl.cmd(b"Subject: clean\r\n\r\nclean body\r\n.\r\n")
        clean_id = queued_id(text_of(r))
        c.check(r[0] == 250 and clean_id, "clean message queued", text_of(r))
        cl.cmd("QUIT")

    rc = relay.stop()
    c.check(rc == 0, "graceful stop exits 0", f"status {rc}")
    count, ids, _ = harness.list_spool(binary, relay.spool)
    c.check(count == 1 and ids == [clean_id], "--list-spool holds only the clean message", (count, ids))
    records = harness.read_spool(relay.spool)
    c.check(not any(b"SMUGGLED" in r.message or r.mail_from == b"evil@smuggler.example"
                    for r in records.values()), "no spooled record carries the smuggled transaction")
    log = relay.reception_log()
    c.check([r.get("queue_id") for r in log] == [clean_id], "delivery log: one Reception, the clean message",
            [(r.get("queue_id"), r.get("sender")) for r in log])
    c.check(not any(r.get("sender") == "evil@smuggler.example" for r in log), "delivery log: no smuggled sender")


if __name__ == "__main__":
    harness.run("smuggling", scenario)
