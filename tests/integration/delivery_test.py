#!/usr/bin/env python3
# tests/integration/delivery_test.py: client -> ringrelay -> Postfix's smtp-sink (a real
# next hop, Debian package postfix), static routes / smarthost ("Deliver mail" issue):
# - byte-exact relay (lines starting with '.', 8-bit, a long binary-ish body);
# - connection reuse: many messages, few connections;
# - 4xx then success: a soft-rejecting sink, then a good one on the same port: delivered on
#   retry (--retry-intervals 1s);
# - 5xx: a bounce, and an RFC 3464 DSN from <> delivered to the sender's route;
# - the delivery log has Delivery / TransientFailure / Bounce records;
# - once everything is final the spool's segments are deleted (disk back to baseline).
import glob
import json
import os
import smtplib
import time

import harness

WAIT = 60.0


class Sink:
    """Postfix smtp-sink dumping each transaction to a file in `dir`."""

    def __init__(self, port=None, faults=()):
        self.tool = harness.find_tool("smtp-sink", ["/usr/sbin/smtp-sink"])
        self.dir = harness.temp_dir("rr-sink-")
        os.chmod(self.dir, 0o777)
        self.port = port or harness.free_port()
        args = [self.tool, "-u", "nobody", "-d", os.path.join(self.dir, "%H%M%S.")]
        args += list(faults)
        args += [f"127.0.0.1:{self.port}", "100"]
        self.peer = harness.Peer(args)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                smtplib.SMTP("127.0.0.1", self.port, timeout=2).quit()
                break
            except OSError:
                time.sleep(0.05)

    def stop(self):
        self.peer.stop()

    def messages(self):
        """[(headers dict-of-lists, body bytes as relayed with LF line ends)]"""
        out = []
        for path in sorted(glob.glob(os.path.join(self.dir, "*"))):
            with open(path, "rb") as f:
                data = f.read()
            lines = data.split(b"\n")
            meta = {}
            i = 0
            while i < len(lines) and lines[i].startswith(b"X-"):
                k, _, v = lines[i].partition(b": ")
                meta.setdefault(k.decode(), []).append(v.decode("utf-8", "replace"))
                i += 1
            # smtp-sink's own Received: header (first line + TAB continuations).
            if i < len(lines) and lines[i].startswith(b"Received:"):
                i += 1
                while i < len(lines) and lines[i].startswith(b"\t"):
                    i += 1
            out.append((meta, b"\n".join(lines[i:])))
        return out


def wait_for(pred, what, c, timeout=WAIT):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.1)
    c.check(False, what, f"not within {timeout:.0f}s")
    return False


def log_records(relay, kind):
    out = []
    if not os.path.exists(relay.log_path):
        return out
    with open(relay.log_path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.strip():
                rec = json.loads(line)
                if rec.get("type") == kind:
                    out.append(rec)
    return out


def as_dumped(body):
    """What smtp-sink dumps for a CRLF body it received: unstuffed, LF line ends, and the
    dump adds one empty line at the end."""
    return body.replace(b"\r\n", b"\n") + b"\n"


def segments(spool):
    return sorted(glob.glob(os.path.join(spool, "shard-*", "*.seg")))


def scenario(c):
    binary = harness.ringrelay_path()
    good = Sink()  # raises harness.Skip when smtp-sink is missing
    bad = Sink(faults=["-f", "RCPT"])
    relay = harness.Relay(binary, ["--route", f"bounce.test=127.0.0.1:{bad.port}",
                                   "--smarthost", f"127.0.0.1:{good.port}",
                                   "--retry-intervals", "1s", "--idle-connection-timeout", "2"]).start()

    # 1. Byte-exact relay of awkward bodies, many over one connection.
    bodies = [
        b"Subject: dots\r\n\r\n.leading dot\r\n..two dots\r\n.\r\nend\r\n",
        b"Subject: 8bit\r\n\r\ncaf\xc3\xa9 \xe2\x82\xac\r\n",
        b"Subject: long\r\n\r\n" + b"".join(bytes((33 + (i * 7 + j) % 90) for j in range(76)) + b"\r\n"
                                            for i in range(3000)),
    ] + [b"Subject: plain %d\r\nMessage-ID: <m%d@test>\r\n\r\nbody %d\r\n" % (i, i, i) for i in range(20)]
    s = smtplib.SMTP(relay.host, relay.port, timeout=30)
    s.ehlo("client.test")
    for i, b in enumerate(bodies):
        opts = ["BODY=8BITMIME"] if i == 1 else []
        s.sendmail("sender@example.org", [f"rcpt{i}@example.net"], b, mail_options=opts)
    s.quit()
    # The sink creates its dump file at MAIL and completes it before its 250 to "."; the
    # Delivery record follows that 250, so once all are logged every file is complete.
    wait_for(lambda: len(log_records(relay, "Delivery")) >= len(bodies), "every message is delivered", c)
    got = good.messages()
    c.check(len(got) == len(bodies), "exactly one copy of each message at the sink", f"{len(got)}")
    relayed = {m["X-Rcpt-Args"][0]: body for m, body in got if "X-Rcpt-Args" in m}
    for i, b in enumerate(bodies):
        body = relayed.get(f"<rcpt{i}@example.net>", b"")
        c.check(body.startswith(b"Received: from client.test"), f"message {i}: our Received: header first",
                body[:60])
        c.check(body.endswith(as_dumped(b)), f"message {i}: body relayed byte for byte")
    deliveries = log_records(relay, "Delivery")
    c.check(len(deliveries) == len(bodies), "one Delivery log record per recipient", f"{len(deliveries)}")
    if deliveries:
        d = deliveries[0]
        c.check(all(k in d for k in ("queue_id", "sender", "recipient", "next_hop", "reply", "attempt")),
                "Delivery records carry queue id, sender, recipient, next hop, reply, attempt", d)
        c.check(d["next_hop"]["address"] == f"127.0.0.1:{good.port}", "next hop is the smarthost", d)

    # 2. 5xx at RCPT: bounced, and a DSN goes to the sender (its domain routes to the good sink).
    before = len(good.messages())
    s = smtplib.SMTP(relay.host, relay.port, timeout=30)
    s.sendmail("sender@example.org", ["nobody@bounce.test"],
               b"Subject: will bounce\r\nMessage-ID: <bounce1@test>\r\n\r\nbody\r\n")
    s.quit()
    wait_for(lambda: len(log_records(relay, "Bounce")) >= 1, "a Bounce log record", c)
    wait_for(lambda: any(r["recipient"] == "sender@example.org" for r in log_records(relay, "Delivery")),
             "the DSN reaches the sender's next hop", c)
    dsns = [(m, b) for m, b in good.messages() if m.get("X-Mail-Args") == ["<>"]]
    c.check(len(dsns) == 1, "exactly one DSN, from the null sender", f"{len(dsns)}")
    if dsns:
        m, b = dsns[0]
        c.check(m.get("X-Rcpt-Args") == ["<sender@example.org>"], "the DSN goes to the original sender", m)
        c.check(b"multipart/report" in b and b"report-type=delivery-status" in b, "DSN is multipart/report", b[:300])
        c.check(b"Final-Recipient: rfc822; nobody@bounce.test" in b, "DSN names the failed recipient")
        c.check(b"Action: failed" in b and b"Status: 5." in b, "DSN says failed with a 5.x.x status")
        c.check(b"Message-ID: <bounce1@test>" in b, "DSN carries the original headers")

    # 3. 4xx then success on the same next hop.
    good.stop()
    soft = Sink(port=good.port, faults=["-r", "RCPT"])
    s = smtplib.SMTP(relay.host, relay.port, timeout=30)
    s.sendmail("sender@example.org", ["later@example.net"], b"Subject: retry me\r\nMessage-ID: <retry1@test>\r\n\r\nx\r\n")
    s.quit()
    wait_for(lambda: len(log_records(relay, "TransientFailure")) >= 1, "a TransientFailure record after the 4xx", c)
    soft.stop()
    good2 = Sink(port=good.port)
    wait_for(lambda: any(b"<retry1@test>" in b for _, b in good2.messages()), "delivered on retry after the 4xx", c)
    retried = [r for r in log_records(relay, "Delivery") if r["recipient"] == "later@example.net"]
    c.check(len(retried) == 1 and retried[0]["attempt"] >= 2, "the Delivery record counts the attempts", retried)

    # 4. Everything is final: the spool's old segments are gone (only the open one remains).
    wait_for(lambda: len(segments(relay.spool)) <= 1, "finished segments are deleted", c, timeout=20)
    code = relay.stop()
    c.check(code == 0, "relay stops cleanly", f"exit {code}")
    count, ids, _ = harness.list_spool(binary, relay.spool)
    c.check(count == 0, "nothing left in the spool after delivery", ids)


if __name__ == "__main__":
    harness.run("delivery", scenario)
