#!/usr/bin/env python3
# tests/integration/ringrelayctl_test.py: tools/ringrelayctl (issue 18) end to end against a relay
# with --http, delivering through --smarthost to ringrelay-sink, retries an hour apart (so that
# only the API moves deferred mail). Each subcommand's text and --json output is checked against
# what the API itself answers (urllib, no proxy):
#   - a sink that defers everything: `queue` prints the qshape table (header, TOTAL row of zeros:
#     nothing is queued at a site) and counts the 2 deferred messages below it, `queue --detail`
#     shows the site with the 2 messages deferred, `queue --top 0` is a usage error, and
#     `queue --json` is GET /api/v1/queue; `inspect ID` shows the recipient deferred with the
#     sink's reply, `inspect --json` is GET /api/v1/messages/ID; `flush` tries both now, `flush
#     DOMAIN` that domain's only;
#   - `suspend SITE --for 1h`: `queue` shows the site suspended; `resume` ends it; `suspend
#     --domain` names the domain; a bad --for: exit 1, the API's 400 text on stderr;
#   - `bounce --queue-id ID --reason`: the message is bounced, and `inspect ID` then exits 1
#     with the 404 text; `bounce --sender` sends its field;
#   - `top --count 2` (text and --json) prints two refreshes, `top` stops at Ctrl-C (SIGINT);
#     RINGRELAY_URL is used without --url; an unreachable --url: exit 1, one line on stderr;
#   - the sink replaced by one that accepts, `flush`, then `drain`: the relay exits 0 by itself.
import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request

import harness

N = 2
DEFERRAL = "451 4.3.0 ringrelayctl test: try later"
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def api(base, path):
    """(status, JSON) of GET base+path straight from the API."""
    try:
        with _DIRECT.open(base + path, timeout=20) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def scenario(c):
    relay_bin, sink_bin, ctl = sys.argv[1], sys.argv[2], sys.argv[3]
    port, http_port = harness.free_port(), harness.free_port()
    site = f"127.0.0.1:{port}"
    base = f"http://127.0.0.1:{http_port}"

    run, run_json = harness.ringrelayctl(ctl, base)

    deferring = harness.start_sink(sink_bin, port,
                                   ["--defer-rate", "1", "--defer-reply", DEFERRAL, "--duration", "120"])
    relay = harness.Relay(relay_bin, ["--smarthost", site, "--retry-intervals", "1h", "--no-default-shaping",
                                      "--http", f"127.0.0.1:{http_port}"], shards=2).start()
    records = lambda kind: [x for x in harness.log_records(relay.log_path) if x.get("type") == kind]  # noqa: E731
    harness.send_numbered(relay, N, "ctl")
    c.require(harness.wait_until(lambda: len(records("TransientFailure")) == N, 60),
              f"the sink defers all {N} messages", relay.stderr()[-500:])

    # --- queue ----------------------------------------------------------------------------------
    rc, out, err = run("queue")
    lines = out.splitlines()
    c.check(rc == 0 and len(lines) == 3 and lines[0].split() == ["T", "0-5m", "5-10m", "10-20m", "20-40m", "40-80m",
                                                                 "80-160m", "160-320m", "320m+"]
            and lines[1].split() == ["TOTAL"] + ["0"] * 9
            and lines[2].startswith(f"not in the table: {N} deferred message(s)"),
            f"queue: the qshape table with nothing queued at a site, the {N} deferred counted below it",
            (rc, out, err))
    rc, out, err = run("queue", "--detail")
    lines = out.splitlines()
    row = next((line.split() for line in lines if line.startswith(site)), [])
    c.check(rc == 0 and lines and lines[0].split()[:3] == ["SITE", "QUEUED", "DEFERRED"]
            and row[:3] == [site, "0", str(N)] and "active" in row,
            f"queue --detail: a table with the site, 0 queued, {N} deferred, active", (rc, out, err))
    rc, out, err = run("queue", "--top", "0")
    c.check(rc == 2 and "--top" in err, "queue --top 0: a usage error (2)", (rc, err))
    same = lambda: run_json("queue")[1] == api(base, "/api/v1/queue")[1]  # noqa: E731
    c.check(harness.wait_until(same, 10), "queue --json is GET /api/v1/queue as it is",
            (run_json("queue"), api(base, "/api/v1/queue")))

    # --- inspect --------------------------------------------------------------------------------
    qid = records("Reception")[0]["queue_id"]
    rc, out, err = run("inspect", qid)
    c.check(rc == 0 and qid in out and "rcpt0@example.net" in out and "deferred" in out and DEFERRAL in out,
            "inspect ID: the queue id, the recipient deferred, the sink's reply", (rc, out, err))
    rc, doc, err = run_json("inspect", qid)
    status, direct = api(base, f"/api/v1/messages/{qid}")
    strip = lambda d: {k: v for k, v in (d or {}).items() if k != "age_seconds"}  # noqa: E731
    c.check(rc == 0 and status == 200 and strip(doc) == strip(direct) and "age_seconds" in doc,
            "inspect --json is GET /api/v1/messages/ID (age_seconds aside, it moves)", (doc, direct))

    # --- flush, suspend, resume -------------------------------------------------------------------
    rc, doc, err = run_json("flush")
    c.check(rc == 0 and doc and doc.get("flushed") == "all" and doc.get("messages") == N,
            f"flush --json: all, {N} messages tried now", (rc, doc, err))
    c.require(harness.wait_until(lambda: len(records("TransientFailure")) == 2 * N, 60),
              "the flushed messages were tried again (deferred again)", relay.stderr()[-300:])
    rc, doc, err = run_json("flush", "Nothing.Example")
    c.check(rc == 0 and doc and doc.get("flushed") == {"domain": "nothing.example"} and doc.get("messages") == 0,
            "flush DOMAIN --json: that domain only (none deferred there)", (rc, doc, err))
    rc, out, err = run("suspend", site, "--for", "1h")
    c.check(rc == 0 and out.startswith(f"suspended site {site} until 20"), "suspend SITE --for 1h", (rc, out, err))
    rc, out, err = run("queue", "--detail")
    c.check(rc == 0 and any(line.startswith(site) and "suspended" in line for line in out.splitlines()),
            "queue --detail: the site is suspended", (rc, out, err))
    rc, doc, err = run_json("resume", site)
    c.check(rc == 0 and doc and doc.get("resumed") == {"site": site} and doc.get("suspensions") == 1,
            "resume SITE --json: the suspension ended", (rc, doc, err))
    rc, out, err = run("queue", "--detail")
    c.check(rc == 0 and any(line.startswith(site) and "suspended" not in line for line in out.splitlines()),
            "queue --detail: the site is no longer suspended", out)
    rc, doc, err = run_json("suspend", "--domain", "Hold.Example")
    c.check(rc == 0 and doc and doc.get("suspended") == {"domain": "hold.example"} and doc.get("until"),
            "suspend --domain NAME (default --for 1h)", (rc, doc, err))
    rc, out, err = run("suspend", site, "--for", "soon")
    c.check(rc == 1 and out == "" and len(err.splitlines()) == 1 and "400" in err and "\"duration\"" in err,
            "a bad --for: exit 1, one line on stderr with the API's 400 error naming the field", (rc, out, err))

    # --- bounce ---------------------------------------------------------------------------------------
    rc, out, err = run("bounce", "--queue-id", qid, "--reason", "ctl test")
    c.check(rc == 0 and out.startswith("bounced 1 message(s), 1 recipient(s)") and qid in out,
            "bounce --queue-id ID --reason TEXT: one message, one recipient, its id", (rc, out, err))
    c.check(harness.wait_until(lambda: run("inspect", qid)[0] == 1, 30), "the bounced message has left the queue")
    rc, out, err = run("inspect", qid)
    c.check(rc == 1 and out == "" and len(err.splitlines()) == 1 and "404" in err
            and api(base, f"/api/v1/messages/{qid}")[1]["error"] in err,
            "inspect of the bounced ID: exit 1, one line with the API's 404 text", (rc, out, err))
    rc, doc, err = run_json("bounce", "--sender", "nobody@example.org", "--reason", "x")
    c.check(rc == 0 and doc and doc.get("bounced") == {"sender": "nobody@example.org"} and doc.get("messages") == 0,
            "bounce --sender S --json: by sender (none from it)", (rc, doc, err))
    rc, out, err = run("bounce", "--reason", "x")
    c.check(rc == 2, "bounce without --domain/--sender/--queue-id: a usage error (2)", (rc, err))

    # --- top, RINGRELAY_URL, unreachable ----------------------------------------------------------------
    rc, out, err = run("top", "--count", "2")
    c.check(rc == 0 and len([x for x in out.splitlines() if x.startswith("ringrelay ")]) == 2
            and out.count("received/s") == 2 and out.count("spool messages") == 2,
            "top --count 2: two refreshes", (rc, out, err))
    rc, out, err = run("top", "--count", "2", "--json")
    docs = [json.loads(x) for x in out.splitlines()] if rc == 0 else []
    c.check(len(docs) == 2 and all("received_per_second" in d and "delivered_per_second" in d
                                   and d.get("spool_messages", -1) >= 1 for d in docs),
            "top --count 2 --json: two JSON lines with the rates and the queue depth", (rc, out, err))
    # top without --count until Ctrl-C: SIGINT once its first refresh is out (a line read, no timer).
    live = subprocess.Popen([sys.executable, ctl, "--url", base, "top"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    harness.register_cleanup(lambda: live.poll() is None and live.kill())
    first = [live.stdout.readline() for _ in range(3)]
    live.send_signal(signal.SIGINT)
    try:
        rc = live.wait(20)
    except subprocess.TimeoutExpired:
        rc = None
    err = live.stderr.read()
    c.check(rc == 0 and first[2].startswith("spool messages") and "Traceback" not in err,
            "top runs until Ctrl-C (SIGINT) and then exits 0 quietly", (rc, first, err))
    rc, out, err = run("queue", "--detail", env=dict(os.environ, RINGRELAY_URL=base), url=None)
    c.check(rc == 0 and site in out, "RINGRELAY_URL is used when --url is not given", (rc, out, err))
    closed = harness.free_port()
    rc, out, err = run("queue", url=f"http://127.0.0.1:{closed}")
    c.check(rc == 1 and out == "" and len(err.splitlines()) == 1 and "cannot reach the relay" in err
            and f"127.0.0.1:{closed}" in err and "Traceback" not in err,
            "an unreachable --url: exit 1, one clear line on stderr", (rc, out, err))

    # --- drain --------------------------------------------------------------------------------------------
    deferring.terminate()
    harness.sink_result(deferring, 30)
    accepting = harness.start_sink(sink_bin, port, ["--duration", "120"])
    run("resume", "--domain", "hold.example")
    c.require(harness.wait_until(lambda: any(r.get("site") == site and r.get("connections") == 0
                                             and r.get("state") == "active"
                                             for r in api(base, "/api/v1/queue")[1]["sites"]), 60),
              "the site has no connection left and is not backing off", api(base, "/api/v1/queue"))
    rc, out, err = run("flush")
    c.check(rc == 0, "flush once the next hop accepts", (rc, out, err))
    rc, out, err = run("drain")
    c.check(rc == 0 and out.startswith("draining"), "drain", (rc, out, err))
    status = relay.wait(60)
    c.check(status == 0, "after drain the relay delivers its queue and exits 0 by itself",
            (status, relay.stderr()[-500:]))
    c.check(sorted(r.get("recipient") for r in records("Delivery")) == ["rcpt1@example.net", "sender@example.org"],
            "it delivered the message not bounced and the bounce's DSN to the sender",
            [(r.get("recipient"), r.get("queue_id")) for r in records("Delivery")])
    accepting.terminate()
    harness.sink_result(accepting, 30)


if __name__ == "__main__":
    harness.run("ringrelayctl", scenario)
