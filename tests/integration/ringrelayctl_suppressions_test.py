#!/usr/bin/env python3
# tests/integration/ringrelayctl_suppressions_test.py: `ringrelayctl suppressions` (issue 18) end
# to end against a relay of two shards (--hold; --http): add (text and --json), list (the table;
# --tenant, --address; --limit 1 and --cursor through the pages; --json is the API's answer),
# the RCPT refused after add and accepted after remove, remove of an address not on the list
# (exit 1, the API's error on stderr), a bad address (exit 1, the field named), and an
# unreachable relay (exit 1, a clear line).
import sys

import harness
from suppression_api_test import rcpt_reply


def scenario(c):
    relay_bin, ctl = sys.argv[1], sys.argv[2]
    http_port = harness.free_port()
    base = f"http://127.0.0.1:{http_port}"
    relay = harness.Relay(relay_bin, ["--http", f"127.0.0.1:{http_port}", "--http-networks", "127.0.0.1/32"],
                          shards=2).start()

    run, run_json = harness.ringrelayctl(ctl, base)

    rc, out, err = run("suppressions", "add", "Shop.Example", "a@x.test", "b@x.test", "--reason", "asked by mail")
    c.check(rc == 0 and out.strip() == "2 address(es) put on Shop.Example's suppression list",
            "suppressions add: text", (rc, out, err))
    rc, doc, err = run_json("suppressions", "add", "other.example", "a@x.test")
    c.check(rc == 0 and doc == {"added": 1, "already": 0}, "suppressions add --json: the API's answer", (rc, doc, err))
    c.check(rcpt_reply(relay, "news@shop.example", "b@x.test")[0] == 550, "after add the tenant's RCPT is refused")

    rc, out, err = run("suppressions", "list")
    lines = out.splitlines()
    c.check(rc == 0 and lines and lines[0].split()[:5] == ["TENANT", "ADDRESS", "ADDED", "EXPIRES", "SOURCE"]
            and len(lines) == 5 and lines[1].split()[:2] == ["other.example", "a@x.test"]
            and lines[2].split()[:2] == ["shop.example", "a@x.test"] and "asked by mail" in lines[2]
            and " api " in lines[2] and lines[-1] == "3 of 3 suppressed address(es) shown",
            "suppressions list: a table sorted by tenant and address, with source and reason", (rc, out, err))
    rc, doc, err = run_json("suppressions", "list", "--tenant", "shop.example", "--address", "B@x.test")
    c.check(rc == 0 and [e.get("address") for e in (doc or {}).get("suppressions", [])] == ["b@x.test"],
            "suppressions list --tenant --address --json", (rc, doc, err))
    seen, cursor = [], None
    for _ in range(5):
        rc, doc, err = run_json("suppressions", "list", "--limit", "1", *(["--cursor", cursor] if cursor else []))
        if rc != 0 or doc is None:
            break
        seen += [(e["tenant"], e["address"]) for e in doc.get("suppressions", [])]
        cursor = doc.get("next_cursor")
        if not cursor:
            break
    c.check(seen == [("other.example", "a@x.test"), ("shop.example", "a@x.test"), ("shop.example", "b@x.test")],
            "suppressions list --limit 1 --cursor: every entry once, in order", (seen, err))
    rc, out, err = run("suppressions", "list", "--limit", "1")
    c.check(rc == 0 and "; the next page: --cursor " in out.splitlines()[-1], "the text names the next page's cursor",
            (rc, out, err))

    rc, out, err = run("suppressions", "remove", "shop.example", "b@x.test")
    c.check(rc == 0 and out.strip() == "1 address(es) taken off shop.example's suppression list",
            "suppressions remove: text", (rc, out, err))
    c.check(rcpt_reply(relay, "news@shop.example", "b@x.test")[0] == 250, "after remove the RCPT is accepted")
    rc, out, err = run("suppressions", "remove", "shop.example", "b@x.test")
    c.check(rc == 1 and out == "" and "404" in err and "suppression list" in err,
            "remove of an address not on the list: exit 1, the API's error", (rc, out, err))
    rc, out, err = run("suppressions", "add", "shop.example", "nobody")
    c.check(rc == 1 and "400" in err and "\"addresses\"" in err, "add of a non-address: exit 1 naming the field",
            (rc, out, err))
    rc, out, err = run("suppressions", "list", url=f"http://127.0.0.1:{harness.free_port()}")
    c.check(rc == 1 and "cannot reach the relay" in err, "an unreachable relay: exit 1, a clear line", (rc, out, err))
    relay.stop()


if __name__ == "__main__":
    harness.run("ringrelayctl_suppressions", scenario)
