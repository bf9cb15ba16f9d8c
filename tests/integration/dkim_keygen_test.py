#!/usr/bin/env python3
# tests/integration/dkim_keygen_test.py: ringrelay-dkim-keygen (argv[1]) against independent
# tools: the key file it writes is read by openssl(1) (type, size, mode 0600), the public key in
# the TXT record it prints is the one openssl derives from the file, and Python's dkim package
# (Debian python3-dkim, run with /usr/bin/python3; python3-nacl for Ed25519) signs a message with
# the file's key and verifies it against the printed record. Usage errors exit 2; an existing
# file is never overwritten (exit 1, unchanged).
import base64
import os
import re
import stat
import subprocess
import sys

import harness

VERIFY = r'''
import base64, sys, dkim
kind, key_path, txt, domain, selector = sys.argv[1:6]
msg = (b"From: Joe <joe@" + domain.encode() + b">\r\nTo: s@example.net\r\nSubject: keygen\r\n"
       b"Date: Sat, 05 Dec 2026 10:00:00 +0000\r\nMessage-ID: <k@example.org>\r\n\r\nHello.\r\n")
if kind == "rsa":
    priv = open(key_path, "rb").read()
    algo = b"rsa-sha256"
else:
    priv = base64.b64encode(bytes.fromhex(sys.argv[6]))  # dkimpy takes the raw 32-octet seed
    algo = b"ed25519-sha256"
sig = dkim.sign(msg, selector.encode(), domain.encode(), priv, signature_algorithm=algo,
                include_headers=[b"from", b"to", b"subject"])
name = (selector + "._domainkey." + domain + ".").encode()
ok = dkim.verify(sig + msg, dnsfunc=lambda q, timeout=5: txt.encode() if q == name else None)
bad = dkim.verify(sig + msg.replace(b"Hello.", b"Hullo."), dnsfunc=lambda q, timeout=5: txt.encode() if q == name else None)
print("verify", ok, "tampered", bad)
sys.exit(0 if ok and not bad else 1)
'''


def run(tool, args, cwd):
    return subprocess.run([tool] + args, capture_output=True, text=True, timeout=120, cwd=cwd)


def openssl(*args, data=None):
    return subprocess.run(["openssl", *args], input=data, capture_output=True, timeout=60)


def record_text(stdout):
    """The TXT line's strings joined, as a resolver gives them to a verifier."""
    return "".join(re.findall(r'"([^"]*)"', stdout))


def scenario(c):
    tool = sys.argv[1]
    if not os.access(tool, os.X_OK):
        raise harness.Skip(f"{tool} is not built")
    harness.find_tool("openssl")
    if subprocess.run(["/usr/bin/python3", "-c", "import dkim, nacl"], capture_output=True).returncode != 0:
        harness.missing("python3-dkim / python3-nacl not installed for /usr/bin/python3")
    work = harness.temp_dir("rr-keygen-")

    # RSA, the defaults: 2048 bits, SELECTOR.DOMAIN.pem in the current directory.
    r = run(tool, ["example.org", "sel2026"], work)
    c.require(r.returncode == 0, "rsa: exits 0", r.stderr)
    path = os.path.join(work, "sel2026.example.org.pem")
    c.require(os.path.exists(path), "rsa: the key is written to SELECTOR.DOMAIN.pem")
    c.check(stat.S_IMODE(os.stat(path).st_mode) == 0o600, "rsa: the key file is mode 0600", oct(os.stat(path).st_mode))
    lines = r.stdout.splitlines()
    c.check(len(lines) == 1, "rsa: standard output is the TXT record only", r.stdout)
    c.check(lines[0].startswith('sel2026._domainkey.example.org IN TXT "v=DKIM1; k=rsa; p='),
            "rsa: the record names SELECTOR._domainkey.DOMAIN", lines[0])
    c.check(all(len(s) <= 255 for s in re.findall(r'"([^"]*)"', lines[0])),
            "rsa: every quoted string is at most 255 octets")
    text = openssl("pkey", "-in", path, "-noout", "-text").stdout.decode()
    c.check("Private-Key: (2048 bit" in text, "rsa: openssl reads a 2048-bit RSA key", text[:80])
    spki = openssl("pkey", "-in", path, "-pubout", "-outform", "DER").stdout
    txt = record_text(r.stdout)
    c.check(txt.endswith("p=" + base64.b64encode(spki).decode()), "rsa: p= is the file's public key (openssl pkey -pubout)")
    v = subprocess.run(["/usr/bin/python3", "-c", VERIFY, "rsa", path, txt, "example.org", "sel2026"],
                       capture_output=True, text=True, timeout=60)
    c.check(v.returncode == 0, "rsa: dkimpy signs with the file and verifies against the printed record",
            v.stdout + v.stderr)

    # The file exists now: refused, unchanged.
    before = open(path, "rb").read()
    r = run(tool, ["example.org", "sel2026"], work)
    c.check(r.returncode == 1 and "exists" in r.stderr, "an existing key file is refused (exit 1)", r.stderr)
    c.check(open(path, "rb").read() == before, "... and left unchanged")
    c.check(r.stdout == "", "... with nothing on standard output")

    # Ed25519 with --out.
    ed = os.path.join(work, "ed.pem")
    r = run(tool, ["mail.example.org", "ed1", "--type", "ed25519", "--out", ed], work)
    c.require(r.returncode == 0, "ed25519: exits 0", r.stderr)
    c.check(stat.S_IMODE(os.stat(ed).st_mode) == 0o600, "ed25519: mode 0600")
    der = openssl("pkey", "-in", ed, "-outform", "DER").stdout
    pub = openssl("pkey", "-in", ed, "-pubout", "-outform", "DER").stdout
    c.check("ED25519" in openssl("pkey", "-in", ed, "-noout", "-text").stdout.decode(), "ed25519: openssl reads an Ed25519 key")
    txt = record_text(r.stdout)
    c.check(txt == "v=DKIM1; k=ed25519; p=" + base64.b64encode(pub[-32:]).decode(),
            "ed25519: p= is the raw 32-octet public key (RFC 8463 §4)", txt)
    v = subprocess.run(["/usr/bin/python3", "-c", VERIFY, "ed25519", ed, txt, "mail.example.org", "ed1", der[-32:].hex()],
                       capture_output=True, text=True, timeout=60)
    c.check(v.returncode == 0, "ed25519: dkimpy signs with the file's key and verifies against the printed record",
            v.stdout + v.stderr)

    # --bits
    r = run(tool, ["example.org", "small", "--bits", "1024"], work)
    c.check(r.returncode == 0 and "(1024 bit" in openssl("pkey", "-in", os.path.join(work, "small.example.org.pem"),
                                                          "-noout", "-text").stdout.decode(),
            "--bits 1024 makes a 1024-bit key")

    # Usage errors: exit 2, no file.
    for args, what in [(["example.org", "s", "--bits", "512"], "--bits under 1024"),
                       (["example.org", "s", "--type", "dsa"], "an unknown --type"),
                       (["example.org", "s", "--type", "ed25519", "--bits", "2048"], "--bits with ed25519"),
                       (["exa mple.org", "s"], "a domain with a space"),
                       (["example.org", "s;x=1"], "a selector that would add a tag"),
                       (["example.org"], "no selector")]:
        r = run(tool, args, work)
        c.check(r.returncode == 2, f"usage error exits 2: {what}", f"rc={r.returncode} {r.stderr[-200:]}")
        c.check(r.stdout == "" or r.stdout.startswith("ringrelay-dkim-keygen"), f"... nothing but help on stdout: {what}")
    c.check(not os.path.exists(os.path.join(work, "s.example.org.pem")), "no key file is left by a usage error")


if __name__ == "__main__":
    harness.run("dkim_keygen", scenario)
