#!/usr/bin/env python3
# tests/integration/sink_test.py: ringrelay-sink on loopback against Python's smtplib and raw
# sockets: messages counted and saved byte-exact with their envelope (--save, --expect N
# exits 0 after N), injected faults (--reject-rate 1 gives 550 5.7.1, --defer-rate 1 gives
# 451 4.3.0, --disconnect-rate 1 drops the connection without a reply), the enforced per-IP
# limits (--max-connections-per-ip 2: the third connection gets 421 4.7.0; --max-rate-per-ip
# 5: a burst of 20 MAIL gets 451 4.7.1), --delay-ms (checked by order, never by timing),
# the summary on stdout (text and --json) and the exit status.
#
# The sink binary is argv[1] (else $RINGRELAY_SINK). Every sink is stopped by PID at exit.
import json
import os
import re
import signal
import smtplib
import socket
import subprocess
import sys
import threading
import time

import harness

SENDER = "sender@example.org"
RCPT = "rcpt@example.net"
_QUEUED_RE = re.compile(r"queued as ([0-9A-F]{16})")


class Sink:
    """One ringrelay-sink process: Sink(binary, flags).start(); stop() sends SIGTERM and
    returns (status, stdout); wait(timeout) for sinks that exit by themselves (--expect)."""

    def __init__(self, binary, flags=(), shards=1):
        self.args = [binary, "--listen", "127.0.0.1:0", "--shards", str(shards), "--hostname", "sink.test"]
        self.args += list(flags)
        self.proc = None
        self.port = None
        self.stdout = ""
        self._err = []
        self._ready = threading.Event()

    def start(self):
        self.proc = subprocess.Popen(self.args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, errors="replace")
        with harness._cleanup_lock:
            harness._cleanups.append(self.kill)
        self._reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + harness.START_TIMEOUT
        while time.monotonic() < deadline:
            if self._ready.wait(0.1):
                return self
            if self.proc.poll() is not None:
                break
        raise RuntimeError(f"ringrelay-sink did not start: {' '.join(self.args)}\n{self.stderr()}")

    def _read_stderr(self):
        for line in self.proc.stderr:
            self._err.append(line)
            m = re.search(r"listening on 127\.0\.0\.1:(\d+) with", line)
            if m and not self._ready.is_set():
                self.port = int(m.group(1))
                self._ready.set()

    def stderr(self):
        return "".join(self._err)

    def wait(self, timeout):
        """The exit status, or None if still running after `timeout` seconds."""
        try:
            out, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        self.stdout += out or ""
        # The process has exited: its stderr ends, so the reader finishes; wait for it, or the
        # last lines may not have been collected yet when stderr() is read.
        self._reader.join(harness.STOP_TIMEOUT)
        return self.proc.returncode

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        status = self.wait(harness.STOP_TIMEOUT)
        if status is None:
            self.kill()
        return self.proc.returncode, self.stdout

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def smtp(self):
        s = smtplib.SMTP("127.0.0.1", self.port, timeout=harness.IO_TIMEOUT)
        s.ehlo("client.test")
        return s

    def raw(self):
        return harness.RawClient("127.0.0.1", self.port)


def sink_path():
    if len(sys.argv) > 1 and sys.argv[1]:
        path = sys.argv[1]
    else:
        path = os.environ.get("RINGRELAY_SINK", "")
    path = os.path.abspath(path) if path else ""
    if not path or not os.access(path, os.X_OK):
        print(f"sink_test: ringrelay-sink binary not found or not executable: {path!r}")
        sys.exit(harness.EXIT_FAIL)
    return path


def parse_saved(data):
    """An independent reader of the --save format (tools/sink/save_format.h)."""
    env = {"rcpt_to": []}
    pos = 0
    while True:
        eol = data.index(b"\r\n", pos)
        name, _, value = data[pos:eol].decode().partition(": ")
        pos = eol + 2
        if not name.startswith("X-Sink-"):
            raise ValueError(f"not an envelope line: {name!r}")
        name = name[len("X-Sink-"):]
        if name == "Rcpt-To":
            env["rcpt_to"].append(value[1:-1])
        elif name == "Mail-From":
            env["mail_from"] = value[1:-1]
        elif name == "Size":
            size = int(value)
            env["message"] = data[pos:]
            if len(env["message"]) != size:
                raise ValueError(f"X-Sink-Size {size} but {len(env['message'])} bytes follow")
            return env
        else:
            env[name.lower().replace("-", "_")] = value


def data_reply(s, sender, rcpts, message):
    """MAIL, RCPT..., DATA over smtplib; the (code, text) of the end of data."""
    code, text = s.mail(sender)
    if code != 250:
        return code, text.decode()
    for r in rcpts:
        s.rcpt(r)
    code, text = s.data(message)
    return code, text.decode()


def check_save_and_expect(c, binary):
    save = os.path.join(harness.temp_dir("rr-sink-"), "saved")
    sink = Sink(binary, ["--save", save, "--expect", "4", "--quiet"], shards=2).start()
    sent = {}  # queue id -> (sender, rcpts, message bytes as sent after dot-unstuffing)
    messages = [
        (SENDER, [RCPT], b"Subject: one\r\n\r\nplain body\r\n"),
        (SENDER, ["a@example.net", "b@example.com"], b"Subject: two\r\n\r\n.leading dot\r\n..two dots\r\nend\r\n"),
        ("", [RCPT], b"Subject: null sender\r\n\r\n" + b"x" * 900 + b"\r\n" + b"\x80\xff 8-bit\r\n" * 50),
    ]
    s = sink.smtp()
    for sender, rcpts, body in messages:
        code, text = data_reply(s, sender, rcpts, body)
        c.check(code == 250 and _QUEUED_RE.search(text), f"message to {rcpts} accepted with a queue id",
                f"{code} {text}")
        m = _QUEUED_RE.search(text)
        if m:
            sent[m.group(1)] = (sender, rcpts, body)
    s.quit()
    # A BDAT message on a raw socket (smtplib has no CHUNKING): bytes kept exactly.
    chunk = b"Subject: bdat\r\n\r\nchunked body\r\n"
    with sink.raw() as r:
        r.reply()
        r.cmd("EHLO raw.test")
        r.cmd(f"MAIL FROM:<{SENDER}>")
        r.cmd(f"RCPT TO:<{RCPT}>")
        reply = r.cmd(b"BDAT %d LAST\r\n" % len(chunk) + chunk)
        c.reply(reply, 250, "BDAT LAST accepted", enhanced="2.0.0")
        m = _QUEUED_RE.search(harness.text_of(reply))
        if m:
            sent[m.group(1)] = (SENDER, [RCPT], chunk)
    status = sink.wait(20)
    c.check(status == 0, "--expect 4: exits 0 by itself after the fourth message", f"status {status}")
    c.check("4 message(s) received" in sink.stdout and "4 of 4 expected" in sink.stdout,
            "the summary on stdout counts 4 of 4 expected", sink.stdout[-500:])
    names = sorted(os.listdir(save)) if os.path.isdir(save) else []
    c.check(not [n for n in names if n.endswith(".tmp")], "no temp file left behind", str(names))
    files = {n[:-4]: n for n in names if n.endswith(".eml")}
    c.check(set(files) == set(sent), "one DIR/<QUEUE-ID>.eml per accepted message, named by its id",
            f"files {sorted(files)} ids {sorted(sent)}")
    for qid, (sender, rcpts, body) in sent.items():
        if qid not in files:
            continue
        with open(os.path.join(save, files[qid]), "rb") as f:
            env = parse_saved(f.read())
        c.check(env.get("queue_id") == qid and env.get("client") == "127.0.0.1",
                f"{qid}: X-Sink-Queue-Id and X-Sink-Client", str({k: env.get(k) for k in ("queue_id", "client")}))
        c.check(env.get("mail_from") == sender and env["rcpt_to"] == rcpts,
                f"{qid}: envelope <{sender}> -> {rcpts}", f"{env.get('mail_from')!r} {env['rcpt_to']}")
        c.check(env["message"].startswith(b"Received: from "), f"{qid}: message starts with the sink's Received:")
        c.check(harness.strip_received(env["message"]) == body, f"{qid}: message bytes exact (dot-unstuffed)",
                repr(harness.strip_received(env["message"])[:200]))


def check_save_concurrent(c, binary):
    """4 clients x 25 messages over 2 shards with --save and --delay-ms: every file complete."""
    save = os.path.join(harness.temp_dir("rr-sink-"), "saved")
    sink = Sink(binary, ["--save", save, "--expect", "100", "--delay-ms", "5", "--quiet"], shards=2).start()
    ids = []
    lock = threading.Lock()

    def client(t):
        s = sink.smtp()
        for i in range(25):
            code, text = data_reply(s, SENDER, [f"user{t}@example.net"], f"Subject: {t}/{i}\r\n\r\n{t}/{i}\r\n".encode())
            m = _QUEUED_RE.search(text)
            with lock:
                ids.append(m.group(1) if code == 250 and m else f"{code} {text}")
        s.quit()

    threads = [threading.Thread(target=client, args=(t,), daemon=True) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    status = sink.wait(30)
    c.check(status == 0, "--expect 100 with 4 concurrent clients: exit 0", f"status {status}")
    c.check(len(ids) == 100 and all(len(i) == 16 for i in ids), "100 messages answered 250 with a queue id",
            str([i for i in ids if len(i) != 16][:3]))
    names = sorted(os.listdir(save)) if os.path.isdir(save) else []
    c.check(sorted(n[:-4] for n in names) == sorted(ids), "exactly one complete .eml per 250, no temp files",
            f"{len(names)} files")
    good = 0
    for n in names:
        with open(os.path.join(save, n), "rb") as f:
            env = parse_saved(f.read())
        t, i = harness.strip_received(env["message"]).split(b"\r\n")[0][len(b"Subject: "):].split(b"/")
        good += env["rcpt_to"] == [f"user{t.decode()}@example.net"] and env["queue_id"] == n[:-4]
    c.check(good == 100, "every saved file parses and carries its own envelope", f"{good} of 100")


def check_reject(c, binary):
    sink = Sink(binary, ["--reject-rate", "1", "--json", "--quiet"]).start()
    s = sink.smtp()
    codes = []
    for i in range(25):  # more than the session's 20-error limit: refusals are not the client's errors
        code, text = data_reply(s, SENDER, [RCPT], f"Subject: {i}\r\n\r\nx\r\n".encode())
        codes.append(code)
        if i == 0:
            c.reply((code, text), 550, "--reject-rate 1: the end of data", enhanced="5.7.1",
                    contains="[127.0.0.1]")
    c.check(codes == [550] * 25, "25 messages in a row all get 550 on one connection", str(codes))
    c.check(s.noop()[0] == 250, "the connection stays open after the rejections")
    s.quit()
    status, out = sink.stop()
    c.check(status == 0, "SIGTERM without --expect: exit 0", f"status {status}")
    try:
        summary = json.loads(out)
    except ValueError:
        summary = {}
    c.check(summary.get("rejected") == 25 and summary.get("received") == 0,
            "--json summary: 25 rejected, 0 received", out[-300:])


def check_defer(c, binary):
    sink = Sink(binary, ["--defer-rate", "1", "--quiet"]).start()
    s = sink.smtp()
    for i in range(3):
        code, text = data_reply(s, SENDER, [RCPT], b"Subject: d\r\n\r\nx\r\n")
        c.reply((code, text), 451, f"--defer-rate 1: message {i + 1}", enhanced="4.3.0")
    s.quit()
    status, out = sink.stop()
    c.check(status == 0 and re.search(r"deferred \(451 4\.3\.0\)\s+3\b", out), "summary: 3 deferred",
            f"status {status}: {out[-400:]}")


def check_defer_reply(c, binary):
    # A provider's own throttle text (Yahoo's [TSS04]) as the deferral: sent verbatim; a 421
    # closes the connection after it, a 451 text keeps it open.
    tss04 = "421 4.7.0 [TSS04] Messages from 127.0.0.1 temporarily deferred due to unexpected volume"
    sink = Sink(binary, ["--defer-rate", "1", "--defer-reply", tss04, "--quiet"]).start()
    with sink.raw() as r:
        r.reply()
        r.cmd("EHLO raw.test")
        r.cmd(f"MAIL FROM:<{SENDER}>")
        r.cmd(f"RCPT TO:<{RCPT}>")
        c.reply(r.cmd("DATA"), 354, "DATA")
        r.send(b"Subject: tss04\r\n\r\nx\r\n.\r\n")
        code, lines = r.reply()
        c.check(code == 421 and lines == [tss04], "--defer-reply 421 ...: the end of data gets the text verbatim",
                f"{code} {lines!r}")
        c.check(r.closed_by_peer(harness.IO_TIMEOUT), "... and the connection is closed after the 421")
    status, out = sink.stop()
    c.check(status == 0 and re.search(r"deferred \(451 4\.3\.0\)\s+1\b", out), "summary: 1 deferred",
            f"status {status}: {out[-400:]}")
    text451 = "451 4.7.1 Rate limited [GL01], try again later"
    sink = Sink(binary, ["--defer-rate", "1", "--defer-reply", text451, "--reject-rate", "0", "--quiet"]).start()
    s = sink.smtp()
    for i in range(2):
        code, text = data_reply(s, SENDER, [RCPT], b"Subject: d\r\n\r\nx\r\n")
        c.check(code == 451 and text == text451[4:], f"--defer-reply 451 ...: message {i + 1} gets the text",
                f"{code} {text!r}")
    c.check(s.noop()[0] == 250, "the connection stays open after a 451 text")
    s.quit()
    sink.stop()
    sink = Sink(binary, ["--reject-rate", "1", "--reject-reply", "554 5.7.1 [BL21] Connections not accepted",
                         "--quiet"]).start()
    s = sink.smtp()
    code, text = data_reply(s, SENDER, [RCPT], b"Subject: r\r\n\r\nx\r\n")
    c.check(code == 554 and text == "5.7.1 [BL21] Connections not accepted", "--reject-reply: the text verbatim",
            f"{code} {text!r}")
    s.quit()
    sink.stop()
    for flag, bad in (("--defer-reply", "550 5.7.1 wrong class"), ("--defer-reply", "421"),
                      ("--reject-reply", "451 4.3.0 wrong class"), ("--defer-reply", "421 4.7.0 a\x01b")):
        r = subprocess.run([binary, "--listen", "127.0.0.1:0", flag, bad], capture_output=True, text=True,
                           timeout=30, stdin=subprocess.DEVNULL)
        c.check(r.returncode == 2 and flag in r.stderr, f"{flag} {bad!r}: refused at start, naming the flag",
                f"exit {r.returncode}: {r.stderr[-300:]}")


def check_disconnect(c, binary):
    sink = Sink(binary, ["--disconnect-rate", "1", "--quiet"]).start()
    with sink.raw() as r:
        r.reply()
        r.cmd("EHLO raw.test")
        c.reply(r.cmd(f"MAIL FROM:<{SENDER}>"), 250, "--disconnect-rate 1: MAIL still accepted")
        r.cmd(f"RCPT TO:<{RCPT}>")
        c.reply(r.cmd("DATA"), 354, "DATA")
        r.send(b"Subject: drop\r\n\r\nx\r\n.\r\n")
        closed = r.closed_by_peer(harness.IO_TIMEOUT)
        c.check(closed, "the connection is closed at the end of data")
        c.check(r.buf == b"", "... without any reply", repr(r.buf))
    # smtplib sees the same as a disconnect.
    s = sink.smtp()
    try:
        data_reply(s, SENDER, [RCPT], b"Subject: drop\r\n\r\nx\r\n")
        dropped = False
    except smtplib.SMTPServerDisconnected:
        dropped = True
    c.check(dropped, "smtplib gets SMTPServerDisconnected")
    status, out = sink.stop()
    c.check(status == 0 and re.search(r"disconnected\s+2\b", out), "summary: 2 disconnected", out[-400:])


def check_connection_limit(c, binary):
    sink = Sink(binary, ["--max-connections-per-ip", "2", "--quiet"], shards=2).start()
    first, second = sink.raw(), sink.raw()
    c.reply(first.reply(), 220, "connection 1 gets the banner")
    c.reply(second.reply(), 220, "connection 2 gets the banner")
    third = sink.raw()
    c.reply(third.reply(), 421, "connection 3 from the same IP", enhanced="4.7.0",
            contains="too many connections from your IP")
    c.check(third.closed_by_peer(harness.IO_TIMEOUT), "... and is closed")
    third.close()
    first.cmd("QUIT")
    first.close()
    # The count drops once the sink has seen the close: poll, bounded.
    admitted = False
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not admitted:
        with sink.raw() as again:
            code, _ = again.reply()
            admitted = code == 220
        if not admitted:
            time.sleep(0.1)
    c.check(admitted, "after one closes, a new connection is admitted again")
    second.close()
    status, out = sink.stop()
    c.check(status == 0 and re.search(r"\(\d+ refused with 421 4\.7\.0\)", out) and "(0 refused" not in out,
            "summary counts the refused connections", out[-400:])


def check_rate_limit(c, binary):
    sink = Sink(binary, ["--max-rate-per-ip", "5", "--quiet"], shards=2).start()
    replies = []
    with sink.raw() as r:
        r.reply()
        r.cmd("EHLO raw.test")
        for _ in range(20):
            reply = r.cmd(f"MAIL FROM:<{SENDER}>")
            replies.append(reply)
            if reply[0] == 250:
                r.cmd("RSET")
    ok = sum(1 for code, _ in replies if code == 250)
    limited = [rep for rep in replies if rep[0] == 451]
    c.info(f"burst of 20 MAIL at 5/s: {ok} accepted, {len(limited)} refused")
    c.check(limited, "--max-rate-per-ip 5: a burst of 20 MAIL gets 451")
    if limited:
        c.reply(limited[0], 451, "the refusal", enhanced="4.7.1",
                contains="Message rate limit exceeded for 127.0.0.1")
    c.check(1 <= ok < 20 and ok + len(limited) == 20, "the first MAIL passes, not all 20; every reply 250 or 451",
            str([code for code, _ in replies]))
    status, out = sink.stop()
    c.check(status == 0 and re.search(r"rate-limited MAIL\s+%d\b" % len(limited), out),
            "summary counts the rate-limited MAIL commands", out[-400:])


def check_delay(c, binary):
    sink = Sink(binary, ["--delay-ms", "1500", "--quiet"]).start()
    chunk = b"Subject: later\r\n\r\nbody\r\n"
    with sink.raw() as a:
        a.reply()
        a.cmd("EHLO a.test")
        a.cmd(f"MAIL FROM:<{SENDER}>")
        a.cmd(f"RCPT TO:<{RCPT}>")
        started = time.monotonic()
        # The end of the message and a command behind it in one write (RFC 2920): the
        # command's reply must come after the message's delayed one.
        a.send(b"BDAT %d LAST\r\n" % len(chunk) + chunk + b"RSET\r\n")
        # Meanwhile another connection is served at once: the sink is not blocked.
        with sink.raw() as b:
            c.reply(b.reply(), 220, "another connection gets its banner while the reply is delayed")
            c.reply(b.cmd("EHLO b.test"), 250, "... and its EHLO reply")
        a.sock.setblocking(False)
        try:
            early = a.sock.recv(4096)
        except BlockingIOError:
            early = b""
        a.sock.setblocking(True)
        a.buf += early
        c.check(early == b"", "the delayed reply had not come before the other connection was served",
                repr(early))
        first = a.reply()
        second = a.reply()
        c.info(f"delayed reply after {time.monotonic() - started:.2f}s (--delay-ms 1500)")
        c.reply(first, 250, "the message's reply comes first", contains="queued as")
        c.check(second[0] == 250 and "queued" not in harness.text_of(second),
                "the pipelined RSET's reply comes after it", harness.text_of(second))
    status, out = sink.stop()
    c.check(status == 0 and "1 message(s) received" in out, "summary: 1 received", out[-400:])


def check_expect_not_met(c, binary):
    sink = Sink(binary, ["--expect", "5", "--quiet"]).start()
    s = sink.smtp()
    data_reply(s, SENDER, [RCPT], b"Subject: only one\r\n\r\nx\r\n")
    s.quit()
    status, out = sink.stop()
    c.check(status == 1, "--expect 5 stopped by SIGTERM after 1 message: exit 1", f"status {status}")
    c.check("1 of 5 expected" in out, "... and the summary says 1 of 5", out[-300:])


def check_duration_and_progress(c, binary):
    sink = Sink(binary, ["--duration", "3"]).start()
    s = sink.smtp()
    data_reply(s, SENDER, [RCPT], b"Subject: p\r\n\r\nx\r\n")
    s.quit()
    status = sink.wait(30)
    c.check(status == 0, "--duration 3 ends the run by itself with exit 0", f"status {status}")
    lines = [l for l in sink.stderr().splitlines() if re.search(r"received \d+/s \(\d+\)", l)]
    c.check(lines and "(1)" in lines[-1] and "open connection(s)" in lines[-1],
            "without --quiet, per-second lines on stderr with rates and totals", sink.stderr()[-600:])
    c.check("1 message(s) received" in sink.stdout, "summary on stdout", sink.stdout[-300:])


def scenario(c):
    binary = sink_path()
    for check in (check_save_and_expect, check_save_concurrent, check_reject, check_defer, check_defer_reply, check_disconnect, check_connection_limit,
                  check_rate_limit, check_delay, check_expect_not_met, check_duration_and_progress):
        c.info(check.__name__)
        check(c, binary)


if __name__ == "__main__":
    harness.run("sink", scenario)
