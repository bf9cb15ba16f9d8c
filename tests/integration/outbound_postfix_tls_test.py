#!/usr/bin/env python3
# tests/integration/outbound_postfix_tls_test.py: outbound STARTTLS (issue 5) to a third-party
# TLS next hop: a private Postfix instance (bench/lib/common.sh: pf_tls_setup, pf_setup_dir;
# smtpd offers STARTTLS with its own self-signed certificate and relays to ringrelay-sink).
#
#  - --route-tls DOMAIN=required: ringrelay delivers to Postfix over TLS. Checked on Postfix's
#    side (its maillog says "TLS connection established from localhost[127.0.0.1]" with the
#    protocol, and the Received: header Postfix adds says "with ESMTPS"), and on ours (the
#    Delivery record's "tls");
#  - the message arrives at the sink through Postfix whole (body compared byte for byte);
#  - the same Postfix without TLS (smtpd_tls_security_level = none) and `required`: the mail is
#    deferred with 4.7.4 and Postfix logs no MAIL from us (nothing sent in clear).
# Skips (77) without Postfix. Bounded: every wait has a deadline, Postfix is stopped at exit.
import os
import re
import smtplib
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from delivery_test import log_records, wait_for  # noqa: E402
from outbound_tls_test import Sink  # noqa: E402

BODY = b"Subject: through postfix\r\nX-Test: outbound-postfix-tls\r\n\r\nline one\r\n..dot line\r\nlast line\r\n"


def start_postfix(work, sink_port, tls):
    main_cf = f"relayhost = [127.0.0.1]:{sink_port}\nsmtpd_tls_received_header = yes\n"
    if not tls:
        main_cf += "smtpd_tls_security_level = none\n"
    return harness.private_postfix(work, "outbound_postfix_tls", main_cf, tls=tls)


def stop_postfix(d):
    subprocess.run(["postfix", "-c", os.path.join(d, "etc"), "stop"], capture_output=True, timeout=60)


def send(relay, rcpt):
    s = smtplib.SMTP(relay.host, relay.port, timeout=30)
    s.sendmail("sender@example.org", [rcpt], BODY)
    s.quit()


def scenario(c):
    binary = sys.argv[1] if len(sys.argv) > 1 else harness.ringrelay_path()
    sink_bin = sys.argv[2] if len(sys.argv) > 2 else os.path.join(os.path.dirname(binary), "sink", "ringrelay-sink")
    work = harness.postfix_work_dir("rr-opfx-")

    # 1. required, to Postfix with STARTTLS: delivered over TLS, seen by both sides.
    sink = Sink(sink_bin)
    d, pf_port = start_postfix(work, sink.port, tls=True)
    relay = harness.Relay(binary, ["--route", f"tls.test=127.0.0.1:{pf_port}", "--route-tls", "tls.test=required",
                                   "--retry-intervals", "1h"]).start()
    send(relay, "a@tls.test")
    if wait_for(lambda: log_records(relay, "Delivery"), "Postfix with TLS: the Delivery record", c):
        tls = log_records(relay, "Delivery")[0].get("tls") or ""
        c.check(tls.startswith("TLSv1."), "the Delivery record names the TLS protocol and cipher", tls)
    wait_for(lambda: len(sink.saved()) == 1, "the message reached the sink through Postfix", c)
    log = harness.maillog(d)
    m = re.search(r"TLS connection established from localhost\[127\.0\.0\.1\]: (TLSv1\.\d)", log)
    c.check(m is not None, "Postfix's maillog: a TLS connection from us", log[-1500:])
    saved = sink.saved()
    msg = saved[0] if saved else b""
    c.check(b"by postfix-bench.example.org (Postfix) with ESMTPS id" in msg,
            "Postfix's Received: header says it got the message with ESMTPS", msg[:800])
    c.check(msg.endswith(BODY.split(b"\r\n\r\n", 1)[1]) and b"X-Test: outbound-postfix-tls" in msg,
            "the body arrived whole through Postfix", msg[-200:])
    c.check(relay.stop() == 0, "the relay stops cleanly")
    stop_postfix(d)
    sink.stop()

    # 2. required, to the same kind of Postfix without STARTTLS: deferred, nothing in clear.
    sink = Sink(sink_bin)
    d, pf_port = start_postfix(work, sink.port, tls=False)
    relay = harness.Relay(binary, ["--route", f"tls.test=127.0.0.1:{pf_port}", "--route-tls", "tls.test=required",
                                   "--retry-intervals", "1h"]).start()
    send(relay, "b@tls.test")
    if wait_for(lambda: log_records(relay, "TransientFailure"), "Postfix without TLS: a TransientFailure record", c):
        tf = log_records(relay, "TransientFailure")[0]
        c.check("4.7.4" in str(tf.get("reply")), "the deferral says TLS was required but not offered (4.7.4)", tf)
    # Postfix logs each session's commands when it ends ("disconnect from ... ehlo=1 quit=1
    # commands=2"); a MAIL would show as mail=1.
    wait_for(lambda: "disconnect from localhost[127.0.0.1]" in harness.maillog(d), "Postfix logged our session's end", c)
    log = harness.maillog(d)
    ends = [l for l in log.splitlines() if "disconnect from localhost[127.0.0.1]" in l]
    c.check(ends and not any("mail=" in l for l in ends) and not sink.saved(),
            "Postfix got no MAIL from us (its disconnect lines count no mail=) and the sink nothing", ends)
    c.check(not log_records(relay, "Delivery"), "no Delivery record")
    c.check(relay.stop() == 0, "the relay stops cleanly (second run)")
    stop_postfix(d)
    sink.stop()


if __name__ == "__main__":
    harness.run("outbound_postfix_tls", scenario)
