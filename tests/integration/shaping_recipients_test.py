#!/usr/bin/env python3
# tests/integration/shaping_recipients_test.py: max_recipients_per_transaction (issue 17).
#
# Postfix's smtp-sink is the smarthost and dumps every transaction it receives, one file each,
# with an X-Rcpt-Args line per RCPT TO. The site's rule allows 3 recipients per transaction; one
# message with 7 recipients and one with 2 are sent. The sink must see the 7 in transactions of
# 3, 3 and 1, the 2 in one of 2: no transaction with more than 3, every recipient exactly once,
# and each recipient has its own Delivery record. Without the cap (the rule left out; or the
# pool's begin_transaction not capping) the 7 arrive in one transaction and the test fails.
#
# Arguments: ringrelay. Loopback only; every wait bounded (60 s).
import glob
import json
import os
import smtplib
import sys
import time

import harness

CAP = 3


def start_smtp_sink():
    tool = harness.find_tool("smtp-sink", ["/usr/sbin/smtp-sink"])
    d = harness.temp_dir("rr-rcpt-sink-")
    os.chmod(d, 0o777)
    port = harness.free_port()
    peer = harness.Peer([tool, "-u", "nobody", "-d", os.path.join(d, "%H%M%S."), f"127.0.0.1:{port}", "100"])
    harness.connectable(port)
    return peer, d, port


def transactions(d):
    """[[rcpt, ...] per transaction the sink dumped]"""
    out = []
    for path in sorted(glob.glob(os.path.join(d, "*"))):
        with open(path, "rb") as f:
            lines = f.read().split(b"\n")
        out.append([l.partition(b": ")[2].decode() for l in lines if l.startswith(b"X-Rcpt-Args: ")])
    return out


def scenario(c):
    relay_bin = sys.argv[1]
    sink, dump, port = start_smtp_sink()
    work = harness.temp_dir("rr-rcpt-")
    rules = os.path.join(work, "rules.json")
    with open(rules, "w") as f:
        json.dump({"default": {"max_recipients_per_transaction": CAP}}, f)
    relay = harness.Relay(relay_bin, ["--smarthost", f"127.0.0.1:{port}", "--retry-intervals", "1s",
                                      "--no-default-shaping", "--shaping", rules]).start()
    big = [f"big{i}@example.net" for i in range(7)]
    small = ["small0@example.net", "small1@example.net"]
    s = smtplib.SMTP(relay.host, relay.port, timeout=30)
    s.sendmail("sender@example.org", big, "Subject: seven\r\nMessage-ID: <seven@example.org>\r\n\r\nseven\r\n")
    s.sendmail("sender@example.org", small, "Subject: two\r\nMessage-ID: <two@example.org>\r\n\r\ntwo\r\n")
    s.quit()
    done = lambda: [x for x in harness.log_records(relay.log_path) if x.get("type") == "Delivery"]  # noqa: E731
    c.check(harness.wait_until(lambda: len(done()) >= len(big) + len(small), 60),
            "every recipient gets its Delivery record", len(done()))
    time.sleep(0.5)  # a dump file is complete before the sink's 250; nothing more is expected
    relay.stop()
    sink.stop()
    got = transactions(dump)
    sizes = sorted(len(t) for t in got)
    c.info(f"transactions at the sink, recipients each: {sizes}")
    c.check(all(len(t) <= CAP for t in got), f"no transaction carries more than {CAP} RCPT TO", sizes)
    c.check(sizes == [1, 2, 3, 3], "7 recipients in 3+3+1 transactions, 2 in one", sizes)
    every = sorted(r for t in got for r in t)
    c.check(every == sorted(f"<{r}>" for r in big + small), "every recipient reaches the sink exactly once", every)
    log = harness.log_records(relay.log_path)
    c.check(not [x for x in log if x.get("type") in ("TransientFailure", "Bounce")],
            "no deferral or bounce", [x for x in log if x.get("type") != "Delivery"][:3])
    delivered = sorted(x.get("recipient") for x in log if x.get("type") == "Delivery")
    c.check(delivered == sorted(big + small), "one Delivery record per recipient", delivered)


if __name__ == "__main__":
    harness.run("shaping_recipients", scenario)
