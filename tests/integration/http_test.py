#!/usr/bin/env python3
# tests/integration/http_test.py: the HTTP endpoint (issue 18) with independent peers: curl
# for every status (200, 403 from outside --http-networks, 404, 405, 408, 413 for a body and
# for a header), keep-alive (two requests, one connection), pipelining (two requests in one
# write, raw socket: curl no longer pipelines); Prometheus' promtool checks the scraped text,
# and a real Prometheus scrapes /metrics, after which `promtool query instant` must see
# ringrelay_messages_received_total equal to the messages smtplib had accepted.
import json
import os
import re
import signal
import smtplib
import socket
import subprocess
import time

import harness

MESSAGES = 7
TIMEOUT_S = 2  # --http-timeout


def curl(c_args, timeout=30):
    return subprocess.run(["curl", "-s", "-S", "-m", "20"] + c_args, capture_output=True, text=True,
                          timeout=timeout)


def status_of(out):
    """curl -w '%{http_code}' at the end of the output: (status, body)."""
    return int(out[-3:]), out[:-3]


def is_json_error(body):
    try:
        return isinstance(json.loads(body).get("error"), str)
    except ValueError:
        return False


def scrape(url):
    r = curl([url])
    return r.stdout if r.returncode == 0 else ""


def received_total(text):
    return sum(int(m.group(1)) for m in re.finditer(r'^ringrelay_messages_received_total\{shard="\d+"\} (\d+)$',
                                                     text, re.M))


def read_responses(sock, want, timeout):
    """Reads `want` whole responses (Content-Length framed) from sock; [(status, headers, body)]."""
    sock.settimeout(timeout)
    data = b""
    out = []
    while len(out) < want:
        head_end = data.find(b"\r\n\r\n")
        if head_end >= 0:
            head = data[:head_end].decode("latin-1")
            length = int(re.search(r"(?im)^content-length: *(\d+)", head).group(1))
            if len(data) >= head_end + 4 + length:
                status = int(head.split(" ", 2)[1])
                out.append((status, head, data[head_end + 4:head_end + 4 + length]))
                data = data[head_end + 4 + length:]
                continue
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return out


def scenario(c):
    binary = harness.ringrelay_path()
    curl_bin = harness.find_tool("curl")
    promtool = harness.find_tool("promtool")
    prometheus = harness.find_tool("prometheus")
    del curl_bin
    http_port = harness.free_port()
    relay = harness.Relay(binary, ["--http", f"127.0.0.1:{http_port}", "--http-networks", "127.0.0.1/32",
                                   "--http-timeout", str(TIMEOUT_S)], shards=2).start()
    base = f"http://127.0.0.1:{http_port}"
    c.check(f"HTTP on 127.0.0.1:{http_port}" in relay.stderr(), "the start-up says where HTTP is served",
            relay.stderr()[-400:])

    # --- mail in, through smtplib ---------------------------------------------------------------
    host, port = relay.address()
    accepted = 0
    with smtplib.SMTP(host, port, timeout=harness.IO_TIMEOUT) as s:
        for i in range(MESSAGES):
            r = s.sendmail("a@example.org", [f"b{i}@example.net"],
                           f"Subject: http test {i}\r\n\r\nbody {i}\r\n".encode())
            if r == {}:
                accepted += 1
    c.require(accepted == MESSAGES, f"smtplib: {MESSAGES} messages accepted", accepted)

    # --- 200 and the metrics text ----------------------------------------------------------------
    r = curl(["-D", "-", "-w", "%{http_code}", base + "/metrics"])
    status, out = status_of(r.stdout)
    c.check(status == 200, "GET /metrics: 200", r.stdout[:300] + r.stderr)
    c.check("content-type: text/plain; version=0.0.4" in out.lower(), "GET /metrics: Prometheus text type", out[:300])
    text = scrape(base + "/metrics")
    c.check(received_total(text) == MESSAGES,
            f"ringrelay_messages_received_total sums to {MESSAGES} over the shards", text[:600])
    for name in ("ringrelay_messages_delivered_total", "ringrelay_messages_deferred_total",
                 "ringrelay_messages_bounced_total", "ringrelay_messages_expired_total",
                 "ringrelay_connections_in_total", "ringrelay_connections_out_total",
                 "ringrelay_received_bytes_total", "ringrelay_spool_bytes", "ringrelay_dkim_signatures_total"):
        c.check(re.search(rf'^{name}\{{shard="1"\}} \d+$', text, re.M) is not None, f"/metrics has {name}")
    check = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    c.check(check.returncode == 0 and text, "promtool check metrics passes on the scraped text",
            check.stdout + check.stderr)
    r = curl(["-I", "-w", "%{http_code}", base + "/metrics"])
    c.check(r.stdout.endswith("200"), "HEAD /metrics: 200", r.stdout)

    # --- errors -------------------------------------------------------------------------------
    r = curl(["-w", "%{http_code}", "--interface", "127.0.0.2", base + "/metrics"])
    status, body = status_of(r.stdout)
    c.check(status == 403 and is_json_error(body), "from 127.0.0.2 (outside --http-networks): 403 JSON error",
            r.stdout + r.stderr)
    r = curl(["-w", "%{http_code}", base + "/no/such/path"])
    status, body = status_of(r.stdout)
    c.check(status == 404 and is_json_error(body), "unknown path: 404 JSON error", r.stdout)
    r = curl(["-D", "-", "-w", "%{http_code}", "-X", "DELETE", base + "/metrics"])
    status, body = status_of(r.stdout)
    c.check(status == 405 and "allow: get, head" in body.lower() and '{"error"' in body,
            "DELETE /metrics: 405 with Allow and a JSON error", r.stdout)
    big = os.path.join(relay.work, "big")
    with open(big, "wb") as f:
        f.write(b"x" * (2 * 1024 * 1024))
    r = curl(["-w", "%{http_code}", "--data-binary", "@" + big, base + "/metrics"])
    status, body = status_of(r.stdout)
    c.check(status == 413 and is_json_error(body), "a 2 MiB body: 413 JSON error", r.stdout[-200:] + r.stderr)
    r = curl(["-w", "%{http_code}", "-H", "X-Big: " + "y" * 20000, base + "/metrics"])
    status, body = status_of(r.stdout)
    c.check(status == 413 and is_json_error(body), "a 20 kB header: 413 JSON error", r.stdout[-200:] + r.stderr)
    # A body announced but not sent: the request never arrives whole within --http-timeout.
    started = time.monotonic()
    r = curl(["-w", "%{http_code}", "-H", "Content-Length: 100", "--data-binary", "abc", base + "/metrics"])
    waited = time.monotonic() - started
    status, body = status_of(r.stdout)
    c.check(status == 408 and is_json_error(body), "a request left unfinished: 408 JSON error", r.stdout + r.stderr)
    c.info(f"408 after {waited:.1f}s (--http-timeout {TIMEOUT_S})")

    # --- keep-alive: two requests, one connection ---------------------------------------------------
    r = curl(["-o", "/dev/null", "-o", "/dev/null", "-w", "%{http_code} %{num_connects}\\n",
              base + "/metrics", base + "/no/such/path"])
    c.check(r.stdout.split("\n")[:2] == ["200 1", "404 0"],
            "keep-alive: curl's second request reuses the connection (no new connect)", r.stdout + r.stderr)

    # --- pipelining: two requests in one write, answered in order -----------------------------------
    with socket.create_connection(("127.0.0.1", http_port), timeout=harness.IO_TIMEOUT) as s:
        s.sendall(b"GET /no/such/path HTTP/1.1\r\nHost: x\r\n\r\n"
                  b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"
                  b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\nab")
        got = read_responses(s, 3, harness.IO_TIMEOUT)
    statuses = [g[0] for g in got]
    c.check(statuses == [404, 200, 405], "pipelining: three requests in one write answered in order",
            statuses)
    c.check(len(got) == 3 and b"ringrelay_messages_received_total" in got[1][2],
            "pipelining: the second answer is the metrics text")

    # --- a real Prometheus scrapes /metrics; promtool queries it -------------------------------------
    work = harness.temp_dir("rr-prom-")
    prom_port = harness.free_port()
    config = os.path.join(work, "prometheus.yml")
    with open(config, "w") as f:
        f.write("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
                "scrape_configs:\n  - job_name: ringrelay\n    static_configs:\n"
                f"      - targets: ['127.0.0.1:{http_port}']\n")
    prom = subprocess.Popen([prometheus, f"--config.file={config}", f"--storage.tsdb.path={work}/data",
                             f"--web.listen-address=127.0.0.1:{prom_port}"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=open(os.path.join(work, "prometheus.log"), "w"))

    def stop_prometheus():
        if prom.poll() is None:
            prom.send_signal(signal.SIGTERM)
            try:
                prom.wait(20)
            except subprocess.TimeoutExpired:
                prom.kill()
                prom.wait(10)
    harness.register_cleanup(stop_prometheus)

    def query(expr):
        q = subprocess.run([promtool, "query", "instant", f"http://127.0.0.1:{prom_port}", expr],
                           capture_output=True, text=True, timeout=20)
        m = re.search(r"=> (\S+) @", q.stdout)
        return m.group(1) if m else None

    seen = {}

    def received_seen():
        seen["v"] = query("sum(ringrelay_messages_received_total)")
        return seen["v"] == str(MESSAGES)
    ok = harness.wait_until(received_seen, 60)
    if not ok:
        with open(os.path.join(work, "prometheus.log")) as f:
            c.info("prometheus log tail: " + f.read()[-1500:])
    c.check(ok, f"promtool query instant: sum(ringrelay_messages_received_total) == {MESSAGES} "
                "as scraped by Prometheus", seen.get("v"))
    c.check(query('up{job="ringrelay"}') == "1", "Prometheus sees the target up")
    stop_prometheus()
    c.check(relay.stop() == 0, "the relay stops cleanly (exit 0) with HTTP connections served")


if __name__ == "__main__":
    harness.run("http", scenario)
