#!/usr/bin/env python3
# tests/integration/proxy_protocol_test.py: ringrelay behind Debian's haproxy (issue 19, PROXY
# protocol in). haproxy (mode tcp) has two frontends on loopback: one to a backend with
# `send-proxy` (v1) and a TCP health check, one to a backend with `send-proxy-v2` and
# `option smtpchk` (its checks carry a v2 LOCAL header and expect a greeting and a 250 to
# HELO). The relay trusts 127.0.0.1 (haproxy's source) with --proxy-protocol-from, lets
# 127.0.0.2 relay (--relay-networks) and allows 2 connections per client address.
# Clients bound to 127.0.0.2 and 127.0.0.3 (smtplib's source_address) go through haproxy.
# Expected: both health checks say UP; 127.0.0.2 may relay and 127.0.0.3 may not (the relay
# judges the real client, not haproxy's 127.0.0.1); the Reception records name the real client
# with "proxy": "127.0.0.1" and the Received: field names it; the per-IP limit counts the real
# client (a third connection from 127.0.0.3 is refused while 127.0.0.2 still gets in, all through
# the one balancer address). Straight to the relay: a PROXY header from an address not in
# --proxy-protocol-from gets 421 (before or after the greeting) and the connection closes; from
# the trusted address, a header sent byte by byte works, a v2 LOCAL header is served as the
# balancer's own connection, bytes sent after a header and before the greeting are an early
# talker's (521), a malformed header and a header that never completes
# (--proxy-protocol-timeout) are reported on stderr and closed without a reply, and haproxy's
# clients are served normally afterwards.
import os
import smtplib
import socket
import struct
import time

import harness

BOUND = 20.0


def haproxy_config(work, relay_port, v1_port, v2_port):
    stats = os.path.join(work, "haproxy.sock")
    cfg = os.path.join(work, "haproxy.cfg")
    with open(cfg, "w") as f:
        f.write(f"""global
    stats socket {stats} mode 600 level admin
defaults
    mode tcp
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend v1
    bind 127.0.0.1:{v1_port}
    default_backend relay_v1
frontend v2
    bind 127.0.0.1:{v2_port}
    default_backend relay_v2
backend relay_v1
    server r1 127.0.0.1:{relay_port} send-proxy check inter 300ms rise 1 fall 3
backend relay_v2
    option smtpchk HELO haproxy.test
    server r2 127.0.0.1:{relay_port} send-proxy-v2 check inter 300ms rise 1 fall 3
""")
    return cfg, stats


def server_states(stats):
    """{(backend, server): status} from haproxy's `show stat` (CSV)."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            s.connect(stats)
            s.sendall(b"show stat\n")
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
    except OSError:
        return {}
    lines = data.decode("utf-8", "replace").splitlines()
    if not lines or not lines[0].startswith("# "):
        return {}
    names = lines[0][2:].split(",")
    out = {}
    for line in lines[1:]:
        row = dict(zip(names, line.split(",")))
        if row.get("svname") not in ("FRONTEND", "BACKEND", None):
            out[(row["pxname"], row["svname"])] = row.get("status", "")
    return out


def v2_header(source, dest, sport, dport, local=False):
    sig = b"\r\n\r\n\x00\r\nQUIT\n"
    if local:
        return sig + b"\x20\x00\x00\x00"
    body = socket.inet_aton(source) + socket.inet_aton(dest) + struct.pack("!HH", sport, dport)
    return sig + b"\x21\x11" + struct.pack("!H", len(body)) + body


def smtp_via(port, source):
    return smtplib.SMTP("127.0.0.1", port, source_address=(source, 0), timeout=BOUND)


def section(c, name, fn):
    """Runs one part of the scenario; an exception (smtplib's, a closed socket) fails that part
    only, so that the parts after it still run and say what they see."""
    try:
        fn()
    except Exception as e:  # noqa: BLE001
        c.check(False, f"{name}: ran to its end", repr(e))


def scenario(c):
    harness.require_bindable(["127.0.0.2", "127.0.0.3"])
    haproxy = harness.find_tool("haproxy", ["/usr/sbin/haproxy"])
    binary = harness.ringrelay_path()
    relay = harness.Relay(binary, shards=2, flags=[
        "--proxy-protocol-from", "127.0.0.1/32", "--proxy-protocol-timeout", "1",
        "--relay-networks", "127.0.0.2/32", "--relay-domains", "example.org",
        "--max-connections-per-ip", "2"])
    relay.start()
    work = harness.temp_dir("rr-proxy-")
    v1_port, v2_port = harness.free_port(), harness.free_port()
    cfg, stats = haproxy_config(work, relay.port, v1_port, v2_port)
    harness.Peer([haproxy, "-db", "-f", cfg])
    c.require(harness.connectable(v1_port) and harness.connectable(v2_port), "haproxy listens")

    up = harness.wait_until(lambda: set(server_states(stats).values()) == {"UP"} and
                            len(server_states(stats)) == 2, BOUND)
    c.check(up, "haproxy's health checks (TCP over send-proxy; smtpchk over send-proxy-v2) say UP",
            server_states(stats))

    # Relay networks judge the real client.
    def through_haproxy(port, version):
        s = smtp_via(port, "127.0.0.2")
        c.reply(s.ehlo("two.test"), 250, f"{version}: EHLO from 127.0.0.2")
        c.reply(s.mail("a@example.com"), 250, f"{version}: MAIL from 127.0.0.2")
        c.reply(s.rcpt("x@example.net"), 250, f"{version}: 127.0.0.2 (in --relay-networks) may relay")
        code, text = s.data(f"Subject: via {version} from two\r\n\r\nhello\r\n")
        c.check(code == 250, f"{version}: 127.0.0.2's message queued", text)
        qid_two = harness.queued_id(text)
        s.quit()

        s = smtp_via(port, "127.0.0.3")
        s.ehlo("three.test")
        s.mail("a@example.com")
        c.reply(s.rcpt("x@example.net"), 554, f"{version}: 127.0.0.3 (not in --relay-networks) may not relay",
                "5.7.1")
        c.reply(s.rcpt("y@example.org"), 250, f"{version}: 127.0.0.3 may send to a --relay-domains domain")
        code, text = s.data(f"Subject: via {version} from three\r\n\r\nhello\r\n")
        c.check(code == 250, f"{version}: 127.0.0.3's message queued", text)
        qid_three = harness.queued_id(text)
        s.quit()

        for qid, client in ((qid_two, "127.0.0.2"), (qid_three, "127.0.0.3")):
            rec = harness.reception_record(relay, qid) or {}
            c.check(rec.get("client") == client and rec.get("proxy") == "127.0.0.1",
                    f"{version}: Reception record says client {client}, proxy 127.0.0.1", rec)
            message = harness.spooled_message(relay.spool, qid) or b""
            received = message.split(b"\r\n", 1)[0]
            c.check(f"({client})".encode() in received, f"{version}: Received: names {client}", received)

    for port, version in ((v1_port, "v1"), (v2_port, "v2")):
        section(c, f"{version} through haproxy", lambda: through_haproxy(port, version))

    # Per-IP limits count the real client: two from 127.0.0.3 fill its share, the third is
    # refused, and 127.0.0.2 (through the same balancer address) still gets in.
    def per_ip():
        held = [smtp_via(v2_port, "127.0.0.3"), smtp_via(v1_port, "127.0.0.3")]
        try:
            third = harness.RawClient("127.0.0.1", v2_port, source="127.0.0.3")
            c.reply(third.reply(), 421, "a third connection from 127.0.0.3 is refused", "4.7.0",
                    contains="from your address")
            third.close()
            other = smtp_via(v1_port, "127.0.0.2")
            c.reply(other.noop(), 250, "127.0.0.2 still gets in while 127.0.0.3 is at its limit")
            other.quit()
        finally:
            for s in held:
                s.quit()

    section(c, "per-IP limits", per_ip)

    # Straight to the relay from an address it does not trust: a PROXY header gets 421. Sent at
    # once it may arrive before the banner's send completed (the early-talker path) or after
    # (the session's); both answer 421, and tests/queue/server_connection_test.cc pins each.
    def untrusted_at_once():
        with harness.RawClient(relay.host, relay.port, source="127.0.0.2") as raw:
            raw.send(b"PROXY TCP4 192.0.2.1 127.0.0.1 40000 25\r\nEHLO forged.test\r\n")
            c.reply(raw.reply(), 220, "untrusted PROXY sent at once: the banner")
            c.reply(raw.reply(), 421, "untrusted PROXY sent at once: 421", "4.7.0", contains="PROXY")
            c.check(raw.closed_by_peer(BOUND), "untrusted PROXY sent at once: closed")

    section(c, "untrusted PROXY sent at once", untrusted_at_once)

    def untrusted_after_greeting():
        with harness.RawClient(relay.host, relay.port, source="127.0.0.3") as raw:
            c.reply(raw.reply(), 220, "untrusted PROXY after the greeting: the banner")
            c.reply(raw.cmd("PROXY TCP4 192.0.2.1 127.0.0.1 40000 25"), 421,
                    "untrusted PROXY after the greeting: 421", "4.7.0", contains="PROXY")
            c.check(raw.closed_by_peer(BOUND), "untrusted PROXY after the greeting: closed")

    section(c, "untrusted after greeting", untrusted_after_greeting)

    # From the trusted address, by hand.
    def byte_by_byte():
        with harness.RawClient(relay.host, relay.port) as raw:
            for b in b"PROXY TCP4 127.0.0.2 127.0.0.1 40000 25\r\n":
                raw.send(bytes([b]))
                time.sleep(0.005)
            c.reply(raw.reply(), 220, "a v1 header byte by byte: the banner")
            raw.cmd("EHLO bytes.test")
            raw.cmd("MAIL FROM:<a@example.com>")
            c.reply(raw.cmd("RCPT TO:<x@example.net>"), 250, "a v1 header byte by byte: its client 127.0.0.2 may relay")
            raw.cmd("QUIT")

    section(c, "byte by byte", byte_by_byte)

    def v2_local():
        with harness.RawClient(relay.host, relay.port) as raw:
            raw.send(v2_header("127.0.0.2", "127.0.0.1", 40001, 25, local=True))
            c.reply(raw.reply(), 220, "a v2 LOCAL header (health check): served as the balancer's own connection")
            raw.cmd("EHLO local.test")
            raw.cmd("MAIL FROM:<a@example.com>")
            c.reply(raw.cmd("RCPT TO:<x@example.net>"), 554,
                    "a v2 LOCAL header: the balancer's own address (not in --relay-networks) may not relay", "5.7.1")
            c.reply(raw.cmd("QUIT"), 221, "a v2 LOCAL header: QUIT")

    section(c, "v2 local", v2_local)

    def bytes_after_header():
        with harness.RawClient(relay.host, relay.port) as raw:
            raw.send(v2_header("127.0.0.2", "127.0.0.1", 40002, 25) + b"EHLO early.test\r\n")
            c.reply(raw.reply(), 220, "bytes right after a v2 header: the banner")
            c.reply(raw.reply(), 521, "bytes right after a v2 header, before the greeting: an early talker", "5.5.1")
            c.check(raw.closed_by_peer(BOUND), "early talker behind a header: closed")

    section(c, "bytes after header", bytes_after_header)

    def malformed():
        with harness.RawClient(relay.host, relay.port) as raw:
            raw.send(b"PROXY TCP4 not-an-address 127.0.0.1 40000 25\r\n")
            c.check(raw.closed_by_peer(BOUND) and not raw.buf, "a malformed header: closed without a reply", raw.buf)

    section(c, "malformed", malformed)
    c.check(harness.wait_until(lambda: "malformed PROXY header: PROXY v1: bad source address" in relay.stderr(),
                               BOUND), "a malformed header: reported on stderr", relay.stderr()[-600:])

    def unfinished():
        with harness.RawClient(relay.host, relay.port) as raw:
            raw.send(b"PROXY TCP4 127.0.0.2")
            c.check(raw.closed_by_peer(BOUND) and not raw.buf, "an unfinished header: closed without a reply", raw.buf)

    section(c, "unfinished", unfinished)
    c.check(harness.wait_until(lambda: "no whole PROXY header within 1 s" in relay.stderr(), BOUND),
            "an unfinished header: the deadline is reported on stderr", relay.stderr()[-600:])

    # Nothing else was affected.
    s = smtp_via(v2_port, "127.0.0.2")
    c.reply(s.noop(), 250, "after the bad headers haproxy's clients are still served")
    s.quit()
    c.check(set(server_states(stats).values()) == {"UP"}, "haproxy's servers are still UP", server_states(stats))
    c.check(relay.stop() == 0, "graceful stop exits 0")


if __name__ == "__main__":
    harness.run("proxy_protocol", scenario)
