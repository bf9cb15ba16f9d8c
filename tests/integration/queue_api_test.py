#!/usr/bin/env python3
# tests/integration/queue_api_test.py: the queue control API of the HTTP endpoint (issue 18), with
# curl against a relay of two shards delivering to ringrelay-sink through --smarthost, retries an
# hour apart (so that only the API moves deferred mail):
#   - a sink that defers everything (--defer-reply): GET /api/v1/queue shows the site with the
#     messages deferred and their next attempt; GET /api/v1/messages/ID shows the recipient
#     deferred, one attempt, the sink's reply as its last reply;
#   - the sink replaced by one that accepts and saves; POST /api/v1/suspend of the site, then
#     POST /api/v1/flush: the messages wait at the suspended site (the queue says so) and the sink
#     has received nothing (checked once a message to another site, sent after the flush, has
#     arrived at a second sink); POST /api/v1/resume: every message arrives;
#   - POST /api/v1/suspend of a domain, a message to it: it waits, deferred by the suspension;
#     POST /api/v1/bounce of its queue id: a Bounce record with the reason and a DSN to the
#     sender (saved by the sink), and the message leaves the queue (404);
#   - every site's queued messages are the sum of its qshape age buckets ("ages"), the top-level
#     "ages" their sum over the sites; the messages waiting at the suspended site, queued seconds
#     ago, are all in "0-5m"; `ringrelayctl queue` prints them as a qshape table (header, TOTAL
#     row and the site's row equal to the API's);
#   - 400 naming the field for a bad body, 404 for an unknown id, 405, 403 outside --http-networks.
import json
import os
import subprocess
import sys

import harness

N = 3
DEFERRAL = "451 4.3.0 queue api test: try later"


def curl(args, source=None):
    extra = ["--interface", source] if source else []
    r = subprocess.run(["curl", "-s", "-S", "-m", "20", "-w", "\n%{http_code}"] + extra + args,
                       capture_output=True, text=True, timeout=30)
    body, _, status = r.stdout.rpartition("\n")
    return int(status or 0), body


def get(base, path, source=None):
    return curl([base + path], source)


def post(base, path, body, source=None):
    return curl(["-X", "POST", "-H", "Content-Type: application/json", "--data-binary", body, base + path], source)


def as_json(body):
    try:
        return json.loads(body)
    except ValueError:
        return None


def site_row(base, site):
    status, body = get(base, "/api/v1/queue")
    doc = as_json(body) if status == 200 else None
    for row in (doc or {}).get("sites", []):
        if row.get("site") == site:
            return row
    return None


BUCKETS = ["0-5m", "5-10m", "10-20m", "20-40m", "40-80m", "80-160m", "160-320m", "320m+"]


def ages_add_up(doc):
    """None if each site's "ages" has exactly the buckets and adds up to its "queued", and the
    top-level "ages" is their sum over the sites; else what is wrong."""
    if not isinstance(doc, dict) or not isinstance(doc.get("ages"), dict):
        return ("no top-level ages", doc)
    total = [0] * len(BUCKETS)
    for row in doc.get("sites", []):
        ages = row.get("ages")
        if not isinstance(ages, dict) or list(ages) != BUCKETS or sum(ages.values()) != row.get("queued"):
            return ("a site's ages do not add up to its queued", row)
        total = [t + ages[b] for t, b in zip(total, BUCKETS)]
    if list(doc["ages"]) != BUCKETS or [doc["ages"][b] for b in BUCKETS] != total:
        return ("the top-level ages are not the sum of the sites'", doc["ages"], total)
    return None


def saved(directory):
    """The sink's saved messages: [(headers text, whole text)]."""
    out = []
    for name in sorted(os.listdir(directory)):
        if name.endswith(".eml"):
            with open(os.path.join(directory, name), encoding="utf-8", errors="replace") as f:
                text = f.read()
            out.append(text)
    return out


def scenario(c):
    relay_bin, sink_bin, ctl = sys.argv[1], sys.argv[2], sys.argv[3]
    harness.find_tool("curl")
    port = harness.free_port()
    site = f"127.0.0.1:{port}"
    http_port = harness.free_port()
    base = f"http://127.0.0.1:{http_port}"
    # A second sink, for mail to barrier.example: once a message sent after the flush has arrived
    # there, the flushed messages, dispatched before it, would have reached the first sink too
    # had the suspension not held them (an ordering, not a wait).
    barrier_port = harness.free_port()
    barrier_save = harness.temp_dir("rr-queue-api-barrier-")
    barrier = harness.start_sink(sink_bin, barrier_port, ["--save", barrier_save, "--duration", "120"])
    deferring = harness.start_sink(sink_bin, port, ["--defer-rate", "1", "--defer-reply", DEFERRAL, "--duration", "120"])
    relay = harness.Relay(relay_bin, ["--route", f"barrier.example=127.0.0.1:{barrier_port}", "--smarthost", site,
                                      "--retry-intervals", "1h", "--no-default-shaping",
                                      "--http", f"127.0.0.1:{http_port}", "--http-networks", "127.0.0.1/32"],
                          shards=2).start()
    records = lambda kind: [x for x in harness.log_records(relay.log_path) if x.get("type") == kind]  # noqa: E731

    # --- deferred mail in the queue --------------------------------------------------------------
    harness.send_numbered(relay, N, "q")
    c.require(harness.wait_until(lambda: len(records("TransientFailure")) == N, 60),
              f"the sink defers all {N} messages", relay.stderr()[-500:])
    row = site_row(base, site)
    c.check(row is not None and row.get("deferred") == N and row.get("queued") == 0 and row.get("in_flight") == 0,
            f"GET /api/v1/queue: the site with {N} messages deferred, none queued or in flight", row)
    c.check(row is not None and row.get("next_attempt") and row.get("oldest") and row.get("state") == "active",
            "GET /api/v1/queue: the oldest arrival and the next attempt, state active", row)
    status, body = get(base, "/api/v1/queue")
    c.check(status == 200 and ages_add_up(as_json(body)) is None and row is not None
            and sum(row.get("ages", {"x": -1}).values()) == 0,
            "GET /api/v1/queue: ages add up to queued (none: the mail is deferred)", ages_add_up(as_json(body)))
    qid = records("Reception")[0]["queue_id"]
    status, body = get(base, f"/api/v1/messages/{qid}")
    msg = as_json(body) or {}
    rcpt = (msg.get("recipients") or [{}])[0]
    c.check(status == 200 and msg.get("queue_id") == qid and msg.get("sender") == "sender@example.org"
            and msg.get("size", 0) > 0 and msg.get("received"),
            "GET /api/v1/messages/ID: the envelope, size and arrival", (status, body))
    c.check(rcpt.get("state") == "deferred" and rcpt.get("attempts") == 1 and rcpt.get("last_reply") == DEFERRAL
            and rcpt.get("site") == site,
            "GET /api/v1/messages/ID: the recipient deferred after one attempt, the sink's reply its last", rcpt)

    # --- suspend, flush, resume ---------------------------------------------------------------------
    deferring.terminate()
    harness.sink_result(deferring, 30)
    save = harness.temp_dir("rr-queue-api-sink-")
    accepting = harness.start_sink(sink_bin, port, ["--save", save, "--duration", "120"])
    # The old sink's end closed the relay's connection, which may have put the site in back-off:
    # wait until the relay saw the close and the back-off is over, so that only the suspension
    # can hold the mail below.
    c.require(harness.wait_until(lambda: (site_row(base, site) or {}).get("connections") == 0
                                 and (site_row(base, site) or {}).get("state") == "active", 60),
              "the site has no connection left and is not backing off", site_row(base, site))
    status, body = post(base, "/api/v1/suspend", json.dumps({"site": site, "duration": "1h"}))
    doc = as_json(body) or {}
    c.check(status == 200 and doc.get("suspended") == {"site": site} and doc.get("until"),
            "POST /api/v1/suspend of the site: 200, what was suspended and until when", (status, body))
    status, body = post(base, "/api/v1/flush", "{}")
    doc = as_json(body) or {}
    c.check(status == 200 and doc.get("flushed") == "all" and doc.get("messages") == N and doc.get("recipients") == N,
            f"POST /api/v1/flush: {N} deferred messages tried now", (status, body))
    waiting = harness.wait_until(lambda: (site_row(base, site) or {}).get("queued") == N, 30)
    row = site_row(base, site)
    c.check(waiting and row.get("state") == "suspended" and row.get("deferred") == 0,
            f"GET /api/v1/queue: the {N} flushed messages wait at the suspended site", row)
    status, body = get(base, "/api/v1/queue")
    doc = as_json(body)
    c.check(status == 200 and ages_add_up(doc) is None,
            "GET /api/v1/queue: each site's ages add up to its queued, the top-level ages to the sites'",
            ages_add_up(doc))
    c.check(row.get("ages") == dict(zip(BUCKETS, [N] + [0] * 7)) and (doc or {}).get("ages") == row.get("ages"),
            f"GET /api/v1/queue: the {N} messages queued seconds ago are in \"0-5m\", and in the total",
            (row, (doc or {}).get("ages")))
    r = subprocess.run([sys.executable, ctl, "--url", base, "queue"], capture_output=True, text=True, timeout=60)
    lines = [line.split() for line in r.stdout.splitlines()]
    expected_site = [site, str(N), str(N)] + ["0"] * 7
    c.check(r.returncode == 0 and len(lines) >= 3 and lines[0] == ["T"] + BUCKETS
            and lines[1] == ["TOTAL", str(N), str(N)] + ["0"] * 7 and lines[2] == expected_site,
            "ringrelayctl queue: the qshape header, the TOTAL row and the site's row as the API gives them",
            (r.returncode, r.stdout, r.stderr))
    harness.send_numbered(relay, 1, "barrier", domain="barrier.example")
    c.require(harness.wait_until(lambda: len(saved(barrier_save)) == 1, 60),
              "a message to another site sent after the flush is delivered", relay.stderr()[-300:])
    c.check(saved(save) == [] and len(records("Delivery")) == 1,
            "nothing reached the sink while the site is suspended", (len(saved(save)), len(records("Delivery"))))
    status, body = post(base, "/api/v1/resume", json.dumps({"site": site}))
    doc = as_json(body) or {}
    c.check(status == 200 and doc.get("resumed") == {"site": site} and doc.get("suspensions") == 1
            and doc.get("sites", 0) >= 1, "POST /api/v1/resume: the suspension ended, the site woken", (status, body))
    c.check(harness.wait_until(lambda: len(saved(save)) == N and len(records("Delivery")) == N + 1, 60),
            f"after the resumption all {N} messages reach the sink", (len(saved(save)), relay.stderr()[-300:]))

    # --- suspend a domain, bounce ---------------------------------------------------------------------
    status, body = post(base, "/api/v1/suspend", json.dumps({"domain": "Hold.Example", "duration": "1h"}))
    c.check(status == 200 and (as_json(body) or {}).get("suspended") == {"domain": "hold.example"},
            "POST /api/v1/suspend of a domain (lower-cased)", (status, body))
    harness.send_numbered(relay, 1, "b", domain="hold.example", sender="bouncer@example.org")
    c.require(harness.wait_until(lambda: len(records("Reception")) == N + 2, 30), "the message to the domain is queued")
    bqid = records("Reception")[-1]["queue_id"]

    def held():
        s, b = get(base, f"/api/v1/messages/{bqid}")
        r = ((as_json(b) or {}).get("recipients") or [{}])[0]
        return s == 200 and r.get("state") == "deferred" and r.get("attempts") == 0
    c.check(harness.wait_until(held, 30), "the message to the suspended domain is deferred, never attempted",
            get(base, f"/api/v1/messages/{bqid}"))
    c.check(len(saved(save)) == N, "nothing of it reached the sink", len(saved(save)))
    status, body = post(base, "/api/v1/bounce", json.dumps({"queue_id": bqid, "reason": "operator test"}))
    doc = as_json(body) or {}
    c.check(status == 200 and doc.get("messages") == 1 and doc.get("recipients") == 1 and doc.get("queue_ids") == [bqid],
            "POST /api/v1/bounce of the queue id: one message, one recipient, its id", (status, body))
    bounces = lambda: [x for x in records("Bounce") if x.get("queue_id") == bqid]  # noqa: E731
    c.check(harness.wait_until(lambda: bounces(), 30) and "operator test" in str(bounces()[0].get("reply")),
            "a Bounce record with the reason", records("Bounce"))
    dsn = lambda: [t for t in saved(save) if "X-Sink-Rcpt-To: <bouncer@example.org>" in t]  # noqa: E731
    c.check(harness.wait_until(lambda: dsn(), 60) and "operator test" in dsn()[0] and "rcpt0@hold.example" in dsn()[0],
            "a DSN to the sender naming the recipient and the reason reaches the sink",
            [t[:300] for t in saved(save)][-2:])
    c.check(harness.wait_until(lambda: get(base, f"/api/v1/messages/{bqid}")[0] == 404, 30),
            "the bounced message has left the queue (404)", get(base, f"/api/v1/messages/{bqid}"))

    # --- errors and access --------------------------------------------------------------------------------
    status, body = post(base, "/api/v1/suspend", json.dumps({"site": site, "duration": "soon"}))
    c.check(status == 400 and "\"duration\"" in str((as_json(body) or {}).get("error")),
            "a bad duration: 400 naming the field", (status, body))
    status, body = post(base, "/api/v1/bounce", "{not json")
    c.check(status == 400 and "not valid JSON" in str((as_json(body) or {}).get("error")), "bad JSON: 400", (status, body))
    status, body = get(base, "/api/v1/messages/00000000000000FF")
    c.check(status == 404 and (as_json(body) or {}).get("error"), "an unknown queue id: 404", (status, body))
    status, body = get(base, "/api/v1/suspend")
    c.check(status == 405, "GET on a POST route: 405", (status, body))
    status, body = post(base, "/api/v1/flush", "{}", source="127.0.0.2")
    c.check(status == 403, "a client outside --http-networks: 403", (status, body))

    relay.stop()
    for sink in (accepting, barrier):
        sink.terminate()
        harness.sink_result(sink, 30)


if __name__ == "__main__":
    harness.run("queue_api", scenario)
