#!/usr/bin/env python3
# tests/integration/auth_pool_test.py: pooled senders authenticate from one address at once
# (issue "third concurrent AUTH gets 454"): a Nodemailer pool and Postfix as a smarthost client
# open several connections together and all AUTH with the same good credentials. A check that
# finds no room (two checks of the address in flight, a paced user, busy check threads) waits
# in the shard's queue; a good password is never refused for load.
#
#  a. ten smtplib TLS clients from 127.0.0.1 send AUTH PLAIN in the same instant (after a
#     barrier): every one gets 235 and its message 250; stderr says attempts were queued and
#     nothing was refused; then 100 clients from 50 loopback addresses at once (more than the
#     work pool's queue of 64 can hold): all 235;
#  b. Nodemailer (its npm registry tarball, harness.npm_package: BUILD/nodemailer-VERSION) with pool: true, maxConnections 10,
#     STARTTLS required, sends 100 messages: zero errors, 100 Reception records naming the user;
#  c. a private Postfix instance (bench/lib/common.sh) relaying through ringrelay as its
#     smarthost with SASL over STARTTLS, 10 connections at once (smtp_destination_concurrency_
#     limit = initial_destination_concurrency = 10): 200 messages injected with smtp-source
#     all delivered on the first try (maillog: 200 status=sent, no status=deferred), 200
#     Reception records with "auth": the user;
#  d. the load answers, with --auth-queue-size 1 --auth-queue-timeout 2: four slow checks at
#     once from one address: two 235, one 454 for a full queue, one 454 after waiting 2 s, and
#     stderr says which ("queue full", "waited N ms"); a user over the per-user failure limit
#     (failures from five addresses) is paced, not blocked: the right password gets 235, the
#     next attempt waits for her turn a second later and gets 235 too;
#  e. teardown: clients that close while their attempt waits leave the queue (AUTH works on);
#     SIGTERM while an attempt waits: it gets 454, the relay exits 0 without hanging.
# A missing tool (node, Postfix, smtp-source, libsasl2-modules) skips (77) on a developer
# machine but fails under CI (CI set): scripts/install-deps --test installs them all.
# RR_AUTH_POOL_PARTS=a (or any of abcde) runs only those parts (to try part a on an old build).
import base64
import hashlib
import json
import os
import shutil
import smtplib
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

HOST = "mx.auth-pool.invalid"
FOREIGN = "rcpt@foreign.example"
IO = harness.IO_TIMEOUT


def b64(data):
    return base64.b64encode(data).decode()


def phc(password, ln):
    salt = os.urandom(16)
    key = hashlib.scrypt(password.encode(), salt=salt, n=1 << ln, r=8, p=1, dklen=32, maxmem=1 << 30)
    nopad = lambda b: base64.b64encode(b).decode().rstrip("=")  # noqa: E731
    return f"$scrypt$ln={ln},r=8,p=1${nopad(salt)}${nopad(key)}"


def load_refusals(relay):
    return [l for l in relay.stderr().splitlines() if "answered 454 4.7.0" in l and "AUTH from" in l]


# ---------------------------------------------------------------------------------------------
# a. Raw concurrent clients.

def concurrent_clients(port, sources, user, password, tag):
    """One smtplib TLS client per entry of `sources` (a local address each); all send AUTH at
    the same moment, then one message. Returns [(auth code, MAIL, RCPT, DATA codes, error)]."""
    n = len(sources)
    barrier = threading.Barrier(n, timeout=60)
    results = [None] * n

    def client(i):
        out = {"auth": None, "mail": None, "rcpt": None, "data": None, "error": ""}
        try:
            s = smtplib.SMTP("127.0.0.1", port, timeout=IO + 20, source_address=(sources[i], 0))
            s.ehlo("pool.example")
            s.starttls(context=harness.unverified_tls())
            s.ehlo("pool.example")
            barrier.wait()
            out["auth"] = s.docmd("AUTH", "PLAIN " + b64(f"\0{user}\0{password}".encode()))[0]
            if out["auth"] == 235:
                out["mail"] = s.docmd("MAIL", f"FROM:<{user}@pool.example>")[0]
                out["rcpt"] = s.docmd("RCPT", f"TO:<{FOREIGN}>")[0]
                out["data"] = s.data(f"Subject: {tag} {i}\r\n\r\nclient {i}\r\n".encode())[0]
            s.quit()
        except Exception as e:  # noqa: BLE001 (recorded and checked)
            out["error"] = repr(e)
        results[i] = out

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return [r or {"error": "thread did not finish"} for r in results]


def part_a(c, binary, users_path):
    relay = harness.Relay(binary, hostname=HOST, shards=2, flags=[
        "--relay-networks", "10.255.0.0/16", "--auth-users", users_path]).start()
    results = concurrent_clients(relay.port, ["127.0.0.1"] * 10, "alice", "secret", "ten")
    for i, r in enumerate(results):
        c.check(r["auth"] == 235 and r["mail"] == 250 and r["rcpt"] == 250 and r["data"] == 250,
                f"client {i + 1} of 10 from 127.0.0.1 at once: AUTH 235, MAIL/RCPT/DATA 250", str(r))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and len(relay.reception_log()) < 10:
        time.sleep(0.1)
    recs = relay.reception_log()
    c.check(len(recs) == 10 and all(r.get("auth") == "alice" for r in recs),
            "10 Reception records, each with \"auth\": \"alice\"", f"{len(recs)} records")
    c.check("AUTH from 127.0.0.1: queued" in relay.stderr(),
            "stderr says attempts were queued (more than two checks of one address at once)",
            relay.stderr()[-800:])
    c.check(not load_refusals(relay), "no AUTH refused for load", "\n".join(load_refusals(relay))[-800:])

    # More attempts at once than the work pool's own queue holds (64): 100 clients from 50
    # addresses (two checks in flight each), cheap hashes. None is refused: those the pool
    # cannot take wait too.
    sources = [f"127.0.1.{1 + i // 2}" for i in range(100)]
    results = concurrent_clients(relay.port, sources, "bob", "hunter2", "hundred")
    bad = [r for r in results if r["auth"] != 235 or r["data"] != 250]
    c.check(not bad, "100 clients from 50 addresses at once (more than the pool's queue of 64): all 235 and 250",
            str(bad[:5]))
    c.check(not load_refusals(relay), "still no AUTH refused for load", "\n".join(load_refusals(relay))[-800:])
    c.check(relay.stop() == 0, "the relay stops cleanly after the concurrent AUTH runs", relay.stderr()[-600:])


# ---------------------------------------------------------------------------------------------
# b. Nodemailer's SMTP pool.

NODE_SCRIPT = r"""
const nodemailer = require(process.argv[2]);
const port = Number(process.argv[3]);
const count = Number(process.argv[4]);
const transport = nodemailer.createTransport({
  host: '127.0.0.1', port, secure: false, requireTLS: true, pool: true, maxConnections: 10,
  tls: { rejectUnauthorized: false }, auth: { user: 'alice', pass: 'secret' },
  connectionTimeout: 30000, greetingTimeout: 30000, socketTimeout: 60000,
});
let ok = 0;
const errors = [];
const sends = [];
for (let i = 0; i < count; i++) {
  sends.push(transport.sendMail({
    from: 'alice@pool.example', to: 'rcpt@foreign.example', subject: 'nodemailer ' + i, text: 'message ' + i,
  }).then(() => { ok++; }, (e) => { errors.push(String(e && (e.response || e.message) || e)); }));
}
Promise.all(sends).then(() => {
  transport.close();
  console.log(JSON.stringify({ ok, errors }));
});
"""


# Nodemailer has no dependencies, so its one tarball from the npm registry is all it needs
# (harness.npm_package): pinned by version and the registry's sha512 integrity value.
NODEMAILER_VERSION = "6.10.1"
NODEMAILER_SHA512 = "Z+iLaBGVaSjbIzQ4pX6XV41HrooLsQ10ZWPUehGmuantvzWoDVBnmsdUcOIDM1t+yPor5pDhVlDESgOMEGxhHA=="


def nodemailer_module(binary):
    """(node, BUILD/nodemailer-NODEMAILER_VERSION/package), fetched from the npm registry on first use."""
    return harness.npm_package(binary, "nodemailer", NODEMAILER_VERSION, NODEMAILER_SHA512)


def part_b(c, binary, users_path, work):
    node, module = nodemailer_module(binary)
    relay = harness.Relay(binary, hostname=HOST, shards=2, flags=[
        "--relay-networks", "10.255.0.0/16", "--auth-users", users_path]).start()
    script = os.path.join(work, "pool.js")
    with open(script, "w") as f:
        f.write(NODE_SCRIPT)
    r = subprocess.run([node, script, module, str(relay.port), "100"], stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=180)
    try:
        out = json.loads(r.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        out = {"ok": 0, "errors": [f"no result: exit {r.returncode}: {r.stdout[-300:]} {r.stderr[-600:]}"]}
    c.check(out["ok"] == 100 and not out["errors"],
            "Nodemailer pool (maxConnections 10, requireTLS): 100 messages sent, zero errors",
            f"ok={out['ok']} errors={out['errors'][:5]}")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and len(relay.reception_log()) < 100:
        time.sleep(0.1)
    recs = relay.reception_log()
    c.check(len(recs) == 100 and all(x.get("auth") == "alice" and x.get("tls") for x in recs),
            "100 Reception records, each authenticated as alice under TLS", f"{len(recs)} records")
    c.check(not load_refusals(relay), "no AUTH refused for load (Nodemailer)", "\n".join(load_refusals(relay))[-800:])
    c.info("Nodemailer: " + ("attempts were queued" if "AUTH from 127.0.0.1: queued" in relay.stderr()
                             else "no attempt had to wait"))
    c.check(relay.stop() == 0, "the relay stops cleanly after Nodemailer")


# ---------------------------------------------------------------------------------------------
# c. Postfix as a smarthost client.

def sasl_modules_present():
    for d in ("/usr/lib/x86_64-linux-gnu/sasl2", "/usr/lib/aarch64-linux-gnu/sasl2", "/usr/lib/sasl2"):
        if os.path.isdir(d) and any(n.startswith("libplain") for n in os.listdir(d)):
            return True
    return False


def start_postfix(work, relay_port):
    return harness.private_postfix(work, "auth_pool", f"""relayhost = [127.0.0.1]:{relay_port}
smtp_sasl_auth_enable = yes
smtp_sasl_password_maps = static:alice:secret
smtp_sasl_security_options = noanonymous
smtp_sasl_tls_security_options = noanonymous
smtp_tls_security_level = encrypt
smtp_tls_loglevel = 1
smtp_destination_concurrency_limit = 10
initial_destination_concurrency = 10
default_destination_concurrency_limit = 10
""")


def part_c(c, binary, users_path, work):
    if shutil.which("postfix") is None or shutil.which("postconf") is None:
        harness.missing("Postfix is not installed")
    source = shutil.which("smtp-source") or ("/usr/sbin/smtp-source" if os.access("/usr/sbin/smtp-source", os.X_OK)
                                              else None)
    if source is None:
        harness.missing("smtp-source (Postfix) is not installed")
    if os.geteuid() != 0:
        harness.missing("a private Postfix instance needs root")
    if not sasl_modules_present():
        harness.missing("libsasl2-modules (PLAIN/LOGIN for Postfix's SASL client) is not installed")
    os.chmod(work, 0o755)  # Postfix's own users must reach the queue under it
    relay = harness.Relay(binary, hostname=HOST, shards=2, flags=[
        "--relay-networks", "10.255.0.0/16", "--auth-users", users_path]).start()
    d, pf_port = start_postfix(work, relay.port)
    total = 200
    r = subprocess.run([source, "-s", "10", "-m", str(total), "-f", "sender@example.org", "-t", FOREIGN,
                        f"127.0.0.1:{pf_port}"], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                       timeout=120)
    c.check(r.returncode == 0, f"smtp-source injected {total} messages into Postfix", r.stderr[-400:])
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        log = harness.maillog(d)
        if log.count("status=sent") >= total or "status=deferred" in log:
            break
        time.sleep(0.5)
    log = harness.maillog(d)
    deferred = [l for l in log.splitlines() if "status=deferred" in l]
    c.check(not deferred, "Postfix deferred nothing (no status=deferred in its maillog)", "\n".join(deferred[:5]))
    c.check(log.count("status=sent") == total and f"relay=127.0.0.1[127.0.0.1]:{relay.port}" in log,
            f"Postfix's maillog: {total} status=sent through ringrelay", f"{log.count('status=sent')} sent")
    c.check("Trusted TLS connection established to 127.0.0.1" in log or
            "Untrusted TLS connection established to 127.0.0.1" in log or
            "Anonymous TLS connection established to 127.0.0.1" in log,
            "Postfix's smtp client used STARTTLS to ringrelay", log[-800:])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and len(relay.reception_log()) < total:
        time.sleep(0.1)
    recs = relay.reception_log()
    c.check(len(recs) == total and all(x.get("auth") == "alice" for x in recs),
            f"{total} Reception records, each with \"auth\": \"alice\"", f"{len(recs)} records")
    c.check(not load_refusals(relay), "no AUTH refused for load (Postfix)", "\n".join(load_refusals(relay))[-800:])
    auths = relay.stderr().count("AUTH from 127.0.0.1: queued")
    c.info(f"Postfix: {'attempts were queued' if auths else 'no attempt had to wait'}; "
           f"{sum(1 for l in log.splitlines() if 'Anonymous TLS connection established to' in l or 'TLS connection established to' in l)} "
           "TLS connections to ringrelay")
    subprocess.run(["postfix", "-c", os.path.join(d, "etc"), "stop"], capture_output=True, timeout=60)
    c.check(relay.stop() == 0, "the relay stops cleanly after Postfix")


# ---------------------------------------------------------------------------------------------
# d. The answers under load: paced user, full queue, deadline.

def tls_client(port, source):
    s = smtplib.SMTP("127.0.0.1", port, timeout=IO, source_address=(source, 0))
    s.ehlo("x.example")
    s.starttls(context=harness.unverified_tls())
    s.ehlo("x.example")
    return s


def part_d(c, binary, work):
    users_path = os.path.join(work, "users-d")
    with open(users_path, "w") as f:
        f.write("carol:" + phc("c4rol!", 10) + "\n")
        f.write("dave:" + phc("d4ve!", 19) + "\n")  # 512 MiB, seconds: a check that outlasts the wait
    relay = harness.Relay(binary, hostname=HOST, shards=1, flags=[
        "--relay-networks", "10.255.0.0/16", "--auth-users", users_path, "--auth-max-failures-per-ip", "5",
        "--auth-queue-size", "1", "--auth-queue-timeout", "2"]).start()
    # Four good attempts at once from one address, each check taking seconds: two start (the
    # address's checks in flight), one waits (a queue of 1) and gives up after 2 s, one finds
    # the queue full.
    results = concurrent_clients(relay.port, ["127.0.4.1"] * 4, "dave", "d4ve!", "slow")
    codes = sorted(r["auth"] or 0 for r in results)
    c.check(codes == [235, 235, 454, 454],
            "4 slow checks at once, --auth-queue-size 1 --auth-queue-timeout 2: two 235, two 454 4.7.0", str(results))
    err = relay.stderr()
    c.check("AUTH from 127.0.4.1: queue full" in err, "stderr says \"queue full\" for the attempt that could not wait",
            err[-800:])
    c.check(any("AUTH from 127.0.4.1: waited " in l and "ms for room" in l for l in err.splitlines()),
            "stderr says \"waited N ms\" for the attempt whose wait ran out", err[-800:])

    # Per user: five wrong passwords for carol from five addresses (none reaches its own
    # address's limit) put carol over the per-user limit. She is paced, not blocked: the right
    # password from a new address gets 235, and the next one waits for her turn (a second
    # later) and gets 235 too.
    for i in range(5):
        s = tls_client(relay.port, f"127.0.2.{i + 1}")
        c.reply(s.docmd("AUTH", "PLAIN " + b64(b"\0carol\0wrong")), 535,
                f"wrong password for carol from 127.0.2.{i + 1}", "5.7.8")
        s.close()
    first, second = tls_client(relay.port, "127.0.3.1"), tls_client(relay.port, "127.0.3.2")
    c.reply(first.docmd("AUTH", "PLAIN " + b64(b"\0carol\0c4rol!")), 235,
            "carol over the per-user limit, right password from a new address: not blocked", "2.7.0")
    t0 = time.monotonic()
    code = second.docmd("AUTH", "PLAIN " + b64(b"\0carol\0c4rol!"))
    waited = time.monotonic() - t0
    c.reply(code, 235, "the next attempt for carol right after: 235 as well", "2.7.0")
    c.check(waited >= 0.5, "... after waiting for carol's next turn (one check a second)", f"{waited:.3f} s")
    c.check("one check a second" in relay.stderr(), "stderr says the attempt was queued because the user is paced",
            relay.stderr()[-800:])
    first.quit()
    second.quit()
    c.check(relay.stop() == 0, "the relay stops cleanly (load answers)")


def part_e(c, binary, work):
    """Teardown: clients that close while their attempt waits, and SIGTERM while one waits."""
    users_path = os.path.join(work, "users-e")
    with open(users_path, "w") as f:
        f.write("carol:" + phc("c4rol!", 10) + "\n")
        f.write("dave:" + phc("d4ve!", 19) + "\n")
    relay = harness.Relay(binary, hostname=HOST, shards=1, flags=[
        "--relay-networks", "10.255.0.0/16", "--auth-users", users_path]).start()
    line = ("AUTH PLAIN " + b64(b"\0dave\0d4ve!") + "\r\n").encode()
    clients = [tls_client(relay.port, "127.0.5.1") for _ in range(3)]
    for s in clients:
        s.sock.sendall(line)
    time.sleep(0.5)  # two checks run, one waits
    for s in clients:
        s.close()  # every client goes away: the waiting one leaves the queue
    c.check(wait_for_text(relay, "AUTH from 127.0.5.1: queued"), "an attempt was queued before its client closed",
            relay.stderr()[-600:])
    s = tls_client(relay.port, "127.0.5.2")
    c.reply(s.docmd("AUTH", "PLAIN " + b64(b"\0carol\0c4rol!")), 235,
            "after clients closed while waiting, AUTH still works", "2.7.0")
    s.quit()
    # SIGTERM while an attempt waits: the queue is drained (454), the session says 421, and
    # the relay exits 0 once the checks in flight are back.
    clients = [tls_client(relay.port, "127.0.5.3") for _ in range(3)]
    for s in clients:
        s.sock.sendall(line)
    time.sleep(0.5)
    t0 = time.monotonic()
    relay.signal(15)
    code = relay.wait(40)
    took = time.monotonic() - t0
    c.check(code == 0 and took < 30, "SIGTERM while attempts wait and checks run: exit 0, no hang",
            f"exit {code} after {took:.1f} s; {relay.stderr()[-600:]}")
    replies = []
    for s in clients:
        try:
            replies.append(s.getreply()[0])
        except (smtplib.SMTPServerDisconnected, OSError):
            replies.append(None)
        s.close()
    c.check(454 in replies and all(r in (235, 454) for r in replies),
            "the attempt still waiting at SIGTERM got 454 4.7.0, the checked ones 235", str(replies))


def wait_for_text(relay, text, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in relay.stderr():
            return True
        time.sleep(0.1)
    return False


def scenario(c):
    binary = harness.ringrelay_path()
    parts = os.environ.get("RR_AUTH_POOL_PARTS", "abcde")
    work = harness.temp_dir("rr-authpool-")
    users_path = os.path.join(work, "users")
    with open(users_path, "w") as f:
        f.write("alice:" + phc("secret", 15) + "\n")  # ringrelay-passwd's default cost
        f.write("bob:" + phc("hunter2", 10) + "\n")
    if "a" in parts:
        part_a(c, binary, users_path)
    if "d" in parts:
        part_d(c, binary, work)
    if "e" in parts:
        part_e(c, binary, work)
    if "b" in parts:
        part_b(c, binary, users_path, work)
    if "c" in parts:
        part_c(c, binary, users_path, work)


if __name__ == "__main__":
    harness.run("auth_pool", scenario)
