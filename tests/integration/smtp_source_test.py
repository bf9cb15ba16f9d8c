#!/usr/bin/env python3
# tests/integration/smtp_source_test.py: Postfix's smtp-source (an independent SMTP client)
# -> ringrelay (2 shards): 20 parallel sessions, 2000 messages of 2 KiB, several messages per
# connection (-d). smtp-source aborts on any unexpected reply, so its exit status 0 means
# every command got the reply it expected. Afterwards the spool must hold exactly 2000
# messages and the delivery log exactly 2000 Reception lines with the same ids.
# Skips (77) when smtp-source is not installed.
import subprocess

import harness

MESSAGES = 2000
SESSIONS = 20
LENGTH = 2048
SENDER, RECIPIENT = "sender@example.org", "rcpt@example.net"


def scenario(c):
    binary = harness.ringrelay_path()
    smtp_source = harness.find_tool("smtp-source", ["/usr/sbin/smtp-source"])
    relay = harness.Relay(binary, shards=2).start()
    host, port = relay.address()
    cmd = [smtp_source, "-c", "-d", "-s", str(SESSIONS), "-m", str(MESSAGES), "-l", str(LENGTH),
           "-f", SENDER, "-t", RECIPIENT, "-M", "source.test", f"{host}:{port}"]
    c.info("running " + " ".join(cmd))
    try:
        r = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, errors="replace",
                           timeout=90)
    except subprocess.TimeoutExpired:
        c.require(False, "smtp-source finished within 90s")
    last = r.stdout.strip().splitlines()[-1:] if r.stdout.strip() else []
    c.check(r.returncode == 0, "smtp-source exits 0 (every reply as expected)",
            f"status {r.returncode}; stderr {r.stderr.strip()[-500:]}")
    c.info(f"smtp-source last counter line: {last}")

    rc = relay.stop()
    c.check(rc == 0, "graceful stop exits 0", f"status {rc}")
    count, ids, problems = harness.list_spool(binary, relay.spool)
    c.check(count == MESSAGES, f"--list-spool shows exactly {MESSAGES} messages", f"got {count}")
    c.check(len(set(ids)) == len(ids), "queue ids are unique", f"{len(ids) - len(set(ids))} duplicates")
    c.check(problems.strip() == "", "--list-spool reports no spool problems", problems[-500:])

    log = relay.reception_log()
    c.check(len(log) == MESSAGES, f"delivery log has exactly {MESSAGES} Reception lines", f"got {len(log)}")
    c.check({e.get("queue_id") for e in log} == set(ids), "log queue ids = spool queue ids")
    c.check(all(e.get("sender") == SENDER and e.get("recipients") == [RECIPIENT] for e in log),
            "every Reception line has smtp-source's sender and recipient")

    records = harness.read_spool(relay.spool)
    c.check(len(records) == MESSAGES, "every record decodes with a valid checksum (independent reader)",
            f"{len(records)}")
    sizes = {len(rec.message) for rec in records.values()}
    c.check(all(len(rec.message) > LENGTH for rec in records.values()),
            f"every spooled message carries the {LENGTH}-byte payload", f"sizes {sorted(sizes)[:5]}")
    shards = {rec.segment.split("/")[-2] for rec in records.values()}
    c.info(f"messages per shard directory: "
           f"{ {s: sum(1 for r in records.values() if r.segment.split('/')[-2] == s) for s in sorted(shards)} }")


if __name__ == "__main__":
    harness.run("smtp_source", scenario)
