#!/usr/bin/env python3
# tests/integration/disk_full_test.py: a real full disk. The spool lives on a small tmpfs the
# test mounts (root only; skipped otherwise) with a filler file taking most of it. As the
# spool grows, MAIL is refused with "452 4.3.1" before the file system is exhausted (the relay
# keeps 1.5 x --max-message-size free, like Postfix), no message that got a 250 is lost, and
# once space returns (the filler is removed) mail is accepted again.
import os
import subprocess
import time

import harness

MAX_SIZE = 1_000_000          # --max-message-size: the relay keeps 1.5 MB free
BODY = b"Subject: big\r\n\r\n" + (b"x" * 998 + b"\r\n") * 600   # ~600 KB


def mount_tmpfs(path, size):
    if os.geteuid() != 0:
        raise harness.Skip("needs root to mount a tmpfs")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", path],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise harness.Skip(f"cannot mount tmpfs: {r.stderr.strip()}")
    # Unmount last (cleanups run in reverse order: after the relay has stopped).
    harness._cleanups.insert(0, lambda: subprocess.run(["umount", "-l", path], capture_output=True))


def send(relay, c, label):
    """One message; returns the reply code of the step that refused it, or 250."""
    with relay.connect() as cl:
        cl.reply()
        cl.cmd("EHLO full.test")
        code, lines = cl.cmd("MAIL FROM:<a@example.org>")
        if code != 250:
            return code, "MAIL", lines
        cl.cmd("RCPT TO:<b@example.net>")
        c.require(cl.cmd("DATA")[0] == 354, f"{label}: DATA 354")
        code, lines = cl.cmd(BODY.decode() + ".")
        return code, "DATA", lines


def scenario(c):
    binary = harness.ringrelay_path()
    mnt = harness.temp_dir("rr-full-")
    mount_tmpfs(mnt, "16m")
    filler = os.path.join(mnt, "filler")
    with open(filler, "wb") as f:
        f.write(b"\0" * (11 * 1024 * 1024))
    relay = harness.Relay(binary, ["--max-message-size", str(MAX_SIZE)],
                          spool=os.path.join(mnt, "spool")).start()
    accepted = 0
    refused_at_mail = None
    for i in range(40):
        code, step, lines = send(relay, c, f"message {i}")
        if code == 250:
            accepted += 1
            time.sleep(1.2)  # let the once-a-second space check see the new usage
            continue
        if step == "MAIL":
            refused_at_mail = (code, lines)
        else:
            c.check(False, "no refusal at end of data (the disk was never exhausted)", (code, lines))
        break
    c.info(f"{accepted} message(s) accepted before MAIL was refused")
    c.check(accepted > 0, "mail is accepted while there is room")
    c.check(refused_at_mail is not None and refused_at_mail[0] == 452 and "4.3.1" in " ".join(refused_at_mail[1]),
            "MAIL gets 452 4.3.1 once the disk is nearly full", refused_at_mail)
    os.unlink(filler)
    deadline = time.monotonic() + 15
    resumed = False
    while time.monotonic() < deadline:
        code, step, lines = send(relay, c, "after space returns")
        if code == 250:
            resumed = True
            accepted += 1
            break
        time.sleep(0.5)
    c.check(resumed, "mail is accepted again once space returns")
    code = relay.stop()
    c.check(code == 0, "relay stops cleanly", f"exit {code}")
    count, ids, _ = harness.list_spool(binary, relay.spool)
    c.check(count == accepted, "every message that got 250 is in the spool", f"{count} listed, {accepted} accepted")


if __name__ == "__main__":
    harness.run("disk_full", scenario)
