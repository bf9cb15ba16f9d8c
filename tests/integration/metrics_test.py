#!/usr/bin/env python3
# tests/integration/metrics_test.py: GET /metrics' labelled families and the counts added for
# issue 18, each checked against what the test made happen (curl scrapes, promtool checks).
#
# A real DNS server (dnsmasq) gives four domains their exchangers, each a ringrelay-sink on its
# own loopback address (--smtp-port points every MX at the sinks' one port):
#   fast.test -> mx.fast.test   127.0.0.1  accepts; provider "fastprov" by a shaping rule
#   slow.test -> mx.slow.test   127.0.0.2  accepts; its domain rule allows one message an hour
#   bad.test  -> mx.bad.test    127.0.0.3  answers every message 550 5.1.1 (no such user)
#   later.test -> mx.later.test 127.0.0.4  answers every message 451 (deferred; next retry in 1 h)
#   dsn.test  -> mx.dsn.test    127.0.0.1  the senders' domain: the bounces' DSNs go there
# FAST messages to fast.test, SLOW to slow.test, BAD to bad.test, LATER to later.test, all from
# s@dsn.test; then one
# more to a bad.test recipient, which the suppression list (tenant dsn.test) refuses at RCPT.
# Expected, exactly: ringrelay_provider_messages_delivered_total{provider="fastprov"} FAST;
# {provider="none"} 1 (slow's one token) + BAD (the DSNs); bounced{provider="none"} BAD and
# ringrelay_messages_bounced_by_class_total{class="invalid-recipient"} BAD; deferred{provider=
# "none"} LATER (no expiry); the queue at site
# mx.slow.test SLOW - 1, with an age; ringrelay_messages_suppressed_total 1 and
# ringrelay_suppressions_added_total BAD; ringrelay_acknowledgement_seconds_count the number of
# messages accepted; group commits and DNS lookups counted. Loopback only; every wait bounded.
import json
import os
import re
import smtplib
import subprocess
import sys

import harness
from mx_routing_test import Dnsmasq

FAST = 5
SLOW = 4
BAD = 2
LATER = 1


def scrape(url):
    r = subprocess.run(["curl", "-s", "-S", "-m", "20", url], capture_output=True, text=True, timeout=30)
    return r.stdout if r.returncode == 0 else ""


def series(text, name, labels=None):
    """Sum of the values of `name`'s series whose labels include `labels` (a dict)."""
    total = 0.0
    for m in re.finditer(rf'^{name}\{{([^}}]*)\}} (\S+)$', text, re.M):
        got = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(1)))
        if all(got.get(k) == v for k, v in (labels or {}).items()):
            total += float(m.group(2))
    return total


def start_sink(binary, address, port, args=()):
    p = subprocess.Popen([binary, "--listen", f"{address}:{port}", "--shards", "1", "--quiet"] + list(args),
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    harness.register_cleanup(lambda: p.poll() is None and p.kill())
    if not harness.connectable(port, address):
        raise harness.Failed(f"ringrelay-sink does not listen on {address}:{port}")
    return p


def scenario(c):
    relay_bin, sink_bin = sys.argv[1], sys.argv[2]
    harness.require_bindable(["127.0.0.2", "127.0.0.3", "127.0.0.4"])
    port = harness.free_port()
    start_sink(sink_bin, "127.0.0.1", port)
    start_sink(sink_bin, "127.0.0.2", port)
    start_sink(sink_bin, "127.0.0.3", port, ["--reject-rate", "1", "--reject-reply",
                                             "550 5.1.1 The email account that you tried to reach does not exist."])
    start_sink(sink_bin, "127.0.0.4", port, ["--defer-rate", "1"])
    dns = Dnsmasq(["--mx-host=fast.test,mx.fast.test,10", "--host-record=mx.fast.test,127.0.0.1",
                   "--mx-host=slow.test,mx.slow.test,10", "--host-record=mx.slow.test,127.0.0.2",
                   "--mx-host=bad.test,mx.bad.test,10", "--host-record=mx.bad.test,127.0.0.3",
                   "--mx-host=later.test,mx.later.test,10", "--host-record=mx.later.test,127.0.0.4",
                   "--mx-host=dsn.test,mx.dsn.test,10", "--host-record=mx.dsn.test,127.0.0.1"])
    work = harness.temp_dir("rr-metrics-")
    rules = os.path.join(work, "rules.json")
    with open(rules, "w") as f:
        json.dump({"default": {"adaptive": False},
                   "providers": {"fastprov": {"match": {"mx_suffix": [".fast.test"]}}},
                   "domains": {"slow.test": {"max_message_rate": "1/h,max_burst=1"}}}, f)
    http_port = harness.free_port()
    relay = harness.Relay(relay_bin, ["--http", f"127.0.0.1:{http_port}", "--dns-server", f"127.0.0.1:{dns.port}",
                                      "--smtp-port", str(port), "--retry-intervals", "1h", "--no-default-shaping",
                                      "--shaping", rules], shards=2).start()
    url = f"http://127.0.0.1:{http_port}/metrics"
    host, rport = relay.address()
    with smtplib.SMTP(host, rport, timeout=30) as s:
        for domain, n in (("fast.test", FAST), ("slow.test", SLOW), ("bad.test", BAD), ("later.test", LATER)):
            for i in range(n):
                s.sendmail("s@dsn.test", [f"r{i}@{domain}"], f"Subject: {domain} {i}\r\n\r\nbody {i}\r\n")
    accepted = FAST + SLOW + BAD + LATER

    text = {}

    def settled():
        text["t"] = t = scrape(url)
        return (series(t, "ringrelay_provider_messages_delivered_total", {"provider": "fastprov"}) == FAST and
                series(t, "ringrelay_provider_messages_delivered_total", {"provider": "none"}) == 1 + BAD and
                series(t, "ringrelay_messages_bounced_by_class_total") == BAD and
                series(t, "ringrelay_provider_messages_deferred_total", {"provider": "none"}) == LATER and
                series(t, "ringrelay_queue_messages", {"site": "mx.slow.test"}) == SLOW - 1 and
                series(t, "ringrelay_dns_lookups_total") >= 5)  # copied at each shard's tick: may lag
    ok = harness.wait_until(settled, 60)
    t = text["t"]
    c.check(ok, "the scrape settles on what was sent (deliveries, bounces, the held site)",
            "\n".join(line for line in t.splitlines() if "provider" in line or "queue_" in line or "class" in line))
    c.check(series(t, "ringrelay_provider_messages_delivered_total", {"provider": "fastprov", "source": "default"})
            == FAST, f"delivered to provider fastprov through source default: {FAST}")
    c.check(series(t, "ringrelay_provider_messages_delivered_total", {"provider": "none"}) == 1 + BAD,
            f"delivered to sites of no provider: 1 (slow.test's one token) + {BAD} DSNs")
    c.check(series(t, "ringrelay_provider_messages_bounced_total", {"provider": "none"}) == BAD and
            series(t, "ringrelay_provider_messages_bounced_total", {"provider": "fastprov"}) == 0,
            f"bounced at sites of no provider: {BAD}; at fastprov's: 0")
    c.check(series(t, "ringrelay_provider_messages_deferred_total", {"provider": "none"}) == LATER and
            series(t, "ringrelay_provider_messages_expired_total") == 0,
            f"deferred at sites of no provider: {LATER}; none expired")
    c.check(series(t, "ringrelay_messages_bounced_by_class_total", {"class": "invalid-recipient"}) == BAD,
            f"bounced as class invalid-recipient: {BAD}",
            re.findall(r"^ringrelay_messages_bounced_by_class_total.*[1-9]$", t, re.M))
    c.check(series(t, "ringrelay_queue_messages", {"site": "mx.slow.test"}) == SLOW - 1,
            f"ringrelay_queue_messages{{site=\"mx.slow.test\"}}: {SLOW - 1} held by the rate",
            re.findall(r"^ringrelay_queue_messages\{.*$", t, re.M))
    c.check(series(t, "ringrelay_queue_messages", {"site": "mx.fast.test"}) == 0,
            "ringrelay_queue_messages{site=\"mx.fast.test\"}: 0 (all delivered)")
    c.check(series(t, "ringrelay_queue_oldest_seconds", {"site": "mx.slow.test"}) > 0,
            "ringrelay_queue_oldest_seconds{site=\"mx.slow.test\"} > 0",
            re.findall(r"^ringrelay_queue_oldest_seconds\{.*$", t, re.M))
    c.check(series(t, "ringrelay_acknowledgement_seconds_count") == accepted and
            series(t, "ringrelay_acknowledgement_seconds_bucket", {"le": "+Inf"}) == accepted,
            f"ringrelay_acknowledgement_seconds: count and +Inf bucket {accepted} (one a message accepted)")
    c.check(series(t, "ringrelay_group_commit_seconds_count") >= 1 and
            series(t, "ringrelay_group_commit_seconds_sum") > 0, "group commits measured")
    c.check(series(t, "ringrelay_dns_lookups_total") >= 5, "MX lookups counted (five domains)",
            series(t, "ringrelay_dns_lookups_total"))
    hits = series(t, "ringrelay_body_cache_hits_total")
    misses = series(t, "ringrelay_body_cache_misses_total")
    c.check(hits >= 1, "body cache hits counted", (hits, misses))
    c.check(series(t, "ringrelay_spool_free_bytes") > 0, "spool free bytes reported")

    # The bounced recipients are on dsn.test's suppression list: a new message to one is refused.
    with smtplib.SMTP(host, rport, timeout=30) as s:
        try:
            s.sendmail("s@dsn.test", ["r0@bad.test"], "Subject: again\r\n\r\nbody\r\n")
            refused = False
        except smtplib.SMTPRecipientsRefused:
            refused = True
    c.check(refused, "a suppressed recipient is refused at RCPT")

    def suppressed_seen():
        text["t"] = scrape(url)
        return series(text["t"], "ringrelay_messages_suppressed_total") == 1
    c.check(harness.wait_until(suppressed_seen, 10), "ringrelay_messages_suppressed_total: 1",
            re.findall(r"^ringrelay_(?:messages_suppressed|suppressions_added)_total.*$", text["t"], re.M))
    c.check(series(text["t"], "ringrelay_suppressions_added_total") == BAD, f"ringrelay_suppressions_added_total: {BAD}")
    check = subprocess.run([harness.find_tool("promtool"), "check", "metrics"], input=text["t"], capture_output=True,
                           text=True, timeout=30)
    c.check(check.returncode == 0, "promtool check metrics passes", check.stdout + check.stderr)
    c.check(relay.stop() == 0, "the relay stops cleanly")


if __name__ == "__main__":
    harness.run("metrics", scenario)
