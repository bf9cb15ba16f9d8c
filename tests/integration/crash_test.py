#!/usr/bin/env python3
# tests/integration/crash_test.py: the durability proof (RFC 5321 §6.1: a 250 after the
# final dot means the relay has taken responsibility for the message).
# Rounds on one spool: start ringrelay (2 shards), drive 16 concurrent smtplib clients that
# send small, uniquely identified messages in a loop and record every queue id that got
# "250 ... queued as ID", SIGKILL the daemon mid-load, then check with `ringrelay
# --list-spool` and with the next start's "holds N message(s)" that every acknowledged id is
# in the spool. Messages present but never acknowledged are allowed only if their body had
# been sent in full (the reply was lost with the process): no phantom or mixed-up messages.
# Ids accumulate across rounds and must stay unique. Then the spool is corrupted on purpose
# (a torn last record; a flipped byte inside a record) in copies: the daemon must still
# start, report the damage with its offset on stderr, and list every intact message.
# Note: SIGKILL tests process death, not power loss; the page cache survives it.
import json
import os
import random
import shutil
import socket
import time

import harness
from harness import queued_id
from delivery_test import log_records

ROUNDS = 3
THREADS = 16
LOAD_SECONDS = (2.0, 3.0)  # the kill comes at a random point in this window
PER_CONNECTION = 25        # messages before a client reconnects


class Load(harness.KillLoad):
    """The client threads of one round."""

    def __init__(self, relay, round_no):
        super().__init__(relay, round_no, THREADS, PER_CONNECTION, seed="", helo="crash.test")
        self.acked = {}        # queue id -> Message-ID

    def message(self, tid, n, rng):
        mid = f"<crash-r{self.round_no}-t{tid}-n{n}@client.test>"
        msg = (f"From: t{tid}@example.org\r\nTo: sink@example.net\r\n"
               f"Subject: round {self.round_no} thread {tid} message {n}\r\n"
               f"Message-ID: {mid}\r\n\r\n" + "x" * rng.randrange(10, 400) + "\r\n").encode()
        return mid, f"t{tid}@example.org", ["sink@example.net"], msg

    def on_acked(self, mid, qid):
        self.acked[qid] = mid


def message_id(message):
    for line in message.split(b"\r\n"):
        if line.lower().startswith(b"message-id: "):
            return line[12:].decode(errors="replace")
        if not line:
            break
    return None


def crash_rounds(c, binary, spool):
    all_acked = {}
    all_in_flight = set()
    expected_holds = 0
    relay = None
    for round_no in range(1, ROUNDS + 1):
        relay = harness.Relay(binary, spool=spool, shards=2, log=False).start()
        c.check(relay.holds == expected_holds,
                f"round {round_no}: start says the spool holds {expected_holds} message(s)",
                f"said {relay.holds}")
        load = Load(relay, round_no)
        load.start()
        time.sleep(random.uniform(*LOAD_SECONDS))
        with load.lock:
            before_kill = len(load.acked)
        load.killing.set()
        relay.kill()  # SIGKILL, mid-load
        load.stop.set()
        c.check(load.join(30), f"round {round_no}: all client threads ended after the kill")
        acked = dict(load.acked)
        c.check(len(acked) > 0 and before_kill > 0, f"round {round_no}: load was running when killed",
                f"{len(acked)} acked")
        c.check(not load.refused, f"round {round_no}: no unexpected refusals under load", load.refused[:5])
        c.check(not load.errors, f"round {round_no}: no client errors before the kill", load.errors[:5])
        c.check(not (set(acked) & set(all_acked)), f"round {round_no}: queue ids not reused from earlier rounds")
        all_acked.update(acked)
        all_in_flight |= load.in_flight

        count, ids, problems = harness.list_spool(binary, spool)
        listed = set(ids)
        missing = set(all_acked) - listed
        extra = listed - set(all_acked)
        c.check(not missing, f"round {round_no}: every acknowledged id is listed "
                             f"({len(all_acked)} acked so far)", f"{len(missing)} missing: {sorted(missing)[:5]}")
        c.check(len(ids) == len(listed), f"round {round_no}: no id listed twice")
        c.info(f"round {round_no}: acked {len(acked)} this round ({len(all_acked)} total), "
               f"listed {count}, found {len(set(all_acked) & listed)}, extra (unacked but present) {len(extra)}, "
               f"in flight at the kill {len(load.in_flight)}")
        if problems.strip():
            c.info(f"round {round_no}: --list-spool reports (a torn tail is allowed): {problems.strip()[:300]}")
        expected_holds = count

    # A last start on the crashed spool: it recovers everything, and stops cleanly.
    relay = harness.Relay(binary, spool=spool, shards=2, log=False).start()
    c.check(relay.holds == expected_holds, f"after the last crash: start says it holds {expected_holds}",
            f"said {relay.holds}")
    c.check(relay.stop() == 0, "graceful stop after the crash rounds exits 0")

    # Content: each acknowledged id holds the message that was acknowledged with it, and every
    # extra is a message whose reply was lost in the kill.
    records = harness.read_spool(spool)
    wrong = [q for q, mid in all_acked.items() if q not in records or message_id(records[q].message) != mid]
    c.check(not wrong, "every acknowledged id holds its own message (Message-ID matches)",
            f"{len(wrong)} wrong: {wrong[:5]}")
    extras = {q: message_id(r.message) for q, r in records.items() if q not in all_acked}
    phantom = {q: m for q, m in extras.items() if m not in all_in_flight}
    c.check(not phantom, "every unacknowledged message in the spool was in flight at a kill",
            f"{len(phantom)}: {list(phantom.items())[:5]}")
    mids = [message_id(r.message) for r in records.values()]
    c.check(len(mids) == len(set(mids)), "no message stored twice")
    return all_acked, records


def last_records(records):
    """{segment path: [records in order]}"""
    by_seg = {}
    for r in sorted(records.values(), key=lambda r: (r.segment, r.offset)):
        by_seg.setdefault(r.segment, []).append(r)
    return by_seg


def corrupted_copy(c, binary, spool, label, damage):
    """Copies the spool, applies damage(copy) -> (lost queue id, segment file, offset), and
    checks the daemon and --list-spool on the copy."""
    copy = os.path.join(harness.temp_dir(), "spool")
    shutil.copytree(spool, copy)
    before_count, before_ids, _ = harness.list_spool(binary, copy)
    lost, seg_name, offset = damage(copy)
    count, ids, problems = harness.list_spool(binary, copy)
    c.check(count == before_count - 1 and set(ids) == set(before_ids) - {lost},
            f"{label}: --list-spool lists every intact message ({before_count - 1})",
            f"count {count}, missing {set(before_ids) - set(ids) - {lost}}")
    c.check(seg_name in problems and f"offset {offset}" in problems,
            f"{label}: --list-spool reports the damage with its segment and offset {offset}", problems.strip())
    relay = harness.Relay(binary, spool=copy, shards=2, log=False)
    try:
        relay.start()
        started = True
    except RuntimeError as e:
        started = False
        c.check(False, f"{label}: the daemon starts on the damaged spool", str(e)[-500:])
    if started:
        c.check(relay.holds == before_count - 1, f"{label}: the daemon holds the {before_count - 1} intact messages",
                f"said {relay.holds}")
        err = relay.stderr()
        c.check("spool" in err and seg_name in err and f"offset {offset}" in err,
                f"{label}: the daemon reports the damage on stderr", err.strip()[-400:])
        with relay.connect() as cl:
            cl.reply()
            cl.cmd("EHLO after.damage.test")
            cl.cmd("MAIL FROM:<a@example.org>")
            cl.cmd("RCPT TO:<b@example.net>")
            cl.cmd("DATA")
            r = cl.cmd(b"Subject: after damage\r\n\r\nnew mail still works\r\n.\r\n")
            new_id = queued_id(harness.text_of(r))
            c.check(r[0] == 250 and new_id, f"{label}: new mail is accepted on the damaged spool")
            cl.cmd("QUIT")
        c.check(relay.stop() == 0, f"{label}: graceful stop exits 0")
        count2, ids2, _ = harness.list_spool(binary, copy)
        c.check(count2 == before_count and set(ids2) == (set(before_ids) - {lost}) | {new_id},
                f"{label}: after a run on it, the intact messages are still all there plus the new one",
                f"count {count2}")


def corruption(c, binary, spool, records):
    by_seg = last_records(records)
    segs = sorted(by_seg, key=lambda s: len(by_seg[s]), reverse=True)
    c.require(segs and len(by_seg[segs[0]]) >= 3, "a segment with at least 3 records to damage")

    def truncate_last(copy):
        seg = segs[0]
        rec = by_seg[seg][-1]
        rel = os.path.relpath(seg, spool)
        path = os.path.join(copy, rel)
        size = os.path.getsize(path)
        end = rec.offset + rec.size
        # Only the last record: anything after it (a torn tail from a kill) goes too.
        with open(path, "r+b") as f:
            f.truncate(rec.offset + rec.size // 2)
        c.info(f"truncate: {rel} from {size} to {rec.offset + rec.size // 2} bytes "
               f"(record {rec.queue_id} at {rec.offset}, {rec.size} bytes, ended at {end})")
        return rec.queue_id, os.path.basename(seg), rec.offset

    def flip_middle(copy):
        seg = segs[0]
        recs = by_seg[seg]
        rec = recs[len(recs) // 2]
        rel = os.path.relpath(seg, spool)
        path = os.path.join(copy, rel)
        at = rec.offset + rec.size - 20  # inside the message bytes, well clear of the header
        with open(path, "r+b") as f:
            f.seek(at)
            b = f.read(1)
            f.seek(at)
            f.write(bytes([b[0] ^ 0x20]))
        c.info(f"flip: {rel} byte {at} (record {rec.queue_id} at {rec.offset} of {len(recs)} records)")
        # Its index goes too, so the start scans the segment and meets the damage (with the
        # index intact, a damaged body is found when it is read back for delivery: below, and
        # tests/queue/outbound_test.cc).
        index = path[:-len(".seg")] + ".idx"
        if os.path.exists(index):
            os.unlink(index)
        return rec.queue_id, os.path.basename(seg), rec.offset

    corrupted_copy(c, binary, spool, "torn last record", truncate_last)
    corrupted_copy(c, binary, spool, "flipped byte mid-segment", flip_middle)
    indexed_body_flip(c, binary, spool, segs[0], by_seg[segs[0]])


def indexed_body_flip(c, binary, spool, seg, recs):
    """A flipped byte in a message body of a segment whose index is intact: the start recovers
    from the index without reading bodies, so the message is still queued (its descriptor is
    intact); delivering it reads the body back, the CRC fails, and its recipient is deferred
    with the reason, never bounced, never delivered damaged."""
    label = "flipped body byte, index intact"
    copy = os.path.join(harness.temp_dir(), "spool-indexed")
    shutil.copytree(spool, copy)
    rel = os.path.relpath(seg, spool)
    path = os.path.join(copy, rel)
    if not os.path.exists(path[:-len(".seg")] + ".idx"):
        # Every segment of the spool has been through a clean stop or a start since it was
        # last written, so each one has an index.
        c.check(False, f"{label}: the damaged segment has an index", path)
        return
    before_count, before_ids, _ = harness.list_spool(binary, copy)
    rec = recs[len(recs) // 3]
    at = rec.offset + rec.size - 20
    with open(path, "r+b") as f:
        f.seek(at)
        b = f.read(1)
        f.seek(at)
        f.write(bytes([b[0] ^ 0x20]))
    c.info(f"flip (index intact): {rel} byte {at} (record {rec.queue_id})")
    count, ids, _ = harness.list_spool(binary, copy)
    c.check(count == before_count and set(ids) == set(before_ids),
            f"{label}: --list-spool still lists every message ({before_count})", f"count {count}")
    # Deliver everything to a sink (Postfix's smtp-sink, accepting all): every message but the
    # damaged one is delivered; that one is deferred with "cannot read the message back from
    # the spool", never bounced.
    port = harness.free_port()
    sink = harness.Peer([harness.find_tool("smtp-sink", ["/usr/sbin/smtp-sink"]), "-u", "nobody",
                         f"127.0.0.1:{port}", "100"])
    c.require(harness.connectable(port), "smtp-sink listens")
    relay = harness.Relay(binary, spool=copy, shards=2, log=True,
                          flags=["--smarthost", f"127.0.0.1:{port}", "--retry-intervals", "1h"])
    try:
        relay.start()
        deadline = time.monotonic() + 120
        delivered, deferred = [], []
        while time.monotonic() < deadline:
            delivered = log_records(relay, "Delivery")
            deferred = log_records(relay, "TransientFailure")
            if len(delivered) >= before_count - 1 and deferred:
                break
            time.sleep(0.5)
        c.check(len(delivered) == before_count - 1 and rec.queue_id not in {r.get("queue_id") for r in delivered},
                f"{label}: every other message is delivered", f"{len(delivered)} of {before_count - 1}")
        c.check(len(deferred) == 1 and deferred[0].get("queue_id") == rec.queue_id and
                "cannot read the message back from the spool" in json.dumps(deferred[0]),
                f"{label}: the damaged one is deferred with the reason", json.dumps(deferred)[:400])
        c.check(not log_records(relay, "Bounce"), f"{label}: nothing bounced")
        c.check(relay.stop() == 0, f"{label}: graceful stop exits 0")
    finally:
        relay.kill()
        sink.stop()
    count2, ids2, _ = harness.list_spool(binary, copy)
    c.check(count2 == 1 and ids2 == [rec.queue_id], f"{label}: only the damaged message stays queued",
            f"count {count2}")


def scenario(c):
    binary = harness.ringrelay_path()
    spool = os.path.join(harness.temp_dir(), "spool")
    t0 = time.monotonic()
    all_acked, records = crash_rounds(c, binary, spool)
    c.info(f"crash rounds: {len(all_acked)} acknowledged messages over {ROUNDS} kills, "
           f"{len(records)} readable records, {time.monotonic() - t0:.1f}s")
    corruption(c, binary, spool, records)


if __name__ == "__main__":
    socket.setdefaulttimeout(30)
    harness.run("crash", scenario)
