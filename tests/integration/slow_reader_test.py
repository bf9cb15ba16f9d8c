#!/usr/bin/env python3
# tests/integration/slow_reader_test.py: a client that pipelines commands but never reads
# the replies must not make the relay buffer without bound nor keep the connection forever:
# once about 1 MiB of replies is queued behind a send the peer does not drain, the relay
# cuts it off. Meanwhile (and afterwards) other clients are served normally, and a clean
# SIGTERM stop still drains (no connection is left stuck in a send).
import socket
import time

import harness


def flood(relay, c):
    """Sends ~2.4 MB of NOOPs without reading; returns True if the relay closed on us."""
    host, port = relay.address()
    s = socket.create_connection((host, port), timeout=30)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # keep our receive window small
    chunk = b"NOOP\r\n" * 4096
    sent = 0
    cut_off = False
    deadline = time.monotonic() + 60
    try:
        while sent < 400 * len(chunk) and time.monotonic() < deadline:
            s.sendall(chunk)
            sent += len(chunk)
    except (BrokenPipeError, ConnectionResetError):
        cut_off = True
    except socket.timeout:
        pass
    c.info(f"sent {sent} bytes of NOOPs without reading any reply")
    if not cut_off:
        # The relay may have closed after we finished writing: reading must hit the end soon.
        s.settimeout(30)
        try:
            while True:
                data = s.recv(1 << 20)
                if not data:
                    cut_off = True
                    break
        except (ConnectionResetError, BrokenPipeError):
            cut_off = True
        except socket.timeout:
            pass
    s.close()
    return cut_off


def send_one(relay, c, label):
    with relay.connect() as cl:
        c.reply(cl.reply(), 220, f"{label}: banner")
        cl.cmd("EHLO ok.test")
        cl.cmd("MAIL FROM:<a@example.org>")
        cl.cmd("RCPT TO:<b@example.net>")
        c.reply(cl.cmd("DATA"), 354, f"{label}: DATA")
        c.reply(cl.cmd("Subject: x\r\n\r\nbody\r\n."), 250, f"{label}: message queued", "2.0.0")


def scenario(c):
    relay = harness.Relay(harness.ringrelay_path(), ["--command-timeout", "30"]).start()
    send_one(relay, c, "before the flood")
    c.check(flood(relay, c), "a client that never reads its replies is cut off")
    send_one(relay, c, "after the flood")
    code = relay.stop()
    c.check(code == 0, "relay stops cleanly (exit 0) afterwards", f"exit {code}")


if __name__ == "__main__":
    harness.run("slow_reader", scenario)
