#!/usr/bin/env python3
# tests/integration/http_tls_test.py: HTTPS (--http-tls, issue 18) and who may call over it, with
# independent peers: curl (--cacert: the relay's certificate made here by `openssl req`, so the
# chain and the name 127.0.0.1 are verified) and `openssl s_client`.
#  - HTTPS serves /metrics to loopback (--http-networks 127.0.0.1/32), keep-alive included (two
#    requests, one connection), the same as --http; s_client sees the configured certificate.
#  - A stranger (curl --interface 127.0.0.2) gets 403 for /metrics over TLS and over plain HTTP.
#  - POST /api/v1/inject from the stranger over TLS: no credentials, wrong password, unknown
#    user, malformed Basic field: 401 with WWW-Authenticate: Basic realm="ringrelay"; the right
#    ones inject the message (200, one recipient accepted): relaying for the authenticated user
#    although 127.0.0.2 is outside --relay-networks (127.0.0.1/32 here), as with SMTP AUTH, and
#    the Reception record names the user (the message's tenant).
#    The same right credentials over plain --http: 403. The AUTH counters count HTTP attempts;
#    past --auth-max-failures-per-ip the address gets 429, right password or not.
#  - A failed handshake (plaintext HTTP sent to the TLS port) and one never started (silence
#    past --http-timeout) close the connection and count in ringrelay_tls_failures_total;
#    completed ones in ringrelay_tls_handshakes_total.
#  - SIGHUP with a renewed certificate: new HTTPS handshakes get it.
#  - --http-tls without --tls-cert stops the start with an error naming the flag.
import base64
import hashlib
import json
import os
import re
import signal
import subprocess
import time

import harness

TIMEOUT_S = 2  # --http-timeout
PASSWORD = "s3cret-pass"


def phc(password, ln):
    salt = os.urandom(16)
    key = hashlib.scrypt(password.encode(), salt=salt, n=1 << ln, r=8, p=1, dklen=32, maxmem=1 << 30)
    nopad = lambda b: base64.b64encode(b).decode().rstrip("=")  # noqa: E731
    return f"$scrypt$ln={ln},r=8,p=1${nopad(salt)}${nopad(key)}"


def make_certificate(openssl, work, name, cn):
    cert, key = os.path.join(work, name + "-cert.pem"), os.path.join(work, name + "-key.pem")
    r = subprocess.run([openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                        "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=" + cn,
                        "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                       capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        raise harness.Failed("openssl req: " + r.stderr[-400:])
    return cert, key


def fingerprint(openssl, pem):
    r = subprocess.run([openssl, "x509", "-noout", "-fingerprint", "-sha256"], input=pem, capture_output=True,
                       text=True, timeout=30)
    return r.stdout.strip().split("=", 1)[-1]


def curl(args, timeout=30):
    """(status, headers, body) of one request: curl -i; status 0 if curl failed."""
    r = subprocess.run(["curl", "-s", "-S", "-i", "-m", "20"] + args, capture_output=True, timeout=timeout)
    if r.returncode != 0:
        return 0, r.stderr.decode("utf-8", "replace"), ""
    head, _, body = r.stdout.decode("utf-8", "replace").partition("\r\n\r\n")
    status = int(head.split(" ", 2)[1]) if head.startswith("HTTP/") else 0
    return status, head, body


def metric(text, name):
    return sum(int(m.group(1)) for m in re.finditer(r"^" + name + r'\{shard="\d+"\} (\d+)$', text, re.M))


def served_certificate(openssl, port):
    r = subprocess.run([openssl, "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "localhost"],
                       input="", capture_output=True, text=True, timeout=30)
    m = re.search(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", r.stdout, re.S)
    return m.group(0) + "\n" if m else ""


def closed_within(port, payload, timeout):
    """Connects to the TLS port, sends `payload`, and says whether the relay closed the
    connection within `timeout` seconds (what it sent before, an alert, is skipped)."""
    client = harness.RawClient("127.0.0.1", port, timeout=timeout)
    try:
        if payload:
            client.send(payload)
        return client.closed_by_peer(timeout)
    finally:
        client.close()


def scenario(c):
    binary = harness.ringrelay_path()
    openssl = harness.find_tool("openssl")
    if not openssl or not harness.find_tool("curl"):
        raise harness.Skip("needs openssl and curl")
    harness.require_bindable(["127.0.0.2"])
    work = harness.temp_dir()
    cert, key = make_certificate(openssl, work, "relay", "https.http-tls-test.invalid")
    users = os.path.join(work, "users")
    with open(users, "w") as f:
        f.write("alice:" + phc(PASSWORD, 10) + "\n")
    http_port, https_port = harness.free_port(), harness.free_port()
    relay = harness.Relay(binary, ["--http", f"127.0.0.1:{http_port}", "--http-tls", f"127.0.0.1:{https_port}",
                                   "--http-networks", "127.0.0.1/32", "--relay-networks", "127.0.0.1/32",
                                   "--http-timeout", str(TIMEOUT_S),
                                   "--tls-cert", cert, "--tls-key", key, "--auth-users", users,
                                   "--auth-max-failures-per-ip", "4", "--auth-failure-window", "600"],
                          shards=2).start()
    c.check(f"https://127.0.0.1:{https_port}" in relay.stderr(), "the start-up line names the HTTPS endpoint",
            relay.stderr()[-600:])
    https = f"https://127.0.0.1:{https_port}"
    plain = f"http://127.0.0.1:{http_port}"
    tls = ["--cacert", cert]

    # Loopback (in --http-networks) over HTTPS: everything, as over --http.
    status, head, body = curl(tls + [https + "/metrics"])
    c.check(status == 200 and "ringrelay_tls_handshakes_total" in body, "HTTPS GET /metrics from loopback: 200",
            f"{status} {head[:200]}")
    r = subprocess.run(["curl", "-s", "-S", "-m", "20", "--cacert", cert, "-o", "/dev/null", "-o", "/dev/null",
                        "-w", "%{http_code} %{num_connects}\n", https + "/metrics", https + "/api/v1/queue"],
                       capture_output=True, text=True, timeout=30)
    lines = r.stdout.split()
    c.check(lines[:4] == ["200", "1", "200", "0"], "HTTPS keep-alive: two requests on one connection", r.stdout)
    status, _, _ = curl(tls + ["-X", "POST", https + "/metrics"])
    c.check(status == 405, "HTTPS POST /metrics: 405 (the routes are --http's)", str(status))
    served = served_certificate(openssl, https_port)
    with open(cert) as f:
        c.check(served and fingerprint(openssl, served) == fingerprint(openssl, f.read()),
                "openssl s_client: the HTTPS port serves the --tls-cert certificate", served[:80])
    r = subprocess.run([openssl, "s_client", "-quiet", "-connect", f"127.0.0.1:{https_port}", "-servername",
                        "localhost"], input="GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                       capture_output=True, text=True, timeout=30)
    c.check(r.stdout.startswith("HTTP/1.1 200 OK"), "openssl s_client: a request over raw TLS is answered",
            r.stdout[:120] + r.stderr[-200:])

    # A stranger: 403 for /metrics whatever the transport.
    stranger = ["--interface", "127.0.0.2"]
    status, _, body = curl(tls + stranger + [https + "/metrics"])
    c.check(status == 403 and "forbidden" in body, "stranger, HTTPS /metrics: 403", f"{status} {body}")
    status, _, _ = curl(stranger + [plain + "/metrics"])
    c.check(status == 403, "stranger, HTTP /metrics: 403", str(status))
    status, _, _ = curl(tls + stranger + ["-u", "alice:" + PASSWORD, https + "/metrics"])
    c.check(status == 403, "stranger with right credentials, HTTPS /metrics: 403 (not a route of theirs)", str(status))

    # A stranger posting to the inject route over TLS.
    inject = https + "/api/v1/inject"
    data = ["-H", "Content-Type: application/json", "--data",
            '{"envelope_sender": "app@example.org", "recipients": [{"email": "rcpt@example.net"}], '
            '"content": "Subject: hi\\r\\n\\r\\nhello\\r\\n"}']
    challenge = re.compile(r'(?im)^WWW-Authenticate: Basic realm="ringrelay"')
    before = curl([plain + "/metrics"])[2]
    failures_before = metric(before, "ringrelay_auth_failures_total")
    for what, extra in [("no credentials", []),
                        ("a wrong password", ["-u", "alice:wrong"]),
                        ("an unknown user", ["-u", "mallory:" + PASSWORD]),
                        ("a malformed Basic field", ["-H", "Authorization: Basic !!notbase64"])]:
        status, head, body = curl(tls + stranger + extra + data + [inject])
        c.check(status == 401 and challenge.search(head) and '"error"' in body,
                f"stranger, HTTPS inject with {what}: 401 with WWW-Authenticate", f"{status} {head[:300]}")
    status, head, body = curl(tls + stranger + ["-u", "alice:" + PASSWORD] + data + [inject])
    answer = json.loads(body) if status == 200 else {}
    c.check(status == 200 and answer.get("success_count") == 1 and answer.get("fail_count") == 0,
            "stranger, HTTPS inject with the right credentials: 200, the recipient accepted (the user may relay)",
            f"{status} {body}")
    qid = answer.get("queue_id")
    record = harness.reception_record(relay, qid) if qid else None
    c.check(record is not None and record.get("auth") == "alice" and record.get("protocol") == "HTTP",
            "its Reception record: protocol HTTP, auth alice (the tenant)", record)
    status, _, _ = curl(stranger + ["-u", "alice:" + PASSWORD] + data + [plain + "/api/v1/inject"])
    c.check(status == 403, "stranger, plain HTTP inject with the right credentials: 403 (TLS only)", str(status))
    after = curl([plain + "/metrics"])[2]
    c.check(metric(after, "ringrelay_auth_failures_total") - failures_before == 3,
            "wrong password, unknown user, malformed field: 3 AUTH failures counted",
            str(metric(after, "ringrelay_auth_failures_total") - failures_before))
    c.check(metric(after, "ringrelay_auth_successes_total") >= 1, "the right credentials: an AUTH success counted")
    # The 4th failure of 127.0.0.2 reaches --auth-max-failures-per-ip: 429, then even for the
    # right password (SMTP AUTH from that address is refused too: the same table).
    status, _, _ = curl(tls + stranger + ["-u", "alice:wrong-again"] + data + [inject])
    c.check(status == 429, "the failure that reaches --auth-max-failures-per-ip: 429", str(status))
    status, _, _ = curl(tls + stranger + ["-u", "alice:" + PASSWORD] + data + [inject])
    c.check(status == 429, "then the right credentials from that address: 429", str(status))

    # Handshakes that fail: plaintext to the TLS port, and silence past --http-timeout.
    tls_before = metric(curl([plain + "/metrics"])[2], "ringrelay_tls_failures_total")
    c.check(closed_within(https_port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", 10),
            "plaintext HTTP to the TLS port: the connection is closed")
    c.check(closed_within(https_port, b"", TIMEOUT_S + 8), "no ClientHello within --http-timeout: closed")
    ok = harness.wait_until(lambda: metric(curl([plain + "/metrics"])[2], "ringrelay_tls_failures_total")
                            - tls_before == 2, 10)
    c.check(ok, "both count in ringrelay_tls_failures_total",
            str(metric(curl([plain + "/metrics"])[2], "ringrelay_tls_failures_total") - tls_before))
    c.check(metric(curl([plain + "/metrics"])[2], "ringrelay_tls_handshakes_total") >= 8,
            "the completed HTTPS handshakes count in ringrelay_tls_handshakes_total")
    status, _, _ = curl(tls + [https + "/metrics"])
    c.check(status == 200, "HTTPS still serves after the failures", str(status))

    # SIGHUP with a renewed certificate in the same files.
    new_cert, new_key = make_certificate(openssl, work, "renewed", "renewed.http-tls-test.invalid")
    with open(new_cert) as f:
        new_fpr = fingerprint(openssl, f.read())
    os.replace(new_key, key)
    os.replace(new_cert, cert)
    relay.signal(signal.SIGHUP)
    ok = harness.wait_until(lambda: fingerprint(openssl, served_certificate(openssl, https_port) or "x") == new_fpr, 15)
    c.check(ok, "SIGHUP: new HTTPS handshakes get the renewed certificate")
    time.sleep(1.5)  # past a shard tick: every shard has switched by now
    status, _, _ = curl(tls + [https + "/metrics"])
    c.check(status == 200, "curl --cacert (the renewed certificate): 200", str(status))
    relay.stop()
    c.check(relay.returncode == 0, "the relay stops cleanly", relay.stderr()[-600:])

    # --http-tls needs a certificate.
    bare = harness.Relay(binary, ["--http-tls", "127.0.0.1:0"])
    try:
        bare.start()
        c.check(False, "--http-tls without --tls-cert stops the start")
    except RuntimeError as e:
        c.check("--http-tls: needs a certificate" in str(e), "--http-tls without --tls-cert: a clear error",
                str(e)[-300:])


if __name__ == "__main__":
    harness.run("http_tls", scenario)
