#!/usr/bin/env python3
# tests/integration/postmaster_test.py: RFC 5321 §4.5.1: a server MUST accept mail for
# "<Postmaster>" (no domain). ringrelay delivers it, and mail for <postmaster@HOSTNAME>, to
# --postmaster ADDRESS (default postmaster@ the --hostname), routed like any other recipient.
#
#  - an untrusted client (loopback is not in --relay-networks, no --relay-domains) sends to
#    <Postmaster> and <postmaster@HOSTNAME> with Python's smtplib: both 250, both arrive at
#    ringrelay-sink (the --route next hop of the postmaster's domain) addressed to the
#    configured mailbox; a foreign address in the same session is still refused (554 5.7.1);
#  - without --postmaster the mail goes to postmaster@HOSTNAME (a --route for HOSTNAME);
#  - a --postmaster that is no mail address, or a --hostname that makes the default one
#    invalid, stops the start with an error naming the flag.
import os
import smtplib
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from delivery_test import log_records, wait_for  # noqa: E402
from outbound_tls_test import Sink  # noqa: E402

HOST = "mx.pm-test.invalid"
PM = "ops@pm-desk.example"


def recipients(saved):
    out = []
    for msg in saved:
        head = msg.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
        out += [line.split(":", 1)[1].strip() for line in head.split("\r\n") if line.startswith("X-Sink-Rcpt-To:")]
    return out


def start(binary, flags):
    return harness.Relay(binary, ["--relay-networks", "192.0.2.0/24"] + flags, hostname=HOST).start()


def configured(c, binary, sink_bin):
    sink = Sink(sink_bin)
    relay = start(binary, ["--postmaster", PM, "--route", f"pm-desk.example=127.0.0.1:{sink.port}"])
    s = smtplib.SMTP(relay.host, relay.port, timeout=harness.IO_TIMEOUT)
    s.ehlo("client.example")
    c.reply(s.docmd("MAIL", "FROM:<someone@client.example>"), 250, "MAIL from an untrusted client")
    c.reply(s.docmd("RCPT", "TO:<Postmaster>"), 250, "RCPT TO:<Postmaster> without a domain", "2.1.5")
    c.reply(s.docmd("RCPT", "TO:<x@foreign.example>"), 554, "a foreign recipient is still refused", "5.7.1")
    c.reply(s.data(b"Subject: to the postmaster\r\n\r\nhello postmaster\r\n"), 250, "message to <Postmaster>")
    c.reply(s.docmd("MAIL", "FROM:<someone@client.example>"), 250, "second MAIL")
    c.reply(s.docmd("RCPT", f"TO:<PostMaster@{HOST.upper()}>"), 250, "RCPT TO:<postmaster@HOSTNAME>, any case")
    c.reply(s.data(b"Subject: to postmaster@host\r\n\r\nhello again\r\n"), 250, "message to <postmaster@HOSTNAME>")
    s.quit()
    wait_for(lambda: len(sink.saved()) >= 2, "both postmaster messages reach the next hop", c)
    got = recipients(sink.saved())
    c.check(got == [f"<{PM}>", f"<{PM}>"], f"the next hop gets both for <{PM}>", got)
    bodies = b"".join(sink.saved())
    c.check(b"hello postmaster" in bodies and b"hello again" in bodies, "both bodies arrive", len(bodies))
    # The sink saves a message before its 250 reaches the relay, which journals and logs the
    # outcome after that: wait for both Delivery records, not just the saved files.
    wait_for(lambda: len(log_records(relay, "Delivery")) >= 2, "both deliveries are logged", c)
    rcpts = [r.get("recipient") for r in log_records(relay, "Delivery")]
    c.check(rcpts == [PM, PM], "the delivery log records the postmaster's mailbox", rcpts)
    c.check(relay.stop() == 0, "the relay stops cleanly")
    sink.stop()


def default_address(c, binary, sink_bin):
    sink = Sink(sink_bin)
    relay = start(binary, ["--route", f"{HOST}=127.0.0.1:{sink.port}"])
    s = smtplib.SMTP(relay.host, relay.port, timeout=harness.IO_TIMEOUT)
    s.ehlo("client.example")
    refused = s.sendmail("someone@client.example", ["postmaster"], b"Subject: default\r\n\r\ndefault postmaster\r\n")
    s.quit()
    c.check(refused == {}, "smtplib sends to 'postmaster' without a domain", refused)
    wait_for(lambda: len(sink.saved()) >= 1, "the message reaches the hostname's next hop", c)
    got = recipients(sink.saved())
    c.check(got == [f"<postmaster@{HOST}>"], "without --postmaster it goes to postmaster@HOSTNAME", got)
    c.check(relay.stop() == 0, "the relay stops cleanly")
    sink.stop()


def refused_at_start(c, binary):
    work = harness.temp_dir("rr-pm-bad-")
    cases = [(["--postmaster", "not an address", "--hostname", HOST], "'not an address' is not a valid mail address"),
             (["--postmaster", "postmaster", "--hostname", HOST], "'postmaster' is not a valid mail address"),
             (["--hostname", "host_with_underscore"], "give --postmaster ADDRESS or a --hostname")]
    for flags, wanted in cases:
        r = subprocess.run([binary, "--spool", os.path.join(work, "spool"), "--listen", "127.0.0.1:0", "--log", ""]
                           + flags, capture_output=True, text=True, timeout=30)
        c.check(r.returncode != 0 and "--postmaster" in r.stderr and wanted in r.stderr,
                f"{' '.join(flags)}: the start stops with an error naming --postmaster",
                f"exit {r.returncode}: {r.stderr.strip()[-300:]}")


def scenario(c):
    binary = sys.argv[1] if len(sys.argv) > 1 else harness.ringrelay_path()
    sink_bin = sys.argv[2] if len(sys.argv) > 2 else os.path.join(os.path.dirname(binary), "sink", "ringrelay-sink")
    for p in (binary, sink_bin):
        if not os.access(p, os.X_OK):
            raise harness.Skip(f"{p} is not built")
    configured(c, binary, sink_bin)
    default_address(c, binary, sink_bin)
    refused_at_start(c, binary)


if __name__ == "__main__":
    harness.run("postmaster", scenario)
