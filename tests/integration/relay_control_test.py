#!/usr/bin/env python3
# tests/integration/relay_control_test.py: who may relay where (RFC 5321 §3.9, §3.6.1;
# Postfix permit_mynetworks + permit_auth_destination with allow_untrusted_routing = no).
# With loopback untrusted (--relay-networks '') and --relay-domains example.org, only plain
# mailboxes in example.org are accepted; a foreign domain and every form of sender-specified
# routing hidden behind example.org ('%', '!', a quoted local part holding '@', a source
# route whose final mailbox is foreign) get 554 5.7.1. With the default networks, loopback
# (IPv4 and IPv6) is trusted and may relay anywhere. Accepted mail keeps only the accepted
# recipients.
import harness
from harness import queued_id, text_of

DENIED = [
    ("foreign domain", "<user@other.net>"),
    ("percent hack", "<user%other.net@example.org>"),
    ("bang path", "<other.net!user@example.org>"),
    ("quoted local part with @", '<"user@other.net"@example.org>'),
    ("source route to a foreign mailbox", "<@example.org:user@other.net>"),
    ("subdomain of a relay domain (no leading-dot entry)", "<user@sub.example.org>"),
    ("address literal", "<user@[127.0.0.1]>"),
    ("domain that only ends like a relay domain", "<user@evilexample.org>"),
]
PERMITTED = [
    ("relay domain", "<user@example.org>", b"user@example.org"),
    ("relay domain, other case", "<Other.User@EXAMPLE.ORG>", b"Other.User@EXAMPLE.ORG"),
]


def untrusted(c, binary):
    relay = harness.Relay(binary, ["--relay-networks", "", "--relay-domains", "example.org"]).start()
    with relay.connect() as cl:
        c.reply(cl.reply(), 220, "untrusted: banner")
        c.reply(cl.cmd("EHLO outside.test"), 250, "untrusted: EHLO")
        c.reply(cl.cmd("MAIL FROM:<someone@outside.test>"), 250, "untrusted: MAIL")
        for what, path in DENIED:
            r = cl.cmd(f"RCPT TO:{path}")
            c.reply(r, 554, f"untrusted: RCPT {path} ({what})", "5.7.1")
        good = []
        for what, path, stored in PERMITTED:
            c.reply(cl.cmd(f"RCPT TO:{path}"), 250, f"untrusted: RCPT {path} ({what})", "2.1.5")
            good.append(stored)
        c.reply(cl.cmd("DATA"), 354, "untrusted: DATA with the permitted recipients")
        r = cl.cmd(b"Subject: inbound\r\n\r\nfor example.org only\r\n.\r\n")
        qid = queued_id(text_of(r))
        c.check(r[0] == 250 and qid, "untrusted: message to example.org queued", text_of(r))
        # A transaction with only denied recipients cannot reach DATA.
        c.reply(cl.cmd("MAIL FROM:<someone@outside.test>"), 250, "untrusted: second MAIL")
        c.reply(cl.cmd("RCPT TO:<victim@other.net>"), 554, "untrusted: second RCPT foreign", "5.7.1")
        r = cl.cmd("DATA")
        c.check(500 <= r[0] < 600, "untrusted: DATA with no accepted recipient is refused (5xx)", text_of(r))
        c.reply(cl.cmd("QUIT"), 221, "untrusted: QUIT")
    rc = relay.stop()
    c.check(rc == 0, "untrusted: graceful stop exits 0", f"status {rc}")
    records = harness.read_spool(relay.spool)
    c.check(list(records) == [qid], "untrusted: spool holds exactly the one accepted message", list(records))
    if qid in records:
        c.check(records[qid].rcpts == good, "untrusted: only the permitted recipients were spooled",
                records[qid].rcpts)


def trusted(c, binary):
    families = [(0, "IPv4")]
    listen = ["127.0.0.1:0"]
    if harness.ipv6_loopback_available():
        families.append((1, "IPv6"))
        listen.append("[::1]:0")
    else:
        c.info("no IPv6 loopback here: ::1 not tested")
    relay = harness.Relay(binary, listen=listen).start()
    for ep, label in families:
        with relay.connect(endpoint=ep) as cl:
            c.reply(cl.reply(), 220, f"trusted {label}: banner")
            c.reply(cl.cmd("EHLO inside.test"), 250, f"trusted {label}: EHLO")
            c.reply(cl.cmd("MAIL FROM:<someone@inside.test>"), 250, f"trusted {label}: MAIL")
            c.reply(cl.cmd("RCPT TO:<user@other.net>"), 250, f"trusted {label}: foreign domain accepted", "2.1.5")
            c.reply(cl.cmd("DATA"), 354, f"trusted {label}: DATA")
            r = cl.cmd(b"Subject: outbound\r\n\r\nto the world\r\n.\r\n")
            c.check(r[0] == 250 and queued_id(text_of(r)), f"trusted {label}: relayed message queued", text_of(r))
            cl.cmd("QUIT")
    c.check(relay.stop() == 0, "trusted: graceful stop exits 0")
    c.check(len(harness.read_spool(relay.spool)) == len(families), "trusted: every relayed message spooled")


def scenario(c):
    binary = harness.ringrelay_path()
    untrusted(c, binary)
    trusted(c, binary)


if __name__ == "__main__":
    harness.run("relay_control", scenario)
