#!/usr/bin/env python3
# tests/integration/auth_test.py: SMTP AUTH (RFC 4954, issue 5) with independent peers.
#
# The users file is written here with Python's hashlib.scrypt in the PHC format (the format
# ringrelay-passwd writes; passwd_test checks the two agree). Loopback is NOT in
# --relay-networks, so the client is untrusted unless it authenticates.
#
#  - plaintext: EHLO offers STARTTLS but not AUTH; AUTH gets 538 5.7.11; relaying to a foreign
#    domain gets 530 5.7.0 (authentication required), a --relay-domains domain is accepted;
#  - smtplib starttls() + login() (PLAIN) relays to a foreign domain; the spooled message's
#    Received: says ESMTPSA; the Reception log record names the user; AUTH LOGIN by smtplib;
#  - swaks --tls --auth PLAIN and --auth LOGIN deliver into the spool; a wrong password makes
#    swaks fail;
#  - AUTH PLAIN with an initial response, MAIL and RCPT in one TLS write (RFC 4954 §4 allows it)
#    are answered 235, 250, 250 in order;
#  - failures: 535 5.7.8, each reply later than the last (at least 0.5 s more per failure), the
#    third on a connection is 421 4.7.0 and a close; the per-address limit then refuses AUTH
#    from that address (421 4.7.0 ... from your address) on a new connection, while another
#    loopback address still authenticates (the user is paced by then, not blocked);
#  - eight wrong passwords at once from one address: they wait for room (never 454), 535 until
#    the per-address limit, 421 after; stderr says an attempt was queued;
#  - SIGHUP re-reads the users file (a new user works); a broken file is refused and the old
#    users stay; a broken file at start stops the start with an error naming the line;
#  - --auth-plaintext offers AUTH without TLS.
import base64
import hashlib
import os
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

HOST = "mx.auth-test.invalid"
FOREIGN = "rcpt@foreign.example"
LOCAL = "rcpt@example.org"
IO = harness.IO_TIMEOUT


def b64(data):
    return base64.b64encode(data).decode()


def phc(password, ln, salt=None):
    salt = salt or os.urandom(16)
    key = hashlib.scrypt(password.encode(), salt=salt, n=1 << ln, r=8, p=1, dklen=32, maxmem=1 << 30)
    nopad = lambda b: base64.b64encode(b).decode().rstrip("=")  # noqa: E731
    return f"$scrypt$ln={ln},r=8,p=1${nopad(salt)}${nopad(key)}"


def tls_client(port, source=None):
    s = smtplib.SMTP("127.0.0.1", port, timeout=IO, source_address=(source, 0) if source else None)
    s.ehlo("client.example")
    s.starttls(context=harness.unverified_tls())
    s.ehlo("client.example")
    return s


def plaintext(c, relay, port):
    s = smtplib.SMTP("127.0.0.1", port, timeout=IO)
    s.ehlo("client.example")
    c.check(s.has_extn("starttls") and not s.has_extn("auth"), "plaintext EHLO offers STARTTLS, not AUTH",
            str(s.esmtp_features))
    c.reply(s.docmd("AUTH", "PLAIN " + b64(b"\0alice\0secret")), 538, "AUTH without TLS", "5.7.11")
    c.reply(s.docmd("MAIL", "FROM:<a@client.example>"), 250, "MAIL from an untrusted client")
    c.reply(s.docmd("RCPT", f"TO:<{FOREIGN}>"), 530, "unauthenticated relaying", "5.7.0",
            "authentication required")
    c.reply(s.docmd("RCPT", f"TO:<{LOCAL}>"), 250, "a --relay-domains recipient without AUTH")
    s.quit()


def starttls_login(c, relay, port):
    s = tls_client(port)
    c.check(s.has_extn("auth") and "PLAIN" in s.esmtp_features.get("auth", "").upper().split()
            and "LOGIN" in s.esmtp_features.get("auth", "").upper().split(),
            "EHLO under TLS offers AUTH PLAIN LOGIN", str(s.esmtp_features))
    s.user, s.password = "alice", "secret"
    c.reply(s.auth("PLAIN", s.auth_plain), 235, "smtplib AUTH PLAIN", "2.7.0")
    msg = b"From: alice@client.example\r\nTo: " + FOREIGN.encode() + b"\r\nSubject: auth\r\n\r\nauthenticated relay\r\n"
    c.reply(s.docmd("MAIL", "FROM:<alice@client.example> AUTH=<>"), 250, "MAIL with AUTH=<> (RFC 4954 §5)")
    c.reply(s.docmd("RCPT", f"TO:<{FOREIGN}>"), 250, "an authenticated client relays to a foreign domain")
    code, text = s.data(msg)
    c.check(code == 250, "authenticated message queued", f"{code} {text}")
    qid = harness.queued_id(text.decode())
    c.reply(s.docmd("AUTH", "PLAIN " + b64(b"\0alice\0secret")), 503, "a second AUTH", "5.5.1")
    s.quit()
    m = harness.spooled_message(relay.spool, qid) or b""
    c.check(b" with ESMTPSA id " in m, "Received: says ESMTPSA", m[:400])
    rec = harness.reception_record(relay, qid) or {}
    c.check(rec.get("auth") == "alice" and rec.get("tls"), "the Reception log records the user and TLS", str(rec))

    s = tls_client(port)
    s.user, s.password = "bob", "hunter2"
    c.reply(s.auth("LOGIN", s.auth_login, initial_response_ok=False), 235, "smtplib AUTH LOGIN", "2.7.0")
    refused = s.sendmail("bob@client.example", [FOREIGN], b"Subject: login\r\n\r\nvia LOGIN\r\n")
    c.check(refused == {}, "smtplib sendmail to a foreign domain after AUTH LOGIN", str(refused))
    s.quit()

    # A malformed attempt, then a good one, on one connection (the second check must reach
    # the pool and come back: a review found it crashed the daemon).
    s = tls_client(port, source="127.0.0.6")
    c.reply(s.docmd("AUTH", "PLAIN " + b64(b"alice\0secret")), 535, "malformed PLAIN (no authzid separator)",
            "5.7.8")
    c.reply(s.docmd("AUTH", "PLAIN " + b64(b"\0alice\0secret")), 235, "then a good attempt on the same connection",
            "2.7.0")
    s.quit()
    c.check(relay.running(), "the relay is still running after malformed-then-good AUTH")


def swaks(c, relay, port):
    tool = harness.find_tool("swaks")
    for mech in ("PLAIN", "LOGIN"):
        r = subprocess.run([tool, "--server", f"127.0.0.1:{port}", "--tls", "--auth", mech, "--auth-user", "alice",
                            "--auth-password", "secret", "--from", "alice@client.example", "--to", FOREIGN,
                            "--header", f"Subject: swaks {mech}", "--body", f"swaks AUTH {mech}", "--timeout", str(int(IO))],
                           stdin=subprocess.DEVNULL, capture_output=True, text=True, errors="replace", timeout=60)
        out = r.stdout + r.stderr
        qid = harness.queued_id(out)
        c.check(r.returncode == 0 and "235 2.7.0" in out and qid is not None,
                f"swaks --tls --auth {mech} relays to a foreign domain", out[-600:])
        m = harness.spooled_message(relay.spool, qid) or b""
        c.check(b" with ESMTPSA id " in m, f"swaks --auth {mech}: Received: says ESMTPSA", m[:300])
    r = subprocess.run([tool, "--server", f"127.0.0.1:{port}", "--tls", "--auth", "PLAIN", "--auth-user", "alice",
                        "--auth-password", "not-it", "--from", "alice@client.example", "--to", FOREIGN,
                        "--body", "never sent", "--timeout", str(int(IO))], stdin=subprocess.DEVNULL, capture_output=True,
                       text=True, errors="replace", timeout=60)
    out = r.stdout + r.stderr
    c.check(r.returncode != 0 and "535 5.7.8" in out and harness.queued_id(out) is None,
            "swaks with a wrong password: 535 5.7.8, fails, nothing queued", out[-600:])


def read_replies(sock, count, timeout):
    """Reads `count` complete replies (multi-line aware); returns their last lines."""
    buf = b""
    out = []
    deadline = time.monotonic() + timeout
    while len(out) < count and time.monotonic() < deadline:
        while b"\r\n" in buf and len(out) < count:
            line, buf = buf.split(b"\r\n", 1)
            if len(line) >= 4 and line[3:4] == b" ":
                out.append(line.decode("utf-8", "replace"))
        if len(out) >= count:
            break
        sock.settimeout(max(0.1, deadline - time.monotonic()))
        try:
            data = sock.recv(4096)
        except (socket.timeout, ssl.SSLError):
            break
        if not data:
            break
        buf += data
    return out


def pipelined(c, port):
    raw = socket.create_connection(("127.0.0.1", port), timeout=IO)
    read_replies(raw, 1, IO)
    raw.sendall(b"EHLO client.example\r\n")
    read_replies(raw, 1, IO)
    raw.sendall(b"STARTTLS\r\n")
    c.check(read_replies(raw, 1, IO)[:1] == ["220 2.0.0 Ready to start TLS"], "raw STARTTLS")
    tls = harness.unverified_tls().wrap_socket(raw, server_hostname=HOST)
    tls.sendall(b"EHLO client.example\r\n")
    read_replies(tls, 1, IO)
    tls.sendall(("AUTH PLAIN " + b64(b"\0alice\0secret") + "\r\nMAIL FROM:<alice@client.example>\r\n"
                 f"RCPT TO:<{FOREIGN}>\r\nQUIT\r\n").encode())
    got = read_replies(tls, 4, IO)
    c.check([g[:9] for g in got] == ["235 2.7.0", "250 2.1.0", "250 2.1.5", "221 2.0.0"],
            "AUTH PLAIN with initial response, MAIL, RCPT pipelined in one write: 235, 250, 250 in order", str(got))
    tls.close()


def failures(c, relay, port):
    # All from 127.0.0.2, so that the per-address count is this test's alone.
    s = tls_client(port, source="127.0.0.2")
    wrong = "PLAIN " + b64(b"\0alice\0wrong")
    times = []
    for i in range(2):
        t0 = time.monotonic()
        c.reply(s.docmd("AUTH", wrong), 535, f"wrong password, attempt {i + 1}", "5.7.8")
        times.append(time.monotonic() - t0)
    # The delay is 0.5 s x the failures so far: a lower bound, which load cannot break.
    c.check(times[0] >= 0.45 and times[1] >= 0.95, "failed attempts are answered later and later (0.5 s, 1 s)",
            str(times))
    c.reply(s.docmd("AUTH", "PLAIN " + b64(b"alice\0secret")), 421, "third failure (malformed PLAIN)", "4.7.0",
            "too many failed authentication attempts")
    try:
        s.docmd("NOOP")
        closed = False
    except (smtplib.SMTPServerDisconnected, ConnectionError, ssl.SSLError, OSError):
        closed = True
    c.check(closed, "the connection is closed after the third failure")
    s.close()

    # --auth-max-failures-per-ip 5: two more failures from 127.0.0.2 reach it.
    s = tls_client(port, source="127.0.0.2")
    for i in range(2):
        c.reply(s.docmd("AUTH", wrong), 535 if i == 0 else 421, f"per-address failure {4 + i}",
                "5.7.8" if i == 0 else "4.7.0")
    s.close()
    s = tls_client(port, source="127.0.0.2")
    c.reply(s.docmd("AUTH", "PLAIN " + b64(b"\0alice\0secret")), 421, "AUTH from an address over its limit",
            "4.7.0", "from your address")
    s.close()
    s = tls_client(port, source="127.0.0.3")
    c.reply(s.docmd("AUTH", "PLAIN " + b64(b"\0alice\0secret")), 235, "another address still authenticates",
            "2.7.0")
    s.quit()


def parallel(c, relay, port):
    """Eight connections from one address send a wrong password at the same moment: at most
    two checks of one address run at once, the others wait for room (no 454 4.7.0: load is
    never the answer to an attempt, issue "pooled senders"), and the failures that do get
    checked stop at the per-address limit (5): parallel connections cannot all reach the
    password check before the first failure is counted. Those still waiting when the limit is
    reached get 421 4.7.0 (blocked). alice is over the per-user limit by now (the failures
    above), so her checks are also paced to one a second: slower, never refused."""
    clients = [tls_client(port, source="127.0.0.7") for _ in range(8)]
    wrong = ("AUTH PLAIN " + b64(b"\0alice\0wrong") + "\r\n").encode()
    for s in clients:
        s.sock.sendall(wrong)
    codes = []
    for s in clients:
        try:
            codes.append(s.getreply()[0])
        except (smtplib.SMTPServerDisconnected, OSError):
            codes.append(None)
        s.close()
    c.check(all(x in (535, 421) for x in codes) and 1 <= codes.count(535) <= 4,
            "8 parallel wrong passwords from one address: each checked (535) until the limit, then 421; no 454",
            str(codes))
    c.check(wait_for(relay, "AUTH from 127.0.0.7: queued"),
            "stderr says an attempt was queued", relay.stderr()[-600:])
    c.info(f"parallel wrong passwords from one address: replies {codes}")


def wait_for(relay, text, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in relay.stderr():
            return True
        time.sleep(0.1)
    return False


def reload(c, relay, port, users_path):
    with open(users_path, "a") as f:
        f.write("carol:" + phc("s3cret!", 10) + "\n")
    relay.signal(signal.SIGHUP)
    c.check(wait_for(relay, "3 user(s)"), "SIGHUP re-reads the users file", relay.stderr()[-400:])
    s = tls_client(port, source="127.0.0.4")
    s.user, s.password = "carol", "s3cret!"
    c.reply(s.auth("PLAIN", s.auth_plain), 235, "a user added by SIGHUP authenticates", "2.7.0")
    s.quit()
    with open(users_path, "a") as f:
        f.write("broken line without a colon\n")
    relay.signal(signal.SIGHUP)
    c.check(wait_for(relay, "kept as it was"), "a broken users file is refused on SIGHUP", relay.stderr()[-400:])
    s = tls_client(port, source="127.0.0.4")
    s.user, s.password = "alice", "secret"
    c.reply(s.auth("PLAIN", s.auth_plain), 235, "the old users stay after a failed reload", "2.7.0")
    s.quit()


def scenario(c):
    binary = harness.ringrelay_path()
    work = harness.temp_dir()
    users_path = os.path.join(work, "users")
    with open(users_path, "w") as f:
        f.write("# ringrelay AUTH users\n")
        f.write("alice:" + phc("secret", 15) + "\n")  # the default cost: 32 MiB, tens of ms
        f.write("bob:" + phc("hunter2", 10) + "\n")
    common = ["--relay-networks", "10.255.0.0/16", "--relay-domains", "example.org", "--auth-users", users_path,
              "--auth-max-failures", "3", "--auth-max-failures-per-ip", "5", "--auth-failure-window", "600"]
    relay = harness.Relay(binary, hostname=HOST, flags=common, shards=2).start()
    c.check("AUTH: PLAIN LOGIN for 2 user(s)" in relay.stderr() and "offered only under TLS" in relay.stderr(),
            "start-up says AUTH is on, for how many users, under TLS only", relay.stderr()[-600:])
    c.check("the hashes have 2 different costs" in relay.stderr(),
            "start-up warns that the users' hashes have different costs (ln=15 and ln=10)", relay.stderr()[-600:])
    port = relay.port
    plaintext(c, relay, port)
    starttls_login(c, relay, port)
    swaks(c, relay, port)
    pipelined(c, port)
    failures(c, relay, port)
    parallel(c, relay, port)
    reload(c, relay, port, users_path)
    relay.stop()
    c.check(relay.returncode == 0, "the relay stops cleanly", relay.stderr()[-600:])

    # --auth-plaintext: AUTH offered without TLS (the users file is whole again).
    with open(users_path, "w") as f:
        f.write("bob:" + phc("hunter2", 10) + "\n")
    plain = harness.Relay(binary, hostname=HOST, flags=common + ["--auth-plaintext"]).start()
    s = smtplib.SMTP("127.0.0.1", plain.port, timeout=IO)
    s.ehlo("client.example")
    c.check(s.has_extn("auth"), "--auth-plaintext: AUTH offered without TLS", str(s.esmtp_features))
    s.login("bob", "hunter2")
    c.reply(s.docmd("MAIL", "FROM:<bob@client.example>"), 250, "--auth-plaintext: MAIL after plaintext AUTH")
    c.reply(s.docmd("RCPT", f"TO:<{FOREIGN}>"), 250, "--auth-plaintext: relaying after plaintext AUTH")
    s.quit()
    plain.stop()

    # A broken users file stops the start with an error naming it.
    bad = os.path.join(work, "bad-users")
    with open(bad, "w") as f:
        f.write("alice:$scrypt$ln=15,r=8,p=1$xx\n")
    broken = harness.Relay(binary, hostname=HOST, flags=["--auth-users", bad])
    try:
        broken.start()
        c.check(False, "a broken users file stops the start")
    except RuntimeError as e:
        c.check("--auth-users" in str(e) and "bad-users" in str(e) and ":1" in str(e),
                "a broken users file stops the start with an error naming the file and line", str(e)[-400:])


if __name__ == "__main__":
    harness.run("auth", scenario)
