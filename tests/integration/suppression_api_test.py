#!/usr/bin/env python3
# tests/integration/suppression_api_test.py: GET/POST/DELETE /api/v1/suppressions (issue 18) with
# curl against a relay of two shards (--hold: nothing is delivered; RCPT is what is checked):
#   1. POST of two addresses for tenant shop.example: 200 {"added": 2, "already": 0}; the next
#      RCPT from that tenant to either (any case) gets the suppression 550, another tenant's 250;
#      POST of one of them again: {"added": 0, "already": 1}.
#   2. GET lists them with source "api", the reason, added and expires; filters by tenant and by
#      address; limit=1 pages through with next_cursor to the end without repeats.
#   3. DELETE (body) of one: 200 {"removed": 1}, the address is accepted again at RCPT; again:
#      404. DELETE (query) of an address never added: 404.
#   4. SIGKILL right after the answers, restart on the same spool: the added address is still
#      refused and the removed one still accepted (the removal was journaled); GET agrees.
#   5. Errors: 400 naming the field (bad JSON, unknown field, a non-address, a bad limit), 405
#      for PUT with Allow, 403 outside --http-networks.
import json
import smtplib
import subprocess
import sys
import urllib.parse

import harness

TENANT = "shop.example"


def curl(args, source=None):
    extra = ["--interface", source] if source else []
    r = subprocess.run(["curl", "-s", "-S", "-m", "20", "-D", "-", "-w", "\n%{http_code}"] + extra + args,
                       capture_output=True, text=True, timeout=30)
    text, _, status = r.stdout.rpartition("\n")
    head, _, body = text.partition("\n\n")  # text mode: CRLF reads as LF
    return int(status or 0), body, head


def call(base, method, path, body=None, source=None):
    args = ["-X", method, base + path]
    if body is not None:
        args += ["-H", "Content-Type: application/json", "--data-binary", body]
    status, text, _ = curl(args, source)
    return status, text


def as_json(body):
    try:
        return json.loads(body)
    except ValueError:
        return None


def rcpt_reply(relay, sender, rcpt):
    s = smtplib.SMTP(relay.host, relay.port, timeout=30)
    try:
        s.ehlo("client.suppression-api.test")
        code, text = s.mail(sender)
        assert code == 250, (code, text)
        code, text = s.rcpt(rcpt)
        s.rset()
        return code, text.decode(errors="replace")
    finally:
        try:
            s.quit()
        except (OSError, smtplib.SMTPException):
            s.close()


def listing(base, query=""):
    status, body = call(base, "GET", "/api/v1/suppressions" + (("?" + query) if query else ""))
    return status, as_json(body) or {}, body


def scenario(c):
    relay_bin = sys.argv[1]
    harness.find_tool("curl")
    http_port = harness.free_port()
    base = f"http://127.0.0.1:{http_port}"
    flags = ["--http", f"127.0.0.1:{http_port}", "--http-networks", "127.0.0.1/32", "--suppression-ttl", "30d"]
    relay = harness.Relay(relay_bin, flags, shards=2).start()
    spool = relay.spool

    # --- 1. POST ----------------------------------------------------------------------------------
    status, body = call(base, "POST", "/api/v1/suppressions",
                        json.dumps({"tenant": "Shop.Example", "addresses": ["Gone@X.test", "left@x.test"],
                                    "reason": "asked by phone"}))
    c.check(status == 200 and as_json(body) == {"added": 2, "already": 0},
            "POST two addresses: 200 {added: 2, already: 0}", (status, body))
    code, text = rcpt_reply(relay, "news@shop.example", "gone@x.test")
    c.check(code == 550 and text.startswith("5.1.1 <gone@x.test>: recipient suppressed"),
            "the tenant's next RCPT to the address: the suppression 550", (code, text))
    code, text = rcpt_reply(relay, "billing@SHOP.example", "LEFT@x.test")
    c.check(code == 550, "the other address, any case, any sender of the tenant: 550", (code, text))
    code, text = rcpt_reply(relay, "news@other.example", "gone@x.test")
    c.check(code == 250, "another tenant's RCPT to the address: 250", (code, text))
    status, body = call(base, "POST", "/api/v1/suppressions", json.dumps({"tenant": TENANT, "address": "gone@x.test"}))
    c.check(status == 200 and as_json(body) == {"added": 0, "already": 1},
            "POST of an address already on the list: {added: 0, already: 1}", (status, body))

    # --- 2. GET ------------------------------------------------------------------------------------
    status, doc, body = listing(base)
    rows = doc.get("suppressions") or []
    c.check(status == 200 and [(r.get("tenant"), r.get("address")) for r in rows]
            == [(TENANT, "gone@x.test"), (TENANT, "left@x.test")] and doc.get("next_cursor") is None,
            "GET lists both entries, sorted, on one page", (status, body))
    left = next((r for r in rows if r.get("address") == "left@x.test"), {})
    c.check(left.get("source") == "api" and left.get("reason") == "asked by phone" and left.get("added")
            and left.get("expires") and left.get("expires") > left.get("added") and left.get("queue_id") is None,
            "an entry says its source, reason, when it was added and when it expires", left)
    status, doc, body = listing(base, "tenant=other.example")
    c.check(status == 200 and doc.get("suppressions") == [] and doc.get("matched") == 0,
            "GET ?tenant= of another tenant: nothing", (status, body))
    status, doc, body = listing(base, "address=" + urllib.parse.quote("LEFT@x.test"))
    c.check(status == 200 and [r.get("address") for r in doc.get("suppressions") or []] == ["left@x.test"],
            "GET ?address= finds that address only", (status, body))
    seen, query = [], "limit=1"
    for _ in range(5):
        status, doc, body = listing(base, query)
        if status != 200:
            break
        seen += [r.get("address") for r in doc.get("suppressions") or []]
        if not doc.get("next_cursor"):
            break
        query = "limit=1&cursor=" + doc["next_cursor"]
    c.check(seen == ["gone@x.test", "left@x.test"], "limit=1 pages through with next_cursor, no repeats", (seen, body))

    # --- 3. DELETE ---------------------------------------------------------------------------------
    status, body = call(base, "DELETE", "/api/v1/suppressions", json.dumps({"tenant": TENANT, "address": "Gone@x.test"}))
    c.check(status == 200 and as_json(body) == {"removed": 1}, "DELETE (body): 200 {removed: 1}", (status, body))
    code, text = rcpt_reply(relay, "news@shop.example", "gone@x.test")
    c.check(code == 250, "the removed address is accepted again at once", (code, text))
    status, body = call(base, "DELETE", "/api/v1/suppressions", json.dumps({"tenant": TENANT, "address": "gone@x.test"}))
    c.check(status == 404 and (as_json(body) or {}).get("error"), "DELETE of it again: 404", (status, body))
    status, body = call(base, "DELETE", "/api/v1/suppressions?tenant=shop.example&address=never%40x.test")
    c.check(status == 404, "DELETE (query) of an address never added: 404", (status, body))

    # --- 4. SIGKILL and restart --------------------------------------------------------------------
    relay.kill()
    relay = harness.Relay(relay_bin, flags, spool=spool, shards=2).start()
    code, text = rcpt_reply(relay, "news@shop.example", "left@x.test")
    c.check(code == 550, "after SIGKILL and a restart the added address is still refused", (code, text))
    code, text = rcpt_reply(relay, "news@shop.example", "gone@x.test")
    c.check(code == 250, "after SIGKILL and a restart the removed address is still accepted", (code, text))
    status, doc, body = listing(base)
    c.check(status == 200 and [r.get("address") for r in doc.get("suppressions") or []] == ["left@x.test"]
            and (doc.get("suppressions") or [{}])[0].get("reason") == "asked by phone",
            "GET after the restart: only the remaining entry, with its reason", (status, body))

    # --- 5. errors and access ----------------------------------------------------------------------
    for body, field in (("{not json", "not valid JSON"),
                        (json.dumps({"tenant": TENANT, "address": "a@x.test", "why": "x"}), "unknown field \"why\""),
                        (json.dumps({"tenant": TENANT, "address": "nobody"}), "\"address\""),
                        (json.dumps({"address": "a@x.test"}), "\"tenant\"")):
        status, answer = call(base, "POST", "/api/v1/suppressions", body)
        c.check(status == 400 and field in str((as_json(answer) or {}).get("error")),
                f"POST {body[:40]!r}: 400 naming {field}", (status, answer))
    status, answer = call(base, "GET", "/api/v1/suppressions?limit=0")
    c.check(status == 400 and "\"limit\"" in str((as_json(answer) or {}).get("error")), "GET ?limit=0: 400", (status, answer))
    status, answer, head = curl(["-X", "PUT", base + "/api/v1/suppressions"])
    c.check(status == 405 and "Allow: GET, POST, DELETE" in head, "PUT: 405 with Allow", (status, head))
    status, answer = call(base, "GET", "/api/v1/suppressions", source="127.0.0.2")
    c.check(status == 403, "a client outside --http-networks: 403", (status, answer))
    relay.stop()


if __name__ == "__main__":
    harness.run("suppression_api", scenario)
