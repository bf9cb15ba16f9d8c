#!/usr/bin/env python3
# tests/integration/shaping_expiry_test.py: mail held at its site by the message rate expires by
# --max-age like mail in a retry (issue 17, review finding 3).
#
# A ringrelay-sink that accepts everything is the smarthost; the site's rule allows one message a
# minute (max_burst 1); --max-age 8s. Five messages are sent at once: the first goes at once,
# the other four wait in the site's ready queue (no retry: they are held by the rate only).
# Within --max-age plus the pool's sweep (10 s) each of the four must get an Expiration record
# whose reason names --max-age, with no TransientFailure before it (they were never tried), and
# the sink must have received exactly one message by then. Before the fix the four waited
# forever (no Expiration at all: this test fails on ffd444b's binary).
#
# Arguments: ringrelay, ringrelay-sink. Loopback only; every wait bounded.
import json
import os
import smtplib
import sys
import time

import harness

N = 5
MAX_AGE_S = 8
SWEEP_S = 10  # destination_pool's expiry_sweep_ms


def scenario(c):
    relay_bin, sink_bin = sys.argv[1], sys.argv[2]
    port = harness.free_port()
    site = f"127.0.0.1:{port}"
    work = harness.temp_dir("rr-shaping-expiry-")
    rules = os.path.join(work, "rules.json")
    with open(rules, "w") as f:
        json.dump({"default": {"max_message_rate": "1/min,max_burst=1", "adaptive": False}}, f)
    sink = harness.start_sink(sink_bin, port, ["--duration", str(MAX_AGE_S + SWEEP_S + 30)])
    relay = harness.Relay(relay_bin, ["--smarthost", site, "--retry-intervals", "1s", "--max-age", f"{MAX_AGE_S}s",
                                      "--no-default-shaping", "--shaping", rules], shards=1).start()
    host, rport = relay.address()
    sent_at = time.monotonic()
    s = smtplib.SMTP(host, rport, timeout=30)
    for i in range(N):
        s.sendmail("<>", [f"rcpt{i}@example.net"],
                   f"Subject: held {i}\r\nMessage-ID: <h{i}@example.org>\r\n\r\nbody {i}\r\n")
    s.quit()
    expired = lambda: [x for x in harness.log_records(relay.log_path) if x.get("type") == "Expiration"]  # noqa: E731
    done = harness.wait_until(lambda: len(expired()) >= N - 1, MAX_AGE_S + SWEEP_S + 20)
    took = time.monotonic() - sent_at
    c.info(f"{len(expired())} Expiration record(s) {took:.1f} s after the messages were sent")
    relay.stop()
    sink.terminate()
    summary, _ = harness.sink_result(sink, 30)
    log = harness.log_records(relay.log_path)
    c.check(done, f"the {N - 1} messages held by the rate expire (--max-age {MAX_AGE_S}s)",
            [(x.get("type"), x.get("recipient")) for x in log])
    exp = [x for x in log if x.get("type") == "Expiration"]
    c.check(exp and all("4.4.7" in str(x.get("reply")) and "--max-age" in str(x.get("reply")) for x in exp),
            "each Expiration's reply says why (4.4.7, --max-age)", exp[:1])
    delivered = [x for x in log if x.get("type") == "Delivery"]
    c.check(len(delivered) == 1, "one message delivered (the rate's one token)", len(delivered))
    c.check(summary.get("received") == 1, "the sink received exactly one message", summary)
    transient = [x for x in log if x.get("type") == "TransientFailure"]
    c.check(not transient, "no TransientFailure: held mail was never tried or retried", transient[:2])
    recipients = sorted(x.get("recipient") for x in exp + delivered)
    c.check(recipients == sorted(f"rcpt{i}@example.net" for i in range(N)),
            "every recipient is delivered or expired, once", recipients)


if __name__ == "__main__":
    harness.run("shaping_expiry", scenario)
