#!/usr/bin/env python3
# tests/integration/outbound_tls_test.py: outbound STARTTLS (RFC 3207, issue 5): client ->
# ringrelay -> a next hop on loopback, one relay per case, the recipient's domain routed by
# --route to the peer:
# - opportunistic (the default) to ringrelay-sink --tls: delivered under TLS (the sink's
#   Received: says ESMTPS with the protocol and cipher, its summary counts the message as
#   received under TLS, the relay's Delivery record has "tls": "TLSv1.x ...");
# - --route-tls DOMAIN=required to a sink without TLS: deferred (TransientFailure 4.7.4 in the
#   log, the message still in the spool), and the sink received nothing;
# - required to a TLS sink: delivered under TLS;
# - verify with --outbound-ca-file = the sink's self-signed certificate: a certificate naming
#   the route's address (127.0.0.1) is delivered; one naming another host is deferred
#   ("certificate verify failed" in the log and on stderr with the peer), nothing received;
# - opportunistic to a broken peer (a Python server that answers STARTTLS with 220, then a
#   forged reply and garbage instead of a ServerHello): the failure is logged with the peer and
#   the reason, and the relay retries that peer in plaintext on a new connection and delivers;
#   the forged reply behind the 220 never counts; with required, the same peer defers;
# - a peer that hangs up during the handshake (what a forged reset looks like) is a lost
#   connection: deferred, never retried in plaintext;
# - session resumption: with one message per connection, later handshakes resume.
# Everything on loopback; every wait is bounded and waits for a log record, not a time.
import glob
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import harness
from delivery_test import log_records, wait_for

WAIT = 60.0
BODY = b"Subject: outbound tls\r\nMessage-ID: <%s@test>\r\n\r\nhello over %s\r\n"


class Sink:
    """ringrelay-sink on a free port, saving to a temp dir; stop() returns its JSON summary."""

    def __init__(self, binary, extra=()):
        self.port = harness.free_port()
        self.save = harness.temp_dir("rr-otls-save-")
        self.args = [binary, "--listen", f"127.0.0.1:{self.port}", "--shards", "1", "--save", self.save,
                     "--quiet", "--json"] + list(extra)
        self.proc = subprocess.Popen(self.args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        harness.register_cleanup(self.kill)
        if not harness.connectable(self.port):
            self.kill()
            raise RuntimeError(f"ringrelay-sink did not listen on {self.port}")
        self.summary = None
        self.stderr = ""

    def saved(self):
        out = []
        for path in sorted(glob.glob(os.path.join(self.save, "*.eml"))):
            with open(path, "rb") as f:
                out.append(f.read())
        return out

    def stop(self):
        if self.summary is not None:
            return self.summary
        self.proc.terminate()
        try:
            out, err = self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
        self.stderr = err
        self.returncode = self.proc.returncode
        try:
            self.summary = json.loads(out.strip().splitlines()[-1])
        except (ValueError, IndexError):
            self.summary = {}
        return self.summary

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


class BrokenTlsPeer:
    """A plain SMTP server (Python sockets, one connection at a time) that lists STARTTLS and
    answers it with 220 followed, in the same write, by a forged reply and bytes that are no
    TLS record, then hangs up. Everything else is a minimal lock-step SMTP server that records
    the commands and messages it got, per connection."""

    BEHIND_READY = b"250-forged\r\n250 AUTH PLAIN\r\nthis is not a TLS record\r\n"

    def __init__(self, offer_starttls=True, hang_up=False):
        self.offer = offer_starttls
        self.hang_up = hang_up  # after the 220: close instead of answering the ClientHello
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.5)
        self.port = self.sock.getsockname()[1]
        self.connections = []  # per connection: list of command lines (bytes)
        self.messages = []     # message data received (bytes)
        self.lock = threading.Lock()
        self.stopping = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()
        harness.register_cleanup(self.stop)

    def stop(self):
        self.stopping = True
        self.thread.join(5)
        self.sock.close()

    def commands(self):
        with self.lock:
            return [list(c) for c in self.connections]

    def _serve(self):
        while not self.stopping:
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(10)
                try:
                    self._session(conn)
                except OSError:
                    pass

    def _session(self, conn):
        cmds = []
        with self.lock:
            self.connections.append(cmds)
        f = conn.makefile("rb")
        conn.sendall(b"220 broken.test ESMTP\r\n")
        while True:
            line = f.readline()
            if not line:
                return
            with self.lock:
                cmds.append(line.rstrip(b"\r\n"))
            verb = line[:4].upper()
            if verb in (b"EHLO", b"HELO"):
                conn.sendall(b"250-broken.test\r\n" + (b"250-STARTTLS\r\n" if self.offer else b"") +
                             b"250 8BITMIME\r\n")
            elif line.upper().startswith(b"STARTTLS"):
                # 220, then a forged reply (response injection); then, once the ClientHello is
                # here, garbage instead of a ServerHello: the handshake fails on TLS itself
                # (a peer that merely hangs up is a lost connection, not a TLS failure).
                conn.sendall(b"220 2.0.0 Ready to start TLS\r\n" + self.BEHIND_READY)
                try:
                    conn.settimeout(10)
                    if not self.hang_up and conn.recv(4096):
                        conn.sendall(b"this is no ServerHello\r\n" * 4)
                except OSError:
                    pass
                return
            elif verb == b"DATA":
                conn.sendall(b"354 go ahead\r\n")
                data = []
                while True:
                    l = f.readline()
                    if not l or l == b".\r\n":
                        break
                    data.append(l[1:] if l.startswith(b"..") else l)
                with self.lock:
                    self.messages.append(b"".join(data))
                conn.sendall(b"250 2.0.0 Ok: queued\r\n")
            elif verb == b"QUIT":
                conn.sendall(b"221 2.0.0 Bye\r\n")
                return
            else:
                conn.sendall(b"250 2.0.0 Ok\r\n")


def send(relay, rcpt, tag):
    import smtplib
    s = smtplib.SMTP(relay.host, relay.port, timeout=30)
    s.sendmail("sender@example.org", [rcpt], BODY % (tag.encode(), tag.encode()))
    s.quit()


def make_relay(binary, port, extra=()):
    return harness.Relay(binary, ["--route", f"tls.test=127.0.0.1:{port}", "--retry-intervals", "1h",
                                  "--idle-connection-timeout", "1"] + list(extra)).start()


def delivered_under_tls(c, label, relay, sink):
    """Waits for the Delivery record, then checks TLS on both sides."""
    if not wait_for(lambda: log_records(relay, "Delivery"), f"{label}: delivered", c):
        c.info(relay.stderr()[-1500:])
        return
    d = log_records(relay, "Delivery")[0]
    c.check(str(d.get("tls", "")).startswith("TLSv1."), f"{label}: the Delivery record names the TLS protocol "
            "and cipher", d)
    saved = sink.saved()
    c.check(len(saved) == 1 and b"with ESMTPS" in saved[0] and b"(using TLSv1." in saved[0],
            f"{label}: the sink received it under TLS (Received: ... with ESMTPS, using TLSv1.x)",
            saved[0][:400] if saved else "nothing saved")
    summary = sink.stop()
    c.check(summary.get("received") == 1 and summary.get("received_tls") == 1 and summary.get("tls_handshakes", 0) >= 1,
            f"{label}: the sink's summary counts one message received under TLS", summary)
    c.check(sink.returncode == 0, f"{label}: the sink stops cleanly", sink.stderr[-500:])


def deferred_without_sending(c, label, relay, sink_summary_fn, reason_part, binary):
    """Waits for the TransientFailure record; checks its reason, that nothing was received,
    and that the message is still in the spool."""
    ok = wait_for(lambda: log_records(relay, "TransientFailure"), f"{label}: a TransientFailure record", c)
    if ok:
        tf = log_records(relay, "TransientFailure")[0]
        c.check(reason_part in str(tf.get("reply")), f"{label}: the log says why ({reason_part})", tf)
        c.check(tf.get("next_attempt") is not None, f"{label}: a next attempt is scheduled", tf)
    c.check(not log_records(relay, "Delivery"), f"{label}: no Delivery record")
    received = sink_summary_fn()
    c.check(received == 0, f"{label}: the next hop received no message (nothing sent in clear)", received)
    code = relay.stop()
    c.check(code == 0, f"{label}: the relay stops cleanly", f"exit {code}")
    count, ids, _ = harness.list_spool(binary, relay.spool)
    c.check(count == 1, f"{label}: the message stays in the spool", ids)


def scenario(c):
    binary = sys.argv[1] if len(sys.argv) > 1 else harness.ringrelay_path()
    sink_bin = sys.argv[2] if len(sys.argv) > 2 else os.path.join(os.path.dirname(os.path.dirname(binary)),
                                                                   "tools", "sink", "ringrelay-sink")
    for p in (binary, sink_bin):
        if not os.access(p, os.X_OK):
            raise harness.Skip(f"{p} is not built")

    # 1. Opportunistic (the default) to a TLS sink.
    sink = Sink(sink_bin, ["--tls"])
    relay = make_relay(binary, sink.port)
    send(relay, "a@tls.test", "opportunistic")
    delivered_under_tls(c, "opportunistic", relay, sink)
    c.check(relay.stop() == 0, "opportunistic: the relay stops cleanly")

    # 1b. Session resumption (RFC 8446 §2.2): one message per connection, sent one after the
    # other; later connections offer the session the previous one ended with. The first
    # handshake is a full one; at least one later one must be resumed (each later message
    # goes out only after the previous Delivery record, well after that connection's QUIT).
    sink = Sink(sink_bin, ["--tls"])
    relay = make_relay(binary, sink.port, ["--max-messages-per-connection", "1"])
    for i in range(5):
        send(relay, f"r{i}@tls.test", f"resume-{i}")
        wait_for(lambda: len(log_records(relay, "Delivery")) > i, f"resumption: message {i + 1} delivered", c)
    tls = [str(d.get("tls")) for d in log_records(relay, "Delivery")]
    c.check(len(tls) == 5 and not tls[0].endswith(" resumed") and any(t.endswith(" resumed") for t in tls[1:]),
            "outbound TLS sessions are resumed on later connections (Delivery records say 'resumed')", tls)
    sink.stop()
    c.check(relay.stop() == 0, "resumption: the relay stops cleanly")

    # 2. required, to a sink without TLS: deferred, never sent in clear.
    plain = Sink(sink_bin)
    relay = make_relay(binary, plain.port, ["--route-tls", "tls.test=required"])
    send(relay, "b@tls.test", "required-no-tls")
    deferred_without_sending(c, "required to a peer without STARTTLS", relay,
                             lambda: plain.stop().get("received"), "4.7.4 TLS is required, but was not offered",
                             binary)

    # 3. required, to a TLS sink: delivered.
    sink = Sink(sink_bin, ["--tls"])
    relay = make_relay(binary, sink.port, ["--route-tls", "tls.test=required"])
    send(relay, "c@tls.test", "required")
    delivered_under_tls(c, "required", relay, sink)
    c.check(relay.stop() == 0, "required: the relay stops cleanly")

    # 4. verify against the sink's self-signed certificate as the CA file.
    tls_dir = os.path.join(harness.temp_dir("rr-otls-cert-"), "tls")
    sink = Sink(sink_bin, ["--tls", "--tls-dir", tls_dir, "--hostname", "127.0.0.1"])
    relay = make_relay(binary, sink.port, ["--route-tls", "tls.test=verify",
                                           "--outbound-ca-file", os.path.join(tls_dir, "cert.pem")])
    send(relay, "d@tls.test", "verify")
    delivered_under_tls(c, "verify, certificate names the route's address", relay, sink)
    c.check(relay.stop() == 0, "verify: the relay stops cleanly")

    tls_dir2 = os.path.join(harness.temp_dir("rr-otls-cert-"), "tls")
    sink = Sink(sink_bin, ["--tls", "--tls-dir", tls_dir2, "--hostname", "other-host.test"])
    relay = make_relay(binary, sink.port, ["--route-tls", "tls.test=verify",
                                           "--outbound-ca-file", os.path.join(tls_dir2, "cert.pem")])
    send(relay, "e@tls.test", "verify-mismatch")
    deferred_without_sending(c, "verify, certificate names another host", relay,
                             lambda: sink.stop().get("received"), "certificate verify failed", binary)
    c.check(f"127.0.0.1:{sink.port}" in relay.stderr() and "certificate verify failed" in relay.stderr(),
            "verify mismatch: the TLS failure is logged on stderr with the peer and the reason",
            relay.stderr()[-800:])

    # 4b. verify with an --outbound-ca-file that is missing at first: deferred; once the file
    # is there, SIGHUP makes every shard read it again (at its next tick): mail sent after
    # that is delivered, verified. Sent one message at a time until one is delivered
    # (bounded), so the test does not depend on when the tick comes.
    tls_dir3 = os.path.join(harness.temp_dir("rr-otls-cert-"), "tls")
    sink = Sink(sink_bin, ["--tls", "--tls-dir", tls_dir3, "--hostname", "127.0.0.1"])
    ca_path = os.path.join(harness.temp_dir("rr-otls-ca-"), "ca.pem")
    relay = make_relay(binary, sink.port, ["--route-tls", "tls.test=verify", "--outbound-ca-file", ca_path])
    send(relay, "h0@tls.test", "ca-missing")
    wait_for(lambda: log_records(relay, "TransientFailure"), "verify, CA file missing: deferred", c)
    with open(os.path.join(tls_dir3, "cert.pem"), "rb") as src, open(ca_path, "wb") as dst:
        dst.write(src.read())
    relay.signal(signal.SIGHUP)
    wait_for(lambda: "reload:" in relay.stderr(), "SIGHUP: the reload is logged", c)
    deadline = time.monotonic() + WAIT
    sent = 1
    while not log_records(relay, "Delivery") and time.monotonic() < deadline:
        send(relay, f"h{sent}@tls.test", f"ca-fixed-{sent}")
        sent += 1
        end = time.monotonic() + 2
        while not log_records(relay, "Delivery") and time.monotonic() < end:
            time.sleep(0.1)
    got = log_records(relay, "Delivery")
    c.check(got and str(got[0].get("tls", "")).startswith("TLSv1."),
            "after SIGHUP the fixed --outbound-ca-file is read: a later message is delivered under verify",
            f"{sent} sent; {relay.stderr()[-600:]}")
    # A SIGHUP while the CA file is broken keeps the contexts in use: mail still verifies.
    with open(ca_path, "w") as f:
        f.write("not a certificate\n")
    relay.signal(signal.SIGHUP)
    wait_for(lambda: "--outbound-ca-file kept as it was" in relay.stderr(),
             "SIGHUP with a broken --outbound-ca-file: refused, logged", c)
    before = len(log_records(relay, "Delivery"))
    send(relay, "hz@tls.test", "ca-broken-kept")
    wait_for(lambda: len(log_records(relay, "Delivery")) > before,
             "after a refused CA reload, mail is still delivered under verify", c)
    sink.stop()
    c.check(relay.stop() == 0, "CA reload: the relay stops cleanly")

    # 5. Opportunistic to a peer whose TLS is broken: plaintext retry on a new connection.
    broken = BrokenTlsPeer()
    relay = make_relay(binary, broken.port)
    send(relay, "f@tls.test", "fallback")
    if wait_for(lambda: log_records(relay, "Delivery"), "broken TLS peer: delivered after a plaintext retry", c):
        d = log_records(relay, "Delivery")[0]
        c.check(d.get("tls") is None, "broken TLS peer: the Delivery record says plaintext (tls null)", d)
    conns = broken.commands()
    c.check(len(conns) >= 2 and any(l.upper() == b"STARTTLS" for l in conns[0]),
            "broken TLS peer: the first connection tried STARTTLS", conns)
    c.check(len(conns) >= 2 and not any(l.upper() == b"STARTTLS" for l in conns[1]) and
            any(l.upper().startswith(b"MAIL FROM:") for l in conns[1]),
            "broken TLS peer: the second connection went in plaintext without STARTTLS", conns)
    behind = len(BrokenTlsPeer.BEHIND_READY)
    c.check(f"{behind} byte(s) behind the 220 discarded" in relay.stderr(),
            f"broken TLS peer: the {behind} bytes forged behind the 220 were discarded, never read as SMTP",
            relay.stderr()[-800:])
    c.check(len(broken.messages) == 1 and b"hello over fallback" in broken.messages[0],
            "broken TLS peer: the message arrived once", len(broken.messages))
    err = relay.stderr()
    c.check(f"127.0.0.1:{broken.port}" in err and "TLS to" in err and "failed" in err,
            "broken TLS peer: the TLS failure is logged with the peer and the reason", err[-800:])
    c.check(not log_records(relay, "TransientFailure"), "broken TLS peer: nothing was deferred")
    c.check(relay.stop() == 0, "broken TLS peer: the relay stops cleanly")

    # 5b. A peer that hangs up during the handshake (what a forged RST looks like) is a lost
    # connection, not broken TLS: deferred, no plaintext retry.
    hangup = BrokenTlsPeer(hang_up=True)
    relay = make_relay(binary, hangup.port)
    send(relay, "g@tls.test", "hangup")
    wait_for(lambda: log_records(relay, "TransientFailure"), "handshake hang-up: deferred", c)
    conns = hangup.commands()
    c.check(all(any(l.upper() == b"STARTTLS" for l in conn) for conn in conns) and
            not any(l.upper().startswith(b"MAIL FROM:") for conn in conns for l in conn),
            "handshake hang-up: no plaintext retry (every connection tried STARTTLS, no MAIL)", conns)
    c.check(not hangup.messages, "handshake hang-up: nothing received in clear")
    c.check(relay.stop() == 0, "handshake hang-up: the relay stops cleanly")

    # 6. required to the same broken peer: deferred, no MAIL ever sent.
    broken2 = BrokenTlsPeer()
    relay = make_relay(binary, broken2.port, ["--route-tls", "tls.test=required"])
    send(relay, "g@tls.test", "required-broken")

    def mails_seen():
        return sum(1 for conn in broken2.commands() for l in conn if l.upper().startswith(b"MAIL"))
    deferred_without_sending(c, "required to a peer whose TLS is broken", relay, lambda: mails_seen() +
                             len(broken2.messages), "TLS handshake with", binary)


if __name__ == "__main__":
    harness.run("outbound_tls", scenario)
