#!/usr/bin/env python3
# tests/integration/daemon_test.py: the habits of a daemon (issue 18).
#
# 1. systemd's readiness protocol: a datagram socket of our own as $NOTIFY_SOCKET (a path, and
#    an abstract '@' name): READY=1 with MAINPID and STATUS once listening, RELOADING=1 then
#    READY=1 around SIGHUP, STOPPING=1 at SIGTERM. etc/ringrelay.service passes
#    `systemd-analyze verify` without a word (where systemd-analyze is installed).
# 2. logrotate (Debian's) with the shipped etc/logrotate.d/ringrelay, its path, owner and
#    postrotate command pointed at this relay: records before the rotation are in the rotated
#    file, records after it in the new one, none lost or doubled.
# 3. SIGUSR1 when the log cannot be opened again (its directory renamed away): the relay says
#    so, keeps running and keeps writing to the file it had.
# 4. --drain: messages deferred by a relay whose next hops are down (default retry intervals);
#    a relay started with --drain on that spool listens for nothing, tries them at once,
#    delivers them, bounces the one the next hop rejects, delivers that bounce report too, and
#    only then exits 0 by itself. --drain with --hold is refused at start.
# 5. SIGUSR2, and POST /api/v1/drain, drain a running relay: its SMTP port closes, and it exits
#    0 by itself once the queued mail is delivered.
#
# Arguments: ringrelay, ringrelay-sink. Loopback only; every wait bounded.
import json
import os
import re
import shutil
import signal
import smtplib
import socket
import subprocess
import sys
import time
import urllib.request

import harness

# The shipped postrotate command (systemd), replaced here by a kill of this relay's pid.
SIGNAL_LINE = ("if systemctl is-active --quiet ringrelay.service; then "
               "systemctl kill --signal=SIGUSR1 --kill-whom=main ringrelay.service; fi")
SOURCE = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def notifications(sock, want, timeout=20):
    """Datagrams from `sock` until one holds the line `want` (or the timeout): their texts."""
    got = []
    sock.settimeout(0.5)
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            got.append(sock.recv(4096).decode())
        except socket.timeout:
            continue
        if want in got[-1].split("\n"):
            break
    return got


def fields(datagram):
    return dict(line.split("=", 1) for line in datagram.split("\n") if "=" in line)


def with_notify_socket(address):
    previous = os.environ.get("NOTIFY_SOCKET")
    os.environ["NOTIFY_SOCKET"] = address
    return previous


def restore_notify_socket(previous):
    if previous is None:
        os.environ.pop("NOTIFY_SOCKET", None)
    else:
        os.environ["NOTIFY_SOCKET"] = previous


def notify_protocol(c, relay_bin, work):
    path = os.path.join(work, "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    previous = with_notify_socket(path)
    try:
        relay = harness.Relay(relay_bin).start()
    finally:
        restore_notify_socket(previous)
    got = notifications(sock, "READY=1")
    ready = [fields(d) for d in got if "READY=1" in d.split("\n")]
    c.check(bool(ready), "READY=1 arrives on $NOTIFY_SOCKET once the relay listens", got)
    if ready:
        c.check(ready[0].get("MAINPID") == str(relay.proc.pid), "READY=1 names the relay's pid as MAINPID",
                (ready[0], relay.proc.pid))
        c.check(ready[0].get("STATUS", "").startswith("listening on 127.0.0.1:"), "STATUS says where it listens",
                ready[0])
    relay.signal(signal.SIGHUP)
    got = notifications(sock, "READY=1")
    lines = [line for d in got for line in d.split("\n")]
    c.check("RELOADING=1" in lines and "READY=1" in lines and lines.index("RELOADING=1") < lines.index("READY=1"),
            "SIGHUP: RELOADING=1, then READY=1 once the reload is done", got)
    relay.signal(signal.SIGTERM)
    got = notifications(sock, "STOPPING=1")
    c.check(any("STOPPING=1" in d.split("\n") for d in got), "SIGTERM: STOPPING=1", got)
    c.check(relay.wait(30) == 0, "the relay exits 0", relay.stderr()[-400:])
    sock.close()

    # The abstract namespace ('@name'), as systemd may pass it.
    name = f"rr-notify-{os.getpid()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    previous = with_notify_socket("@" + name)
    try:
        relay = harness.Relay(relay_bin).start()
    finally:
        restore_notify_socket(previous)
    got = notifications(sock, "READY=1")
    c.check(any("READY=1" in d.split("\n") for d in got), "READY=1 reaches an abstract $NOTIFY_SOCKET (@name)", got)
    relay.stop()
    sock.close()

    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        c.info("systemd-analyze is not installed: the unit file is not verified here")
        return
    unit_dir = os.path.join(work, "unit")
    os.makedirs(unit_dir)
    with open(os.path.join(SOURCE, "etc", "ringrelay.service")) as f:
        unit = f.read()
    c.require("/usr/local/bin/ringrelay " in unit, "the unit starts /usr/local/bin/ringrelay")
    unit_path = os.path.join(unit_dir, "ringrelay.service")
    with open(unit_path, "w") as f:
        f.write(unit.replace("/usr/local/bin/ringrelay ", os.path.abspath(relay_bin) + " "))
    r = subprocess.run([analyze, "verify", "--man=no", unit_path], capture_output=True, text=True, timeout=60)
    said = (r.stdout + r.stderr).strip()
    c.check(r.returncode == 0 and not said, "systemd-analyze verify accepts etc/ringrelay.service without a word",
            said)
    for line in ("Type=notify", "ExecReload=/bin/kill -HUP $MAINPID", "NoNewPrivileges=yes", "ProtectSystem=strict",
                 "AmbientCapabilities=CAP_NET_BIND_SERVICE", "User=ringrelay"):
        c.check(line in unit.split("\n"), f"the unit has {line}")


def reception_ids(path):
    return [r["queue_id"] for r in harness.log_records(path) if r.get("type") == "Reception"]


def send(relay, n, tag):
    """n messages over one session; their queue ids."""
    host, port = relay.address()
    s = smtplib.SMTP(host, port, timeout=30)
    s.ehlo()
    ids = []
    for i in range(n):
        s.mail("sender@example.org")
        s.rcpt(f"rcpt{i}@example.net")
        code, text = s.data(f"Subject: {tag} {i}\r\n\r\nbody\r\n")
        ids.append(harness.queued_id(text.decode()))
    s.quit()
    return ids


def logrotate(c, relay_bin, work):
    tool = harness.find_tool("logrotate", ["/usr/sbin/logrotate"])
    logs = os.path.join(work, "logs")
    os.makedirs(logs)
    log = os.path.join(logs, "delivery.log")
    relay = harness.Relay(relay_bin)
    relay.args[relay.args.index("--log") + 1] = relay.log_path = log
    relay.start()
    before = send(relay, 3, "before")
    c.require(harness.wait_until(lambda: sorted(reception_ids(log)) == sorted(before), 10),
              "3 Reception records in the log before the rotation", reception_ids(log))
    with open(os.path.join(SOURCE, "etc", "logrotate.d", "ringrelay")) as f:
        shipped = f.read()
    # The shipped file, pointed at this relay: its log, no owner (no ringrelay user here), and
    # the signal sent straight to this pid instead of through systemctl.
    for needle in ("/var/log/ringrelay/delivery.log {", "create 0640 ringrelay ringrelay",
                   SIGNAL_LINE):
        c.require(needle in shipped, f"etc/logrotate.d/ringrelay has '{needle}'")
    conf = shipped.replace("/var/log/ringrelay/delivery.log {", log + " {") \
                  .replace("create 0640 ringrelay ringrelay", "create 0640") \
                  .replace(SIGNAL_LINE, f"kill -USR1 {relay.proc.pid}")
    conf_path = os.path.join(work, "logrotate.conf")
    with open(conf_path, "w") as f:
        f.write(conf)
    os.chmod(conf_path, 0o644)
    r = subprocess.run([tool, "--force", "--state", os.path.join(work, "logrotate.state"), conf_path],
                       capture_output=True, text=True, timeout=60)
    c.require(r.returncode == 0, "logrotate --force rotates the log", r.stdout + r.stderr)
    rotated = log + ".1"
    c.check(os.path.exists(rotated), "the log was renamed to delivery.log.1 (delaycompress)", os.listdir(logs))
    c.check(harness.wait_until(lambda: "SIGUSR1: reopened --log" in relay.stderr(), 10),
            "the relay reopened its log on SIGUSR1", relay.stderr()[-400:])
    after = send(relay, 3, "after")
    c.check(harness.wait_until(lambda: sorted(reception_ids(log)) == sorted(after), 10),
            "the records after the rotation are in the new delivery.log, and only those", reception_ids(log))
    c.check(sorted(reception_ids(rotated)) == sorted(before),
            "the records before it are in delivery.log.1, and only those", reception_ids(rotated))
    c.check(relay.running(), "the relay is still running")

    # The log cannot be opened again: its directory is gone.
    moved = os.path.join(work, "logs-moved")
    os.rename(logs, moved)
    relay.signal(signal.SIGUSR1)
    c.check(harness.wait_until(lambda: "SIGUSR1: cannot reopen --log" in relay.stderr(), 10),
            "a reopen that fails is said", relay.stderr()[-400:])
    later = send(relay, 2, "later")
    old_file = os.path.join(moved, "delivery.log")
    c.check(harness.wait_until(lambda: sorted(reception_ids(old_file)) == sorted(after + later), 10),
            "after a failed reopen the records go on into the file it had", reception_ids(old_file))
    c.check(relay.stop() == 0, "the relay stops cleanly")


def saved(save):
    """The --save files of a sink: [(mail from, text)]."""
    out = []
    for text in harness.saved_texts(save):
        m = re.search(r"^X-Sink-Mail-From: (.*)\r$", text, re.M)
        out.append((m.group(1) if m else None, text))
    return out


def drain(c, relay_bin, sink_bin, work):
    # Next hops down: bad.example's (it will reject) and everything else's. Default retry
    # intervals (the first retry 5 minutes away): --drain must not wait for them.
    good, bad = harness.free_port(), harness.free_port()
    flags = ["--route", f"bad.example=127.0.0.1:{bad}", "--route", f"*=127.0.0.1:{good}"]
    first = harness.Relay(relay_bin, flags, shards=2).start()
    ids = send(first, 6, "drain")
    host, port = first.address()
    s = smtplib.SMTP(host, port, timeout=30)
    s.sendmail("sender@example.org", ["someone@bad.example"], "Subject: will bounce\r\n\r\nbody\r\n")
    s.quit()
    deferred = lambda: {r["recipient"] for r in harness.log_records(first.log_path)  # noqa: E731
                        if r.get("type") == "TransientFailure"}
    c.require(harness.wait_until(lambda: len(deferred()) == 7, 20), "all 7 recipients deferred (next hops down)",
              deferred())
    c.require(first.stop() == 0, "the first relay stops cleanly")

    save = os.path.join(work, "saved")
    os.makedirs(save)
    sink = harness.start_sink(sink_bin, good, ["--save", save, "--duration", "90"])
    rejecting = harness.start_sink(sink_bin, bad, ["--reject-rate", "1", "--duration", "90"])
    draining = harness.Relay(relay_bin, flags + ["--drain"], shards=2, spool=first.spool).start()
    c.check(draining.endpoints == [] and "listening on nothing (--drain" in draining.stderr(),
            "a relay with --drain listens for nothing", draining.stderr()[-300:])
    c.check(draining.holds == 7, "it recovered the 7 messages", draining.holds)
    status = draining.wait(60)
    c.check(status == 0, "it exits 0 by itself once everything is done, without waiting for the journaled "
            "retry times (5 minutes away)", (status, draining.stderr()[-600:]))
    c.check("drained: nothing left to deliver" in draining.stderr(), "it says why it stopped", draining.stderr()[-400:])
    records = harness.log_records(draining.log_path)
    delivered = {r["queue_id"] for r in records if r.get("type") == "Delivery" and r.get("recipient") != "sender@example.org"}
    c.check(delivered == set(ids), "a Delivery record for each of the 6 messages", sorted(delivered))
    c.check([r["recipient"] for r in records if r.get("type") == "Bounce"] == ["someone@bad.example"],
            "a Bounce record for the rejected recipient", [r for r in records if r.get("type") == "Bounce"])
    got = saved(save)
    dsns = [text for sender, text in got if sender == "<>"]
    c.check(len(got) == 7 and len(dsns) == 1, "the sink saved the 6 messages and the bounce report (DSN) the drain "
            "made: the relay did not exit before delivering it", [sender for sender, _ in got])
    c.check(bool(dsns) and "someone@bad.example" in dsns[0], "the DSN names the rejected recipient")
    for p in (sink, rejecting):
        p.terminate()
        harness.sink_result(p, 30)
    listing = harness.list_spool(relay_bin, first.spool)
    c.check(listing[0] == 0, "--list-spool: nothing left", listing)

    r = subprocess.run([relay_bin, "--drain", "--hold", "--spool", os.path.join(work, "other")],
                       capture_output=True, text=True, timeout=30)
    c.check(r.returncode == 2 and "--drain" in r.stderr and "--hold" in r.stderr,
            "--drain with --hold is refused at start, naming both", (r.returncode, r.stderr))


def drain_running(c, relay_bin, sink_bin, work, how):
    """SIGUSR2 or POST /api/v1/drain: a running relay drains."""
    port, http = harness.free_port(), harness.free_port()
    relay = harness.Relay(relay_bin, ["--route", f"*=127.0.0.1:{port}", "--retry-intervals", "2s",
                                      "--http", f"127.0.0.1:{http}"]).start()
    ids = send(relay, 3, "drain-" + how)
    c.require(harness.wait_until(lambda: {r["queue_id"] for r in harness.log_records(relay.log_path)
                                           if r.get("type") == "TransientFailure"} == set(ids), 20),
              "3 messages deferred (next hop down)")
    if how == "SIGUSR2":
        relay.signal(signal.SIGUSR2)
    else:
        request = urllib.request.Request(f"http://127.0.0.1:{http}/api/v1/drain", data=b"", method="POST")
        direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never a proxy
        with direct.open(request, timeout=20) as r:
            status, body = r.status, r.read().decode()
        c.check(status == 200 and json.loads(body) == {"draining": True, "already": False},
                "POST /api/v1/drain: 200 {\"draining\": true, \"already\": false}", (status, body))

    def refused():
        try:
            socket.create_connection(relay.address(), timeout=2).close()
            return False
        except ConnectionRefusedError:
            return True
    c.check(harness.wait_until(refused, 10), f"after {how} the SMTP port refuses connections",
            relay.stderr()[-300:])
    c.check(relay.running(), "and the relay keeps running while mail is queued")
    sink = harness.start_sink(sink_bin, port, ["--duration", "90"])
    status = relay.wait(60)
    c.check(status == 0, "once the next hop is up it delivers the 3 messages and exits 0 by itself",
            (status, relay.stderr()[-500:]))
    delivered = {r["queue_id"] for r in harness.log_records(relay.log_path) if r.get("type") == "Delivery"}
    c.check(delivered == set(ids), "a Delivery record for each", sorted(delivered))
    sink.terminate()
    harness.sink_result(sink, 30)


def scenario(c):
    relay_bin, sink_bin = sys.argv[1], sys.argv[2]
    work = harness.temp_dir("rr-daemon-")
    notify_protocol(c, relay_bin, work)
    logrotate(c, relay_bin, work)
    drain(c, relay_bin, sink_bin, work)
    drain_running(c, relay_bin, sink_bin, work, "SIGUSR2")
    drain_running(c, relay_bin, sink_bin, work, "POST /api/v1/drain")


if __name__ == "__main__":
    harness.run("daemon", scenario)
