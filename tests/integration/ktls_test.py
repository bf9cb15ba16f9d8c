#!/usr/bin/env python3
# tests/integration/ktls_test.py: inbound TLS with the record layer in the kernel (kTLS,
# issue 5). Skips (exit 77) where the relay's start-up probe does not turn kTLS on: a kernel
# without the 'tls' ULP (CONFIG_TLS), or one that does not take both directions for what
# OpenSSL negotiates. This machine's kernel has no kTLS, so here it always skips; the
# user-space path is tls_test.py, and the socket handshake the kTLS path uses is unit-tested
# (tests/core/tls_test.cc, KtlsProbe) without the kernel's offload.
#
# Where kTLS is on:
#  - smtplib starttls() and SMTP_SSL against --listen-tls each queue a message; Received:
#    says ESMTPS with the cipher, the Reception log's "tls" ends in " kTLS";
#  - swaks --tls queues a message (an independent TLS client);
#  - a 2 MiB message over kTLS arrives whole (many records each way);
#  - injection: a command behind STARTTLS in one write gets 554 5.5.0;
#  - --no-ktls on the same kernel: start-up says so and sessions are in user space.
import os
import smtplib
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

HOST = "mx.ktls-test.invalid"
IO = harness.IO_TIMEOUT


def scenario(c):
    binary = harness.ringrelay_path()
    relay = harness.Relay(binary, hostname=HOST, flags=["--listen-tls", "127.0.0.1:0"]).start()
    err = relay.stderr()
    if "kTLS: on" not in err:
        line = next((l for l in err.splitlines() if "kTLS" in l), "no kTLS line")
        relay.stop()
        raise harness.Skip(f"kTLS is not on here: {line.split('ringrelay: ')[-1]}")
    plain_port, tls_port = relay.endpoints[0][1], relay.endpoints[1][1]

    s = smtplib.SMTP("127.0.0.1", plain_port, timeout=IO)
    s.starttls(context=harness.unverified_tls())
    s.ehlo("ktls.example")
    body = b"Subject: ktls\r\n\r\n" + (b"x" * 998 + b"\r\n") * 2100
    s.mail("a@ktls.example")
    s.rcpt("b@example.org")
    code, text = s.data(body)
    c.check(code == 250, "STARTTLS over kTLS: a 2 MiB message is queued", f"{code} {text}")
    qid = harness.queued_id(text)
    s.quit()
    rec = harness.read_spool(relay.spool).get(qid)
    c.check(rec is not None and rec.message.endswith(body[body.index(b"\r\n\r\n") + 4:]) and b" with ESMTPS id " in rec.message,
            "the spooled message is whole and says ESMTPS")
    tls = (harness.reception_record(relay, qid) or {}).get("tls") or ""
    c.check(tls.endswith(" kTLS"), "the Reception log says the session was kTLS", tls)

    t = smtplib.SMTP_SSL("127.0.0.1", tls_port, timeout=IO, context=harness.unverified_tls())
    t.ehlo("implicit.example")
    refused = t.sendmail("a@ktls.example", ["b@example.org"], b"Subject: implicit\r\n\r\nover kTLS\r\n")
    c.check(refused == {}, "implicit TLS over kTLS: message accepted", str(refused))
    t.quit()

    r = subprocess.run([harness.find_tool("swaks"), "--server", f"127.0.0.1:{plain_port}", "--tls", "--from",
                        "a@ktls.example", "--to", "b@example.org", "--body", "swaks over kTLS"],
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, errors="replace", timeout=60)
    out = r.stdout + r.stderr
    c.check(r.returncode == 0 and harness.queued_id(out) is not None, "swaks --tls over kTLS", out[-800:])

    with relay.connect() as cl:
        cl.reply()
        cl.cmd("EHLO inject.example")
        cl.send(b"STARTTLS\r\nRSET\r\n")
        c.reply(cl.reply(), 554, "STARTTLS with a command behind it in one write", "5.5.0")
    c.check(relay.stop() == 0, "the relay stops cleanly", relay.stderr()[-600:])

    off = harness.Relay(binary, hostname=HOST, flags=["--no-ktls"]).start()
    c.check("off by --no-ktls" in off.stderr(), "--no-ktls: start-up says so", off.stderr()[-400:])
    s = smtplib.SMTP("127.0.0.1", off.port, timeout=IO)
    s.starttls(context=harness.unverified_tls())
    s.ehlo("user-space.example")
    code, text = s.mail("a@ktls.example")
    c.check(code == 250, "--no-ktls: a session in user-space TLS", f"{code} {text}")
    s.quit()
    c.check(off.stop() == 0, "--no-ktls relay stops cleanly")


if __name__ == "__main__":
    harness.run("ktls", scenario)
