#!/usr/bin/env python3
# tests/integration/passwd_test.py: ringrelay-passwd (argv[1]) against an independent scrypt,
# Python's hashlib.scrypt (OpenSSL underneath, but called through its own API and parameters):
# the hash it prints for a password is the one hashlib computes from the printed salt and
# parameters; a hash built by Python is accepted by --check; wrong passwords and bad input fail
# with the documented exit codes. Passwords go in on stdin (not a terminal).
import base64
import hashlib
import os
import subprocess
import sys

import harness


def b64_nopad_decode(s):
    return base64.b64decode(s + "=" * (-len(s) % 4))


def b64_nopad(b):
    return base64.b64encode(b).decode().rstrip("=")


def run(tool, args, password):
    return subprocess.run([tool] + args, input=password + "\n", capture_output=True, text=True, timeout=60)


def scenario(c):
    tool = sys.argv[1]
    if not os.access(tool, os.X_OK):
        raise harness.Skip(f"{tool} is not built")
    pw = "correct horse battery staple"
    r = run(tool, ["--cost", "12", "alice@example.org"], pw)
    c.check(r.returncode == 0, "ringrelay-passwd exits 0", r.stderr)
    line = r.stdout.strip()
    user, _, h = line.partition(":")
    c.check(user == "alice@example.org", "the line starts with the user", line)
    parts = h.split("$")  # ['', 'scrypt', 'ln=12,r=8,p=1', salt, key]
    c.require(len(parts) == 5 and parts[1] == "scrypt", "the hash is $scrypt$ in PHC form", h)
    params = dict(kv.split("=") for kv in parts[2].split(","))
    c.check(params == {"ln": "12", "r": "8", "p": "1"}, "parameters as asked (--cost 12)", params)
    salt, key = b64_nopad_decode(parts[3]), b64_nopad_decode(parts[4])
    expect = hashlib.scrypt(pw.encode(), salt=salt, n=1 << 12, r=8, p=1, dklen=32, maxmem=64 << 20)
    c.check(key == expect, "hashlib.scrypt with the printed salt and parameters gives the printed key")

    c.check(run(tool, ["--check", h, "alice@example.org"], pw).returncode == 0, "--check: right password exits 0")
    c.check(run(tool, ["--check", h, "alice@example.org"], pw + "x").returncode == 1, "--check: wrong password exits 1")

    salt2 = os.urandom(16)
    key2 = hashlib.scrypt(b"from python", salt=salt2, n=1 << 11, r=8, p=2, dklen=32, maxmem=64 << 20)
    py_hash = f"$scrypt$ln=11,r=8,p=2${b64_nopad(salt2)}${b64_nopad(key2)}"
    c.check(run(tool, ["--check", py_hash, "bob"], "from python").returncode == 0,
            "a hash made by Python's hashlib is accepted by --check")
    c.check(run(tool, ["--check", py_hash, "bob"], "from pythoN").returncode == 1,
            "... and refuses another password")

    c.check(run(tool, ["al ice"], pw).returncode == 2, "a user name with a space is a usage error (exit 2)")
    c.check(run(tool, ["--cost", "30", "alice"], pw).returncode == 2, "--cost out of range is a usage error (exit 2)")
    c.check(run(tool, ["alice"], "").returncode == 1, "an empty password is refused (exit 1)")
    r2 = run(tool, ["--cost", "12", "alice@example.org"], pw)
    c.check(r2.stdout.strip() != line, "two hashes of the same password differ (random salt)")


if __name__ == "__main__":
    harness.run("passwd", scenario)
