#!/usr/bin/env python3
# tests/integration/shaping_campaigns_test.py: campaign limits (issue 17): a campaign is named by
# a message header (stripped before delivery); one campaign's limit holds only its own mail.
#
# A ringrelay-sink --save is the smarthost (one site). All mail comes from one sender domain (one
# tenant, without a limit), so only the campaign tells the messages apart.
#   1. The rules file names the header ("campaign_header": "X-Campaign-Id") and limits campaign
#      Slow-Camp to one message an hour (burst 1): SLOW messages of Slow-Camp are sent first (one
#      with the header folded, one with it given twice), then FAST of campaign fast-camp, on one
#      session. Checked once 1 + FAST deliveries are logged: exactly one of Slow-Camp's is
#      delivered and every fast-camp one is (the held mail does not hold the rest back; the
#      bucket allows no second Slow-Camp message within the hour, so the count is exact whatever
#      the machine's speed: no timing is asserted); none is deferred (held mail waits at its site); the
#      Delivery and Reception records carry "campaign" as the header gave it; no message reaches
#      the sink with the header (any case).
#   2. The relay stops with SLOW - 1 messages held and starts again on the same spool with the
#      header named by --campaign-header instead (the rules file no longer names it) and the same
#      limit: the held messages are still Slow-Camp's (their campaign is in the spool: the header
#      was stripped before the message was stored), so exactly one more of them is delivered (a
#      new bucket's burst), with "campaign": "Slow-Camp" in its record; NEW messages of fast-camp
#      sent now flow past them, their header stripped by the flag's name.
#   3. SIGHUP with the limit gone: the rest of Slow-Camp's mail is released and delivered, still
#      recorded as Slow-Camp's.
# Fails without the feature: without the campaign hold all of Slow-Camp's mail goes at once
# (step 1 counts more than one); without the campaign in the spool record step 2 delivers every
# held message and logs no "campaign"; without stripping the sink's copies have the header.
#
# Arguments: ringrelay, ringrelay-sink. Loopback only; every wait bounded (60 s).
import json
import os
import signal
import smtplib
import sys

import harness

SLOW, FAST, NEW = 4, 6, 2
HEADER = "X-Campaign-Id"


def write_rules(path, rules):
    with open(path, "w") as f:
        json.dump(rules, f)


def slow_message(i):
    if i == 1:  # folded (RFC 5322 §2.2.3)
        head = f"{HEADER}:\r\n Slow-Camp\r\n"
    elif i == 2:  # given twice, the second in another case: both go, the first names the campaign
        head = f"{HEADER}: Slow-Camp\r\nx-campaign-ID: something-else\r\n"
    else:
        head = f"{HEADER}: Slow-Camp\r\n"
    return f"Subject: slow {i}\r\n{head}Message-ID: <slow{i}@example.org>\r\n\r\nslow {i}\r\n"


def fast_message(tag, i):
    return f"Subject: {tag} {i}\r\n{HEADER}: fast-camp\r\nMessage-ID: <{tag}{i}@example.org>\r\n\r\n{tag} {i}\r\n"


def send(relay, messages):
    s = smtplib.SMTP(relay.host, relay.port, timeout=30)
    for rcpt, text in messages:
        s.sendmail("news@sender.example", [rcpt], text)
    s.quit()


def deliveries(relay):
    return [x for x in harness.log_records(relay.log_path) if x.get("type") == "Delivery"]


def scenario(c):
    relay_bin, sink_bin = sys.argv[1], sys.argv[2]
    port = harness.free_port()
    work = harness.temp_dir("rr-campaigns-")
    save = os.path.join(work, "saved")
    os.makedirs(save)
    rules = os.path.join(work, "rules.json")
    limit = {"Slow-Camp": {"max_message_rate": "1/h,max_burst=1", "note": "one an hour: exact counts"}}
    write_rules(rules, {"campaign_header": HEADER, "campaigns": limit})
    sink = harness.start_sink(sink_bin, port, ["--duration", "120", "--save", save])
    flags = ["--smarthost", f"127.0.0.1:{port}", "--retry-intervals", "1s", "--no-default-shaping", "--shaping", rules]
    relay = harness.Relay(relay_bin, flags, shards=1).start()

    # 1. One campaign held, the other flows.
    send(relay, [(f"s{i}@example.net", slow_message(i)) for i in range(SLOW)] +
         [(f"f{i}@example.net", fast_message("fast", i)) for i in range(FAST)])
    c.check(harness.wait_until(lambda: len(deliveries(relay)) >= 1 + FAST, 60),
            "Slow-Camp's first message and every fast-camp one are delivered", len(deliveries(relay)))
    received = relay.reception_log()
    c.check(sorted(r.get("campaign") for r in received) == ["Slow-Camp"] * SLOW + ["fast-camp"] * FAST,
            "the Reception records name each message's campaign (the first field's value, unfolded)",
            [r.get("campaign") for r in received])
    slow_ids = {r["queue_id"] for r in received if r.get("campaign") == "Slow-Camp"}
    d = deliveries(relay)
    slow = [x for x in d if x["queue_id"] in slow_ids]
    fast = [x for x in d if x["queue_id"] not in slow_ids]
    c.check(len(slow) == 1 and len(fast) == FAST,
            f"Slow-Camp (one an hour) has exactly one delivered; fast-camp's {FAST} are not held behind it",
            (len(slow), len(fast)))
    c.check(all(x.get("campaign") == "Slow-Camp" for x in slow) and all(x.get("campaign") == "fast-camp" for x in fast),
            "the Delivery records carry each message's campaign", d[:2])
    log = harness.log_records(relay.log_path)
    c.check(not [x for x in log if x.get("type") in ("TransientFailure", "Bounce", "Expiration")],
            "none deferred: held mail waits at its site", [x for x in log if x.get("type") not in ("Delivery", "Reception")][:2])
    relay.stop()

    # 2. A restart: the held mail is still Slow-Camp's (from the spool); the flag names the header.
    write_rules(rules, {"campaigns": limit})
    before = len(deliveries(relay))  # before the restart: a held message may go at its first tick
    relay = harness.Relay(relay_bin, flags + ["--campaign-header", HEADER], spool=relay.spool, shards=1).start()
    send(relay, [(f"n{i}@example.net", fast_message("new", i)) for i in range(NEW)])
    c.check(harness.wait_until(lambda: len(deliveries(relay)) >= before + 1 + NEW, 60),
            "after a restart one more Slow-Camp message and the new fast-camp ones are delivered",
            len(deliveries(relay)) - before)
    d = deliveries(relay)[before:]
    slow = [x for x in d if x["queue_id"] in slow_ids]
    new = [x for x in d if x["queue_id"] not in slow_ids]
    c.check(len(slow) == 1 and len(new) == NEW,
            "the held mail is still held by its campaign after the restart (exactly one more: a new bucket's burst)",
            (len(slow), len(new)))
    c.check(all(x.get("campaign") == "Slow-Camp" for x in slow),
            "its record names the campaign kept in the spool", slow[:1])
    c.check(all(x.get("campaign") == "fast-camp" for x in new),
            "--campaign-header names the header when the rules file does not", new[:1])

    # 3. SIGHUP without the limit releases the rest.
    write_rules(rules, {"campaigns": {}})
    relay.signal(signal.SIGHUP)
    c.check(harness.wait_until(lambda: len(deliveries(relay)) >= SLOW + FAST + NEW, 60),
            "SIGHUP without the campaign's limit: the rest of its mail is delivered", len(deliveries(relay)))
    d = deliveries(relay)
    slow = [x for x in d if x["queue_id"] in slow_ids]
    c.check(len(slow) == SLOW and all(x.get("campaign") == "Slow-Camp" for x in slow),
            "every Slow-Camp message delivered once, recorded as Slow-Camp's", [x.get("campaign") for x in slow])
    relay.stop()
    sink.terminate()
    harness.sink_result(sink, 30)
    log = harness.log_records(relay.log_path)
    c.check(not [x for x in log if x.get("type") in ("TransientFailure", "Bounce", "Expiration")],
            "none deferred across the restart and the reload", [x.get("type") for x in log][-3:])
    texts = harness.saved_texts(save)
    c.check(len(texts) == SLOW + FAST + NEW, "the sink saved every message once", len(texts))
    c.check(not [t for t in texts if "x-campaign-id" in t.lower()],
            "no message reaches the sink with the campaign header (any case, folded, repeated)",
            [t[:300] for t in texts if "x-campaign-id" in t.lower()][:1])
    c.check(all("Message-ID: <" in t and "Subject: " in t for t in texts),
            "the other header fields arrive", [t[:300] for t in texts][:1])


if __name__ == "__main__":
    harness.run("shaping_campaigns", scenario)
