#!/usr/bin/env python3
# tests/integration/warmup_test.py: IP warm-up (issue 17). ringrelay -> one ringrelay-sink that
# saves every message (--save: X-Sink-Client is the address the relay connected from), the sink
# as --smarthost, one shard (so the shard's share of a day's allowance is the whole of it).
#   --egress-source a=127.0.0.2   --egress-source b=127.0.0.3
#   shaping rules: {"warmup": {"a": {"start": TODAY (UTC), "daily": [5]}}}
# 1. Pool a,b (1:1), 20 messages: exactly 5 leave from 127.0.0.2 (a's day allowance) and 15 from
#    127.0.0.3; one Shaping record says a's allowance is used up; every Delivery record's
#    egress_source is the source whose address the sink saw.
# 2. Pool a only, daily [3], 6 messages, --max-age 12s: 3 arrive; the other 3 wait (no
#    TransientFailure, no Bounce, no retry), and expire by --max-age (Expiration, 4.4.7) within
#    the sweep (10 s).
# 3. Per provider, by MX (dnsmasq on loopback; --smtp-port points every exchanger at the sink),
#    two shards: provider "exprov" (mx_suffix .prov.test), a's warm-up daily [20] for all sites
#    and [4] for exprov (2 for each shard). 6 messages to p1.test (MX mx.prov.test), then 6 to
#    o.test (MX mx.other.test): to p1.test exactly 2 leave from a (its shard's exprov share) and
#    4 from b; to o.test a and b alternate (3 and 3: a's all-sites allowance is another count).
# 4. A restart keeps the day's counts (the warm-up journal, SPOOL/warmup.json): pool a only,
#    daily [4], one shard, 8 messages: 4 leave, the journal says 4 within its save interval,
#    then SIGKILL. Restarted on that spool: the start-up line says 4 were restored, a's allowance
#    is reported used up again, and nothing more leaves (the other 4 wait). Without the journal
#    the restarted relay sends 4 more (8 in the day). Then SIGTERM: the final save still says 4.
# 5. Start-up error: a warm-up naming a source no --egress-source defines: the relay exits
#    non-zero naming the file and the key.
# Without the feature (the source chosen before the site, no allowance) case 1 sends about 10
# from each address and case 2 delivers all 6. Bounded: the sinks stop themselves (--expect,
# --duration); every process is ours, by PID; loopback only.
import datetime
import json
import os
import subprocess
import sys
import time

import harness

ADDRESS = {"a": "127.0.0.2", "b": "127.0.0.3"}
SOURCES = ["--egress-source", "a=127.0.0.2", "--egress-source", "b=127.0.0.3"]
MAX_AGE_S = 12
SWEEP_S = 10  # delivery's held-mail sweep (expiry_sweep_ms)


def saved_clients(directory):
    """{recipient: client address} of every saved message."""
    out = {}
    for name in os.listdir(directory):
        if not name.endswith(".eml"):
            continue
        client, rcpt = None, None
        with open(os.path.join(directory, name), "rb") as f:
            for raw in f:
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                key, _, value = line.partition(": ")
                if key == "X-Sink-Client":
                    client = value
                elif key == "X-Sink-Rcpt-To":
                    rcpt = value.strip("<>")
                if key == "X-Sink-Size":
                    break
        out[rcpt] = client
    return out


def rules_file(work, daily):
    today = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    path = os.path.join(work, "warmup.json")
    with open(path, "w") as f:
        json.dump({"warmup": {"a": {"start": today, "daily": daily}}}, f)
    return path


def send(relay, count, domain="example.net"):
    harness.send_numbered(relay, count, "w", domain)


def overflow_case(c, relay_bin, sink_bin):
    n = 20
    work = harness.temp_dir("rr-warmup-")
    port = harness.free_port()
    save = harness.temp_dir("rr-warmup-save-")
    sink = harness.start_sink(sink_bin, port, ["--save", save, "--expect", str(n), "--duration", "60"])
    relay = harness.Relay(relay_bin, ["--smarthost", f"127.0.0.1:{port}", "--retry-intervals", "1s",
                                      "--no-default-shaping", "--shaping", rules_file(work, [5])] + SOURCES +
                          ["--egress-pool", "main=a,b", "--pool-for", "*=main"], shards=1).start()
    send(relay, n)
    stats, err = harness.sink_result(sink, 70)
    relay.stop()
    c.check(relay.returncode == 0, "the relay exits 0", relay.stderr()[-800:])
    clients = saved_clients(save)
    from_a = sum(1 for v in clients.values() if v == ADDRESS["a"])
    from_b = sum(1 for v in clients.values() if v == ADDRESS["b"])
    c.info(f"{n} messages, a's warm-up daily [5]: {from_a} from 127.0.0.2 (a), {from_b} from 127.0.0.3 (b)")
    c.check(stats.get("received") == n and len(clients) == n, f"all {n} messages arrive",
            (stats.get("received"), len(clients), err[-300:]))
    c.check(from_a == 5 and from_b == 15, "exactly 5 leave from a's address (its day allowance), 15 from b's",
            (from_a, from_b))
    log = harness.log_records(relay.log_path)
    deliveries = [x for x in log if x.get("type") == "Delivery"]
    mismatched = [x.get("recipient") for x in deliveries
                  if clients.get(x.get("recipient")) != ADDRESS.get(x.get("egress_source"))]
    c.check(len(deliveries) == n and not mismatched,
            "every Delivery record's egress_source is the source whose address the sink saw", mismatched[:5])
    used_up = [x for x in log if x.get("type") == "Shaping" and x.get("event") == "warmup_used_up"]
    c.check(len(used_up) == 1 and used_up[0].get("source") == "a" and used_up[0].get("allowance") == 5
            and used_up[0].get("provider") is None,
            "one Shaping record says a's day allowance (5, all sites) is used up", used_up)
    bad = [x for x in log if x.get("type") in ("TransientFailure", "Bounce", "Expiration")]
    c.check(not bad, "no deferral, bounce or expiry", bad[:2])


def wait_case(c, relay_bin, sink_bin):
    n, allowance = 6, 3
    work = harness.temp_dir("rr-warmup-wait-")
    port = harness.free_port()
    sink = harness.start_sink(sink_bin, port, ["--duration", str(MAX_AGE_S + SWEEP_S + 30)])
    relay = harness.Relay(relay_bin, ["--smarthost", f"127.0.0.1:{port}", "--retry-intervals", "1s",
                                      "--max-age", f"{MAX_AGE_S}s", "--no-default-shaping",
                                      "--shaping", rules_file(work, [allowance])] + SOURCES +
                          ["--egress-pool", "only-a=a", "--pool-for", "*=only-a"], shards=1).start()
    send(relay, n)
    records = lambda kind: [x for x in harness.log_records(relay.log_path) if x.get("type") == kind]  # noqa: E731
    harness.wait_until(lambda: len(records("Delivery")) >= allowance, 20)
    # The retry interval is 1 s: had the waiting mail been deferred, its retries would show by now.
    time.sleep(3)
    delivered_early = len(records("Delivery"))
    transient_early = len(records("TransientFailure"))
    c.check(delivered_early == allowance and transient_early == 0 and not records("Bounce"),
            f"{allowance} delivered (a's allowance); the other {n - allowance} wait: no TransientFailure, no Bounce",
            (delivered_early, transient_early, len(records("Bounce"))))
    done = harness.wait_until(lambda: len(records("Expiration")) >= n - allowance, MAX_AGE_S + SWEEP_S + 15)
    relay.stop()
    sink.terminate()
    summary, _ = harness.sink_result(sink, 30)
    log = harness.log_records(relay.log_path)
    exp = [x for x in log if x.get("type") == "Expiration"]
    c.check(done and len(exp) == n - allowance, f"the {n - allowance} waiting messages expire by --max-age",
            [(x.get("type"), x.get("recipient")) for x in log])
    c.check(exp and all("4.4.7" in str(x.get("reply")) and "--max-age" in str(x.get("reply")) for x in exp),
            "each Expiration's reply says why (4.4.7, --max-age)", exp[:1])
    c.check(all(x.get("egress_source") == "default" for x in exp),
            "an expired message had no source yet (egress_source default)", exp[:1])
    c.check(summary.get("received") == allowance, f"the sink received exactly {allowance}", summary)
    transient = [x for x in log if x.get("type") in ("TransientFailure", "Bounce")]
    c.check(not transient, "no TransientFailure or Bounce at all: the waiting mail used no retry", transient[:2])


def restart_case(c, relay_bin, sink_bin):
    n, allowance = 8, 4
    work = harness.temp_dir("rr-warmup-restart-")
    spool = os.path.join(work, "spool")
    journal = os.path.join(spool, "warmup.json")
    port = harness.free_port()
    sink = harness.start_sink(sink_bin, port, ["--duration", "90"])
    rules = rules_file(work, [allowance])
    flags = ["--smarthost", f"127.0.0.1:{port}", "--retry-intervals", "1s", "--no-default-shaping",
             "--shaping", rules] + SOURCES + ["--egress-pool", "only-a=a", "--pool-for", "*=only-a"]
    records = lambda relay, kind: [x for x in harness.log_records(relay.log_path) if x.get("type") == kind]  # noqa: E731

    def journal_used():
        try:
            with open(journal) as f:
                return sum(json.loads(line)["used"] for line in f if line.strip())
        except (OSError, ValueError, KeyError):
            return None

    first = harness.Relay(relay_bin, flags, spool=spool, shards=1).start()
    send(first, n)
    c.require(harness.wait_until(lambda: len(records(first, "Delivery")) >= allowance, 20),
              f"first run: the day's allowance ({allowance}) is delivered")
    c.check(harness.wait_until(lambda: journal_used() == allowance, 20),
            f"first run: SPOOL/warmup.json says {allowance} used today (saved within its interval)", journal_used())
    first.kill()
    before = len(harness.log_records(first.log_path))

    second = harness.Relay(relay_bin, flags, spool=spool, shards=1).start()
    c.check(f": {allowance} message(s) over 1 source schedule(s)" in second.stderr(),
            f"second run: the start-up line says {allowance} were restored",
            [l for l in second.stderr().splitlines() if "warm-up" in l])
    later = lambda kind: [x for x in harness.log_records(second.log_path)[before:] if x.get("type") == kind]  # noqa: E731
    c.check(harness.wait_until(lambda: any(x.get("event") == "warmup_used_up" for x in later("Shaping")), 30),
            "second run: a's allowance is reported used up when the recovered mail is tried",
            [(x.get("type"), x.get("event")) for x in harness.log_records(second.log_path)[before:]][:12])
    time.sleep(3)  # the retry interval is 1 s: sends, had there been any allowance left, show by now
    c.check(len(later("Delivery")) == 0, "second run: nothing more is delivered", len(later("Delivery")))
    c.check(second.stop() == 0, "second run: stops cleanly")
    c.check(journal_used() == allowance, f"the final save still says {allowance} used today", journal_used())
    sink.terminate()
    summary, _ = harness.sink_result(sink, 30)
    c.check(summary.get("received") == allowance, f"the sink received exactly {allowance} over both runs", summary)


def provider_case(c, relay_bin, sink_bin):
    from mx_routing_test import Dnsmasq
    try:
        dns = Dnsmasq(["--mx-host=p1.test,mx.prov.test,10", "--host-record=mx.prov.test,127.0.0.1",
                       "--mx-host=o.test,mx.other.test,10", "--host-record=mx.other.test,127.0.0.1"])
    except harness.Skip as e:
        c.info(f"per-provider case skipped: {e}")
        return
    n = 6
    work = harness.temp_dir("rr-warmup-mx-")
    today = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    rules = os.path.join(work, "warmup.json")
    with open(rules, "w") as f:
        json.dump({"providers": {"exprov": {"match": {"mx_suffix": [".prov.test"]}}},
                   "warmup": {"a": {"start": today, "daily": [20], "providers": {"exprov": {"daily": [4]}}}}}, f)
    port = harness.free_port()
    save = harness.temp_dir("rr-warmup-mx-save-")
    sink = harness.start_sink(sink_bin, port, ["--save", save, "--expect", str(2 * n), "--duration", "60"])
    relay = harness.Relay(relay_bin, ["--dns-server", f"127.0.0.1:{dns.port}", "--smtp-port", str(port),
                                      "--retry-intervals", "1s", "--no-default-shaping", "--shaping", rules] +
                          SOURCES + ["--egress-pool", "main=a,b", "--pool-for", "*=main"], shards=2).start()
    delivered = lambda: [x for x in harness.log_records(relay.log_path) if x.get("type") == "Delivery"]  # noqa: E731
    send(relay, n, "p1.test")
    harness.wait_until(lambda: len(delivered()) >= n, 30)  # the second domain's choices after the first's
    send(relay, n, "o.test")
    stats, err = harness.sink_result(sink, 70)
    relay.stop()
    dns.peer.stop()
    clients = saved_clients(save)
    count = lambda domain, source: sum(1 for r, v in clients.items()  # noqa: E731
                                       if r and r.endswith("@" + domain) and v == ADDRESS[source])
    got = {d: (count(d, "a"), count(d, "b")) for d in ("p1.test", "o.test")}
    c.info(f"by MX, two shards, a's warm-up [20] for all sites and [4] for exprov: (from a, from b) {got}")
    c.check(stats.get("received") == 2 * n, f"all {2 * n} messages arrive", (stats.get("received"), err[-300:]))
    c.check(got["p1.test"] == (2, 4), "to the exprov site exactly 2 leave from a (its shard's share of 4), 4 from b",
            got)
    c.check(got["o.test"] == (3, 3), "to another site a and b alternate (a's all-sites allowance is counted apart)",
            got)
    log = harness.log_records(relay.log_path)
    used_up = [x for x in log if x.get("type") == "Shaping" and x.get("event") == "warmup_used_up"]
    c.check(len(used_up) == 1 and used_up[0].get("provider") == "exprov" and used_up[0].get("share") == 2,
            "one Shaping record: a's exprov share (2 of 4) used up", used_up)
    mismatched = [x.get("recipient") for x in log if x.get("type") == "Delivery"
                  and clients.get(x.get("recipient")) != ADDRESS.get(x.get("egress_source"))]
    c.check(not mismatched, "each Delivery record's egress_source is the source whose address the sink saw",
            mismatched[:5])


def startup_error(c, relay_bin):
    work = harness.temp_dir("rr-warmup-bad-")
    rules = os.path.join(work, "bad.json")
    with open(rules, "w") as f:
        json.dump({"warmup": {"ip9": {"start": "2026-12-01", "daily": [1]}}}, f)
    try:
        p = subprocess.run([relay_bin, "--spool", os.path.join(work, "spool"), "--listen", "127.0.0.1:0",
                            "--hostname", "mx.test.invalid", "--log", os.path.join(work, "log"),
                            "--shaping", rules] + SOURCES,
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                           text=True, timeout=30)
        code, err = p.returncode, p.stderr
    except subprocess.TimeoutExpired:
        code, err = None, "still running after 30 s"
    want = f"--shaping {rules}: warmup.\"ip9\": no --egress-source named \"ip9\""
    c.check(code is not None and code > 0 and want in err,
            "a warm-up naming an unknown source stops the start, naming the file and the key", (code, err[-400:]))


def scenario(c):
    relay_bin, sink_bin = sys.argv[1], sys.argv[2]
    harness.require_bindable(ADDRESS.values())
    startup_error(c, relay_bin)
    overflow_case(c, relay_bin, sink_bin)
    wait_case(c, relay_bin, sink_bin)
    restart_case(c, relay_bin, sink_bin)
    provider_case(c, relay_bin, sink_bin)


if __name__ == "__main__":
    harness.run("warmup", scenario)
