#!/usr/bin/env python3
# tests/integration/tls_test.py: inbound TLS (issue 5, phase 1) with independent peers.
#
#  - openssl s_client -starttls smtp: the handshake completes, the certificate is the
#    self-signed one made for --hostname (CN, SHA-256 fingerprint as the relay logged it), and
#    a whole EHLO/MAIL/RCPT/DATA dialogue over it queues a message;
#  - Python smtplib starttls() (unverified context): EHLO offers STARTTLS before and not after,
#    the message's Received: says ESMTPS with the TLS version and cipher, the Reception log
#    record has "tls"; a second STARTTLS gets 503 5.5.1; a plaintext message has "tls": null;
#  - smtplib.SMTP_SSL against --listen-tls (implicit TLS, RFC 8314);
#  - swaks --tls and --tls-on-connect;
#  - plaintext injection (CVE-2011-0411): "STARTTLS\r\nRSET\r\n" in one write gets 554 5.5.0 and
#    the connection closes, nothing executed; "EHLO" sent after the 220 (a later write) is fed
#    to the TLS engine, never to SMTP: no SMTP reply, at most a TLS alert record, the
#    connection closes, the relay logs the failure with the peer; "EHLO" written right behind
#    STARTTLS without waiting (a race the client controls) never gets a plaintext 250 whatever
#    the timing, and if a handshake then succeeds the session has no greeting;
#  - a restart reuses the self-signed certificate (same fingerprint); a client that never
#    completes the handshake is cut off by --command-timeout;
#  - --tls-cert/--tls-key with a certificate made here by `openssl req -x509`: s_client sees
#    that one; a missing --tls-cert file stops the start with an error naming it;
#  - SIGHUP with renewed certificate files: new handshakes get the new certificate, a session
#    already in TLS goes on, a broken file is refused and the certificate in use stays;
#  - --no-starttls: STARTTLS is neither offered nor accepted (502), --listen-tls still works;
#  - --tls-ciphersuites / --tls-ciphers: the configured suite is negotiated (TLS 1.3 and 1.2);
#    a list OpenSSL refuses stops the start.
import os
import queue
import re
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

HOST = "mx.tls-test.invalid"
SENDER = "sender@example.net"
RCPT = "rcpt@example.org"
IO = harness.IO_TIMEOUT

_FPR_RE = re.compile(r"SHA256 ([0-9A-F:]{95})")


def logged_fingerprint(relay):
    m = _FPR_RE.search(relay.stderr())
    return m.group(1) if m else None


def pem_fingerprint(openssl, pem):
    """(SHA-256 fingerprint 'AB:CD:..', subject text) of a PEM certificate, by openssl x509."""
    r = subprocess.run([openssl, "x509", "-noout", "-fingerprint", "-sha256", "-subject"], input=pem,
                       capture_output=True, text=True, timeout=30)
    fpr = re.search(r"Fingerprint=([0-9A-F:]+)", r.stdout, re.I)
    subj = re.search(r"subject=(.*)", r.stdout)
    return (fpr.group(1).upper() if fpr else None), (subj.group(1).strip() if subj else "")


def pem_from(text):
    m = re.search(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", text, re.S)
    return m.group(0) + "\n" if m else None


def s_client_certificate(openssl, port, starttls=True):
    """Handshake only (stdin closed at once); returns s_client's stdout."""
    args = [openssl, "s_client", "-connect", f"127.0.0.1:{port}"]
    if starttls:
        args += ["-starttls", "smtp"]
    r = subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True, text=True, errors="replace",
                       timeout=60)
    return r.stdout


class LineReader:
    """Lines of a stream, read by a thread; wait_for() returns the first line matching a regex
    (or None at EOF or timeout), keeping every line seen in self.lines."""

    def __init__(self, stream):
        self.q = queue.Queue()
        self.lines = []
        threading.Thread(target=self._run, args=(stream,), daemon=True).start()

    def _run(self, stream):
        for line in stream:
            self.q.put(line.rstrip("\r\n"))
        self.q.put(None)

    def wait_for(self, pattern, timeout=IO):
        rx = re.compile(pattern)
        end = time.monotonic() + timeout
        while True:
            try:
                line = self.q.get(timeout=max(0.05, end - time.monotonic()))
            except queue.Empty:
                return None
            if line is None:
                return None
            self.lines.append(line)
            if rx.search(line):
                return line
            if time.monotonic() > end:
                return None


def s_client_dialogue(c, openssl, port):
    """EHLO/MAIL/RCPT/DATA/QUIT through `openssl s_client -starttls smtp`, each command sent
    once the previous reply arrived. Returns the queue id or None."""
    p = subprocess.Popen([openssl, "s_client", "-starttls", "smtp", "-connect", f"127.0.0.1:{port}", "-crlf",
                          "-ign_eof"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                         text=True, errors="replace", bufsize=1)
    harness.register_cleanup(lambda: p.poll() is None and p.kill())
    out = LineReader(p.stdout)
    queued = None
    try:
        c.check(out.wait_for(r"^\s*Verify return code:") is not None, "s_client: STARTTLS handshake completed",
                "\n".join(out.lines[-20:]))
        text = "\n".join(out.lines)
        c.check(re.search(r"subject=.*CN\s*=\s*" + re.escape(HOST), text) is not None,
                f"s_client: certificate subject CN = {HOST} (--hostname)", text[-2000:])
        c.check("self-signed" in text or "self signed" in text, "s_client: the certificate is self-signed")
        c.check(re.search(r"TLSv1\.3", text) is not None, "s_client: TLS 1.3 negotiated")
        steps = [("EHLO s-client.example", r"^250 "), (f"MAIL FROM:<{SENDER}>", r"^\d{3} "),
                 (f"RCPT TO:<{RCPT}>", r"^\d{3} "), ("DATA", r"^\d{3} "),
                 ("Subject: over s_client\n\nhello through openssl s_client\n.", r"^\d{3} ")]
        replies = []
        for line, want in steps:
            p.stdin.write(line + "\n")
            p.stdin.flush()
            replies.append(out.wait_for(want))
        ehlo_lines = [l for l in out.lines if l.startswith("250")]
        c.check(not any("STARTTLS" in l for l in ehlo_lines), "s_client: EHLO under TLS does not offer STARTTLS",
                str(ehlo_lines))
        c.check(replies[1] is not None and replies[1].startswith("250 2.1.0"), "s_client: MAIL 250", str(replies[1]))
        c.check(replies[2] is not None and replies[2].startswith("250 2.1.5"), "s_client: RCPT 250", str(replies[2]))
        c.check(replies[3] is not None and replies[3].startswith("354"), "s_client: DATA 354", str(replies[3]))
        queued = harness.queued_id(replies[4] or "")
        c.check(queued is not None, "s_client: message queued over STARTTLS", str(replies[4]))
        p.stdin.write("QUIT\n")
        p.stdin.flush()
        c.check(out.wait_for(r"^221 ") is not None, "s_client: QUIT 221")
    finally:
        try:
            p.stdin.close()
        except OSError:
            pass
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)
    return queued


def smtplib_starttls(c, relay, port):
    s = smtplib.SMTP("127.0.0.1", port, timeout=IO)
    try:
        s.ehlo("smtplib.example")
        c.check(s.has_extn("starttls"), "smtplib: EHLO offers STARTTLS on the plain port")
        code, msg = s.starttls(context=harness.unverified_tls())
        c.reply((code, msg), 220, "smtplib: STARTTLS", enhanced="2.0.0", contains="Ready to start TLS")
        c.check(s.sock.version() == "TLSv1.3", "smtplib: TLS 1.3", s.sock.version())
        cipher = s.sock.cipher()[0]
        s.ehlo("smtplib.example")
        c.check(not s.has_extn("starttls"), "smtplib: EHLO after STARTTLS no longer offers it")
        c.check(s.has_extn("pipelining") and s.has_extn("chunking"), "smtplib: EHLO after STARTTLS lists the rest")
        c.reply(s.mail(SENDER), 250, "smtplib: MAIL over TLS")
        c.reply(s.rcpt(RCPT), 250, "smtplib: RCPT over TLS")
        code, msg = s.data(b"Subject: smtplib starttls\r\n\r\nhello over STARTTLS\r\n")
        c.reply((code, msg), 250, "smtplib: DATA over TLS", contains="queued as")
        qid = harness.queued_id(msg)
        c.reply(s.docmd("STARTTLS"), 503, "smtplib: second STARTTLS under TLS", enhanced="5.5.1",
                contains="TLS already active")
        s.quit()
    finally:
        s.close()
    m = harness.spooled_message(relay.spool, qid)
    c.require(m is not None, "smtplib: the STARTTLS message is in the spool")
    head = m.split(b"\r\n\r\n", 1)[0].decode(errors="replace")
    c.check(f"(using TLSv1.3 with cipher {cipher} (" in head, "Received: records the TLS version and cipher",
            head[:400])
    c.check(re.search(r"by " + re.escape(HOST) + r" \(ringrelay\) with ESMTPS id " + qid, head) is not None,
            "Received: says 'with ESMTPS'", head[:400])
    c.check(b"hello over STARTTLS" in m, "smtplib: the body arrived intact")
    rec = harness.reception_record(relay, qid)
    c.check(rec is not None and rec.get("tls") == f"TLSv1.3 {cipher}",
            "Reception log record: \"tls\": \"TLSv1.3 <cipher>\"", str(rec))


def smtplib_plain(c, relay, port):
    s = smtplib.SMTP("127.0.0.1", port, timeout=IO)
    try:
        s.ehlo("plain.example")
        c.reply(s.mail(SENDER), 250, "plain: MAIL without TLS")
        c.reply(s.rcpt(RCPT), 250, "plain: RCPT without TLS")
        code, msg = s.data(b"Subject: plain\r\n\r\nno TLS here\r\n")
        c.reply((code, msg), 250, "plain: DATA without TLS", contains="queued as")
        qid = harness.queued_id(msg)
        s.quit()
    finally:
        s.close()
    m = harness.spooled_message(relay.spool, qid) or b""
    c.check(b"(using " not in m.split(b"\r\n\r\n", 1)[0] and b" with ESMTP id " in m,
            "plain: Received: says ESMTP, no TLS line", m[:300])
    rec = harness.reception_record(relay, qid)
    c.check(rec is not None and "tls" in rec and rec["tls"] is None, "plain: Reception log record has \"tls\": null",
            str(rec))


def smtplib_implicit(c, relay, port):
    s = smtplib.SMTP_SSL("127.0.0.1", port, timeout=IO, context=harness.unverified_tls())
    try:
        code, msg = s.ehlo("implicit.example")
        c.check(code == 250 and not s.has_extn("starttls"), "SMTP_SSL: EHLO on the implicit-TLS port, no STARTTLS")
        c.reply(s.mail(SENDER), 250, "SMTP_SSL: MAIL")
        c.reply(s.rcpt(RCPT), 250, "SMTP_SSL: RCPT")
        code, msg = s.data(b"Subject: implicit\r\n\r\nhello over implicit TLS\r\n")
        c.reply((code, msg), 250, "SMTP_SSL: DATA", contains="queued as")
        qid = harness.queued_id(msg)
        c.reply(s.docmd("STARTTLS"), 503, "SMTP_SSL: STARTTLS on implicit TLS", enhanced="5.5.1")
        s.quit()
    finally:
        s.close()
    m = harness.spooled_message(relay.spool, qid) or b""
    c.check(b"(using TLSv1.3 with cipher " in m and b" with ESMTPS id " in m,
            "SMTP_SSL: Received: says ESMTPS with the TLS line", m[:300])


def swaks(c, relay, port, mode):
    tool = harness.find_tool("swaks")
    r = subprocess.run([tool, "--server", f"127.0.0.1:{port}", mode, "--from", SENDER, "--to", RCPT,
                        "--helo", "swaks.example", "--header", f"Subject: swaks {mode}", "--body",
                        f"hello from swaks {mode}"], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                       errors="replace", timeout=60)
    out = r.stdout + r.stderr
    qid = harness.queued_id(out)
    c.check(r.returncode == 0 and qid is not None, f"swaks {mode}: message queued", out[-1500:])
    c.check(re.search(r"TLS started with cipher TLSv1\.3", out) is not None, f"swaks {mode}: TLS 1.3 started",
            out[-1500:])
    m = harness.spooled_message(relay.spool, qid) or b""
    c.check(b" with ESMTPS id " in m, f"swaks {mode}: Received: says ESMTPS", m[:300])


def read_until_closed(sock, timeout):
    """Every byte the server sends until it closes (True) or the timeout (False)."""
    data = b""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        sock.settimeout(max(0.05, end - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            return data, False
        except (ConnectionResetError, BrokenPipeError):
            return data, True
        if not chunk:
            return data, True
        data += chunk
    return data, False


def injection(c, relay, port):
    # 1. A command behind STARTTLS in the same write: refused at the synchronisation point.
    with relay.connect(endpoint=0) as cl:
        cl.reply()
        c.reply(cl.cmd("EHLO inject.example"), 250, "injection 1: EHLO")
        cl.send(b"STARTTLS\r\nRSET\r\n")
        c.reply(cl.reply(), 554, "injection 1: STARTTLS+RSET in one write", enhanced="5.5.0")
        rest, closed = read_until_closed(cl.sock, IO)
        rest = cl.buf + rest
        c.check(closed, "injection 1: the connection is closed")
        c.check(rest == b"", "injection 1: no reply to RSET, no 220, nothing else", repr(rest[:200]))

    # 2. EHLO in a later write, after our 220 arrived: those bytes are TLS input. Plaintext is
    # not a ClientHello, so the handshake fails: no SMTP reply (OpenSSL sends no alert for
    # bytes that do not look like TLS at all; if it did, it would be a record of type 21).
    with relay.connect(endpoint=0) as cl:
        cl.reply()
        c.reply(cl.cmd("EHLO inject.example"), 250, "injection 2: EHLO")
        c.reply(cl.cmd("STARTTLS"), 220, "injection 2: STARTTLS", enhanced="2.0.0")
        cl.send(b"EHLO injected.example\r\n")
        rest, closed = read_until_closed(cl.sock, IO)
        rest = cl.buf + rest
        c.check(closed, "injection 2: the relay closes the connection")
        c.check(rest == b"" or rest[:1] == b"\x15", "injection 2: nothing but (at most) a TLS alert comes back",
                repr(rest[:200]))
        c.check(b"250" not in rest, "injection 2: the injected EHLO is not answered in plaintext", repr(rest[:200]))
    end = time.monotonic() + 10
    while time.monotonic() < end and "TLS with 127.0.0.1 failed" not in relay.stderr():
        time.sleep(0.1)
    c.check(re.search(r"TLS with 127\.0\.0\.1 failed: TLS handshake failed: \S", relay.stderr()) is not None,
            "injection 2: the relay logs the TLS failure with the peer and the reason",
            relay.stderr()[-800:])

    # 3. EHLO written right behind STARTTLS, without waiting for the 220. Where the relay sees
    # it depends on timing: in the same read (554, close), before its 220 left (discarded), or
    # after (fed to TLS: the handshake fails). Whatever happens: never a plaintext 250, and if
    # a handshake then succeeds, the session has no greeting (MAIL gets 503).
    outcomes = []
    for _ in range(5):
        raw = socket.create_connection(("127.0.0.1", port), timeout=IO)
        try:
            buf = b""

            def line():
                nonlocal buf
                while b"\r\n" not in buf:
                    chunk = raw.recv(65536)
                    if not chunk:
                        return b""
                    buf += chunk
                one, buf = buf.split(b"\r\n", 1)
                return one

            line()  # banner
            raw.sendall(b"EHLO inject.example\r\n")
            while True:
                l = line()
                if not l or l.startswith(b"250 "):
                    break
            raw.sendall(b"STARTTLS\r\n")
            raw.sendall(b"EHLO injected.example\r\n")
            first = line()
            if first.startswith(b"554"):
                outcomes.append("554")
                continue
            if not first.startswith(b"220"):
                c.check(False, "injection 3: STARTTLS answered 220 or 554", repr(first))
                continue
            # Whatever is already here behind the 220 would be a plaintext reply: nothing may be.
            try:
                early = raw.recv(65536, socket.MSG_PEEK | socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                early = b""
            if buf or b"250" in early:
                c.check(False, "injection 3: no plaintext reply after the 220", repr(buf + early))
                continue
            try:
                tls = harness.unverified_tls().wrap_socket(raw, server_hostname=HOST)
            except (ssl.SSLError, OSError):
                outcomes.append("handshake failed")
                continue
            tls.sendall(b"MAIL FROM:<" + SENDER.encode() + b">\r\n")
            reply = tls.recv(4096)
            outcomes.append("discarded" if reply.startswith(b"503 5.5.1") else "UNEXPECTED " + repr(reply))
            tls.close()
        finally:
            raw.close()
    c.info(f"injection 3 outcomes over 5 tries: {outcomes}")
    c.check(len(outcomes) == 5 and all(o in ("554", "handshake failed", "discarded") for o in outcomes),
            "injection 3: every outcome is safe (554, failed handshake, or bytes discarded and no greeting)",
            str(outcomes))

    # The relay is unharmed.
    with relay.connect(endpoint=0) as cl:
        c.reply(cl.reply(), 220, "after the injections: a new connection gets the banner")


def served_fingerprint(openssl, port):
    out = s_client_certificate(openssl, port)
    return pem_fingerprint(openssl, pem_from(out) or "")


def reload_certificate(c, relay, openssl, cert, key, old_fpr):
    """SIGHUP with a renewed certificate in the same files: new handshakes get it within a few
    seconds (shards switch at their 1 s tick); a connection already in TLS goes on; a broken
    file on SIGHUP is refused and the certificate in use stays."""
    s = smtplib.SMTP("127.0.0.1", relay.port, timeout=IO)
    s.starttls(context=harness.unverified_tls())
    s.ehlo("before-reload.example")
    work = os.path.dirname(cert)
    new_cert, new_key = os.path.join(work, "new-cert.pem"), os.path.join(work, "new-key.pem")
    r = subprocess.run([openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                        "-keyout", new_key, "-out", new_cert, "-days", "2", "-subj", "/CN=renewed.tls-test.invalid"],
                       capture_output=True, text=True, timeout=120)
    c.require(r.returncode == 0, "openssl req made a renewed certificate", r.stderr[-500:])
    with open(new_cert) as f:
        new_fpr, _ = pem_fingerprint(openssl, f.read())
    os.replace(new_key, key)
    os.replace(new_cert, cert)
    relay.signal(signal.SIGHUP)
    end = time.monotonic() + 10
    while time.monotonic() < end and "reload: TLS certificate " + cert not in relay.stderr():
        time.sleep(0.1)
    c.check("CN=renewed.tls-test.invalid" in relay.stderr(), "SIGHUP: the reload is logged with the new CN",
            relay.stderr()[-600:])
    got = None
    end = time.monotonic() + 15
    while time.monotonic() < end:
        got, subject = served_fingerprint(openssl, relay.port)
        if got == new_fpr:
            break
        time.sleep(0.5)
    c.check(got == new_fpr and got != old_fpr, "SIGHUP: new handshakes get the renewed certificate",
            f"{got} vs {new_fpr}")
    c.reply(s.mail(SENDER), 250, "a session in TLS before the reload goes on")
    s.quit()
    with open(cert, "w") as f:
        f.write("not a certificate\n")
    relay.signal(signal.SIGHUP)
    end = time.monotonic() + 10
    while time.monotonic() < end and "TLS certificate kept as it was" not in relay.stderr():
        time.sleep(0.1)
    c.check("TLS certificate kept as it was" in relay.stderr(), "SIGHUP with a broken certificate file: refused",
            relay.stderr()[-600:])
    time.sleep(1.5)  # past a shard tick: a wrongly switched shard would show now
    got, _ = served_fingerprint(openssl, relay.port)
    c.check(got == new_fpr, "after a refused reload the certificate in use stays", f"{got}")


def own_certificate(c, binary, openssl):
    work = harness.temp_dir()
    cert, key = os.path.join(work, "cert.pem"), os.path.join(work, "key.pem")
    r = subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
                        "-days", "2", "-subj", "/CN=configured.tls-test.invalid"], capture_output=True, text=True,
                       timeout=120)
    c.require(r.returncode == 0, "openssl req -x509 made a certificate", r.stderr[-500:])
    with open(cert) as f:
        want_fpr, _ = pem_fingerprint(openssl, f.read())
    relay = harness.Relay(binary, hostname=HOST, flags=["--tls-cert", cert, "--tls-key", key]).start()
    try:
        c.check("from --tls-cert" in relay.stderr() and "CN=configured.tls-test.invalid" in relay.stderr(),
                "--tls-cert: the start-up line names the configured certificate", relay.stderr()[-600:])
        c.check(not os.path.exists(os.path.join(relay.spool, "tls")), "--tls-cert: no self-signed pair is made")
        out = s_client_certificate(openssl, relay.port)
        got_fpr, subject = pem_fingerprint(openssl, pem_from(out) or "")
        c.check("configured.tls-test.invalid" in subject, "--tls-cert: s_client sees the configured certificate",
                subject or out[-800:])
        c.check(got_fpr is not None and got_fpr == want_fpr, "--tls-cert: same SHA-256 fingerprint as the file",
                f"{got_fpr} vs {want_fpr}")
        s = smtplib.SMTP("127.0.0.1", relay.port, timeout=IO)
        s.starttls(context=harness.unverified_tls())
        s.ehlo("own.example")
        c.reply(s.mail(SENDER), 250, "--tls-cert: MAIL over STARTTLS")
        s.quit()
        reload_certificate(c, relay, openssl, cert, key, want_fpr)
    finally:
        code = relay.stop()
    c.check(code == 0, "--tls-cert relay stops cleanly", relay.stderr()[-600:])
    bad = subprocess.run([binary, "--spool", os.path.join(work, "spool2"), "--hostname", HOST, "--tls-cert",
                          os.path.join(work, "missing.pem"), "--tls-key", key, "--listen", "127.0.0.1:0"],
                         stdin=subprocess.DEVNULL, capture_output=True, text=True, errors="replace", timeout=60)
    c.check(bad.returncode != 0 and "missing.pem" in bad.stderr,
            "--tls-cert naming a missing file: start-up fails with an error naming it",
            f"rc={bad.returncode} {bad.stderr[-400:]}")


def scenario(c):
    binary = harness.ringrelay_path()
    openssl = harness.find_tool("openssl")
    relay = harness.Relay(binary, hostname=HOST, flags=["--listen-tls", "127.0.0.1:0"]).start()
    c.require(len(relay.endpoints) == 2, "the relay listens on a plain and an implicit-TLS port", str(relay.endpoints))
    plain_port, tls_port = relay.endpoints[0][1], relay.endpoints[1][1]
    err = relay.stderr()
    c.check("kTLS: " in err and "TLS in user space (OpenSSL)" in err, "start-up says whether kTLS is used",
            err[-800:])
    c.check("self-signed, generated now" in err, "start-up says the certificate was generated", err[-800:])
    fpr = logged_fingerprint(relay)
    key_file = os.path.join(relay.spool, "tls", "key.pem")
    c.check(os.path.exists(key_file) and (os.stat(key_file).st_mode & 0o777) == 0o600,
            "the self-signed key is in SPOOL/tls with mode 0600")

    out = s_client_certificate(openssl, plain_port)
    got, subject = pem_fingerprint(openssl, pem_from(out) or "")
    c.check(got is not None and got == fpr, "s_client -starttls smtp: the certificate is the one the relay logged",
            f"{got} vs {fpr}")
    c.check(subject.replace(" ", "") == f"CN={HOST}", "s_client: subject CN = --hostname", subject)
    qid = s_client_dialogue(c, openssl, plain_port)
    m = harness.spooled_message(relay.spool, qid) or b""
    c.check(b" with ESMTPS id " in m and b"hello through openssl s_client" in m,
            "s_client: the message is spooled with Received: ESMTPS", m[:300])

    smtplib_starttls(c, relay, plain_port)
    smtplib_plain(c, relay, plain_port)
    smtplib_implicit(c, relay, tls_port)
    out = s_client_certificate(openssl, tls_port, starttls=False)
    got, _ = pem_fingerprint(openssl, pem_from(out) or "")
    c.check(got == fpr, "s_client on --listen-tls: the same certificate", f"{got} vs {fpr}")
    swaks(c, relay, plain_port, "--tls")
    swaks(c, relay, tls_port, "--tls-on-connect")
    injection(c, relay, plain_port)
    relay.stop()
    c.check(relay.returncode == 0, "the relay stops cleanly", f"{relay.returncode} {relay.stderr()[-600:]}")

    # Restart on the same spool: the same certificate; a silent client is cut off.
    again = harness.Relay(binary, spool=relay.spool, hostname=HOST,
                          flags=["--listen-tls", "127.0.0.1:0", "--command-timeout", "2"]).start()
    c.check("self-signed, kept from an earlier start" in again.stderr(), "restart: the certificate is reused",
            again.stderr()[-600:])
    c.check(logged_fingerprint(again) == fpr, "restart: same fingerprint logged", f"{logged_fingerprint(again)}")
    out = s_client_certificate(openssl, again.endpoints[0][1])
    got, _ = pem_fingerprint(openssl, pem_from(out) or "")
    c.check(got == fpr, "restart: s_client sees the same certificate", f"{got} vs {fpr}")
    with again.connect(endpoint=1) as cl:
        rest, closed = read_until_closed(cl.sock, 20)
        c.check(closed and rest == b"", "a client silent on the implicit-TLS port is closed after --command-timeout",
                repr(rest[:100]))
    with again.connect(endpoint=0) as cl:
        cl.reply()
        c.reply(cl.cmd("STARTTLS"), 220, "silent after STARTTLS: 220")
        rest, closed = read_until_closed(cl.sock, 20)
        c.check(closed and rest == b"", "a client silent after STARTTLS is closed after --command-timeout",
                repr(rest[:100]))
    end = time.monotonic() + 5
    while time.monotonic() < end and "handshake not completed" not in again.stderr():
        time.sleep(0.1)
    c.check("handshake not completed within --command-timeout" in again.stderr(),
            "the handshake timeout is logged", again.stderr()[-600:])
    c.check(again.stop() == 0, "restarted relay stops cleanly", again.stderr()[-600:])

    own_certificate(c, binary, openssl)
    no_starttls(c, binary)
    ciphers(c, binary)


def ciphers(c, binary):
    relay = harness.Relay(binary, hostname=HOST, flags=["--tls-ciphersuites", "TLS_AES_128_GCM_SHA256",
                                                        "--tls-ciphers", "ECDHE+CHACHA20"]).start()
    s = smtplib.SMTP("127.0.0.1", relay.port, timeout=IO)
    s.starttls(context=harness.unverified_tls())
    got = s.sock.cipher()
    c.check(got and got[0] == "TLS_AES_128_GCM_SHA256", "--tls-ciphersuites: the configured TLS 1.3 suite is used",
            str(got))
    s.quit()
    ctx12 = harness.unverified_tls()
    ctx12.maximum_version = ssl.TLSVersion.TLSv1_2
    s = smtplib.SMTP("127.0.0.1", relay.port, timeout=IO)
    s.starttls(context=ctx12)
    got = s.sock.cipher()
    c.check(got and "CHACHA20" in got[0] and got[1] == "TLSv1.2", "--tls-ciphers: the configured TLS 1.2 list is used",
            str(got))
    s.quit()
    c.check(relay.stop() == 0, "cipher-configured relay stops cleanly")
    bad = subprocess.run([binary, "--spool", os.path.join(harness.temp_dir(), "spool"), "--hostname", HOST,
                          "--tls-ciphers", "NO-SUCH-CIPHER", "--listen", "127.0.0.1:0"], stdin=subprocess.DEVNULL,
                         capture_output=True, text=True, errors="replace", timeout=60)
    c.check(bad.returncode != 0 and "--tls-ciphers" in bad.stderr, "a cipher list OpenSSL refuses stops the start",
            f"rc={bad.returncode} {bad.stderr[-300:]}")


def no_starttls(c, binary):
    relay = harness.Relay(binary, hostname=HOST, flags=["--no-starttls", "--listen-tls", "127.0.0.1:0"]).start()
    s = smtplib.SMTP("127.0.0.1", relay.endpoints[0][1], timeout=IO)
    s.ehlo("plain.example")
    c.check(not s.has_extn("starttls"), "--no-starttls: EHLO does not offer STARTTLS", str(s.esmtp_features))
    c.reply(s.docmd("STARTTLS"), 502, "--no-starttls: STARTTLS", "5.5.1")
    s.quit()
    t = smtplib.SMTP_SSL("127.0.0.1", relay.endpoints[1][1], timeout=IO, context=harness.unverified_tls())
    c.reply(t.ehlo("implicit.example"), 250, "--no-starttls: --listen-tls still serves TLS")
    t.quit()
    c.check("--no-starttls" in relay.stderr(), "--no-starttls is in the start-up line", relay.stderr()[-400:])
    c.check(relay.stop() == 0, "--no-starttls relay stops cleanly")


if __name__ == "__main__":
    harness.run("tls", scenario)
