#!/usr/bin/env python3
# tests/integration/http_test.py: the HTTP endpoint (issue 18) with independent peers: curl
# for every status (200, 403 from outside --http-networks, 404, 405, 408, 413 for a body and
# for a header), keep-alive (two requests, one connection); raw sockets (curl no longer
# pipelines) for pipelining (HEAD, GET, then an error that closes), HEAD's missing body, a
# 403 closing, Connection: close and HTTP/1.0 closing, a trickled header getting 408, the cap
# on one stranger's connections, and a client that never reads its answers at the stop;
# Prometheus' promtool checks the scraped text,
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


def read_responses(sock, want, timeout, heads=()):
    """Reads `want` whole responses (Content-Length framed; the answers numbered in `heads` are
    to HEAD requests: no body) from sock; [(status, headers, body)]."""
    sock.settimeout(timeout)
    data = b""
    out = []
    while len(out) < want:
        head_end = data.find(b"\r\n\r\n")
        if head_end >= 0:
            head = data[:head_end].decode("latin-1")
            length = int(re.search(r"(?im)^content-length: *(\d+)", head).group(1))
            if len(out) in heads:
                length = 0
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


def at_eof(sock, timeout):
    """True once the peer closed (recv gives b"") within `timeout`; bytes that still arrive are
    skipped; False on time-out or a reset."""
    sock.settimeout(timeout)
    try:
        while True:
            if not sock.recv(65536):
                return True
    except (socket.timeout, ConnectionResetError):
        return False


def raw(port, source="127.0.0.1"):
    return socket.create_connection(("127.0.0.1", port), timeout=harness.IO_TIMEOUT, source_address=(source, 0))


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
    # HEAD: the answer has the header only, so the answer pipelined behind it parses.
    with raw(http_port) as s:
        s.sendall(b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\nGET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        got = read_responses(s, 2, harness.IO_TIMEOUT, heads=(0,))
    c.check([g[0] for g in got] == [200, 200] and got[0][2] == b"" and
            got[1][2].startswith(b"# HELP") and int(re.search(r"(?im)^content-length: *(\d+)", got[0][1]).group(1)) > 0,
            "HEAD /metrics: 200 with a Content-Length and no body; the GET behind it parses",
            [(g[0], g[2][:40]) for g in got])

    # --- errors -------------------------------------------------------------------------------
    r = curl(["-w", "%{http_code}", "--interface", "127.0.0.2", base + "/metrics"])
    status, body = status_of(r.stdout)
    c.check(status == 403 and is_json_error(body), "from 127.0.0.2 (outside --http-networks): 403 JSON error",
            r.stdout + r.stderr)
    # A stranger's 403 closes: the request pipelined behind it is not answered.
    with raw(http_port, "127.0.0.2") as s:
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\nGET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        got = read_responses(s, 1, harness.IO_TIMEOUT)
        closed = at_eof(s, harness.IO_TIMEOUT)
    c.check([g[0] for g in got] == [403] and "connection: close" in got[0][1].lower() and closed,
            "from 127.0.0.2: 403 with Connection: close, then the connection closes", got)
    # One stranger's address cannot take every slot: past 16 connections per shard it gets 503.
    wanted = 40  # two shards: at most 2 x 16 held
    held = [raw(http_port, "127.0.0.2") for _ in range(wanted)]
    refused = set()

    def enough_refused():
        for i, s in enumerate(held):
            if i in refused:
                continue
            s.setblocking(False)
            try:
                if s.recv(4096).startswith(b"HTTP/1.1 503 "):
                    refused.add(i)
            except (BlockingIOError, ConnectionResetError):
                pass
        return len(refused) >= wanted - 32
    capped = harness.wait_until(enough_refused, 20)
    r = curl(["-w", "%{http_code}", "-o", "/dev/null", base + "/metrics"])
    for s in held:
        s.close()
    c.check(capped, f"{wanted} connections from 127.0.0.2: at least {wanted - 32} refused with 503",
            len(refused))
    c.check(r.stdout == "200", "meanwhile a client in --http-networks is served", r.stdout + r.stderr)
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
    # A header trickled in a byte at a time: the deadline runs from the connection's start,
    # not from the last byte.
    with raw(http_port) as s:
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        trickled = 0
        s.settimeout(0.25)
        answer = b""
        for _ in range(int(TIMEOUT_S * 4 / 0.25)):  # bounded: 4 deadlines
            try:
                s.send(b"X")
                trickled += 1
                answer = s.recv(4096)
                if answer:
                    break
            except socket.timeout:
                continue
            except (BrokenPipeError, ConnectionResetError):
                break
        closed = at_eof(s, harness.IO_TIMEOUT)
    c.check(answer.startswith(b"HTTP/1.1 408 ") and closed,
            "a header trickled a byte every 0.25 s: 408 after --http-timeout, then close",
            f"{trickled} bytes, {answer[:60]!r}")

    # --- keep-alive: two requests, one connection ---------------------------------------------------
    r = curl(["-o", "/dev/null", "-o", "/dev/null", "-w", "%{http_code} %{num_connects}\\n",
              base + "/metrics", base + "/no/such/path"])
    c.check(r.stdout.split("\n")[:2] == ["200 1", "404 0"],
            "keep-alive: curl's second request reuses the connection (no new connect)", r.stdout + r.stderr)

    # --- pipelining: requests in one write, answered in order; an error closes -------------------
    with raw(http_port) as s:
        s.sendall(b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n"
                  b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"
                  b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nab"
                  b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        got = read_responses(s, 4, harness.IO_TIMEOUT, heads=(0,))
    statuses = [g[0] for g in got]
    c.check(statuses == [200, 200, 405], "pipelining: requests in one write answered in order, none after the 405",
            statuses)
    c.check(len(got) == 3 and b"ringrelay_messages_received_total" in got[1][2],
            "pipelining: the second answer is the metrics text")
    # Connection: close is honoured: the answer, then end of stream.
    with raw(http_port) as s:
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        got = read_responses(s, 1, harness.IO_TIMEOUT)
        closed = at_eof(s, harness.IO_TIMEOUT)
    c.check([g[0] for g in got] == [200] and closed, "Connection: close: 200, then the connection closes",
            [g[:2] for g in got])
    # HTTP/1.0 without keep-alive: one answer, then close.
    with raw(http_port) as s:
        s.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
        got = read_responses(s, 1, harness.IO_TIMEOUT)
        closed = at_eof(s, harness.IO_TIMEOUT)
    c.check([g[0] for g in got] == [200] and "connection: close" in got[0][1].lower() and closed,
            "HTTP/1.0: 200 with Connection: close, then the connection closes", [g[:2] for g in got])

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
    # A client that pipelines requests and never reads the answers: it is cut off, and does
    # not hold the relay's stop.
    slow = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.settimeout(harness.IO_TIMEOUT)
    slow.connect(("127.0.0.1", http_port))
    try:
        slow.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n" * 1000)
    except OSError:
        pass
    time.sleep(0.5)  # the relay reads them and stops reading behind its answers
    started = time.monotonic()
    c.check(relay.stop() == 0, "the relay stops cleanly (exit 0) with a client that does not read its answers")
    c.info(f"stopped in {time.monotonic() - started:.1f}s")
    slow.close()


if __name__ == "__main__":
    harness.run("http", scenario)
