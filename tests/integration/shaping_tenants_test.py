#!/usr/bin/env python3
# tests/integration/shaping_tenants_test.py: tenant limits (issue 17): one noisy tenant cannot
# use up a site's allowance for everyone.
#
# A ringrelay-sink that accepts everything is the smarthost (one site). The rules limit tenant
# slow.example (the envelope sender's domain: no AUTH here) to 2 messages a second with a burst
# of one; fast.example has no limit. 8 messages from slow.example are sent first, then 10 from
# fast.example, on one SMTP session. Checked from the delivery log:
#   - every message is delivered once, none deferred (held mail waits at the site, no retry);
#   - slow.example's deliveries span at least (8 - 1) / 2 s less a margin for the log's clock
#     (a lower bound the token bucket guarantees; no upper bound is asserted);
#   - every fast.example message is delivered before slow.example's last one, although all
#     were sent after slow.example's: they do not wait behind the held tenant;
#   - the records name each message's tenant ("tenant").
# Fails without the feature: with the "tenants" rule left out slow.example's mail is not spread
# out; with the site waiting for the tenant's token instead of letting the others pass (the
# pool's next_job holding the queue rather than stepping the job aside) fast.example's last
# delivery comes after slow.example's last.
#
# Arguments: ringrelay, ringrelay-sink. Loopback only; every wait bounded (60 s).
import json
import os
import smtplib
import sys

import harness

SLOW, FAST = 8, 10
RATE = 2.0  # per second, burst 1


def scenario(c):
    relay_bin, sink_bin = sys.argv[1], sys.argv[2]
    port = harness.free_port()
    work = harness.temp_dir("rr-tenants-")
    rules = os.path.join(work, "rules.json")
    with open(rules, "w") as f:
        json.dump({"tenants": {"Slow.Example": {"max_message_rate": "2/s,max_burst=1"}}}, f)
    sink = harness.start_sink(sink_bin, port, ["--duration", "60"])
    relay = harness.Relay(relay_bin, ["--smarthost", f"127.0.0.1:{port}", "--retry-intervals", "1s",
                                      "--no-default-shaping", "--shaping", rules], shards=1).start()
    s = smtplib.SMTP(relay.host, relay.port, timeout=30)
    for i in range(SLOW):
        s.sendmail(f"news@slow.example", [f"s{i}@example.net"], f"Subject: slow {i}\r\n\r\nslow {i}\r\n")
    for i in range(FAST):
        s.sendmail(f"app@fast.example", [f"f{i}@example.net"], f"Subject: fast {i}\r\n\r\nfast {i}\r\n")
    s.quit()
    delivered = lambda: [x for x in harness.log_records(relay.log_path) if x.get("type") == "Delivery"]  # noqa: E731
    c.check(harness.wait_until(lambda: len(delivered()) >= SLOW + FAST, 60), "every message is delivered",
            len(delivered()))
    relay.stop()
    sink.terminate()
    harness.sink_result(sink, 30)
    log = harness.log_records(relay.log_path)
    c.check(not [x for x in log if x.get("type") in ("TransientFailure", "Bounce", "Expiration")],
            "none deferred: held mail waits at its site", [x for x in log if x.get("type") != "Delivery"][:2])
    d = [x for x in log if x.get("type") == "Delivery"]
    slow = sorted(harness.record_time(x) for x in d if x.get("tenant") == "slow.example")
    fast = sorted(harness.record_time(x) for x in d if x.get("tenant") == "fast.example")
    c.check(len(slow) == SLOW and len(fast) == FAST, "the records carry each message's tenant",
            (len(slow), len(fast), d[:1]))
    if not slow or not fast:
        return
    span = slow[-1] - slow[0]
    c.info(f"slow.example: {SLOW} deliveries over {span:.2f} s; fast.example: {FAST} over "
           f"{fast[-1] - fast[0]:.2f} s, the last {slow[-1] - fast[-1]:.2f} s before slow.example's last")
    c.check(span >= (SLOW - 1) / RATE - 0.3, f"slow.example trickles at its rate (span >= {(SLOW - 1) / RATE - 0.3:.1f} s)",
            f"{span:.2f} s")
    c.check(fast[-1] < slow[-1], "fast.example's mail, sent after slow.example's, does not wait behind it",
            f"fast last {fast[-1]:.3f}, slow last {slow[-1]:.3f}")


if __name__ == "__main__":
    harness.run("shaping_tenants", scenario)
