#!/usr/bin/env python3
# tests/integration/retry_timing_test.py: retries in milliseconds, woken by the delivery's
# io_uring timeout at the timer wheel's next expiry (issue 15), not by a once-a-second tick.
# client (smtplib) -> ringrelay --retry-intervals 250ms,500ms,1s -> a scripted next hop on
# loopback that answers RCPT with 451 4.7.1 to each recipient's first three attempts and 250 to
# the fourth:
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
import socketserver
import statistics
import threading
import time

import harness
from delivery_test import log_records, wait_for

MESSAGES = 20
REFUSALS = 3  # 451 to the first three attempts of each recipient
INTERVALS = "250ms,500ms,1s"
WAIT = 60.0


class NextHop:
    """Answers 451 to a recipient's first REFUSALS RCPTs, then 250; notes when each MAIL came."""

    def __init__(self):
        self.lock = threading.Lock()
        self.mail_times = {}  # recipient -> [time.time() of the MAIL of each attempt]
        self.delivered = {}   # recipient -> DATA count
        peer = self

        class Handler(socketserver.StreamRequestHandler):
            def reply(self, line):
                self.wfile.write((line + "\r\n").encode())
                self.wfile.flush()

            def handle(self):
                self.reply("220 next-hop.test ESMTP")
                mail_at = None
                accepted = []
                while True:
                    line = self.rfile.readline(4096)
                    if not line:
                        return
                    now = time.time()
                    cmd = line.decode("utf-8", "replace").rstrip("\r\n")
                    verb = cmd.split(" ", 1)[0].upper()
                    if verb in ("EHLO", "HELO"):
                        self.reply("250 next-hop.test")
                    elif verb == "MAIL":
                        mail_at = now
                        accepted = []
                        self.reply("250 2.1.0 Ok")
                    elif verb == "RCPT":
                        rcpt = cmd[cmd.find("<") + 1:cmd.rfind(">")]
                        with peer.lock:
                            times = peer.mail_times.setdefault(rcpt, [])
                            times.append(mail_at)
                            attempt = len(times)
                        if attempt <= REFUSALS:
                            self.reply("451 4.7.1 Try again later")
                        else:
                            accepted.append(rcpt)
                            self.reply("250 2.1.5 Ok")
                    elif verb == "DATA":
                        if not accepted:
                            self.reply("554 5.5.1 Error: no valid recipients")
                            continue
                        self.reply("354 End data with <CR><LF>.<CR><LF>")
                        while True:
                            body_line = self.rfile.readline(65536)
                            if not body_line or body_line == b".\r\n":
                                break
                        with peer.lock:
                            for r in accepted:
                                peer.delivered[r] = peer.delivered.get(r, 0) + 1
                        self.reply("250 2.0.0 Ok: queued")
                    elif verb == "QUIT":
                        self.reply("221 2.0.0 Bye")
                        return
                    else:  # RSET, NOOP
                        self.reply("250 2.0.0 Ok")

        class Server(socketserver.ThreadingTCPServer):
            allow_reuse_address = True
            daemon_threads = True

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
        harness.register_cleanup(self.stop)

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def unix_time(iso):
    """'2026-11-28T03:35:26.123456Z' -> seconds since the epoch."""
    t = datetime.datetime.strptime(iso, "%Y-%m-%dT%H:%M:%S.%fZ")
    return t.replace(tzinfo=datetime.timezone.utc).timestamp()


def percentile(sorted_values, p):
    return sorted_values[min(len(sorted_values) - 1, int(round(p / 100 * (len(sorted_values) - 1))))]


def scenario(c):
    hop = NextHop()
    relay = harness.Relay(harness.ringrelay_path(), ["--smarthost", f"127.0.0.1:{hop.port}",
                                                      "--retry-intervals", INTERVALS]).start()
    rcpts = [f"r{i}@example.net" for i in range(MESSAGES)]
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
    with hop.lock:
        delivered = dict(hop.delivered)
        mail_times = {r: list(t) for r, t in hop.mail_times.items()}
    c.check(all(delivered.get(r) == 1 for r in rcpts), "each message reached the next hop exactly once",
            f"{delivered}")
    c.check(all(len(mail_times.get(r, [])) == REFUSALS + 1 for r in rcpts),
            f"each recipient was tried {REFUSALS + 1} times", f"{ {r: len(t) for r, t in mail_times.items()} }")

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


harness.run("retry_timing", scenario)
