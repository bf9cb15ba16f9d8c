#!/usr/bin/env python3
# tests/integration/retry_timing_test.py: retries in milliseconds, woken by the delivery's
# io_uring timeout at the timer wheel's next expiry (issue 15), not by a once-a-second tick.
# client (smtplib) -> ringrelay --retry-intervals 250ms,500ms,1s -> a scripted next hop on
# loopback (delivery_faults_test.ScriptedPeer) that answers RCPT with 451 4.7.1 to each
# recipient's first three attempts and 250 to the fourth:
# - the millisecond intervals are accepted and every message is delivered, once, after exactly
#   three TransientFailure records per recipient, each with its next_attempt;
# - no retry starts before its next_attempt (the MAIL of attempt k+1 reaches the next hop at
#   or after the next_attempt logged for attempt k; both read CLOCK_REALTIME on this machine).
# How late each retry starts (MAIL at the next hop minus next_attempt) is printed (min, median,
# 90th percentile, max) and, with RR_RETRY_LATENESS_OUT=FILE, written there as JSON
# (bench/results/ keeps figures from quiet runs). It is never asserted: the machines that run
# this are shared. The same script run against a relay that polls once a second shows
# lateness spread over that second. Every wait is bounded; the relay and the next hop are
# stopped at exit.
import datetime
import json
import os
import smtplib
import statistics
import time

import harness
from delivery_faults_test import ScriptedPeer
from delivery_test import log_records, wait_for

MESSAGES = 20
REFUSALS = 3  # 451 to the first three attempts of each recipient
INTERVALS = "250ms,500ms,1s"
WAIT = 60.0


def unix_time(iso):
    """'2026-11-28T03:35:26.123456Z' -> seconds since the epoch."""
    t = datetime.datetime.strptime(iso, "%Y-%m-%dT%H:%M:%S.%fZ")
    return t.replace(tzinfo=datetime.timezone.utc).timestamp()


def percentile(sorted_values, p):
    return sorted_values[min(len(sorted_values) - 1, int(round(p / 100 * (len(sorted_values) - 1))))]


def scenario(c):
    def defer_first_attempts(attempt):
        return "451 4.7.1 Try again later" if attempt <= REFUSALS else None
    rcpts = [f"r{i}@example.net" for i in range(MESSAGES)]
    hop = ScriptedPeer(script={r.split("@")[0]: defer_first_attempts for r in rcpts})
    relay = harness.Relay(harness.ringrelay_path(), ["--smarthost", f"127.0.0.1:{hop.port}",
                                                      "--retry-intervals", INTERVALS]).start()
    s = smtplib.SMTP(relay.host, relay.port, timeout=30)
    s.ehlo("client.test")
    for i, r in enumerate(rcpts):
        s.sendmail("sender@example.org", [r], b"Subject: retry %d\r\n\r\nbody %d\r\n" % (i, i))
        time.sleep(0.05)  # spread the messages, so their retries do not all fall together
    s.quit()

    def all_logged():
        return len(log_records(relay, "Delivery")) >= MESSAGES and \
            len(log_records(relay, "TransientFailure")) >= MESSAGES * REFUSALS
    wait_for(all_logged, f"every message delivered after {REFUSALS} deferrals ({INTERVALS})", c, WAIT)
    delivered = [rec["recipient"] for rec in log_records(relay, "Delivery")]
    c.check(sorted(delivered) == sorted(rcpts), "one Delivery record for each recipient", f"{delivered}")
    mail_times = {}
    for rcpt, at in list(hop.attempts):
        mail_times.setdefault(rcpt, []).append(at)
    c.check(all(len(mail_times.get(r, [])) == REFUSALS + 1 for r in rcpts),
            f"each recipient was tried {REFUSALS + 1} times, the last accepted",
            f"{ {r: len(t) for r, t in mail_times.items()} }")

    failures = {}
    for rec in log_records(relay, "TransientFailure"):
        failures.setdefault(rec["recipient"], {})[rec["attempt"]] = rec
    lateness = []
    early = []
    for r in rcpts:
        recs = failures.get(r, {})
        c.check(sorted(recs) == list(range(1, REFUSALS + 1)) and all("next_attempt" in x for x in recs.values()),
                f"{r}: TransientFailure for attempts 1-{REFUSALS}, each with next_attempt", f"{sorted(recs)}")
        for attempt, rec in recs.items():
            times = mail_times.get(r, [])
            if attempt >= len(times):
                continue
            late = times[attempt] - unix_time(rec["next_attempt"])
            lateness.append(late)
            if late < -0.0005:  # the log's microseconds and Python's float: half a millisecond
                early.append((r, attempt, round(late * 1000, 3)))
    c.check(not early, "no retry starts before its next_attempt", f"{early}")
    if not lateness:
        return
    ms = sorted(x * 1000 for x in lateness)
    summary = {
        "retry_intervals": INTERVALS, "retries": len(ms),
        "lateness_ms": {"min": round(ms[0], 3), "median": round(statistics.median(ms), 3),
                        "p90": round(percentile(ms, 90), 3), "max": round(ms[-1], 3)},
        "within_10ms": sum(1 for x in ms if x <= 10.0),
    }
    c.info(f"retry lateness over {len(ms)} retries (ms): min {summary['lateness_ms']['min']}, "
           f"median {summary['lateness_ms']['median']}, p90 {summary['lateness_ms']['p90']}, "
           f"max {summary['lateness_ms']['max']}; within 10 ms: {summary['within_10ms']}")
    out = os.environ.get("RR_RETRY_LATENESS_OUT")
    if out:
        with open(out, "w", encoding="utf-8") as f:
            json.dump(summary, f, indent=2)
            f.write("\n")


if __name__ == "__main__":
    harness.run("retry_timing", scenario)
