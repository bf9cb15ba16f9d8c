#!/usr/bin/env python3
# tests/integration/shaping_automation_test.py: an automation rule fires on the receiver's own
# reply text and mail resumes afterwards (issue 17). The next hop is ringrelay-sink answering
# every message with Yahoo's throttle text,
#   421 4.7.0 [TSS04] Messages from 127.0.0.1 temporarily deferred due to unexpected volume ...
# (--defer-rate 1 --defer-reply ...; a 421 closes the connection), and the relay has the rule
#   {"automation": [{"match": "\\[TSS04\\]", "action": "suspend", "duration": "4s"}]}
# with connection_limit 2, so at most a couple of messages meet the 421 before the site is
# suspended. Then the sink is replaced by one that accepts everything, on the same port.
# Checks: a Shaping record "suspend" naming the site with the reply as its cause; every one of
# the N messages arrives at the second sink; the deferrals are exactly the messages the first
# sink refused (the others waited in the site's queue without using a retry); a "resume"
# record comes before the first Delivery (nothing was sent while suspended).
# Then a throttle rule, the same way: the next hop answers every message with
#   451 4.7.0 [TS03] Messages from 127.0.0.1 temporarily deferred due to unexpected volume ...
# (--defer-rate 1 --defer-reply ...: a reply that is no signal for the closed loop, so only the
# rule acts), the relay has max_message_rate "40/s" and
#   {"match": "\\[TS03\\]", "action": "throttle", "factor": 0.5, "duration": "4s"}
# and the sink is replaced by an accepting one once the rule has fired. Checks: a Shaping
# "throttle" record naming the site with the reply as its cause and the rate halved (40 -> 20);
# a "resume" record ("throttle ended") that restores 40; every message arrives, and the
# deferrals are exactly the messages the first sink refused; between the two records the relay
# delivered no more than the halved rate allows (an upper bound: a slow machine only delivers
# fewer), and some messages go after the resume. Bounded: each sink stops itself (--duration);
# every process is ours, by PID.
import json
import os
import sys

import harness

N = 20
TSS04 = ("421 4.7.0 [TSS04] Messages from 127.0.0.1 temporarily deferred due to unexpected volume or "
         "user complaints - 4.16.55.1")
TS03 = ("451 4.7.0 [TS03] Messages from 127.0.0.1 temporarily deferred due to unexpected volume or "
        "user complaints - 4.16.56.1")
THROTTLE_N = 200
RATE = 40          # the configured max_message_rate
THROTTLE_SECONDS = 4


records = harness.log_records
wait_for = harness.wait_until


send = harness.send_numbered


def suspend_case(c, relay_bin, sink_bin):
    port = harness.free_port()
    site = f"127.0.0.1:{port}"
    rules = os.path.join(harness.temp_dir("rr-automation-"), "rules.json")
    with open(rules, "w") as f:
        json.dump({"default": {"connection_limit": 2},
                   "automation": [{"match": "\\[TSS04\\]", "action": "suspend", "duration": "4s"}]}, f)
    throttling = harness.start_sink(sink_bin, port, ["--defer-rate", "1", "--defer-reply", TSS04, "--duration", "60"])
    relay = harness.Relay(relay_bin, ["--smarthost", site, "--retry-intervals", "1s", "--no-default-shaping",
                                      "--shaping", rules], shards=2).start()
    send(relay, N, "a")
    suspended = lambda: [x for x in records(relay.log_path) if x.get("type") == "Shaping"  # noqa: E731
                         and x.get("event") == "suspend"]
    c.check(wait_for(lambda: suspended(), 30), "the [TSS04] reply suspends the site (a Shaping record)",
            relay.stderr()[-500:])
    # The replacement sink must listen before the 4 s suspension ends.
    throttling.terminate()
    first, _ = harness.sink_result(throttling, 30)
    accepting = harness.start_sink(sink_bin, port, ["--expect", str(N), "--duration", "60"])
    second, err = harness.sink_result(accepting, 90)
    relay.stop()
    log = records(relay.log_path)
    sus = suspended()
    c.check(sus and sus[0].get("site") == site and "[TSS04]" in str(sus[0].get("cause")),
            "the suspend record names the site and has the reply as its cause", sus[:1])
    refused = first.get("deferred", -1)
    c.info(f"the throttling sink refused {refused} message(s) with the [TSS04] 421")
    c.check(1 <= refused < N, "the throttling sink refused some messages, not all", refused)
    c.check(second.get("received") == N, f"all {N} messages arrive once the suspension is over",
            (second.get("received"), err[-300:]))
    transient = [x for x in log if x.get("type") == "TransientFailure"]
    c.check(len(transient) == refused, "the deferrals are exactly the messages the 421 refused (the others "
            "waited without a retry)", (len(transient), refused))
    kinds = [(x.get("type"), x.get("event")) for x in log]
    first_delivery = next((i for i, k in enumerate(kinds) if k[0] == "Delivery"), None)
    resume = next((i for i, k in enumerate(kinds) if k == ("Shaping", "resume")), None)
    c.check(resume is not None and first_delivery is not None and resume < first_delivery,
            "the site resumes before its first delivery (nothing was sent while it was suspended)",
            (resume, first_delivery))
    delivered = {x.get("recipient") for x in log if x.get("type") == "Delivery"}
    c.check(len(delivered) == N, f"{N} Delivery records, one per recipient", len(delivered))


def throttle_case(c, relay_bin, sink_bin):
    port = harness.free_port()
    site = f"127.0.0.1:{port}"
    rules = os.path.join(harness.temp_dir("rr-throttle-"), "rules.json")
    with open(rules, "w") as f:
        json.dump({"default": {"connection_limit": 2, "max_message_rate": f"{RATE}/s"},
                   "automation": [{"match": "\\[TS03\\]", "action": "throttle", "factor": 0.5,
                                   "duration": f"{THROTTLE_SECONDS}s"}]}, f)
    throttling = harness.start_sink(sink_bin, port, ["--defer-rate", "1", "--defer-reply", TS03, "--duration", "60"])
    relay = harness.Relay(relay_bin, ["--smarthost", site, "--retry-intervals", "1s", "--no-default-shaping",
                                      "--shaping", rules], shards=2).start()
    send(relay, THROTTLE_N, "t")
    shaping = lambda event: [x for x in records(relay.log_path) if x.get("type") == "Shaping"  # noqa: E731
                             and x.get("event") == event]
    c.check(wait_for(lambda: shaping("throttle"), 30), "throttle: the [TS03] reply throttles the site (a Shaping "
            "record)", relay.stderr()[-500:])
    # The replacement sink must listen before the throttle ends (it is renewed by each refusal).
    throttling.terminate()
    first, _ = harness.sink_result(throttling, 30)
    accepting = harness.start_sink(sink_bin, port, ["--expect", str(THROTTLE_N), "--duration", "90"])
    second, err = harness.sink_result(accepting, 120)
    c.check(wait_for(lambda: shaping("resume"), 2 * THROTTLE_SECONDS + 5), "throttle: a resume record follows",
            [x.get("event") for x in records(relay.log_path) if x.get("type") == "Shaping"])
    relay.stop()
    log = records(relay.log_path)
    thr, res = shaping("throttle"), shaping("resume")
    t0 = thr[0] if thr else {}
    c.check(t0.get("site") == site and "[TS03]" in str(t0.get("cause")) and str(t0.get("cause")).startswith(
            "automation: 451 4.7.0 [TS03]"), "throttle: the record names the site and has the reply as its cause", t0)
    c.check(t0.get("rate") == {"old": float(RATE), "new": RATE / 2},
            f"throttle: the record halves the rate ({RATE} -> {RATE // 2} a second)", t0.get("rate"))
    c.check(all(x.get("rate", {}).get("new") == RATE / 2 for x in thr),
            "throttle: a renewed throttle keeps the halved rate (the factor is not applied twice)",
            [x.get("rate") for x in thr])
    r0 = res[0] if res else {}
    # The throttling sink is stopped while a transaction may be open: it answers that one
    # "421 4.3.2 Service shutting down", a deferral the sink does not count as a refusal, and a
    # 421 the loop may take as a signal and cut the rate under the throttle. The resume then
    # restores that cut rate, not the configured one.
    shutdown_cuts = [x for x in shaping("decrease") if "4.3.2" in str(x.get("cause"))]
    want_new = float(RATE) if not shutdown_cuts else r0.get("rate", {}).get("new")
    c.check(len(res) == 1 and r0.get("cause") == "throttle ended" and want_new is not None
            and want_new <= RATE and r0.get("rate") == {"old": want_new / 2, "new": want_new},
            f"throttle: one resume record, 'throttle ended', undoing the factor (to {RATE} a second, or to the "
            "loop's cut when the stopped sink's 421 cut the rate)", (res, len(shutdown_cuts)))
    refused = first.get("deferred", -1)
    c.info(f"throttle: the first sink refused {refused} message(s) with [TS03]; {len(thr)} throttle record(s)")
    c.check(refused >= 1, "throttle: the first sink refused some messages", refused)
    c.check(second.get("received") == THROTTLE_N, f"throttle: all {THROTTLE_N} messages arrive",
            (second.get("received"), err[-300:]))
    transient = [x for x in log if x.get("type") == "TransientFailure"]
    shutdown = [x for x in transient if "4.3.2" in str(x.get("reply"))]
    c.check(len(transient) == refused + len(shutdown) and all("[TS03]" in str(x.get("reply"))
                                                             for x in transient if x not in shutdown),
            "throttle: the deferrals are exactly the messages the sink refused (and any transaction its shutdown "
            "cut short)", (len(transient), refused, len(shutdown)))
    deliveries = sorted(harness.record_time(x) for x in log if x.get("type") == "Delivery")
    c.check(len(deliveries) == THROTTLE_N, f"throttle: {THROTTLE_N} Delivery records", len(deliveries))
    if thr and res:
        start, end = harness.record_time(thr[-1]), harness.record_time(res[0])
        during = sum(1 for t in deliveries if start <= t < end)
        after = sum(1 for t in deliveries if t >= end)
        # Upper bound only: the halved rate's token bucket (a second's worth of burst) plus one.
        bound = (RATE / 2) * (end - start) + RATE / 2 + 1
        c.info(f"throttle: {during} deliveries in the {end - start:.2f} s between the last throttle record and the "
               f"resume (at most {bound:.0f} at {RATE // 2}/s), {after} after it")
        c.check(during <= bound, f"throttle: no more deliveries while throttled than {RATE // 2}/s allows",
                (during, round(bound)))
        c.check(after >= 1, "throttle: mail still flows after the throttle ends", after)


def scenario(c):
    relay_bin, sink_bin = sys.argv[1], sys.argv[2]
    suspend_case(c, relay_bin, sink_bin)
    throttle_case(c, relay_bin, sink_bin)


if __name__ == "__main__":
    harness.run("shaping_automation", scenario)
