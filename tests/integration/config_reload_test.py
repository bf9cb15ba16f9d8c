#!/usr/bin/env python3
# tests/integration/config_reload_test.py: SIGHUP reads the config file again (issue 18).
#
# A relay with two shards runs from a JSON --config file (relay networks 127.0.0.1/32 only, a
# 10,000-byte size limit, a smarthost: sink A). The file is rewritten (relay networks
# 127.0.0.0/8, 50,000 bytes, sink B as smarthost, two flags that need a restart, and an
# --outbound-ca-file that does not exist) and the relay gets SIGHUP:
#   - its log names the flags applied and, in one line, those kept (until a restart, or the CA
#     file because it does not load: the shards would switch to it);
#   - every shard takes the new values (sixteen connections, spread over both shards by the
#     kernel, each see the new SIZE in EHLO; a 20,000-byte message is accepted);
#   - a client at 127.0.0.2 may now relay; new mail goes to sink B, not to sink A;
#   - the flags that need a restart did not change (the relay still listens where it did).
# Then two files that do not load (not JSON; a bad value beside a changed smarthost): each is
# refused whole, the log says why, and nothing changes (mail still goes to sink B).
#
# Arguments: ringrelay, ringrelay-sink. Loopback only (127.0.0.1, 127.0.0.2); every wait bounded.
import json
import os
import signal
import smtplib
import sys
import time

import harness


def write_config(path, values):
    with open(path + ".tmp", "w") as f:
        json.dump(values, f)
    os.replace(path + ".tmp", path)


def ehlo_size(relay, source="127.0.0.1"):
    """The SIZE a fresh connection's EHLO advertises (None if none)."""
    with smtplib.SMTP(relay.host, relay.port, timeout=10, source_address=(source, 0)) as s:
        s.ehlo("client.test")
        v = s.esmtp_features.get("size")
        return int(v) if v else None


def send(relay, size, tag, source="127.0.0.1"):
    """Sends one message of about `size` bytes; (code, text) of the end of data, or of the
    refusal (MAIL or RCPT)."""
    body = f"Subject: {tag}\r\nMessage-ID: <{tag}@client.test>\r\n\r\n" + ("x" * 70 + "\r\n") * (size // 72 + 1)
    with smtplib.SMTP(relay.host, relay.port, timeout=10, source_address=(source, 0)) as s:
        s.ehlo("client.test")
        code, text = s.mail("sender@example.org", [f"size={len(body)}"])
        if code != 250:
            return code, text
        code, text = s.rcpt("rcpt@example.net")
        if code != 250:
            return code, text
        return s.data(body.encode())


def wait_for_line(relay, text, timeout=15):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        for line in relay.stderr().splitlines():
            if text in line:
                return line
        time.sleep(0.1)
    return None


def sighup_for_line(c, relay, text, what):
    """SIGHUP, then (bounded) the newest stderr line holding `text` once a new one came."""
    before = relay.stderr().count(text)
    relay.signal(signal.SIGHUP)
    c.require(harness.wait_until(lambda: relay.stderr().count(text) > before, 15), what)
    return [line for line in relay.stderr().splitlines() if text in line][-1]


def saved_tags(save_dir):
    return [t.split("Subject: ", 1)[1].split("\r\n", 1)[0] for t in harness.saved_texts(save_dir) if "Subject: " in t]


def scenario(c):
    binary = harness.ringrelay_path()
    sink_binary = sys.argv[2] if len(sys.argv) > 2 else None
    if not sink_binary or not os.path.exists(sink_binary):
        raise harness.Skip("needs ringrelay-sink as the second argument")
    harness.require_bindable(["127.0.0.2"])
    work = harness.temp_dir()
    saves = {}
    ports = {}
    for name in ("a", "b"):
        saves[name] = os.path.join(work, "save-" + name)
        os.makedirs(saves[name])
        ports[name] = harness.free_port()
        harness.start_sink(sink_binary, ports[name], ["--save", saves[name]])

    config = os.path.join(work, "ringrelay.json")
    first = {"relay-networks": ["127.0.0.1/32"], "max-message-size": 10000,
             "smarthost": f"127.0.0.1:{ports['a']}", "retry-intervals": "1s"}
    write_config(config, first)
    relay = harness.Relay(binary, flags=["--config", config], shards=2, hold=False,
                          spool=os.path.join(work, "spool")).start()
    c.check(ehlo_size(relay) == 10000, "before the reload: EHLO SIZE 10000 (from the config file)")
    code, _ = send(relay, 20000, "big-before")
    c.check(code == 552, "before: a 20,000-byte message is refused (552)", f"got {code}")
    code, _ = send(relay, 2000, "before-1")
    c.check(code == 250, "before: a small message is accepted", f"got {code}")
    code, _ = send(relay, 2000, "denied-before", source="127.0.0.2")
    c.check(code in (550, 554), "before: 127.0.0.2 may not relay", f"got {code}")
    c.require(harness.wait_until(lambda: "before-1" in saved_tags(saves["a"]), 20),
              "before: the message reaches sink A (the smarthost in the file)")

    # --- the file changes; SIGHUP ------------------------------------------------------------
    second = dict(first)
    second.update({"relay-networks": ["127.0.0.0/8"], "max-message-size": 50000,
                   "smarthost": f"127.0.0.1:{ports['b']}",
                   "max-connections": 500, "body-cache-size": "128MiB",
                   "outbound-ca-file": os.path.join(work, "no-such-ca.pem")})
    write_config(config, second)
    relay.signal(signal.SIGHUP)
    applied = wait_for_line(relay, "reload: config: applied")
    c.require(applied is not None, "SIGHUP: the log says which flags were applied", relay.stderr()[-2000:])
    for flag in ("--relay-networks", "--max-message-size", "--smarthost"):
        c.check(flag in applied, f"the applied line names {flag}", applied)
    c.check("--max-connections" not in applied and "--body-cache-size" not in applied,
            "the applied line does not name the flags that need a restart", applied)
    kept = wait_for_line(relay, "reload: config: needs a restart")
    named = kept.split("kept as it was: ", 1)[1].split(", ") if kept and "kept as it was: " in kept else []
    c.check(named == ["--max-connections", "--body-cache-size", "--outbound-ca-file (the file does not load)"],
            "one line names the flags kept (two need a restart, a CA file that does not load), and only those",
            kept or "")

    # Every shard takes it at its next tick (about a second): wait, bounded, until a fresh
    # connection sees it, then sixteen connections (spread over both shards) must all see it.
    c.require(harness.wait_until(lambda: ehlo_size(relay) == 50000, 10), "after: EHLO SIZE 50000")
    sizes = [ehlo_size(relay) for _ in range(16)]
    c.check(all(s == 50000 for s in sizes), "after: sixteen new connections all see SIZE 50000 (both shards)",
            f"{sizes}")
    code, _ = send(relay, 20000, "big-after")
    c.check(code == 250, "after: a 20,000-byte message is accepted", f"got {code}")
    code, _ = send(relay, 2000, "allowed-after", source="127.0.0.2")
    c.check(code == 250, "after: 127.0.0.2 may relay (--relay-networks 127.0.0.0/8)", f"got {code}")
    c.require(harness.wait_until(lambda: {"big-after", "allowed-after"} <= set(saved_tags(saves["b"])), 20),
              "after: new mail goes to sink B (the new smarthost)", f"{saved_tags(saves['b'])}")
    c.check(saved_tags(saves["a"]) == ["before-1"], "after: sink A got nothing more", f"{saved_tags(saves['a'])}")
    c.check(relay.running() and ehlo_size(relay) == 50000, "the relay still listens where it did")

    # --- a file that is not JSON: refused whole ----------------------------------------------
    with open(config, "w") as f:
        f.write('{"max-message-size": 1000,')
    relay.signal(signal.SIGHUP)
    refused = wait_for_line(relay, "reload: the config does not load")
    c.check(refused is not None and "not valid JSON" in refused, "SIGHUP with broken JSON: refused, and why",
            refused or relay.stderr()[-1500:])
    # --- a bad value beside a changed smarthost: refused whole -------------------------------
    third = dict(second)
    third.update({"smarthost": f"127.0.0.1:{ports['a']}", "max-recipients": 0})
    write_config(config, third)
    last = sighup_for_line(c, relay, "reload: the config does not load", "SIGHUP with a bad value: refused")
    c.check("max-recipients" in last, "the refusal names the bad key", last)
    # A barrier: the second file again with one change. Had the refused file's smarthost been
    # applied, this reload would apply --smarthost too; it must name --max-recipients alone.
    fourth = dict(second)
    fourth["max-recipients"] = 900
    write_config(config, fourth)
    last = sighup_for_line(c, relay, "reload: config: applied", "SIGHUP with a good file again: applied")
    c.check("applied --max-recipients;" in last, "it applies --max-recipients alone: the refused files changed nothing",
            last)
    code, _ = send(relay, 20000, "after-refusals")
    c.check(code == 250, "after the refusals: 20,000 bytes still accepted", f"got {code}")
    c.require(harness.wait_until(lambda: "after-refusals" in saved_tags(saves["b"]), 20),
              "after the refusals: mail still goes to sink B")
    c.check(saved_tags(saves["a"]) == ["before-1"], "after the refusals: sink A got nothing", f"{saved_tags(saves['a'])}")
    c.check(relay.stop() == 0, "the relay stops cleanly (exit 0)")


if __name__ == "__main__":
    harness.run("config_reload", scenario)
