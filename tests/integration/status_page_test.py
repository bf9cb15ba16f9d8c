#!/usr/bin/env python3
# tests/integration/status_page_test.py: the status page (GET / on --http, issue 18) in headless
# Chromium (Debian's chromium, driven by playwright-core from its npm tarball through
# status_page.js beside this file). A relay of two shards delivers mail for deliver.example to
# ringrelay-sink and mail for held.example to a port where nothing listens (deferred, retries an
# hour apart). Loaded once and never reloaded, the page must show what the API says:
#   - the received and delivered counts equal /metrics' ringrelay_messages_received_total and
#     ringrelay_messages_delivered_total (summed over the shards), the sites of /api/v1/queue
#     with their queued, deferred and in-flight counts and states, no suspended site;
#   - after POST /api/v1/suspend of the held site: that site in the suspended list;
#   - after more mail: the new counts, and a received rate above zero in the chart's peak;
#   - no console error or warning (a Content-Security-Policy violation is one), no page error,
#     no failed request;
# and the answers' header fields (Content-Type, Cache-Control: no-store, the CSP of 'self'), HEAD,
# and 403 for a client outside --http-networks.
# A missing peer (node, chromium, the playwright-core tarball) skips (77) on a developer machine
# and fails under CI (harness.missing): scripts/install-deps --test installs chromium and node.
# RR_STATUS_SCREENSHOT=FILE.png saves a screenshot of the page at the end.
import http.client
import json
import os
import select
import subprocess
import sys
import urllib.request

import harness

# playwright-core has no dependencies: its one tarball is all it needs (harness.npm_package).
# 1.61.1 is the last release that runs on Debian 12's Node.js 18 (1.62 wants Node 20); it drives
# Debian 12's chromium (156) over CDP.
PLAYWRIGHT_VERSION = "1.61.1"
PLAYWRIGHT_SHA512 = "h7Qlt6m4REp25qvIdvbDtVmD4LqVXfpRxhORv9L0jzETM05p4fuPJ3dKyuSXQxDSbXnmS79HAgi9589lGSpLkg=="
CHROMIUM = "/usr/bin/chromium"
CSP = "default-src 'self'; base-uri 'self'; form-action 'self'; frame-ancestors 'self'"
WAIT_MS = 30000  # the longest the page may take to show a state (it reads the API every second)


class Browser:
    """status_page.js on the page: one JSON command a line in, one JSON answer a line out."""

    def __init__(self, node, module, url, work):
        self.log = open(os.path.join(work, "status_page.js.log"), "w")
        script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "status_page.js")
        self.proc = subprocess.Popen([node, script, module, url], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.log, text=True, env=dict(os.environ, CHROMIUM=CHROMIUM))
        harness.register_cleanup(lambda: self.proc.poll() is None and self.proc.kill())

    def ask(self, cmd, timeout=WAIT_MS / 1000 + 30):
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else ""
        if not line:
            self.log.flush()
            with open(self.log.name) as f:
                raise harness.Failed(f"status_page.js gave no answer to {cmd['cmd']}: {f.read()[-1500:]}")
        answer = json.loads(line)
        if "fatal" in answer:
            raise harness.Failed(f"status_page.js: {answer['fatal']}")
        return answer

    def expect(self, want):
        return self.ask({"cmd": "expect", "want": want, "timeout_ms": WAIT_MS})


def metrics(base):
    """{name: sum over its series} of GET /metrics."""
    with urllib.request.urlopen(base + "/metrics", timeout=20) as r:
        text = r.read().decode()
    sums = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name = line.split("{", 1)[0].split(" ", 1)[0]
        sums[name] = sums.get(name, 0) + float(line.rsplit(" ", 1)[1])
    return sums


def api_state(base):
    """What the page must show, from the API: the counts as the page writes them, the sites
    (sorted by name) and the suspended ones."""
    m = metrics(base)
    with urllib.request.urlopen(base + "/api/v1/queue", timeout=20) as r:
        sites = json.load(r)["sites"]
    rows = sorted(({"site": s["site"], "queued": s["queued"], "deferred": s["deferred"],
                    "in_flight": s["in_flight"], "state": s["state"]} for s in sites), key=lambda s: s["site"])
    return {"received": str(int(m.get("ringrelay_messages_received_total", -1))),
            "delivered": str(int(m.get("ringrelay_messages_delivered_total", -1))),
            "sites": rows,
            "suspended": sorted(s["site"] for s in rows if s["state"] == "suspended")}


def settled(base, received, delivered, held_site, held, state="active"):
    """The API's state once `received` messages are counted, `delivered` delivered and `held`
    deferred at `held_site` in `state` (a site backing off after the refused connections is
    still moving: its back-off ends and its state with it), read twice the same; None until
    then."""
    a = api_state(base)
    row = next((s for s in a["sites"] if s["site"] == held_site), None)
    if (a["received"] != str(received) or a["delivered"] != str(delivered) or row is None
            or row["deferred"] != held or row["queued"] != 0 or row["in_flight"] != 0 or row["state"] != state):
        return None
    return a if api_state(base) == a else None


def fetch(base, path, method="GET", source=None):
    host, port = base[len("http://"):].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=20,
                                      source_address=(source, 0) if source else None)
    conn.request(method, path)
    r = conn.getresponse()
    body = r.read()
    conn.close()
    return r.status, {k.lower(): v for k, v in r.getheaders()}, body


def scenario(c):
    relay_bin, sink_bin = sys.argv[1], sys.argv[2]
    node, module = harness.npm_package(relay_bin, "playwright-core", PLAYWRIGHT_VERSION, PLAYWRIGHT_SHA512)
    if not os.access(CHROMIUM, os.X_OK):
        harness.missing(f"{CHROMIUM} is not installed (Debian's chromium)")
    work = harness.temp_dir("rr-status-page-")
    sink_port, dead_port, http_port = harness.free_port(), harness.free_port(), harness.free_port()
    held_site = f"127.0.0.1:{dead_port}"
    base = f"http://127.0.0.1:{http_port}"
    sink = harness.start_sink(sink_bin, sink_port, ["--duration", "150"])
    relay = harness.Relay(relay_bin, ["--route", f"deliver.example=127.0.0.1:{sink_port}",
                                      "--route", f"held.example={held_site}",
                                      "--retry-intervals", "1h", "--no-default-shaping",
                                      "--http", f"127.0.0.1:{http_port}", "--http-networks", "127.0.0.1/32"],
                          shards=2).start()

    # --- the answers' header fields -------------------------------------------------------------
    for path, kind in (("/", "text/html; charset=utf-8"), ("/status/status.js", "text/javascript; charset=utf-8"),
                       ("/status/status.css", "text/css; charset=utf-8"), ("/status/icon.svg", "image/svg+xml")):
        status, headers, body = fetch(base, path)
        c.check(status == 200 and headers.get("content-type") == kind
                and headers.get("cache-control") == "no-store" and headers.get("content-security-policy") == CSP
                and headers.get("x-content-type-options") == "nosniff" and body,
                f"GET {path}: 200 {kind}, no-store, the CSP of 'self'", (status, headers))
    status, headers, body = fetch(base, "/", method="HEAD")
    c.check(status == 200 and body == b"" and int(headers.get("content-length", 0)) > 0, "HEAD /: 200, no body",
            (status, headers))
    status, _, _ = fetch(base, "/", source="127.0.0.2")
    c.check(status == 403, "GET / from outside --http-networks: 403", status)

    # --- mail delivered and held; the page as loaded ----------------------------------------------
    harness.send_numbered(relay, 4, "d", domain="deliver.example")
    harness.send_numbered(relay, 3, "h", domain="held.example")
    want = None

    def now_settled(*args, **kwargs):
        nonlocal want
        want = settled(base, *args, **kwargs)
        return want is not None
    c.require(harness.wait_until(lambda: now_settled(7, 4, held_site, 3), 90),
              "the API: 7 received, 4 delivered, 3 deferred at the held site, which is not backing off", api_state(base))
    browser = Browser(node, module, base + "/", work)
    got = browser.expect(want)
    c.check(got["matched"], "the page shows the API's received and delivered counts and sites, none suspended",
            {"want": want, "shown": got["shown"]})
    c.check(got["shown"]["live"] == "live" and got["shown"]["error"] == "", "the page says it is live",
            got["shown"])

    # --- a site suspended -------------------------------------------------------------------------------
    req = urllib.request.Request(base + "/api/v1/suspend", method="POST",
                                 data=json.dumps({"site": held_site, "duration": "1h"}).encode())
    with urllib.request.urlopen(req, timeout=20) as r:
        c.check(r.status == 200, "POST /api/v1/suspend of the held site: 200")
    c.require(harness.wait_until(lambda: now_settled(7, 4, held_site, 3, state="suspended"), 60),
              "the API shows the held site suspended", api_state(base))
    c.check(want["suspended"] == [held_site], "the API lists the held site as the one suspended", want)
    got = browser.expect(want)
    c.check(got["matched"] and got["shown"]["suspended"] == [held_site],
            "the page shows the held site suspended, as the API does", {"want": want, "shown": got["shown"]})

    # --- more mail: the page follows without a reload ---------------------------------------------
    refreshes = got["shown"]["refreshes"]
    harness.send_numbered(relay, 5, "e", domain="deliver.example")
    c.require(harness.wait_until(lambda: now_settled(12, 9, held_site, 3, state="suspended"), 60),
              "the API: 12 received, 9 delivered", api_state(base))
    got = browser.expect(want)
    c.check(got["matched"], "the page shows the new counts, still the API's, without a reload",
            {"want": want, "shown": got["shown"]})
    c.check(got["shown"]["refreshes"] > refreshes and float(got["shown"]["received_peak"]) > 0,
            "the page refreshed by itself and charted a received rate above zero", got["shown"])
    if os.environ.get("RR_STATUS_SCREENSHOT"):
        browser.ask({"cmd": "screenshot", "path": os.path.abspath(os.environ["RR_STATUS_SCREENSHOT"])})
    end = browser.ask({"cmd": "quit"})
    c.check(not end["reloaded"], "the page was never reloaded")
    c.check(end["problems"] == [], "no console error or warning, CSP violation, page error or failed request",
            end["problems"])
    browser.proc.wait(30)

    relay.stop()
    sink.terminate()
    harness.sink_result(sink, 30)


if __name__ == "__main__":
    harness.run("status_page", scenario)
