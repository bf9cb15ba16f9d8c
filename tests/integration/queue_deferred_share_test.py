#!/usr/bin/env python3
# tests/integration/queue_deferred_share_test.py: 1% of recipients deferred for the whole
# test, the rest delivered; the spool must not stay pinned by the few (issue 15,
# "Compaction", and its second evidence item).
#
#   ringrelay-bench --messages N --size 20k --domains deliver.example:99,defer.example:1
#     -> ringrelay --route defer.example=127.0.0.1:P2 --route '*=127.0.0.1:P1'
#                  --retry-intervals 1h
#        -> P1: ringrelay-sink (accepts everything)
#        -> P2: ringrelay-sink --defer-rate 1 (451 4.3.0 to every message)
#
# ringrelay-sink has no per-recipient replies (its faults are drawn per message, at the end
# of data), so the deferred 1% are the recipients of one domain, routed to a second sink that
# answers 451 4.3.0 to every message; each message has one recipient, so per message is per
# recipient here. With a 1 h retry interval they stay deferred for the whole test.
#
# Checks, once every message is delivered or deferred (bounded waits):
# - the delivered ones are exactly the messages the first sink received, each delivered once;
#   none of the deferred ones was delivered;
# - within COMPACTION_WAIT seconds the spool's segments hold no more than
#       2 x the live data (the deferred messages' records) + SEGMENTS_PER_SHARD x 64 MiB
#   per shard (the bound: "twice the live data plus a few segments per shard");
# - after the relay stops, --list-spool lists exactly the deferred messages (no record
#   reported corrupt), and each of them is still whole in the spool: the bench's 20 KiB
#   template with its own sequence number.
#
# Without compaction every segment keeps its 1% and the whole spool stays: this test FAILS
# until compaction lands. RR_COMPACTION_PENDING=1 skips it (exit 77) meanwhile; by default it
# runs. N is RR_DEFER_COUNT (default 100,000 over 2 shards: about 2 GB written, 30 segments;
# under a sanitizer build 20,000 over 1 shard, 6 segments, so that the bound of 3 segments
# still separates compacted from not).
#
# Arguments: ringrelay, ringrelay-bench, ringrelay-sink. Loopback only; every wait bounded.
import os
import time

import harness
from queue_scale_test import (BODY_CACHE, LARGE, SANITIZED, SEGMENT_LIMIT, LogTail, Sink, bench_seq, has_flag,
                              mib, need_disk, run_bench, spool_bytes, template_of, tools, wait_until)

COUNT = int(os.environ.get("RR_DEFER_COUNT", "20000" if SANITIZED else "100000"))
SHARDS = 1 if SANITIZED else 2
DEFER_DOMAIN = "defer.example"
DOMAINS = f"deliver.example:99,{DEFER_DOMAIN}:1"
SEGMENTS_PER_SHARD = 3     # "a few segments per shard": the current one and two being compacted
COMPACTION_WAIT = 90.0     # seconds after the last delivery for the spool to come within bound


def live_record_bytes(spool, live):
    """Bytes of the message records of the queue ids in `live` (one copy each: a record being
    compacted may briefly be in two segments), read while the relay runs (a segment deleted
    under us is skipped), and those records by id."""
    found = {}
    for seg in harness.spool_segments(spool):
        try:
            for r in harness.parse_segment(seg, check_crc=False):
                if r.queue_id in live:
                    found[r.queue_id] = r
        except FileNotFoundError:
            continue
    return sum(r.size for r in found.values()), found


def scenario(c):
    if os.environ.get("RR_COMPACTION_PENDING"):
        raise harness.Skip("RR_COMPACTION_PENDING is set: spool compaction (issue 15) has not landed")
    binary, bench, sink_bin = tools()
    work = harness.temp_dir("rr-queue-defer-")
    need_disk(work, COUNT * LARGE * 3 // 2 + (256 << 20))
    cache_flag = has_flag(binary, "--body-cache-size")
    c.check(cache_flag, "the relay has --body-cache-size (issue 15)")
    ok_port, defer_port = harness.free_port(), harness.free_port()
    ok_sink = Sink(sink_bin, ok_port, [])
    defer_sink = Sink(sink_bin, defer_port, ["--defer-rate", "1"])
    flags = ["--route", f"{DEFER_DOMAIN}=127.0.0.1:{defer_port}", "--route", f"*=127.0.0.1:{ok_port}",
             "--retry-intervals", "1h"]
    if cache_flag:
        flags += ["--body-cache-size", BODY_CACHE]
    relay = harness.Relay(binary, flags, shards=SHARDS).start()
    c.info(f"{COUNT} messages of 20 KiB, {SHARDS} shard(s), recipients {DOMAINS}")
    run_bench(c, bench, relay, COUNT, LARGE, "20 KiB", ["--domains", DOMAINS, "--seed", "15"])

    tail = LogTail(relay.log_path)
    settled = wait_until(lambda: len(tail.poll().delivered | tail.deferred) >= COUNT, 120 + COUNT / 500)
    t_settled = time.monotonic()
    live = tail.deferred - tail.delivered
    c.require(settled, f"every one of {COUNT} messages delivered or deferred",
              f"{len(tail.delivered)} delivered, {len(live)} deferred, others {tail.others}")
    c.check(0.005 * COUNT <= len(live) <= 0.02 * COUNT, f"about 1% deferred: {len(live)}")
    c.check(not (tail.deferred & tail.delivered) and tail.deliveries == len(tail.delivered),
            "no deferred message was delivered and none delivered twice",
            f"{len(tail.deferred & tail.delivered)} both, {tail.deliveries} Delivery records")
    c.check(len(tail.delivered) + len(live) == COUNT, "the delivered and the deferred make up every message")

    live_bytes, _ = live_record_bytes(relay.spool, live)
    bound = 2 * live_bytes + SEGMENTS_PER_SHARD * SHARDS * SEGMENT_LIMIT
    within = wait_until(lambda: spool_bytes(relay.spool) <= bound, COMPACTION_WAIT, step=1.0)
    size = spool_bytes(relay.spool)
    c.info(f"spool {mib(size)} in {len(harness.spool_segments(relay.spool))} segments "
           f"{time.monotonic() - t_settled:.0f} s after the last outcome; live data {mib(live_bytes)}")
    c.check(within, f"the spool within 2 x live data + {SEGMENTS_PER_SHARD} x 64 MiB per shard = {mib(bound)}",
            mib(size))

    c.check(relay.stop() == 0, "the relay stops cleanly (SIGTERM, exit 0)")
    status, ok_summary = ok_sink.finish(timeout=0)
    c.check(ok_summary.get("received") == len(tail.delivered),
            "the first sink received exactly the delivered messages", ok_summary)
    status, defer_summary = defer_sink.finish(timeout=0)
    # Not every deferred message need have reached the deferring sink by now (some wait out a
    # back-off after a refused connection): that it took none is what counts.
    c.check(defer_summary.get("received") == 0 and defer_summary.get("deferred", 0) > 0,
            "the deferring sink accepted nothing and answered 451 to what it was offered", defer_summary)
    count, ids, stderr = harness.list_spool(binary, relay.spool)
    c.check(count == len(live) and set(ids) == live, f"--list-spool lists exactly the {len(live)} deferred messages",
            f"{count} listed")
    c.check("corrupt" not in stderr.lower(), "--list-spool reports no corrupt record", stderr[-300:])
    _, found = live_record_bytes(relay.spool, live)
    templates = {template_of(r.message) for r in found.values()}
    seqs = {bench_seq(r.message) for r in found.values()}
    c.check(len(found) == len(live) and len(seqs) == len(live) and len(templates) == 1
            and all(t is not None and len(t) == LARGE for t in templates),
            "each deferred message is still whole in the spool (the bench's 20 KiB, its own sequence number)",
            f"{len(found)} found, {len(seqs)} distinct seqs, {len(templates)} variants")


if __name__ == "__main__":
    harness.run("queue_deferred_share", scenario)
