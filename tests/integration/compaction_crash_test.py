#!/usr/bin/env python3
# tests/integration/compaction_crash_test.py: SIGKILL during compaction and during recovery,
# repeated, with the disk backend and with the power-loss backend (issue 15: "every
# acknowledged message delivered at least once, byte-exact"; "a SIGKILL at any moment of
# compaction loses nothing and delivers nothing twice beyond the deliveries in flight").
#
#   smtplib clients -> ringrelay --spool-segment-size 1MiB
#                        --route defer.test=127.0.0.1:P2 --route '*=127.0.0.1:P1'
#     -> P1: Postfix smtp-sink with dumps (accepts everything)
#     -> P2: smtp-sink -r RCPT (451 to every recipient) until the final drain, then an
#            accepting smtp-sink with dumps on the same port
#
# One message in eight also has a recipient at defer.test: its ok.test copy is delivered at
# once, the other stays deferred, so with 1 MiB segments every closed segment soon holds
# about 1/8 live records and is compacted (queue/compactor.h: its live messages copied as
# type 5 records, with their recipients' states, into the current segment; then the old
# segment goes). Each restart also closes the segment it finds, so compaction starts within
# a second or two of every start.
#
# Rounds on one spool (RR_COMPACTION_CRASH_ROUNDS, default 6, with ringrelay, then
# RR_COMPACTION_CRASH_POWER_LOSS_ROUNDS, default 4, with ringrelay-powerloss, where SIGKILL
# loses every write no completed fdatasync covered, as a power cut would):
# - start the relay, 12 client threads send (unique Message-IDs; every 250 and every body
#   sent in full recorded); the relay's stderr is watched and at its Kth compaction line
#   "compaction of segment N in DIR: copying ..." (K random in 1..4) the relay is SIGKILLed
#   after a random 0-12 ms (a round reads, appends, commits and relocates in about that
#   time); if no round starts within ROUND_WAIT s the kill comes then, and is counted as not
#   during compaction. Each kill is classified from the relay's lines and the spool after it
#   (the round's copies not yet heard durable / heard durable but the old segment still there
#   / the segment gone) and the counts are printed; they are not asserted (timing).
# - then RECOVERY_KILLS (3) starts, each SIGKILLed a random moment within the time the last
#   full start took from its "starting N shard(s): recovering the spool" line to the next line
#   (the relay's own timestamps): during shard start-up and spool recovery (recovery from indexes,
#   and the scan of the segment the kill left without one). How many came before "listening"
#   is printed.
# - after every kill, --list-spool must read the spool and list no queue id twice, and the
#   test's own reader of the spool notes every recipient it shows durably delivered (an outcome
#   record with a good CRC, or a copy's recipient state).
# Checks, from the two sinks' dumps:
# - every acknowledged message reached each of its recipients at least once;
# - every copy is byte for byte the message sent (after the relay's Received:), to one of its
#   own recipients at the right sink; no message at a sink that was never sent in full;
# - an unacknowledged message at a sink had its body sent in full when a kill came;
# - defer.test recipients are accepted only in the final drain, where nothing is killed: each
#   reached the sink exactly once (a compaction copy recovered beside its original, or an old
#   copy outliving a newer one, would deliver twice);
# - extra copies at the ok.test sink are within the deliveries that can be in flight at the
#   kills: per kill during load, the messages acknowledged in the last second before it (a
#   delivery whose outcome record was not yet durable is sent again after the restart) plus
#   the pool (--max-connections-per-destination x shards, one transaction each); per recovery
#   kill, the pool;
# - no recipient that a kill left durably delivered in the spool reached a sink after that
#   kill (the dump file's mtime, kernel time, against the test's clock after the kill): a
#   copy that lost a delivered state, or an original recovered over its copy, fails this
#   whatever the timing;
# - compaction ran: at least one kill came at a compaction line.
# - after the drain and a clean stop, at most one segment file per shard remains.
#
# Arguments: ringrelay, ringrelay-powerloss. Loopback only; every wait bounded; RR_KEEP_TEMP
# keeps the spool and the dumps.
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import harness
from harness import message_id
from delivery_test import Sink, as_dumped, segments

ROUNDS = int(os.environ.get("RR_COMPACTION_CRASH_ROUNDS", "6"))
POWER_LOSS_ROUNDS = int(os.environ.get("RR_COMPACTION_CRASH_POWER_LOSS_ROUNDS", "4"))
RECOVERY_KILLS = 3          # per round
THREADS = 12
SHARDS = 2
POOL_PER_SHARD = 4          # --max-connections-per-destination
SEGMENT_SIZE = "1MiB"       # --spool-segment-size: the smallest the relay takes
DEFER_EVERY = 8             # one message in eight also goes to a deferred recipient
ROUND_WAIT = 15.0           # seconds for the Kth compaction line of a round
KILL_DELAY_MS = (0.0, 12.0)
DRAIN_TIMEOUT = 60.0
BUDGET = 75.0               # no new round starts after this many seconds (meson: 240 s)
OK_DOMAIN, DEFER_DOMAIN = "ok.test", "defer.test"
SENDER = "sender@example.org"

_COPYING_RE = re.compile(r"compaction of segment (\d+) in (\S+): copying (\d+) live")
_DURABLE_RE = re.compile(r"compaction of segment (\d+) in (\S+): copies durable")
_RECOVERING = "shard(s): recovering the spool in "


class Load(harness.KillLoad):
    """Client threads: messages to ok.test, one in DEFER_EVERY also to defer.test."""

    def __init__(self, relay, round_no):
        super().__init__(relay, round_no, THREADS, 25, seed="cc-", helo="ccrash.test")
        self.acked = {}         # Message-ID -> monotonic time of the 250
        self.sent = {}          # Message-ID -> (bytes, [recipients]) once the body was sent in full

    def message(self, tid, n, rng):
        mid = f"<cc-r{self.round_no}-t{tid}-n{n}@client.test>"
        rcpts = [f"t{tid}n{n}@{OK_DOMAIN}"]
        if rng.randrange(DEFER_EVERY) == 0:
            rcpts.append(f"t{tid}n{n}@{DEFER_DOMAIN}")
        # 2-6 KiB, lines not starting with '.', sent unstuffed.
        lines = [f"x{n} " + "".join(rng.choice("abcdefghij .,-") for _ in range(70))
                 for _ in range(rng.randrange(28, 84))]
        msg = (f"From: {SENDER}\r\nTo: {', '.join(rcpts)}\r\n"
               f"Subject: compaction crash round {self.round_no} thread {tid} message {n}\r\n"
               f"Message-ID: {mid}\r\n\r\n" + "\r\n".join(lines) + "\r\n").encode()
        return mid, SENDER, rcpts, msg

    def on_sent(self, mid, msg, rcpts):
        self.sent[mid] = (msg, rcpts)

    def on_acked(self, mid, qid):
        self.acked[mid] = time.monotonic()


class WatchedRelay(harness.Relay):
    """A harness.Relay whose stderr lines also go to on_line(line) as they come, from the
    reader thread."""

    on_line = None

    def _read_stderr(self):
        real = self.proc.stderr
        hook = self.on_line

        def tee():
            for line in real:
                if hook is not None:
                    hook(line)
                yield line
        self.proc.stderr = tee()
        try:
            super()._read_stderr()
        finally:
            self.proc.stderr = real


class CompactionKiller:
    """SIGKILLs the relay a random 0-12 ms after its Kth 'copying' line (from the reader
    thread, so the delay starts when the line is read)."""

    def __init__(self, k, delay_ms):
        self.k = k
        self.delay_ms = delay_ms
        self.seen = 0
        self.relay = None
        self.fired = threading.Event()
        self.trigger = None  # (segment, dir) of the round the kill followed

    def __call__(self, line):
        m = _COPYING_RE.search(line)
        if not m or self.fired.is_set():
            return
        self.seen += 1
        if self.seen < self.k:
            return
        time.sleep(self.delay_ms / 1000.0)
        self.trigger = (int(m.group(1)), m.group(2))
        self.fired.set()
        if self.relay is not None and self.relay.proc.poll() is None:
            os.kill(self.relay.proc.pid, signal.SIGKILL)


def kill_phase(stderr, spool_dir):
    """Where compaction was when the relay died, per the relay's lines and the spool: the
    last round started in each shard, and whether its copies were heard durable and its
    segment is still there. Returns a list of (shard dir, segment, phase)."""
    last = {}
    for line in stderr.splitlines():
        m = _COPYING_RE.search(line)
        if m:
            last[m.group(2)] = (int(m.group(1)), "started")
            continue
        m = _DURABLE_RE.search(line)
        if m and last.get(m.group(2), (None,))[0] == int(m.group(1)):
            last[m.group(2)] = (int(m.group(1)), "durable")
    out = []
    for d, (seg, state) in sorted(last.items()):
        present = os.path.exists(os.path.join(d, f"{seg:010d}.seg"))
        if state == "started":
            phase = "copies not yet durable" if present else "copies not yet durable, segment gone (?)"
        else:
            phase = "copies durable, old segment still there" if present else "round over, segment gone"
        out.append((os.path.relpath(d, os.path.dirname(spool_dir)), seg, phase))
    return out


def list_once(c, binary, spool, label):
    """--list-spool after a kill: it reads the spool and names no queue id twice."""
    count, ids, problems = harness.list_spool(binary, spool)
    c.check(len(ids) == len(set(ids)), f"{label}: --list-spool names each queue id once ({count} listed)",
            [i for i in set(ids) if ids.count(i) > 1][:5])
    if problems.strip():
        c.info(f"{label}: --list-spool reports (a torn tail is allowed): {problems.strip()[:200]}")
    return count


def copies_in_spool(spool):
    """Number of message copy (type 5) records in the spool now."""
    n = 0
    for seg in harness.spool_segments(spool):
        try:
            n += sum(1 for r in harness.parse_segment(seg, check_crc=False) if r.copy)
        except FileNotFoundError:
            continue
    return n


def durable_deliveries(spool, messages):
    """The recipients the spool says were delivered, read by the test's own reader right after
    a kill: outcome records (type 2, status delivered) whose CRC checks, and copies' (type 5)
    recipient states, mapped to (Message-ID, recipient) through the message records seen so far
    (`messages`: queue id -> (Message-ID, [recipients]), updated here). A delivered state never
    goes back, whatever compaction did since: none of these may reach a sink again."""
    import struct
    facts = set()
    for seg in harness.spool_segments(spool):
        try:
            with open(seg, "rb") as f:
                data = f.read()
            records = list(harness.parse_segment(seg, check_crc=False))
        except FileNotFoundError:
            continue
        for r in records:
            mid = message_id(r.message)
            rcpts = [x.decode(errors="replace") for x in r.rcpts]
            if mid is not None:
                messages.setdefault(int(r.queue_id, 16), (mid, rcpts))
        if len(data) < 80 or data[0:4] != harness.RECORD_MAGIC:
            continue
        (salt,) = struct.unpack_from("<I", data, 32)
        pos = 80
        while pos + 32 <= len(data):
            magic, rtype, _v, _r, plen, crc, qid, _t = struct.unpack_from("<4sBBHIIQQ", data, pos)
            if magic != harness.RECORD_MAGIC or pos + 32 + plen > len(data):
                nxt = data.find(harness.RECORD_MAGIC, pos + 1)
                if nxt < 0:
                    break
                pos = nxt
                continue
            payload = data[pos + 32:pos + 32 + plen]
            pairs = []
            if rtype == 2 and plen == 20:
                # The CRC (salted, queue/record.h) is cheap here: the record is 52 bytes.
                if harness.crc32c(payload, harness.crc32c(data[pos + 16:pos + 32],
                                                          harness.crc32c(data[pos + 4:pos + 12], salt))) == crc:
                    idx, status = struct.unpack_from("<IB", payload, 0)
                    if status == 1:
                        pairs.append(idx)
            elif rtype == 5 and plen >= 4:
                (n,) = struct.unpack_from("<I", payload, 0)
                pairs += [i for i in range(n) if 4 + 16 * i < plen and payload[4 + 16 * i] == 1]
            m = messages.get(qid)
            for idx in pairs:
                if m is not None and idx < len(m[1]):
                    facts.add((m[0], m[1][idx]))
            pos += 32 + plen
    return facts


def dumps_with_times(sink):
    """sink.messages() with each dump file's mtime (when the sink wrote it), in the same order."""
    import glob
    paths = sorted(glob.glob(os.path.join(sink.dir, "*")))
    return [(os.stat(p).st_mtime, meta, body) for p, (meta, body) in zip(paths, sink.messages())]


def relay_flags(ok_port, defer_port):
    return ["--route", f"{DEFER_DOMAIN}=127.0.0.1:{defer_port}", "--route", f"*=127.0.0.1:{ok_port}",
            "--retry-intervals", "1s", "--spool-segment-size", SEGMENT_SIZE,
            "--max-connections-per-destination", str(POOL_PER_SHARD), "--idle-connection-timeout", "2"]


def _stamp(line):
    """The relay's own timestamp of a stderr line (core::diag: ISO 8601, microseconds), seconds."""
    import datetime
    try:
        return datetime.datetime.strptime(line[:27], "%Y-%m-%dT%H:%M:%S.%fZ").timestamp()
    except ValueError:
        return None


def recovery_span(stderr):
    """Seconds from the relay's "starting N shard(s): recovering the spool" line to the next
    line (printed once every shard has recovered its spool and the relay is up), by the relay's
    own clock; None if unknown."""
    start = None
    for line in stderr.splitlines():
        if _RECOVERING in line:
            start = _stamp(line)
        elif start is not None:
            end = _stamp(line)
            return end - start if end is not None else None
    return None


def recovery_kill(binary, flags, spool, span):
    """Starts the relay and SIGKILLs it a random moment within `span` seconds after its
    "recovering the spool" line: during shard start-up and spool recovery. Returns (killed
    before "listening on", the delay, exit status)."""
    r = harness.Relay(binary, flags, spool=spool, shards=SHARDS)
    proc = subprocess.Popen(r.args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, errors="replace")
    harness.register_cleanup(lambda: proc.poll() is None and (proc.kill(), proc.wait(10)))
    lines = []
    at = random.uniform(0, span)

    def read():
        for line in proc.stderr:
            lines.append(line)
            if _RECOVERING in line:
                time.sleep(at)
                if proc.poll() is None:
                    proc.kill()
    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        proc.wait(harness.START_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()  # never printed the line: killed here, and counted as after 'listening'
        proc.wait(10)
    reader.join(5)
    return not any("listening on" in line for line in lines), at, proc.returncode


def scenario(c):
    binary = harness.ringrelay_path()
    powerloss = sys.argv[2] if len(sys.argv) > 2 else os.environ.get("RINGRELAY_POWERLOSS", "")
    if POWER_LOSS_ROUNDS > 0 and not (powerloss and os.access(powerloss, os.X_OK)):
        raise harness.Skip("ringrelay-powerloss (argv[2]) is needed for the power-loss rounds")
    ok_sink = Sink()  # raises harness.Skip when smtp-sink is missing
    defer_port = harness.free_port()
    defer_sink = Sink(port=defer_port, faults=["-r", "RCPT"])
    flags = relay_flags(ok_sink.port, defer_port)
    spool = os.path.join(harness.temp_dir("rr-ccrash-"), "spool")
    started = time.monotonic()

    sent_all, acked_all, in_flight_all = {}, set(), set()
    dup_bound = 0
    bound_terms = []
    phases = {}
    triggered = 0
    kills = 0
    recovery_before_listen = 0
    span = 0.05                # seconds of shard start-up and recovery, measured each round
    qid_map = {}               # queue id -> (Message-ID, [recipients]), from the spool
    durable_at = {}            # (Message-ID, recipient) -> time a kill found it durably delivered
    plan = [("ringrelay", binary)] * ROUNDS + [("ringrelay-powerloss", powerloss)] * POWER_LOSS_ROUNDS
    for round_no, (kind, bin_) in enumerate(plan, start=1):
        if round_no > 1 and time.monotonic() - started > BUDGET:
            c.info(f"time budget used: {round_no - 1} round(s) run")
            break
        label = f"round {round_no} ({kind})"
        killer = CompactionKiller(random.randint(1, 4), random.uniform(*KILL_DELAY_MS))
        relay = WatchedRelay(bin_, flags, spool=spool, shards=SHARDS)
        relay.on_line = killer
        killer.relay = relay
        relay.start()
        load = Load(relay, round_no)
        load.start()
        fired = killer.fired.wait(ROUND_WAIT)
        load.killing.set()
        kill_at = time.monotonic()
        relay.kill()
        load.stop.set()
        kills += 1
        c.check(load.join(30), f"{label}: client threads ended after the kill")
        with load.lock:
            acked, sent, in_flight = dict(load.acked), dict(load.sent), set(load.in_flight)
        last_second = sum(1 for t in acked.values() if t >= kill_at - 1.0)
        c.check(len(acked) > 0, f"{label}: load was running when killed", f"{len(acked)} acked")
        c.check(not load.refused, f"{label}: no refusals under load", load.refused[:3])
        c.check(not load.errors, f"{label}: no client errors before the kill", load.errors[:3])
        if fired:
            triggered += 1
            for where, seg, phase in kill_phase(relay.stderr(), spool):
                phases[phase] = phases.get(phase, 0) + 1
                c.info(f"{label}: killed {killer.delay_ms:.1f} ms after compaction line {killer.k}; "
                       f"{where} segment {seg}: {phase}")
        else:
            c.info(f"{label}: no compaction line {killer.k} within {ROUND_WAIT:.0f}s ({killer.seen} seen); killed anyway")
        sent_all.update(sent)
        acked_all |= set(acked)
        in_flight_all |= in_flight
        bound_terms.append(last_second + POOL_PER_SHARD * SHARDS)
        dup_bound += last_second + POOL_PER_SHARD * SHARDS
        facts = durable_deliveries(spool, qid_map)
        now = time.time()
        for f in facts:
            durable_at.setdefault(f, now)
        count = list_once(c, binary, spool, label)
        c.info(f"{label}: {len(acked)} acknowledged ({last_second} in the last second), {len(in_flight)} in "
               f"flight; {count} unfinished in the spool; {copies_in_spool(spool)} copy record(s) in it")

        span = recovery_span(relay.stderr()) or span
        for k in range(RECOVERY_KILLS):
            during, at, code = recovery_kill(bin_, flags, spool, span)
            kills += 1
            if during:
                recovery_before_listen += 1
            else:
                dup_bound += POOL_PER_SHARD * SHARDS  # recovered deliveries may have started
            c.check(code == -signal.SIGKILL, f"{label}: start {k + 1} was running when killed", f"exit {code}")
            c.info(f"{label}: start {k + 1} killed {at * 1000:.1f} ms after its shards began (recovery took "
                   f"{span * 1000:.1f} ms on the last full start): {'before' if during else 'after'} "
                   f"'listening'; exit {code}")
            now = time.time()
            for f in durable_deliveries(spool, qid_map):
                durable_at.setdefault(f, now)
            list_once(c, binary, spool, f"{label}, recovery kill {k + 1}")

    # The final drain: the deferred recipients' next hop now accepts; nothing is killed.
    defer_sink.stop()
    accept_sink = Sink(port=defer_port)
    relay = harness.Relay(binary, flags, spool=spool, shards=SHARDS).start()
    deadline = time.monotonic() + DRAIN_TIMEOUT
    count = None
    while time.monotonic() < deadline:
        count, _, _ = harness.list_spool(binary, spool)
        if count == 0 or not relay.running():
            break
        time.sleep(0.5)
    c.check(count == 0, "the final relay drains the spool (--list-spool 0)", f"{count} left")
    c.check(relay.stop() == 0, "the final relay stops cleanly")
    compaction_lines = len(_COPYING_RE.findall(relay.stderr()))
    per_shard = {}
    for seg in segments(spool):
        per_shard.setdefault(os.path.dirname(seg), []).append(os.path.basename(seg))
    c.check(all(len(v) <= 1 for v in per_shard.values()), "at most one segment file per shard remains", per_shard)
    ok_sink.stop()
    accept_sink.stop()

    # Judge from the dumps.
    copies = {}         # (Message-ID, recipient) -> copies
    garbage, wrong_body, wrong_rcpt, stray = [], [], [], []
    again = []          # delivered after a kill found them durably delivered
    for sink, domain in ((ok_sink, OK_DOMAIN), (accept_sink, DEFER_DOMAIN)):
        for mtime, meta, body in dumps_with_times(sink):
            mid = message_id(body)
            if mid is None or mid not in sent_all:
                garbage.append((domain, meta.get("X-Rcpt-Args"), body[:100]))
                continue
            msg, rcpts = sent_all[mid]
            got = [a.strip("<>") for a in meta.get("X-Rcpt-Args", [])]
            if len(got) != 1 or got[0] not in rcpts or not got[0].endswith("@" + domain):
                wrong_rcpt.append((mid, got))
                continue
            copies[(mid, got[0])] = copies.get((mid, got[0]), 0) + 1
            if (mid, got[0]) in durable_at and mtime > durable_at[(mid, got[0])]:
                again.append((mid, got[0]))
            if not (body.startswith(b"Received: from client") and body.endswith(as_dumped(msg))):
                wrong_body.append(mid)
            if mid not in acked_all and mid not in in_flight_all:
                stray.append(mid)
    c.check(not garbage, "every message at the sinks is one we sent in full", garbage[:3])
    c.check(not wrong_rcpt, "every copy went to one of its own recipients, at that recipient's next hop",
            wrong_rcpt[:3])
    c.check(not wrong_body, "every copy is byte for byte the message sent (after the relay's Received:)",
            f"{len(wrong_body)}: {wrong_body[:5]}")
    c.check(not stray, "every unacknowledged message at a sink had its body sent in full when a kill came",
            stray[:5])
    missing = [(m, r) for m in acked_all for r in sent_all[m][1] if (m, r) not in copies]
    n_pairs = sum(len(sent_all[m][1]) for m in acked_all)
    c.check(not missing, f"every acknowledged message ({len(acked_all)}, {n_pairs} recipients) reached every "
            f"recipient at least once", f"{len(missing)} missing: {sorted(missing)[:5]}")
    deferred = {(m, r): n for (m, r), n in copies.items() if r.endswith("@" + DEFER_DOMAIN)}
    twice = {k: n for k, n in deferred.items() if n > 1}
    c.check(len(deferred) > 0 and not twice,
            f"each of the {len(deferred)} deferred recipients (compacted while the relay was killed) reached "
            f"its sink exactly once, in the final drain", f"{len(twice)} more than once: {sorted(twice.items())[:5]}")
    extra = sum(n - 1 for (m, r), n in copies.items() if r.endswith("@" + OK_DOMAIN) and n > 1)
    dup_msgs = sorted(k for k, n in copies.items() if n > 1 and k[1].endswith("@" + OK_DOMAIN))
    c.info(f"ok.test duplicates: {extra} extra copies of {len(dup_msgs)} recipient(s); bound {dup_bound} "
           f"(per kill under load: acked in the last second + pool {POOL_PER_SHARD * SHARDS}: {bound_terms}; "
           f"pool per recovery kill after 'listening')")
    c.check(not again, f"no recipient that a kill left durably delivered in the spool ({len(durable_at)} seen by "
            f"the test's reader: outcome records, copies' states) reached a sink again after that kill",
            f"{len(again)}: {again[:5]}")
    c.check(extra <= dup_bound, f"duplicates at the ok.test sink ({extra}) within the deliveries in flight "
            f"at the kills ({dup_bound})", dup_msgs[:5])
    c.info(f"{kills} kills: {len(bound_terms)} under load, {triggered} of them at a compaction line; "
           f"{recovery_before_listen} of {kills - len(bound_terms)} start-up kills before "
           f"'listening'; compaction phase at the kills: {phases}; the final relay started {compaction_lines} "
           f"compaction round(s); {time.monotonic() - started:.1f}s")
    c.check(triggered > 0, "compaction ran: at least one kill came right after a compaction round started")


if __name__ == "__main__":
    socket.setdefaulttimeout(30)
    harness.run("compaction_crash", scenario)
