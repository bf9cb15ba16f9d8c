#!/usr/bin/env python3
# tests/integration/power_loss_test.py: crash consistency under a simulated power loss, and
# proof that the crash test can tell a durable relay from one that is not.
#
# The binary under test is ringrelay-powerloss (argv[1]): the daemon built over
# queue::power_loss_storage, where writes reach the file only when an fdatasync covering them
# completes, so SIGKILL loses exactly what a power cut would (the page cache included, and a
# batch whose fdatasync was issued but not finished). Not modelled: the durability of file
# creation, directory entries and unlink.
#
# Durable rounds (RR_POWER_LOSS_ROUNDS, default 4), one spool: ringrelay-powerloss --hold
# takes load from 16 smtplib clients (delivery_crash_test.Load: unique Message-IDs, records
# each 250 and each body sent in full), SIGKILL at a random moment 1-2.5 s in; restart on the
# same spool with a smarthost (Postfix's smtp-sink with dumps) and drain until --list-spool
# is 0. Checks: every acknowledged message reached the sink; every message at the sink is one
# we sent in full, byte for byte (no torn or merged message); unacknowledged ones at the sink
# were in flight at the kill.
#
# Non-durable round: the same with RINGRELAY_TEST_NONDURABLE=1: fdatasync returns at once and
# each batch reaches the file only one batch later, so the relay says 250 one batch before the
# data is safe (as a relay that skipped fdatasync would, but losing only the last batch, not
# everything). The checks above must find some acknowledged mail missing, and not all of it:
# the test can tell a window of one batch, not only total loss.
import os
import random
import time

import harness
from harness import message_id
from delivery_crash_test import Load, THREADS  # noqa: F401 (THREADS documents the load)
from delivery_test import Sink, as_dumped

ROUNDS = int(os.environ.get("RR_POWER_LOSS_ROUNDS", "4"))
LOAD_SECONDS = (1.0, 2.5)
DRAIN_TIMEOUT = 45.0
BUDGET = 70.0  # no new durable round starts after this many seconds


def one_round(c, binary, sink, spool, round_no, label):
    """Load + SIGKILL + restart-and-drain; returns (acked, sent, in_flight) or None."""
    relay = harness.Relay(binary, spool=spool, shards=2).start()  # --hold: keep it in the spool
    load = Load(relay, round_no)
    load.start()
    time.sleep(random.uniform(*LOAD_SECONDS))
    load.killing.set()
    relay.kill()
    load.stop.set()
    c.check(load.join(30), f"{label}: client threads ended after the kill")
    with load.lock:
        acked = {m: q for m, (q, _) in load.acked.items()}
        sent = dict(load.sent)
        in_flight = set(load.in_flight)
    c.check(len(acked) > 0, f"{label}: load was running when killed", f"{len(acked)} acked")
    c.check(not load.errors, f"{label}: no client errors before the kill", load.errors[:3])

    relay2 = harness.Relay(binary, ["--smarthost", f"127.0.0.1:{sink.port}", "--retry-intervals", "1s"],
                           spool=spool, shards=2).start()
    deadline = time.monotonic() + DRAIN_TIMEOUT
    count = None
    while time.monotonic() < deadline:
        count, _, _ = harness.list_spool(binary, spool)
        if count == 0:
            break
        time.sleep(0.3)
    c.check(count == 0, f"{label}: the restarted relay drains its spool", f"{count} left")
    c.check(relay2.stop() == 0, f"{label}: the restarted relay stops cleanly")
    c.info(f"{label}: {len(acked)} acknowledged, {len(in_flight)} in flight at the kill; "
           f"restart said it holds {relay2.holds}")
    return acked, sent, in_flight


def judge(sink, rounds):
    """Compares the sink's dumps with what was sent: (missing, garbage, wrong_body, unacked_not_in_flight)."""
    sent_all = {}
    for _, sent, _ in rounds:
        sent_all.update(sent)
    copies = {}
    garbage, wrong_body = [], []
    for _meta, body in sink.messages():
        mid = message_id(body)
        if mid is None or mid not in sent_all:
            garbage.append(body[:100])
            continue
        copies[mid] = copies.get(mid, 0) + 1
        if not (body.startswith(b"Received: from client") and body.endswith(as_dumped(sent_all[mid]))):
            wrong_body.append(mid)
    missing, stray = [], []
    for acked, sent, in_flight in rounds:
        missing += [m for m in acked if m not in copies]
        stray += [m for m in sent if m in copies and m not in acked and m not in in_flight]
    return missing, garbage, wrong_body, stray, sum(len(a) for a, _, _ in rounds)


def scenario(c):
    binary = harness.ringrelay_path()
    started = time.monotonic()

    # Durable: power loss at a random moment, many rounds, nothing acknowledged is lost.
    sink = Sink()  # raises harness.Skip when smtp-sink is missing
    spool = os.path.join(harness.temp_dir(), "spool")
    rounds = []
    for round_no in range(1, ROUNDS + 1):
        if round_no > 1 and time.monotonic() - started > BUDGET:
            c.info(f"time budget used: {round_no - 1} durable round(s) run")
            break
        r = one_round(c, binary, sink, spool, round_no, f"durable round {round_no}")
        rounds.append(r)
    sink.stop()
    missing, garbage, wrong_body, stray, acked_total = judge(sink, rounds)
    c.check(not missing, f"durable: every acknowledged message ({acked_total}) was delivered after the power loss",
            f"{len(missing)} missing: {missing[:5]}")
    c.check(not garbage, "durable: every message at the sink is one we sent in full", garbage[:3])
    c.check(not wrong_body, "durable: every copy is byte for byte the message sent (none torn or merged)",
            wrong_body[:5])
    c.check(not stray, "durable: unacknowledged messages at the sink were in flight at the kill", stray[:5])

    # Non-durable: the same test must catch the lie.
    sink2 = Sink()
    spool2 = os.path.join(harness.temp_dir(), "spool")
    os.environ["RINGRELAY_TEST_NONDURABLE"] = "1"
    try:
        r = one_round(c, binary, sink2, spool2, 100, "non-durable round")
    finally:
        del os.environ["RINGRELAY_TEST_NONDURABLE"]
    sink2.stop()
    missing2, _, _, _, acked2 = judge(sink2, [r])
    c.check(0 < len(missing2) < acked2,
            "non-durable relay (250 one batch before the data is safe): the test finds some, not all, "
            "acknowledged mail lost", f"{len(missing2)} of {acked2} acknowledged messages missing")
    c.info(f"non-durable: {len(missing2)} of {acked2} acknowledged messages lost in the simulated power cut")


if __name__ == "__main__":
    harness.run("power_loss", scenario)
