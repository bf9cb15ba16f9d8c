#!/usr/bin/env python3
# tests/integration/dkim_test.py: DKIM signing by the relay (argv[1] ringrelay, argv[2]
# ringrelay-sink, argv[3] ringrelay-dkim-keygen), checked by two independent verifiers that
# fetch the public keys from a real DNS server on loopback (dnsmasq --txt-record with the
# records ringrelay-dkim-keygen printed):
# - Python's dkim package (Debian python3-dkim + python3-nacl, run with /usr/bin/python3; its
#   resolver is dnspython pointed at dnsmasq);
# - OpenDKIM (Debian opendkim) in its test mode, `opendkim -x CONF -t FILE`, with
#   `Nameservers` in CONF naming dnsmasq (which therefore listens on port 53: root).
# The relay delivers to ringrelay-sink --save, which keeps the exact bytes it received.
# Covered: RSA-2048 and Ed25519 signatures of one message (dual signing), all four
# canonicalizations, awkward messages (folded and repeated headers, trailing whitespace, an
# empty body, a body without a final CRLF, 8-bit/UTF-8 headers, long lines, BDAT in chunks,
# leading dots), a subdomain signed by its parent's key, --dkim-sign-all, an author without a
# key (unsigned, "dkim": []), x= from --dkim-expiration, the Reception record's "dkim" list,
# a tampered copy failing both verifiers, a restart never signing twice, SIGHUP re-reading the
# keys (a bad file refused, the old key kept; a good one used), and start-up refusals.
import json
import os
import random
import re
import shutil
import signal
import smtplib
import subprocess
import sys
import time

import harness
from delivery_test import log_records, wait_for
from sink_test import Sink

PY = "/usr/bin/python3"

# Verifies every DKIM-Signature of each file with dkimpy; prints JSON {file: [[d, s, a, ok], ...]}.
VERIFY = r'''
import json, sys
import dkim, dns.resolver
ip, port = sys.argv[1], int(sys.argv[2])
r = dns.resolver.Resolver(configure=False)
r.nameservers = [ip]
r.port = port
def dnsfunc(name, timeout=5):
    try:
        answer = r.resolve(name.decode().rstrip("."), "TXT", lifetime=timeout)
    except Exception:
        return None
    for rd in answer:
        return b"".join(rd.strings)
    return None
out = {}
for path in sys.argv[3:]:
    msg = open(path, "rb").read()
    d = dkim.DKIM(msg)
    sigs = [v for (k, v) in d.headers if k.lower() == b"dkim-signature"]
    results = []
    for i, sig in enumerate(sigs):
        tags = dkim.util.parse_tag_value(b"".join(sig.split()))
        try:
            ok = dkim.DKIM(msg).verify(idx=i, dnsfunc=dnsfunc)
        except dkim.DKIMException:  # a body hash mismatch is raised, not returned
            ok = False
        results.append([tags[b"d"].decode(), tags[b"s"].decode(), tags[b"a"].decode(), bool(ok),
                        tags.get(b"t", b"").decode(), tags.get(b"x", b"").decode(), tags[b"c"].decode()])
    out[path] = results
print(json.dumps(out))
'''

OPENDKIM = "/usr/sbin/opendkim"


class Dns:
    """dnsmasq on 127.0.53.X port 53 (OpenDKIM's Nameservers takes addresses, not ports), with
    TXT records."""

    def __init__(self, records):
        tool = harness.find_tool("dnsmasq", ["/usr/sbin/dnsmasq"])
        self.dir = harness.temp_dir("rr-dkim-dns-")
        self.ip = f"127.0.53.{random.randint(2, 250)}"
        self.port = 53
        args = [tool, "--no-resolv", "--no-hosts", f"--port={self.port}", f"--listen-address={self.ip}",
                "--bind-interfaces", "--keep-in-foreground", f"--pid-file={self.dir}/dnsmasq.pid",
                "--conf-file=/dev/null", "--local-ttl=60"]
        args += [f"--txt-record={name},{text}" for name, text in records]
        self.peer = harness.Peer(args)
        time.sleep(0.3)
        if not self.peer.running():
            harness.missing(f"dnsmasq could not listen on {self.ip}:53 (root is needed for port 53)")
        # OpenDKIM verifying only, asking dnsmasq for the keys, reporting on stderr.
        self.opendkim_conf = os.path.join(self.dir, "opendkim.conf")
        with open(self.opendkim_conf, "w") as f:
            f.write(f"Mode v\nNameservers {self.ip}\nSyslog no\n")


def keygen(tool, work, domain, selector, kind):
    out = os.path.join(work, f"{selector}.{domain}.pem")
    args = [tool, domain, selector, "--out", out] + (["--type", "ed25519"] if kind == "ed25519" else [])
    r = subprocess.run(args, capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        raise RuntimeError(f"ringrelay-dkim-keygen failed: {r.stderr}")
    txt = "".join(re.findall(r'"([^"]*)"', r.stdout))
    return out, (f"{selector}._domainkey.{domain}", txt)


def saved_messages(save_dir):
    """{tag: message bytes as received by the sink} for every saved file (X-Tag: header)."""
    out = {}
    for name in sorted(os.listdir(save_dir)):
        if not name.endswith(".eml"):
            continue
        data = open(os.path.join(save_dir, name), "rb").read()
        size = int(re.search(rb"X-Sink-Size: (\d+)\r\n", data).group(1))
        msg = data[len(data) - size:]
        m = re.search(rb"\r\nX-Tag: ([\w-]+)\r\n", msg)
        out[m.group(1).decode() if m else name] = msg
    return out


def verify_dkimpy(dns, paths):
    r = subprocess.run([PY, "-c", VERIFY, dns.ip, str(dns.port)] + paths, capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        raise RuntimeError(f"dkimpy verification script failed: {r.stderr[-2000:]}")
    return json.loads(r.stdout)


def only_signature(msg, keep):
    """The message with every DKIM-Signature field removed but the keep-th (0-based)."""
    head, sep, body = msg.partition(b"\r\n\r\n")
    fields = re.split(rb"\r\n(?![ \t])", head)
    out, n = [], 0
    for f in fields:
        if f.lower().startswith(b"dkim-signature:"):
            if n != keep:
                n += 1
                continue
            n += 1
        out.append(f)
    return b"\r\n".join(out) + sep + body


def opendkim_verify(dns, path):
    """(verified, what OpenDKIM said) for the one signature of the message in `path`:
    `opendkim -t` prints "PATH: verification (s=..., d=..., ...) succeeded" or "... failed: why"."""
    r = subprocess.run([OPENDKIM, "-x", dns.opendkim_conf, "-t", path], capture_output=True, text=True, timeout=60)
    text = (r.stdout + r.stderr).strip()
    return r.returncode == 0 and re.search(r"verification \(.*\) succeeded", text) is not None, text


def empty(save_dir):
    """Removes the saved messages (the sink keeps the directory open: it must stay)."""
    for name in os.listdir(save_dir):
        os.unlink(os.path.join(save_dir, name))


def signature_count(msg):
    head = msg.partition(b"\r\n\r\n")[0]
    return len(re.findall(rb"(?:^|\r\n)DKIM-Signature:", head, re.I))


def messages():
    """(tag, how, mail options, bytes): the awkward cases. how: 'data' (smtplib) or a list of
    offsets where BDAT chunks end ("hb": the end of the header section), the rest going with
    BDAT LAST."""
    base = (b"From: Joe <joe@example.org>\r\nTo: Rcpt <rcpt@dest.test>\r\nDate: Sat, 05 Dec 2026 10:00:00 +0000\r\n"
            b"Message-ID: <%s@example.org>\r\nX-Tag: %s\r\n")
    out = []

    def add(tag, extra_headers, body, how="data", opts=()):
        out.append((tag, how, list(opts), (base % (tag.encode(), tag.encode())) + extra_headers + b"\r\n" + body))

    add("plain", b"Subject: plain\r\n", b"Hello.\r\n")
    # Repeated: fields RFC 5322 lets repeat (OpenDKIM refuses to parse a message with two Cc:
    # or no Date:, as RFC 5322 §3.6 says it must not be).
    add("folded", b"Subject: a subject\r\n  folded\r\n\tover three lines\r\nCc: one@dest.test,\r\n two@dest.test\r\n"
        b"X-Repeat: 1\r\nX-Repeat: 2\r\nComments: one\r\nComments: two\r\n"
        b"Received: from earlier.test by x; Sat, 05 Dec 2026 09:00:00 +0000\r\n"
        b"Received: from earliest.test by y; Sat, 05 Dec 2026 08:00:00 +0000\r\n",
        b"body\r\n")
    add("trailing-ws", b"Subject: trailing   \t\r\nX-Spaced:   value   with   runs  \r\n",
        b"line with spaces   \r\nline with tab\t\r\n \r\n\t\r\nend\r\n\r\n\r\n\r\n")
    add("empty-body", b"Subject: empty\r\n", b"")
    add("utf8", "Subject: Grüße aus Köln 日本\r\nX-Name: Jörg\r\n".encode(), "Grüße.\r\n".encode(),
        opts=["SMTPUTF8", "BODY=8BITMIME"])
    add("long-lines", b"Subject: " + b"long " * 150 + b"\r\n", (b"x" * 990 + b"\r\n") * 5 + b"y" * 500 + b"\r\n")
    add("leading-dot", b"Subject: dots\r\n", b".hidden\r\n..two\r\n.\r\n. \r\nend\r\n")
    # BDAT: chunks cut inside a header, at the header/body boundary and inside the body.
    add("bdat-chunks", b"Subject: chunks\r\n", b"first\r\n.dot line\r\nlast\r\n", how=[30, "hb", -7])
    # BDAT lets a message end without CRLF (DATA cannot: its terminator needs one).
    add("no-final-crlf", b"Subject: no final crlf\r\n", b"line one\r\nline two without crlf", how=[])
    out.append(("subdomain", "data", [],
                b"From: Joe <joe@mail.example.org>\r\nTo: r@dest.test\r\nSubject: sub\r\n"
                b"Date: Sat, 05 Dec 2026 10:00:00 +0000\r\nX-Tag: subdomain\r\n\r\nsub\r\n"))
    out.append(("no-key", "data", [],
                b"From: x@other.test\r\nTo: r@dest.test\r\nSubject: nokey\r\n"
                b"Date: Sat, 05 Dec 2026 10:00:00 +0000\r\nX-Tag: no-key\r\n\r\nno key\r\n"))
    return out


def send_all(relay, msgs):
    for tag, how, opts, data in msgs:
        if how == "data":
            s = smtplib.SMTP(relay.host, relay.port, timeout=30)
            s.sendmail("sender@example.org", ["rcpt@dest.test"], data, mail_options=opts)
            s.quit()
            continue
        c = harness.RawClient(relay.host, relay.port)
        c.reply()
        c.cmd("EHLO client.test")
        c.cmd("MAIL FROM:<sender@example.org>" + "".join(" " + o for o in opts))
        c.cmd("RCPT TO:<rcpt@dest.test>")
        pos = 0
        for cut in how:
            end = data.index(b"\r\n\r\n") + 2 if cut == "hb" else cut % len(data)
            c.cmd(b"BDAT %d\r\n" % (end - pos) + data[pos:end])
            pos = end
        code, lines = c.cmd(b"BDAT %d LAST\r\n" % (len(data) - pos) + data[pos:])
        if code != 250:
            raise RuntimeError(f"BDAT LAST: {lines}")
        c.cmd("QUIT")


def scenario(c):
    binary, sink_binary, keygen_tool = sys.argv[1], sys.argv[2], sys.argv[3]
    if not os.path.exists(PY) or subprocess.run([PY, "-c", "import dkim, nacl, dns.resolver"]).returncode != 0:
        harness.missing("python3-dkim, python3-nacl (Debian) for /usr/bin/python3")
    if not os.path.exists(OPENDKIM):
        harness.missing("opendkim (Debian opendkim)")
    work = harness.temp_dir("rr-dkim-")
    rsa, rsa_rec = keygen(keygen_tool, work, "example.org", "rsa1", "rsa")
    ed, ed_rec = keygen(keygen_tool, work, "example.org", "ed1", "ed25519")
    esp, esp_rec = keygen(keygen_tool, work, "esp.test", "fbl", "ed25519")
    rot1, rot1_rec = keygen(keygen_tool, work, "rotate.test", "r", "rsa")
    dns = Dns([rsa_rec, ed_rec, esp_rec, rot1_rec])

    save = os.path.join(work, "saved")
    os.makedirs(save)
    sink = Sink(sink_binary, ["--save", save, "--quiet"]).start()
    keys = ["--dkim-key", f"example.org:rsa1:{rsa}", "--dkim-key", f"example.org:ed1:{ed}"]
    msgs = messages()
    expected_signers = {tag: [("example.org", "rsa1", "rsa-sha256"), ("example.org", "ed1", "ed25519-sha256")]
                        for tag, *_ in msgs}
    expected_signers["no-key"] = []

    for canon in ["relaxed/relaxed", "simple/simple", "relaxed/simple", "simple/relaxed"]:
        empty(save)
        flags = ["--smarthost", f"127.0.0.1:{sink.port}", "--dkim-canonicalization", canon] + keys
        if canon == "simple/simple":
            flags += ["--dkim-expiration", "7d"]
        relay = harness.Relay(binary, flags).start()
        c.check(f"DKIM: 2 key(s): d=example.org s=rsa1 a=rsa-sha256 (2048 bits) from {rsa}" in relay.stderr(),
                f"[{canon}] the start-up line lists the keys", relay.stderr()[-600:])
        send_all(relay, msgs)
        wait_for(lambda: len(os.listdir(save)) >= len(msgs) and len(log_records(relay, "Delivery")) >= len(msgs),
                 f"[{canon}] every message delivered to the sink", c)
        got = saved_messages(save)
        receptions = {}
        for r in log_records(relay, "Reception"):
            receptions[r["queue_id"]] = r
        relay.stop()
        paths = {}
        for tag, msg in got.items():
            paths[tag] = os.path.join(work, f"{tag}.eml")
            with open(paths[tag], "wb") as f:
                f.write(msg)
        results = verify_dkimpy(dns, list(paths.values()))
        for tag, *_ in msgs:
            if tag not in paths:
                c.check(False, f"[{canon}] {tag}: delivered")
                continue
            sigs = results[paths[tag]]
            want = expected_signers[tag]
            c.check([tuple(s[:3]) for s in sigs] == want, f"[{canon}] {tag}: signed by {want or 'nobody'}", sigs)
            c.check(all(s[3] for s in sigs), f"[{canon}] {tag}: dkimpy verifies every signature", sigs)
            c.check(all(s[6] == canon for s in sigs), f"[{canon}] {tag}: c={canon}", sigs)
            if canon == "simple/simple" and sigs:
                c.check(all(s[5] and int(s[5]) == int(s[4]) + 7 * 86400 for s in sigs),
                        f"[{canon}] {tag}: x= is t= plus --dkim-expiration 7d", sigs)
            elif sigs:
                c.check(all(s[5] == "" for s in sigs), f"[{canon}] {tag}: no x= without --dkim-expiration", sigs)
            # OpenDKIM, one signature at a time (the others removed: signatures do not cover
            # each other).
            for i in range(len(sigs)):
                one = os.path.join(work, f"{tag}.{i}.eml")
                with open(one, "wb") as f:
                    f.write(only_signature(got[tag], i))
                ok, text = opendkim_verify(dns, one)
                c.check(ok, f"[{canon}] {tag}: OpenDKIM verifies the {sigs[i][2]} signature", text)
        # The message's Reception record names the signatures it got.
        dkim_lists = sorted(tuple(r.get("dkim", ["missing"])) for r in receptions.values())
        want_lists = sorted(tuple(f"d={d} s={s} a={a}" for d, s, a in expected_signers[t]) for t, *_ in msgs)
        c.check(dkim_lists == want_lists, f"[{canon}] the Reception records' \"dkim\" lists name the signatures",
                dkim_lists)

    # A tampered copy fails both verifiers (so the checks above can fail).
    plain = os.path.join(work, "plain.eml")
    tampered = os.path.join(work, "tampered.eml")
    with open(plain, "rb") as f:
        data = f.read()
    with open(tampered, "wb") as f:
        f.write(only_signature(data.replace(b"Hello.", b"Hullo."), 0))
    c.check(not verify_dkimpy(dns, [tampered])[tampered][0][3], "dkimpy refuses a tampered body")
    ok, text = opendkim_verify(dns, tampered)
    c.check(not ok and "failed" in text, "OpenDKIM refuses a tampered body", text)
    with open(tampered, "wb") as f:
        f.write(only_signature(data.replace(b"Subject: plain", b"Subject: plane"), 1))
    c.check(not verify_dkimpy(dns, [tampered])[tampered][0][3], "dkimpy refuses a tampered Subject")

    # --dkim-sign-all: every message also gets the ESP's signature; an author without a key gets
    # only that one.
    empty(save)
    relay = harness.Relay(binary, ["--smarthost", f"127.0.0.1:{sink.port}", "--dkim-sign-all", "esp.test",
                                   "--dkim-key", f"esp.test:fbl:{esp}"] + keys).start()
    send_all(relay, [m for m in msgs if m[0] in ("plain", "no-key")])
    wait_for(lambda: len(os.listdir(save)) >= 2, "--dkim-sign-all: both messages delivered", c)
    relay.stop()
    got = saved_messages(save)
    paths = []
    for tag in ("plain", "no-key"):
        paths.append(os.path.join(work, f"all-{tag}.eml"))
        with open(paths[-1], "wb") as f:
            f.write(got.get(tag, b""))
    results = verify_dkimpy(dns, paths)
    c.check([tuple(s[:4]) for s in results[paths[0]]] == [("example.org", "rsa1", "rsa-sha256", True),
                                                         ("example.org", "ed1", "ed25519-sha256", True),
                                                         ("esp.test", "fbl", "ed25519-sha256", True)],
            "--dkim-sign-all: the author's signatures and the ESP's, all verified", results[paths[0]])
    c.check([tuple(s[:4]) for s in results[paths[1]]] == [("esp.test", "fbl", "ed25519-sha256", True)],
            "--dkim-sign-all: an author without a key gets the ESP's signature only", results[paths[1]])

    # A restart never signs twice: accepted under --hold (signed before the 250, stored signed),
    # delivered by the next run.
    empty(save)
    spool = os.path.join(harness.temp_dir("rr-dkim-spool-"), "spool")
    flags = ["--smarthost", f"127.0.0.1:{sink.port}"] + keys
    relay = harness.Relay(binary, flags, spool=spool, hold=True).start()
    send_all(relay, [m for m in msgs if m[0] == "plain"])
    relay.kill()
    relay = harness.Relay(binary, flags, spool=spool, hold=False).start()
    wait_for(lambda: len(os.listdir(save)) >= 1, "the held message is delivered after a restart", c)
    relay.stop()
    got = saved_messages(save)
    c.check(signature_count(got.get("plain", b"")) == 2, "after a SIGKILL and a restart the message has its two "
            "signatures, not four", signature_count(got.get("plain", b"")))

    # SIGHUP: a key file that no longer loads is refused and the old key stays; a new key is used.
    empty(save)
    rot = os.path.join(work, "rotate.pem")
    shutil.copy(rot1, rot)
    relay = harness.Relay(binary, ["--smarthost", f"127.0.0.1:{sink.port}", "--dkim-key", f"rotate.test:r:{rot}"]).start()
    rotating = (b"From: a@rotate.test\r\nTo: r@dest.test\r\nSubject: rotate\r\nDate: Sat, 05 Dec 2026 10:00:00 +0000\r\nX-Tag: %s\r\n\r\nrotate\r\n")
    with open(rot, "w") as f:
        f.write("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
    relay.signal(signal.SIGHUP)
    wait_for(lambda: "DKIM keys kept as they were" in relay.stderr(), "SIGHUP with a broken key file: refused", c)
    c.check(f"{rot}: " in relay.stderr(), "... the refusal names the file", relay.stderr()[-400:])
    send_all(relay, [("rot-old", "data", [], rotating % b"rot-old")])
    _, rot2_rec = keygen(keygen_tool, work, "rotate.test", "r2", "rsa")
    os.replace(os.path.join(work, "r2.rotate.test.pem"), rot)
    relay.signal(signal.SIGHUP)
    wait_for(lambda: "reload: DKIM: 1 key(s): d=rotate.test s=r a=rsa-sha256" in relay.stderr(),
             "SIGHUP with a new key file: loaded", c)
    send_all(relay, [("rot-new", "data", [], rotating % b"rot-new")])
    wait_for(lambda: len(os.listdir(save)) >= 2, "both rotation messages delivered", c)
    relay.stop()
    got = saved_messages(save)
    paths = [os.path.join(work, "rot-old.eml"), os.path.join(work, "rot-new.eml")]
    for p, tag in zip(paths, ("rot-old", "rot-new")):
        with open(p, "wb") as f:
            f.write(got.get(tag, b""))
    results = verify_dkimpy(dns, paths)
    c.check(results[paths[0]] and results[paths[0]][0][3], "after the refused reload the old key still signs",
            results[paths[0]])
    c.check(results[paths[1]] and not results[paths[1]][0][3],
            "after the good reload the new key signs (the old published key no longer verifies it)", results[paths[1]])
    new_txt = rot2_rec[1]
    r = subprocess.run([PY, "-c", "import dkim,sys; m=open(sys.argv[1],'rb').read(); "
                        "print(dkim.verify(m, dnsfunc=lambda q, timeout=5: sys.argv[2].encode()))", paths[1], new_txt],
                       capture_output=True, text=True, timeout=60)
    c.check(r.stdout.strip() == "True", "... and the new key's public half verifies it", r.stdout + r.stderr)

    # Start-up refusals: exit 1 (or 2 for a flag error) with the file and the reason.
    short = os.path.join(work, "short.pem")
    subprocess.run(["openssl", "genrsa", "-out", short, "512"], capture_output=True, timeout=60)
    cases = [
        (["--dkim-key", f"example.org:s:{work}/missing.pem"], "missing.pem: No such file or directory"),
        (["--dkim-key", f"example.org:s:{short}"], "short.pem: "),
        (["--dkim-key", f"exa mple.org:s:{rsa}"], "the domain is not"),
        (["--dkim-key", f"example.org:s;x=1:{rsa}"], "the selector is not"),
        (["--dkim-key", "example.org:nofile"], "expected DOMAIN:SELECTOR:KEYFILE"),
        (["--dkim-key", f"example.org:s:{rsa}", "--dkim-sign-all", "esp.test"], "--dkim-sign-all: no --dkim-key for esp.test"),
        (["--dkim-key", f"example.org:s:{rsa}", "--dkim-canonicalization", "loose/relaxed"], "--dkim-canonicalization"),
        (["--dkim-key", f"example.org:s:{rsa}", "--dkim-expiration", "soon"], "--dkim-expiration"),
        (["--dkim-key", f"example.org:s:{rsa}", "--dkim-key", f"example.org:s:{ed}"], "a second key for s._domainkey.example.org"),
    ]
    for flags, text in cases:
        spool_dir = os.path.join(harness.temp_dir("rr-dkim-bad-"), "spool")
        r = subprocess.run([binary, "--spool", spool_dir, "--listen", "127.0.0.1:0", "--hold"] + flags,
                           capture_output=True, text=True, timeout=60)
        c.check(r.returncode != 0 and text in r.stderr, f"refused at start: {' '.join(flags)[-70:]}",
                f"rc={r.returncode} {r.stderr[-300:]}")
    r = subprocess.run([binary, "--spool", os.path.join(work, "s2"), "--listen", "127.0.0.1:0", "--hold",
                        "--dkim-key", f"example.org:s:{short}"], capture_output=True, text=True, timeout=60)
    c.check("1024" in r.stderr or "short" in r.stderr, "a short RSA key is refused as too short", r.stderr[-300:])
    sink.stop()


if __name__ == "__main__":
    harness.run("dkim", scenario)
