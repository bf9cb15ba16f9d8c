#!/usr/bin/env python3
# tests/integration/mx_routing_test.py: delivery by MX lookup (RFC 5321 §5.1, RFC 7505)
# with a real DNS server on loopback (dnsmasq from Debian) and Postfix's smtp-sink as every
# mail exchanger (--smtp-port points MX targets at the sink's port):
# - MX records: delivered to the exchanger; the log names it;
# - no MX: the domain's own address (implicit MX);
# - the first exchanger unreachable: the next one by preference is used;
# - null MX and NXDOMAIN: bounced at once, with a DSN to the sender.
import os
import smtplib
import time

import harness
from delivery_test import Sink, log_records, wait_for


class Dnsmasq:
    def __init__(self, records):
        self.tool = harness.find_tool("dnsmasq", ["/usr/sbin/dnsmasq"])
        self.dir = harness.temp_dir("rr-dns-")
        self.port = harness.free_port()
        args = [self.tool, "--no-resolv", "--no-hosts", f"--port={self.port}", "--listen-address=127.0.0.1",
                "--bind-interfaces", "--keep-in-foreground", f"--pid-file={self.dir}/dnsmasq.pid",
                "--conf-file=/dev/null", "--local-ttl=60", "--local=/test/"] + records
        self.peer = harness.Peer(args)
        time.sleep(0.3)
        if not self.peer.running():
            harness.missing("dnsmasq did not start")



def scenario(c):
    binary = harness.ringrelay_path()
    sink = Sink()
    dns = Dnsmasq([
        "--mx-host=example.test,mx1.example.test,10", "--host-record=mx1.example.test,127.0.0.1",
        "--host-record=implicit.test,127.0.0.1",
        # fallback.test: the preferred exchanger's address has nothing listening.
        "--mx-host=fallback.test,dead.fallback.test,10", "--host-record=dead.fallback.test,127.0.0.2",
        "--mx-host=fallback.test,live.fallback.test,20", "--host-record=live.fallback.test,127.0.0.1",
        "--mx-host=nullmx.test,.,0",
        # loop.test's only exchanger is this relay itself (its --hostname).
        "--mx-host=loop.test,mx.test.invalid,10", "--host-record=mx.test.invalid,127.0.0.1",
    ])
    relay = harness.Relay(binary, ["--dns-server", f"127.0.0.1:{dns.port}", "--smtp-port", str(sink.port),
                                   "--retry-intervals", "1s"]).start()
    s = smtplib.SMTP(relay.host, relay.port, timeout=30)
    for rcpt, tag in [("a@example.test", "mx"), ("b@implicit.test", "implicit"), ("e@fallback.test", "fallback"),
                      ("n@nullmx.test", "nullmx"), ("x@nxdomain.test", "nxdomain"), ("l@loop.test", "loop")]:
        s.sendmail("sender@example.test", [rcpt], b"Subject: %s\r\nMessage-ID: <%s@test>\r\n\r\nbody\r\n" % (
            tag.encode(), tag.encode()))
    s.quit()

    wait_for(lambda: len(log_records(relay, "Delivery")) >= 3 and len(log_records(relay, "Bounce")) >= 3,
             "three deliveries and three bounces logged", c)
    delivered = {r["recipient"]: r for r in log_records(relay, "Delivery")}
    c.check("a@example.test" in delivered, "MX domain delivered")
    if "a@example.test" in delivered:
        hop = delivered["a@example.test"]["next_hop"]
        c.check(hop["name"] == "mx1.example.test" and hop["address"] == f"127.0.0.1:{sink.port}",
                "the log names the exchanger and its address", hop)
    c.check("b@implicit.test" in delivered, "no MX: delivered to the domain's own address (implicit MX)")
    c.check("e@fallback.test" in delivered and delivered["e@fallback.test"]["next_hop"]["name"] == "live.fallback.test",
            "unreachable first exchanger: the next by preference is used", delivered.get("e@fallback.test"))
    bounces = {r["recipient"]: r for r in log_records(relay, "Bounce")}
    c.check("n@nullmx.test" in bounces and "5.1.10" in (bounces["n@nullmx.test"]["reply"] or ""),
            "null MX bounces at once with 5.1.10", bounces.get("n@nullmx.test"))
    c.check("x@nxdomain.test" in bounces and "5.1.2" in (bounces["x@nxdomain.test"]["reply"] or ""),
            "NXDOMAIN bounces at once with 5.1.2", bounces.get("x@nxdomain.test"))
    c.check("l@loop.test" in bounces and "5.4.6" in (bounces["l@loop.test"]["reply"] or ""),
            "an MX pointing at ourselves bounces with 5.4.6 (RFC 5321 §5.1)", bounces.get("l@loop.test"))
    c.check(not log_records(relay, "TransientFailure") or all(
        r["recipient"] == "e@fallback.test" for r in log_records(relay, "TransientFailure")),
        "no other recipient was deferred", log_records(relay, "TransientFailure"))
    # The two DSNs go to sender@example.test, i.e. by MX to the sink as well.
    wait_for(lambda: sum(1 for r in log_records(relay, "Delivery") if r["recipient"] == "sender@example.test") >= 3,
             "the three DSNs delivered to the sender's exchanger", c)
    got = {b.split(b"Message-ID: <")[1].split(b"@")[0].decode() for m, b in sink.messages()
           if m.get("X-Mail-Args") != ["<>"] and b"Message-ID: <" in b}
    c.check(got == {"mx", "implicit", "fallback"}, "the sink got exactly the three deliverable messages", got)
    code = relay.stop()
    c.check(code == 0, "relay stops cleanly", f"exit {code}")


if __name__ == "__main__":
    harness.run("mx_routing", scenario)
