#!/usr/bin/env python3
# tests/integration/delay_warning_test.py: --delay-warning (issue 15). A next hop that defers
# every RCPT (Postfix's smtp-sink -r RCPT) and --retry-intervals 500ms; the sender's domain
# routes to a second smtp-sink that keeps what it gets:
# 1. --delay-warning 2s: a message from s@sender.test gets exactly one DSN with
#    "Action: delayed" (and the original's headers, Will-Retry-Until), however many deferrals
#    follow; a message from the null sender gets none;
# 2. after a restart on the same spool the notice is not sent again (it is journaled);
# 3. without --delay-warning (the default, 0) no notice is sent;
# 4. mail held at its site by shaping (issue 17: the site's message rate allows one message an
#    hour) is never tried, so no deferral carries a notice: the site's sweep (every 10 s) asks
#    the message's shard for it. One notice, naming the held recipient only; the held message
#    stays queued, untried.
# No timing assertions; every wait is bounded; sinks and relays are stopped at exit.
import json
import os
import socket
import time

import harness
from delivery_test import Sink, wait_for
from delivery_faults_test import records_for, send


def notices(home):
    return [(m, b) for m, b in home.messages() if m.get("X-Mail-Args") == ["<>"]]


def relay_for(binary, soft, home, spool=None, warning="2s"):
    flags = ["--route", f"defer.test=127.0.0.1:{soft.port}", "--route", f"sender.test=127.0.0.1:{home.port}",
             "--retry-intervals", "500ms", "--max-age", "1h", "--idle-connection-timeout", "1"]
    if warning is not None:
        flags += ["--delay-warning", warning]
    return harness.Relay(binary, flags, spool=spool).start()


def scenario(c):
    binary = harness.ringrelay_path()
    soft = Sink(faults=["-r", "RCPT"])
    home = Sink()
    relay = relay_for(binary, soft, home)
    body = b"Subject: slow one\r\nMessage-ID: <slow1@delay.test>\r\n\r\nstill waiting\r\n"
    qid = send(relay, "s@sender.test", ["x@defer.test"], body)
    c.require(qid is not None, "message accepted")
    nul = send(relay, "", ["y@defer.test"], b"Subject: from nobody\r\nMessage-ID: <null1@delay.test>\r\n\r\nx\r\n")
    c.require(nul is not None, "null-sender message accepted")
    wait_for(lambda: notices(home), "a delay notice reaches the sender's route", c)
    # Several more deferrals of both messages after the notice.
    before = len(records_for(relay, "TransientFailure", {qid}))
    wait_for(lambda: len(records_for(relay, "TransientFailure", {qid})) >= before + 4,
             "four more deferrals after the notice", c)
    wait_for(lambda: len(records_for(relay, "TransientFailure", {nul})) >= 6, "the null-sender message deferred", c)
    got = notices(home)
    c.check(len(got) == 1, "exactly one delay notice", f"{len(got)}")
    if got:
        m, b = got[0]
        c.check(m.get("X-Rcpt-Args") == ["<s@sender.test>"], "the notice goes to the sender", m)
        c.check(b"Action: delayed" in b, "Action: delayed")
        c.check(b"Final-Recipient: rfc822; x@defer.test" in b, "it names the deferred recipient")
        c.check(b"Will-Retry-Until:" in b, "it says until when the relay will retry")
        c.check(b"<slow1@delay.test>" in b, "it carries the original's headers")
        c.check(b"<null1@delay.test>" not in b, "it is not about the null-sender message")
    c.check(not records_for(relay, "Delivery", {qid}) and not records_for(relay, "Bounce", {qid})
            and not records_for(relay, "Expiration", {qid}), "the message itself is still queued")

    # 2. A restart on the same spool: no second notice.
    spool = relay.spool
    relay.stop()
    relay = relay_for(binary, soft, home, spool=spool)
    wait_for(lambda: len(records_for(relay, "TransientFailure", {qid})) >= 4,
             "after the restart: deferred again several times", c)
    c.check(len(notices(home)) == 1, "after a restart: still exactly one notice", f"{len(notices(home))}")
    relay.stop()

    # 3. The default: no notice.
    home2 = Sink()
    relay = relay_for(binary, soft, home2, warning=None)
    q2 = send(relay, "s@sender.test", ["z@defer.test"], b"Subject: no warning\r\n\r\nx\r\n")
    c.require(q2 is not None, "default: message accepted")
    wait_for(lambda: len(records_for(relay, "TransientFailure", {q2})) >= 8, "default: deferred eight times", c)
    c.check(not notices(home2), "without --delay-warning no notice", f"{len(notices(home2))}")
    relay.stop()

    # 4. Held at its site by the shaping rules' message rate.
    home3 = Sink()
    far = Sink()
    rules = os.path.join(harness.temp_dir("rr-delay-held-"), "rules.json")
    with open(rules, "w") as f:
        json.dump({"default": {"max_message_rate": "1/h,max_burst=1", "adaptive": False}}, f)
    relay = harness.Relay(binary, ["--route", f"held.test=127.0.0.1:{far.port}", "--route",
                                   f"sender.test=127.0.0.1:{home3.port}", "--retry-intervals", "500ms",
                                   "--max-age", "1h", "--delay-warning", "2s", "--no-default-shaping",
                                   "--shaping", rules]).start()
    q_first = send(relay, "s@sender.test", ["a@held.test"], b"Subject: goes\r\nMessage-ID: <go1@delay.test>\r\n\r\nx\r\n")
    q_held = send(relay, "s@sender.test", ["b@held.test"],
                  b"Subject: held\r\nMessage-ID: <held1@delay.test>\r\n\r\nwaiting for the rate\r\n")
    c.require(q_first is not None and q_held is not None, "held: both messages accepted")
    wait_for(lambda: notices(home3), "held at its site: a delay notice reaches the sender", c)
    time.sleep(11)  # one more sweep: no second notice
    got = notices(home3)
    c.check(len(got) == 1, "held: exactly one delay notice", f"{len(got)}")
    if got:
        m, b = got[0]
        c.check(m.get("X-Rcpt-Args") == ["<s@sender.test>"], "held: the notice goes to the sender", m)
        c.check(b"Action: delayed" in b and b"Final-Recipient: rfc822; b@held.test" in b,
                "held: it names the held recipient, delayed")
        c.check(b"a@held.test" not in b, "held: not the delivered one")
        c.check(b"shaping" in b, "held: it says why (the site's shaping limits)")
        c.check(b"<held1@delay.test>" in b, "held: it carries the original's headers")
    c.check(len(far.messages()) == 1, "held: the site got only the first message", f"{len(far.messages())}")
    c.check(not records_for(relay, "TransientFailure", {q_held}) and not records_for(relay, "Delivery", {q_held}),
            "held: the held message is still queued, never tried")


if __name__ == "__main__":
    socket.setdefaulttimeout(30)
    harness.run("delay_warning", scenario)
