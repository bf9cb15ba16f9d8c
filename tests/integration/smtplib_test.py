#!/usr/bin/env python3
# tests/integration/smtplib_test.py: Python's smtplib (an independent client) -> ringrelay.
# Checks the EHLO extensions, several messages over one connection, the informational
# commands, dot-stuffing, 8BITMIME and SMTPUTF8 content, BDAT chunks (RFC 3030), the size
# and recipient limits, out-of-sequence and unknown commands; then that the spool
# (--list-spool and the on-disk records) and the delivery log hold exactly the messages that
# got 250, with the bytes that were sent (RFC 5321 §4.5.2 transparency, §6.1 responsibility).
import smtplib

import harness
from harness import queued_id

MAX_SIZE = 100_000
MAX_RCPTS = 5


def scenario(c):
    binary = harness.ringrelay_path()
    relay = harness.Relay(binary, ["--max-message-size", str(MAX_SIZE), "--max-recipients", str(MAX_RCPTS)],
                          shards=2).start()
    host, port = relay.address()
    acked = {}  # queue id -> exact message bytes given to DATA/BDAT (before the Received: header)

    # --- EHLO, several messages over one connection, informational commands ----------------
    s = smtplib.SMTP(host, port, timeout=harness.IO_TIMEOUT)
    code, banner = s.ehlo("client.test")
    c.check(code == 250, "EHLO answers 250", banner)
    for ext in ("pipelining", "size", "enhancedstatuscodes", "8bitmime", "smtputf8", "chunking"):
        c.check(s.has_extn(ext), f"EHLO advertises {ext.upper()}", banner)
    c.check(s.esmtp_features.get("size") == str(MAX_SIZE), f"SIZE advertises --max-message-size {MAX_SIZE}",
            s.esmtp_features.get("size"))

    for i in range(5):
        msg = (f"From: a@example.org\r\nTo: b@example.net\r\nSubject: message {i}\r\n"
               f"Message-ID: <smtplib-{i}@client.test>\r\n\r\nbody of message {i}\r\n").encode()
        c.reply(s.mail("a@example.org"), 250, f"message {i}: MAIL", "2.1.0")
        c.reply(s.rcpt(f"b{i}@example.net"), 250, f"message {i}: RCPT", "2.1.5")
        r = s.data(msg)
        qid = queued_id(r[1])
        c.check(r[0] == 250 and qid is not None, f"message {i}: 250 ... queued as <ID>", r)
        if qid:
            acked[qid] = msg

    c.reply(s.rset(), 250, "RSET", "2.0.0")
    c.reply(s.noop(), 250, "NOOP", "2.0.0")
    c.reply(s.verify("postmaster"), 252, "VRFY", "2.0.0")
    c.reply(s.docmd("HELP"), 214, "HELP", "2.0.0")
    c.reply(s.docmd("RSET"), 250, "RSET again (no transaction)", "2.0.0")

    # --- transparency: lines beginning with '.' (smtplib dot-stuffs them) -------------------
    dotted = (b"Subject: dots\r\n\r\n.leading dot\r\n..two dots\r\n.\r\n\r\n. \r\n"
              b"...\r\nlast line\r\n")
    c.reply(s.mail("a@example.org"), 250, "dotted: MAIL")
    c.reply(s.rcpt("b@example.net"), 250, "dotted: RCPT")
    r = s.data(dotted)
    qid = queued_id(r[1])
    c.check(r[0] == 250 and qid, "dotted: queued", r)
    if qid:
        acked[qid] = dotted

    # --- 8BITMIME body ---------------------------------------------------------------------
    eight = ("Subject: 8bit\r\nContent-Type: text/plain; charset=utf-8\r\n"
             "Content-Transfer-Encoding: 8bit\r\n\r\nGrüße aus Köln, ½ € ☃\r\n").encode("utf-8")
    c.reply(s.mail("a@example.org", ["BODY=8BITMIME"]), 250, "8bit: MAIL BODY=8BITMIME")
    c.reply(s.rcpt("b@example.net"), 250, "8bit: RCPT")
    r = s.data(eight)
    qid8 = queued_id(r[1])
    c.check(r[0] == 250 and qid8, "8bit: queued", r)
    if qid8:
        acked[qid8] = eight

    # --- SMTPUTF8 sender and recipient (RFC 6531) ---------------------------------------------
    s.command_encoding = "utf-8"
    c.reply(s.mail("jörg@bücher.example", ["SMTPUTF8", "BODY=8BITMIME"]), 250, "utf8: MAIL ... SMTPUTF8")
    c.reply(s.rcpt("δοκιμή@παράδειγμα.example"), 250, "utf8: RCPT with a UTF-8 address")
    utf8 = "Subject: =?utf-8?q?x?=\r\nFrom: jörg@bücher.example\r\n\r\nhallo\r\n".encode("utf-8")
    r = s.data(utf8)
    qidu = queued_id(r[1])
    c.check(r[0] == 250 and qidu, "utf8: queued", r)
    if qidu:
        acked[qidu] = utf8
    s.command_encoding = "ascii"
    c.reply(s.quit(), 221, "QUIT", "2.0.0")

    # --- BDAT (RFC 3030), raw: three chunks, the last one LAST, dots not special -------------
    with relay.connect() as raw:
        c.reply(raw.reply(), 220, "BDAT: banner")
        c.reply(raw.cmd("EHLO bdat.test"), 250, "BDAT: EHLO")
        c.reply(raw.cmd("MAIL FROM:<bdat@example.org>"), 250, "BDAT: MAIL")
        c.reply(raw.cmd("RCPT TO:<x@example.net>"), 250, "BDAT: RCPT")
        chunks = [b"Subject: bdat\r\n\r\nfirst chunk, then a lone dot line:\r\n.\r\n",
                  b"second chunk splits a li",
                  b"ne; third is LAST\r\n..not unstuffed\r\n"]
        c.reply(raw.cmd(b"BDAT %d\r\n" % len(chunks[0]) + chunks[0]), 250, "BDAT chunk 1", "2.0.0")
        c.reply(raw.cmd(b"BDAT %d\r\n" % len(chunks[1]) + chunks[1]), 250, "BDAT chunk 2", "2.0.0")
        r = raw.cmd(b"BDAT %d LAST\r\n" % len(chunks[2]) + chunks[2])
        qidb = queued_id(harness.text_of(r))
        c.check(r[0] == 250 and qidb, "BDAT LAST: 250 queued as <ID>", harness.text_of(r))
        if qidb:
            acked[qidb] = b"".join(chunks)
        # BDAT 0 LAST on a fresh transaction ends it with what came before (here: one chunk).
        c.reply(raw.cmd("MAIL FROM:<bdat@example.org>"), 250, "BDAT 0 LAST: MAIL")
        c.reply(raw.cmd("RCPT TO:<x@example.net>"), 250, "BDAT 0 LAST: RCPT")
        one = b"Subject: zero last\r\n\r\nbody\r\n"
        c.reply(raw.cmd(b"BDAT %d\r\n" % len(one) + one), 250, "BDAT 0 LAST: chunk")
        r = raw.cmd("BDAT 0 LAST")
        qidz = queued_id(harness.text_of(r))
        c.check(r[0] == 250 and qidz, "BDAT 0 LAST: queued", harness.text_of(r))
        if qidz:
            acked[qidz] = one
        c.reply(raw.cmd("QUIT"), 221, "BDAT: QUIT")

    # --- size limits (RFC 1870) ------------------------------------------------------------
    s = smtplib.SMTP(host, port, timeout=harness.IO_TIMEOUT)
    s.ehlo("size.test")
    c.reply(s.mail("a@example.org", [f"SIZE={MAX_SIZE + 1}"]), 552, "declared SIZE over the limit at MAIL", "5.3.4")
    c.reply(s.rset(), 250, "RSET after refused MAIL")
    c.reply(s.mail("a@example.org", [f"SIZE={MAX_SIZE // 2}"]), 250, "declared SIZE under the limit accepted")
    c.reply(s.rcpt("b@example.net"), 250, "oversize: RCPT")
    big = b"Subject: big\r\n\r\n" + (b"x" * 998 + b"\r\n") * (MAX_SIZE // 1000 + 20)
    try:
        r = s.data(big)
    except smtplib.SMTPDataError as e:  # older smtplib raises on the final reply
        r = (e.smtp_code, e.smtp_error)
    c.reply(r, 552, "actual size over the limit: after the final dot", "5.3.4")
    c.reply(s.noop(), 250, "session usable after 552")
    c.reply(s.quit(), 221, "size: QUIT")

    # --- too many recipients (RFC 5321 §4.5.3.1.8) -------------------------------------------
    s = smtplib.SMTP(host, port, timeout=harness.IO_TIMEOUT)
    s.ehlo("rcpt.test")
    c.reply(s.mail("a@example.org"), 250, "rcpts: MAIL")
    for i in range(MAX_RCPTS):
        c.reply(s.rcpt(f"r{i}@example.net"), 250, f"rcpts: RCPT {i + 1} of {MAX_RCPTS}")
    c.reply(s.rcpt("onetoomany@example.net"), 452, f"RCPT {MAX_RCPTS + 1} over --max-recipients", "4.5.3")
    r = s.data(b"Subject: many\r\n\r\nto the first five\r\n")
    qidr = queued_id(r[1])
    c.check(r[0] == 250 and qidr, "message still goes to the accepted recipients", r)
    if qidr:
        acked[qidr] = b"Subject: many\r\n\r\nto the first five\r\n"
    s.quit()

    # --- out of sequence and unknown commands -------------------------------------------------
    s = smtplib.SMTP(host, port, timeout=harness.IO_TIMEOUT)
    c.reply(s.docmd("MAIL FROM:<a@example.org>"), 503, "MAIL before EHLO", "5.5.1")
    s.ehlo("seq.test")
    c.reply(s.rcpt("b@example.net"), 503, "RCPT before MAIL", "5.5.1")
    c.reply(s.docmd("DATA"), 503, "DATA before MAIL", "5.5.1")
    c.reply(s.mail("a@example.org"), 250, "seq: MAIL")
    c.reply(s.mail("a@example.org"), 503, "nested MAIL", "5.5.1")
    c.reply(s.docmd("DATA"), 503, "DATA before any accepted RCPT", "5.5.1")
    # RFC 3030 §2: a refused BDAT's chunk is still read (and discarded), so the NOOP after it
    # must be seen as a command of its own.
    s.send(b"BDAT 3 LAST\r\nxyz")
    c.reply(s.getreply(), 503, "BDAT before any accepted RCPT", "5.5.1")
    c.reply(s.noop(), 250, "refused BDAT's chunk was discarded, not parsed as a command")
    c.reply(s.docmd("FROBNICATE now"), 500, "unknown command", "5.5.2")
    c.reply(s.rset(), 250, "seq: RSET")
    c.reply(s.docmd("MAIL FROM:<a@example.org> NOSUCHPARAM=1"), 555, "MAIL with an unknown parameter", "5.5.4")
    c.reply(s.noop(), 250, "session usable after errors")
    s.quit()

    # --- what was made durable ---------------------------------------------------------------
    rc = relay.stop()
    c.check(rc == 0, "graceful stop exits 0", f"status {rc}")
    count, ids, err = harness.list_spool(binary, relay.spool)
    c.check(count == len(acked), f"--list-spool counts {len(acked)} messages", f"got {count}")
    c.check(set(ids) == set(acked), "--list-spool ids are exactly the 250 ids",
            f"missing {set(acked) - set(ids)}, extra {set(ids) - set(acked)}")
    c.check(err.strip() == "", "--list-spool reports no spool problems", err)

    log = relay.reception_log()
    c.check(len(log) == len(acked), f"delivery log has {len(acked)} Reception lines", f"got {len(log)}")
    c.check({r.get("queue_id") for r in log} == set(acked), "Reception queue_ids are exactly the 250 ids")

    records = harness.read_spool(relay.spool)
    for qid, sent in acked.items():
        rec = records.get(qid)
        if not c.check(rec is not None, f"{qid}: record readable with a valid checksum"):
            continue
        msg = rec.message
        # The relay prepends its Received: header; what follows must be exactly what was sent.
        c.check(harness.strip_received(msg) == sent,
                f"{qid}: spooled bytes = Received: header + the {len(sent)} bytes sent",
                f"tail {msg[-80:]!r}")
    if qid8 in records:
        c.check(records[qid8].body_8bit == 1, "8bit: envelope records BODY=8BITMIME")
    if qidu in records:
        r = records[qidu]
        c.check(r.smtputf8 == 1 and r.mail_from == "jörg@bücher.example".encode(),
                "utf8: envelope records SMTPUTF8 and the UTF-8 sender", (r.smtputf8, r.mail_from))
        c.check(r.rcpts == ["δοκιμή@παράδειγμα.example".encode()], "utf8: UTF-8 recipient kept", r.rcpts)
    if qidr in records:
        c.check(len(records[qidr].rcpts) == MAX_RCPTS, f"rcpts: envelope holds {MAX_RCPTS} recipients",
                len(records[qidr].rcpts))


if __name__ == "__main__":
    harness.run("smtplib", scenario)
