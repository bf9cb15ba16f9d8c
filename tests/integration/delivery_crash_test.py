#!/usr/bin/env python3
# tests/integration/delivery_crash_test.py: at-least-once delivery across a crash.
# "SIGKILL under load with the next hop up, then restart: every acknowledged message is
# delivered, duplicates are counted and reported."
#
# Rounds on one spool and one next hop (Postfix's smtp-sink with -d dumps, see delivery_test):
# start ringrelay (2 shards, --smarthost to the sink), drive 16 smtplib clients that send small
# messages, each with a unique Message-ID, and record every "250 ... queued as ID" with the
# time it came; SIGKILL the daemon after 2-3 s, mid-load and mid-delivery; restart it on the
# same spool and wait (bounded) until --list-spool says 0; stop it cleanly. Then, from the
# sink's dumps:
# - every acknowledged Message-ID reached the sink at least once;
# - every message at the sink is one we sent in full (acknowledged, or its body was sent and
#   the reply was lost in the kill): no garbage, no message never sent in full;
# - every copy at the sink is byte-for-byte the message we sent (after the relay's Received:);
# - duplicates (a Message-ID seen more than once) are counted and reported. They are allowed:
#   a message delivered just before the kill whose outcome record was not yet journaled is
#   sent again after the restart. The bound is the messages that can be "delivered but not
#   yet journaled" at a kill: those acknowledged in the last second before it (the journaling
#   lag we tolerate) plus one per outbound connection that can be in a transaction at once
#   (the pool: --max-connections-per-destination x shards). More is a bug.
# - the spool is back to baseline: --list-spool 0, at most one segment file per shard.
# No timing assertions; every wait is bounded; the sink and relays are stopped at exit.
import os
import random
import socket
import time

import harness
from harness import message_id
from delivery_test import Sink, as_dumped, log_records, segments

ROUNDS = 3
THREADS = 16
SHARDS = 2
POOL_PER_SHARD = 8              # --max-connections-per-destination
LOAD_SECONDS = (2.0, 3.0)       # the kill comes at a random point in this window
PER_CONNECTION = 25             # messages before a client reconnects
DRAIN_TIMEOUT = 45.0            # after the restart, for --list-spool to reach 0
BUDGET = 50.0                   # no new round starts after this many seconds (meson: 120 s)
SENDER_DOMAIN = "example.org"
RCPT = "sink@example.net"


class Load(harness.KillLoad):
    """The client threads of one round; records what was acknowledged, and when."""

    def __init__(self, relay, round_no):
        super().__init__(relay, round_no, THREADS, PER_CONNECTION, seed="dc-", helo="dcrash.test")
        self.acked = {}        # Message-ID -> (queue id, monotonic time of the 250)
        self.sent = {}         # Message-ID -> message bytes, once the body was sent in full

    def message(self, tid, n, rng):
        mid = f"<dcrash-r{self.round_no}-t{tid}-n{n}@client.test>"
        # The body goes out unstuffed: its lines must not start with '.'.
        fill = "x" + "".join(rng.choice("abcdefghij .,-") for _ in range(rng.randrange(10, 300)))
        msg = (f"From: t{tid}@{SENDER_DOMAIN}\r\nTo: {RCPT}\r\n"
               f"Subject: delivery crash round {self.round_no} thread {tid} message {n}\r\n"
               f"Message-ID: {mid}\r\n\r\n{fill}\r\nline two {n}\r\n").encode()
        return mid, f"t{tid}@{SENDER_DOMAIN}", [RCPT], msg

    def on_sent(self, mid, msg, rcpts):
        self.sent[mid] = msg

    def on_acked(self, mid, qid):
        self.acked[mid] = (qid, time.monotonic())


def relay_flags(sink):
    return ["--smarthost", f"127.0.0.1:{sink.port}", "--retry-intervals", "1s",
            "--max-connections-per-destination", str(POOL_PER_SHARD), "--idle-connection-timeout", "2"]


def drain(c, binary, relay, label, timeout=DRAIN_TIMEOUT):
    """Waits until --list-spool says 0 while `relay` runs; returns True if it did."""
    deadline = time.monotonic() + timeout
    count = None
    while time.monotonic() < deadline:
        count, _, _ = harness.list_spool(binary, relay.spool)
        if count == 0:
            return True
        if not relay.running():
            break
        time.sleep(0.5)
    c.check(False, f"{label}: --list-spool reaches 0 after the restart", f"still {count} after {timeout:.0f}s")
    return False


def scenario(c):
    binary = harness.ringrelay_path()
    sink = Sink()  # raises harness.Skip when smtp-sink is missing
    spool = os.path.join(harness.temp_dir(), "spool")
    started = time.monotonic()
    sent_all = {}      # Message-ID -> bytes (every message whose body was sent in full)
    acked_all = {}     # Message-ID -> queue id
    bounds = []        # per round: (acked in the last second before the kill) + pool
    mids_by_round = []
    totals = {"acked": 0, "delivered": 0, "dups": 0}
    for round_no in range(1, ROUNDS + 1):
        if round_no > 1 and time.monotonic() - started > BUDGET:
            c.info(f"time budget used: {round_no - 1} round(s) run")
            break
        label = f"round {round_no}"
        relay = harness.Relay(binary, relay_flags(sink), spool=spool, shards=SHARDS).start()
        count0, _, _ = harness.list_spool(binary, spool)
        c.check(count0 == 0, f"{label}: the spool starts with nothing unfinished", f"{count0}")
        load = Load(relay, round_no)
        load.start()
        time.sleep(random.uniform(*LOAD_SECONDS))
        load.killing.set()
        kill_at = time.monotonic()
        relay.kill()  # SIGKILL mid-load, with deliveries in progress
        load.stop.set()
        c.check(load.join(30), f"{label}: all client threads ended after the kill")
        with load.lock:
            acked = dict(load.acked)
            sent = dict(load.sent)
            in_flight = set(load.in_flight)
        last_second = sum(1 for _, t in acked.values() if t >= kill_at - 1.0)
        c.check(len(acked) > 0, f"{label}: load was running when killed", f"{len(acked)} acked")
        c.check(not load.refused, f"{label}: no unexpected refusals under load", load.refused[:5])
        c.check(not load.errors, f"{label}: no client errors before the kill", load.errors[:5])
        delivered_before = len(log_records(relay, "Delivery"))
        count, _, problems = harness.list_spool(binary, spool)
        c.info(f"{label}: killed after {len(acked)} acks ({last_second} in the last second), "
               f"{len(in_flight)} in flight; {delivered_before} Delivery records logged before the kill; "
               f"{count} message(s) unfinished in the spool")
        if problems.strip():
            c.info(f"{label}: --list-spool reports (a torn tail is allowed): {problems.strip()[:300]}")

        # Restart on the same spool: it resumes every unfinished recipient.
        relay2 = harness.Relay(binary, relay_flags(sink), spool=spool, shards=SHARDS).start()
        # Informational: the startup line counts every message record recovered, finished ones
        # (not yet deleted with their segment) included, so it may exceed --list-spool.
        c.info(f"{label}: the restart says it holds {relay2.holds}; --list-spool listed {count}")
        drained = drain(c, binary, relay2, label)
        code = relay2.stop()
        c.check(code == 0, f"{label}: the restarted relay stops cleanly", f"exit {code}")
        if drained:
            c.check(True, f"{label}: --list-spool reaches 0 after the restart")
        count, ids, _ = harness.list_spool(binary, spool)
        c.check(count == 0, f"{label}: nothing unfinished in the spool after the drain", ids[:5])
        per_shard = {}
        for seg in segments(spool):
            per_shard.setdefault(os.path.dirname(seg), []).append(os.path.basename(seg))
        c.check(all(len(v) <= 1 for v in per_shard.values()),
                f"{label}: at most one segment file per shard remains", per_shard)

        sent_all.update(sent)
        acked_all.update({m: q for m, (q, _) in acked.items()})
        bounds.append(last_second + POOL_PER_SHARD * SHARDS)
        mids_by_round.append((set(acked), set(sent), in_flight, last_second))
        if not drained:
            c.info(f"{label}: not drained; no further rounds")
            break

    # Everything the sink got, over every round (the relays are stopped: no dump is partial).
    got = sink.messages()
    copies = {}
    garbage = []
    wrong_body = []
    wrong_envelope = []
    for meta, body in got:
        mid = message_id(body)
        if mid is None or mid not in sent_all:
            garbage.append((meta.get("X-Mail-Args"), body[:120]))
            continue
        copies[mid] = copies.get(mid, 0) + 1
        if not (body.startswith(b"Received: from client") and body.endswith(as_dumped(sent_all[mid]))):
            wrong_body.append(mid)
        if meta.get("X-Rcpt-Args") != [f"<{RCPT}>"] or not meta.get("X-Mail-Args", [""])[0].endswith(
                f"@{SENDER_DOMAIN}>"):
            wrong_envelope.append((mid, meta.get("X-Mail-Args"), meta.get("X-Rcpt-Args")))
    c.check(not garbage, "every message at the sink is one we sent in full (no garbage)",
            f"{len(garbage)}: {garbage[:3]}")
    c.check(not wrong_body, "every copy at the sink is the message sent, byte for byte after the Received:",
            f"{len(wrong_body)}: {wrong_body[:5]}")
    c.check(not wrong_envelope, "every copy has the envelope we sent", wrong_envelope[:3])

    for i, (acked, sent, in_flight, last_second) in enumerate(mids_by_round, start=1):
        missing = sorted(m for m in acked if m not in copies)
        c.check(not missing, f"round {i}: every acknowledged message reached the sink ({len(acked)})",
                f"{len(missing)} missing: {missing[:5]}")
        unacked = sorted(m for m in sent if m in copies and m not in acked)
        c.check(all(m in in_flight for m in unacked),
                f"round {i}: every unacknowledged message at the sink was in flight at the kill",
                f"{[m for m in unacked if m not in in_flight][:5]}")
        dups = {m: n for m, n in copies.items() if n > 1 and m in sent}
        extra_copies = sum(n - 1 for n in dups.values())
        delivered = sum(1 for m in sent if m in copies)
        c.info(f"round {i}: acked {len(acked)}, delivered {delivered} distinct "
               f"({len(unacked)} of them unacknowledged, in flight at the kill), "
               f"duplicated {len(dups)} message(s) ({extra_copies} extra copies); bound {bounds[i - 1]} "
               f"= {last_second} acked in the last second + pool {POOL_PER_SHARD * SHARDS}")
        if dups:
            c.info(f"round {i}: duplicates, e.g. {sorted(dups.items())[:5]}")
        c.check(extra_copies <= bounds[i - 1],
                f"round {i}: duplicates ({extra_copies}) within the bound ({bounds[i - 1]})")
        totals["acked"] += len(acked)
        totals["delivered"] += delivered
        totals["dups"] += extra_copies
    c.info(f"total: acked {totals['acked']}, delivered {totals['delivered']} distinct, "
           f"{len(got)} copies at the sink, {totals['dups']} duplicate copies, "
           f"{time.monotonic() - started:.1f}s")


if __name__ == "__main__":
    socket.setdefaulttimeout(30)
    harness.run("delivery_crash", scenario)
