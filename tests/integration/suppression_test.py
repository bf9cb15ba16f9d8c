#!/usr/bin/env python3
# tests/integration/suppression_test.py: the suppression list (issue 16) end to end. The next
# hop is a private Postfix instance (harness.private_postfix; root) that refuses chosen
# recipients at RCPT with its own texts (check_recipient_access: gone@bad.test "550 5.1.1 ...
# User unknown", dead@bad.test "550 5.2.1 ... Mailbox disabled") and relays the rest to
# Postfix's smtp-sink. The relay sends everything there (--smarthost), with AUTH offered in
# plaintext (--auth-plaintext, a users file written here with hashlib.scrypt).
# 1. A hard bounce: tenant a.example (sender domain, no AUTH) sends to gone@bad.test and
#    ok@bad.test; gone bounces (Bounce record, Postfix's 5.1.1). a.example's next message to
#    gone@bad.test (any sender of the domain, any case of the address) is refused at RCPT with
#    exactly "550 5.1.1 <gone@bad.test>: recipient suppressed after a hard bounce on DATE"
#    (today, UTC), the other recipients of that message go through, a `Suppressed` record is
#    logged, and Postfix's maillog shows it never saw that RCPT; another tenant (b.example)
#    gets 250 for the same address and Postfix sees (and refuses) it.
# 2. The AUTH user is the tenant: alice, sending as x@a.example, is not refused for
#    gone@bad.test (a.example's list is not hers); her bounce from dead@bad.test (5.2.1, mailbox
#    disabled) puts it on alice's list only: her next message is refused, a.example's is not.
# 3. The offline commands refuse on a running relay's spool ("the relay is running on SPOOL
#    (pid N); stop it first"), and a second relay on the same spool refuses to start.
# 4. SIGKILL, then a restart on the same spool: the entries (and their dates) are still there.
# 5. Offline, stopped: --list-suppressed (all, one tenant), --unsuppress (then the address is
#    accepted again), --suppress (then refused, source "operator"), --unsuppress of an absent
#    entry fails.
# 6. --no-suppression: a suppressed address is accepted, no Suppressed record, and a hard bounce
#    under it adds nothing (the list is as before when suppression is back on).
# 7. --suppression-ttl 2s on a fresh spool: refused at once, accepted again after 2 s, and an
#    offline --list-suppressed with the same TTL lists nothing.
# Every wait is bounded; no timing assertions beyond the TTL's lower bound.
import base64
import datetime
import hashlib
import json
import os
import re
import signal
import smtplib
import subprocess
import time

import harness
from delivery_test import Sink, log_records, wait_for

WAIT = 60.0
TODAY = lambda: datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")  # noqa: E731


def phc(password, ln=10):
    salt = os.urandom(16)
    key = hashlib.scrypt(password.encode(), salt=salt, n=1 << ln, r=8, p=1, dklen=32, maxmem=1 << 30)
    nopad = lambda b: base64.b64encode(b).decode().rstrip("=")  # noqa: E731
    return f"$scrypt$ln={ln},r=8,p=1${nopad(salt)}${nopad(key)}"


def postfix_rejects(d, sender_domain, rcpt):
    """Postfix's 'reject: RCPT' lines for mail from `sender_domain` to `rcpt`."""
    return [l for l in harness.maillog(d).splitlines()
            if "reject: RCPT" in l and f"to=<{rcpt}>" in l and re.search(rf"from=<[^>]*@{re.escape(sender_domain)}>", l)]


class Session:
    """One SMTP transaction over its own connection: replies to each RCPT, then DATA's."""

    def __init__(self, relay, sender, rcpts, login=None):
        self.rcpt_replies = {}
        self.data_reply = None
        s = smtplib.SMTP(relay.host, relay.port, timeout=30)
        try:
            s.ehlo("client.suppression.test")
            if login:
                s.login(*login)
            code, text = s.mail(sender)
            assert code == 250, (code, text)
            for r in rcpts:
                self.rcpt_replies[r] = s.rcpt(r)
            if any(code == 250 for code, _ in self.rcpt_replies.values()):
                self.data_reply = s.data(f"From: {sender}\r\nSubject: suppression test\r\n\r\nhello\r\n".encode())
            else:
                s.rset()
        finally:
            try:
                s.quit()
            except (OSError, smtplib.SMTPException):
                s.close()

    def text(self, rcpt):
        code, text = self.rcpt_replies[rcpt]
        return f"{code} {text.decode(errors='replace')}"


def suppressed_reply(rcpt, date):
    return f"550 5.1.1 <{rcpt}>: recipient suppressed after a hard bounce on {date}"


def bounces_for(relay, rcpt):
    return [r for r in log_records(relay, "Bounce") if r.get("recipient") == rcpt]


def journal_holds(spool, text):
    d = os.path.join(spool, "suppression")
    if not os.path.isdir(d):
        return False
    for n in os.listdir(d):
        with open(os.path.join(d, n), "rb") as f:
            if text.encode() in f.read():
                return True
    return False


def offline(binary, spool, *args):
    r = subprocess.run([binary, "--spool", spool, *args], stdin=subprocess.DEVNULL, capture_output=True,
                       text=True, errors="replace", timeout=60)
    return r.returncode, r.stdout, r.stderr


def listed(binary, spool, *args):
    """{(tenant, address): (since, source)} from --list-suppressed, and its first line."""
    code, out, err = offline(binary, spool, "--list-suppressed", *args)
    lines = out.splitlines()
    entries = {}
    for line in lines[1:]:
        f = line.split()
        entries[(f[0], f[1])] = (f[2], f[3])
    return code, (lines[0] if lines else ""), entries, err


def scenario(c):
    binary = harness.ringrelay_path()
    if os.geteuid() != 0:
        harness.missing("a private Postfix instance needs root")
    harness.find_tool("postfix", ["/usr/sbin/postfix"])
    work = harness.temp_dir("rr-supp-")
    os.chmod(work, 0o755)  # Postfix's own users must reach its queue and the access table
    sink = Sink()
    access = os.path.join(work, "rcpt_access")
    with open(access, "w") as f:
        f.write("gone@bad.test 550 5.1.1 User unknown\n"
                "dead@bad.test 550 5.2.1 Mailbox disabled\n"
                "full@bad.test 552 5.2.2 Mailbox full\n")
    os.chmod(access, 0o644)
    main_cf = (f"relayhost = [127.0.0.1]:{sink.port}\n"
               f"smtpd_recipient_restrictions = check_recipient_access texthash:{access}, permit_mynetworks, reject\n"
               "smtpd_tls_security_level = none\n")
    pf_dir, pf_port = harness.private_postfix(work, "suppression", main_cf)
    users = os.path.join(work, "users")
    with open(users, "w") as f:
        f.write(f"alice:{phc('secret')}\n")
    spool = os.path.join(work, "spool")
    flags = ["--smarthost", f"127.0.0.1:{pf_port}", "--retry-intervals", "1s", "--auth-users", users,
             "--auth-plaintext"]

    relay = harness.Relay(binary, flags, spool=spool, shards=2).start()
    c.check("suppression: 0 entries in " in relay.stderr(), "start-up line: an empty suppression list",
            relay.stderr()[-600:])

    # 1. A hard bounce, then the tenant's next RCPT to that address is refused.
    first = Session(relay, "news@a.example", ["gone@bad.test", "ok@bad.test", "full@bad.test"])
    c.check(first.rcpt_replies["gone@bad.test"][0] == 250, "a.example: gone@bad.test accepted before any bounce",
            first.text("gone@bad.test"))
    if wait_for(lambda: bounces_for(relay, "gone@bad.test") and bounces_for(relay, "full@bad.test"),
                "the bounces from Postfix are logged", c):
        b = bounces_for(relay, "gone@bad.test")[0]
        c.check("550 5.1.1 <gone@bad.test>: Recipient address rejected: User unknown" in (b.get("reply") or ""),
                "the Bounce record carries Postfix's 5.1.1", b)
    wait_for(lambda: journal_holds(spool, "gone@bad.test"), "the entry is in the journal file", c)
    date = TODAY()
    wait_for(lambda: postfix_rejects(pf_dir, "a.example", "gone@bad.test"), "Postfix logged its refusal", c)
    rejects_before = len(postfix_rejects(pf_dir, "a.example", "gone@bad.test"))
    c.check(rejects_before == 1, "Postfix refused a.example's gone@bad.test once", rejects_before)

    second = Session(relay, "billing@A.Example", ["GONE@bad.test", "other@bad.test", "full@bad.test"])
    c.check(second.text("GONE@bad.test") == suppressed_reply("GONE@bad.test", date),
            "a.example's next RCPT to the address gets the exact 550 5.1.1 (any case, another sender of the "
            "domain)", second.text("GONE@bad.test"))
    c.check(second.rcpt_replies["other@bad.test"][0] == 250 and second.data_reply and second.data_reply[0] == 250,
            "the message's other recipients go through", (second.rcpt_replies, second.data_reply))
    c.check(second.rcpt_replies["full@bad.test"][0] == 250,
            "a mailbox-full bounce (5.2.2) does not suppress", second.text("full@bad.test"))
    recs = []
    if wait_for(lambda: log_records(relay, "Suppressed"), "a Suppressed record", c):
        recs = log_records(relay, "Suppressed")
        r = recs[0]
        c.check(r.get("recipient") == "GONE@bad.test" and r.get("sender") == "billing@A.Example" and
                r.get("tenant") == "a.example" and r.get("auth") is None and r.get("client") == "127.0.0.1" and
                r.get("reply") == suppressed_reply("GONE@bad.test", date) and
                str(r.get("suppressed_since", "")).startswith(date) and isinstance(r.get("shard"), int),
                "the Suppressed record: recipient, sender, tenant, client, reply, since", r)
    time.sleep(0.5)
    c.check(len(postfix_rejects(pf_dir, "a.example", "gone@bad.test")) == rejects_before,
            "the next hop never saw the suppressed RCPT", postfix_rejects(pf_dir, "a.example", "gone@bad.test"))

    other = Session(relay, "hello@b.example", ["gone@bad.test"])
    c.check(other.rcpt_replies["gone@bad.test"][0] == 250 and other.data_reply and other.data_reply[0] == 250,
            "another tenant (b.example) is not refused for the same address", other.text("gone@bad.test"))
    wait_for(lambda: postfix_rejects(pf_dir, "b.example", "gone@bad.test"),
             "b.example's message reached the next hop (Postfix refused its RCPT)", c)

    # 2. The AUTH user is the tenant.
    alice = Session(relay, "x@a.example", ["gone@bad.test", "dead@bad.test"], login=("alice", "secret"))
    c.check(alice.rcpt_replies["gone@bad.test"][0] == 250,
            "alice (AUTH) sending as x@a.example: a.example's list does not apply", alice.text("gone@bad.test"))
    wait_for(lambda: bounces_for(relay, "dead@bad.test"), "alice's dead@bad.test bounced (5.2.1)", c)
    wait_for(lambda: journal_holds(spool, "dead@bad.test"), "alice's entry is in the journal file", c)
    alice2 = Session(relay, "y@c.example", ["dead@bad.test", "ok2@bad.test"], login=("alice", "secret"))
    c.check(alice2.text("dead@bad.test") == suppressed_reply("dead@bad.test", date),
            "alice's next message to dead@bad.test is refused (5.2.1 mailbox disabled is a hard bounce)",
            alice2.text("dead@bad.test"))
    anon = Session(relay, "z@a.example", ["dead@bad.test"])
    c.check(anon.rcpt_replies["dead@bad.test"][0] == 250, "a.example (no AUTH) may still send to dead@bad.test",
            anon.text("dead@bad.test"))
    if wait_for(lambda: len(log_records(relay, "Suppressed")) >= 2, "alice's Suppressed record", c):
        r = log_records(relay, "Suppressed")[-1]
        c.check(r.get("auth") == "alice" and r.get("tenant") == "alice", "it names alice as AUTH user and tenant", r)

    # 3. Refusals while the relay runs.
    for args in (["--list-suppressed"], ["--suppress", "a.example:x@bad.test"],
                 ["--unsuppress", "a.example:gone@bad.test"]):
        code, out, err = offline(binary, spool, *args)
        c.check(code == 1 and f"the relay is running on {spool} (pid {relay.proc.pid}); stop it first" in err,
                f"{args[0]} refuses on a running relay's spool", (code, out, err))
    second_relay = harness.Relay(binary, flags, spool=spool)
    try:
        second_relay.start(timeout=20)
        c.check(False, "a second relay on the same spool refuses to start")
    except RuntimeError as e:
        c.check(f"the relay is running on {spool} (pid {relay.proc.pid}); two relays cannot share a spool" in str(e),
                "a second relay on the same spool refuses to start, naming the first's pid", str(e)[-400:])

    # 4. SIGKILL and restart: the entries survive.
    relay.kill()
    relay = harness.Relay(binary, flags, spool=spool, shards=1).start()
    c.check(re.search(r"suppression: [3-9] entries in ", relay.stderr()) is not None,
            "after SIGKILL the restarted relay loaded the entries", relay.stderr()[-800:])
    again = Session(relay, "news@a.example", ["gone@bad.test"])
    c.check(again.text("gone@bad.test") == suppressed_reply("gone@bad.test", date),
            "after SIGKILL + restart a.example is still refused, with the bounce's date", again.text("gone@bad.test"))
    again = Session(relay, "w@d.example", ["dead@bad.test"], login=("alice", "secret"))
    c.check(again.text("dead@bad.test") == suppressed_reply("dead@bad.test", date),
            "... and so is alice", again.text("dead@bad.test"))
    c.check(relay.stop() == 0, "the relay stops cleanly")

    # 5. Offline commands on the stopped spool.
    code, head, entries, err = listed(binary, spool)
    c.check(code == 0 and {("a.example", "gone@bad.test"), ("b.example", "gone@bad.test"),
                           ("alice", "dead@bad.test")} <= set(entries) and
            ("a.example", "full@bad.test") not in entries and
            re.match(rf"{len(entries)} suppressed address\(es\) in ", head) is not None,
            "--list-suppressed lists every tenant's entries (not the mailbox-full one)", (head, entries, err))
    c.check(all(src == "hard-bounce" and since.startswith(date) for since, src in entries.values()),
            "each listed with its date and source", entries)
    code, head, entries, err = listed(binary, spool, "alice")
    c.check(code == 0 and set(entries) == {("alice", "dead@bad.test"), ("alice", "gone@bad.test")} and
            head.endswith(" for alice"),
            "--list-suppressed alice lists alice's only", (head, entries))
    code, out, err = offline(binary, spool, "--unsuppress", "A.example:Gone@Bad.Test")
    c.check(code == 0, "--unsuppress a.example:gone@bad.test", (out, err))
    code, out, err = offline(binary, spool, "--unsuppress", "a.example:gone@bad.test")
    c.check(code == 1 and "not on a.example's suppression list" in err, "--unsuppress of an absent entry fails",
            (code, err))
    code, out, err = offline(binary, spool, "--suppress", "a.example:manual@bad.test")
    c.check(code == 0, "--suppress a.example:manual@bad.test", (out, err))
    code, out, err = offline(binary, spool, "--suppress", "no-colon")
    c.check(code == 2 and "expected TENANT:ADDRESS" in err, "--suppress without TENANT:ADDRESS is refused", err)
    code, head, entries, err = listed(binary, spool, "a.example")
    # (dead@bad.test: a.example's own message to it in part 2 bounced too.)
    c.check(set(entries) == {("a.example", "manual@bad.test"), ("a.example", "dead@bad.test")} and
            entries[("a.example", "manual@bad.test")][1] == "operator",
            "the list after --unsuppress and --suppress", entries)
    relay = harness.Relay(binary, flags, spool=spool).start()
    back = Session(relay, "news@a.example", ["gone@bad.test", "manual@bad.test"])
    c.check(back.rcpt_replies["gone@bad.test"][0] == 250, "unsuppressed: accepted again", back.text("gone@bad.test"))
    c.check(back.text("manual@bad.test") == suppressed_reply("manual@bad.test", date),
            "--suppress: refused", back.text("manual@bad.test"))
    wait_for(lambda: len([r for r in bounces_for(relay, "gone@bad.test") if r.get("sender") == "news@a.example"]) >= 2,
             "a.example's gone@bad.test bounced again", c)
    c.check(relay.stop() == 0, "the relay stops cleanly (third run)")

    # 6. --no-suppression.
    suppressed_before = len(log_records(relay, "Suppressed"))
    relay = harness.Relay(binary, flags + ["--no-suppression"], spool=spool).start()
    c.check("suppression: off (--no-suppression)" in relay.stderr(), "start-up line: suppression off",
            relay.stderr()[-600:])
    off = Session(relay, "news@a.example", ["manual@bad.test"])
    off_alice = Session(relay, "news@a.example", ["dead@bad.test"], login=("alice", "secret"))
    c.check(off.rcpt_replies["manual@bad.test"][0] == 250 and off_alice.rcpt_replies["dead@bad.test"][0] == 250,
            "--no-suppression: suppressed addresses are accepted", (off.rcpt_replies, off_alice.rcpt_replies))
    Session(relay, "news@e.example", ["gone@bad.test"])
    wait_for(lambda: any(r.get("sender") == "news@e.example" for r in bounces_for(relay, "gone@bad.test")),
             "--no-suppression: e.example's message bounced", c)
    c.check(relay.stop() == 0, "the relay stops cleanly (--no-suppression)")
    c.check(len(log_records(relay, "Suppressed")) == suppressed_before, "--no-suppression: no Suppressed record")
    code, head, entries, err = listed(binary, spool)
    c.check(not any(t == "e.example" for t, _ in entries) and ("alice", "dead@bad.test") in entries,
            "--no-suppression added nothing and kept the list", entries)

    # 7. --suppression-ttl 2s, on a fresh spool.
    ttl_spool = os.path.join(harness.temp_dir("rr-supp-ttl-"), "spool")
    relay = harness.Relay(binary, flags + ["--suppression-ttl", "2s"], spool=ttl_spool).start()
    Session(relay, "news@t.example", ["gone@bad.test"])
    wait_for(lambda: bounces_for(relay, "gone@bad.test"), "ttl: the bounce", c)
    added = time.monotonic()
    now = Session(relay, "news@t.example", ["gone@bad.test"])
    # An entry lives at least its TTL (its time is rounded up to the second: at most 1 s more).
    c.check(now.text("gone@bad.test") == suppressed_reply("gone@bad.test", TODAY()), "ttl: refused at first",
            now.text("gone@bad.test"))
    time.sleep(max(0.0, added + 3.2 - time.monotonic()))
    later = Session(relay, "news@t.example", ["gone@bad.test"])
    c.check(later.rcpt_replies["gone@bad.test"][0] == 250, "ttl: accepted once the entry is 2 s (+1) old",
            later.text("gone@bad.test"))
    c.check(relay.stop() == 0, "the relay stops cleanly (ttl)")
    time.sleep(3.2)  # the second bounce's entry expires too
    code, head, entries, err = listed(binary, ttl_spool, "--suppression-ttl", "2s")
    c.check(code == 0 and not entries, "ttl: --list-suppressed --suppression-ttl 2s lists nothing", (head, entries))
    code, head, entries, err = listed(binary, ttl_spool, "--suppression-ttl", "0")
    c.check(code == 0 and ("t.example", "gone@bad.test") in entries,
            "ttl: with --suppression-ttl 0 (never) the entry is listed", (head, entries))

    subprocess.run(["postfix", "-c", os.path.join(pf_dir, "etc"), "stop"], capture_output=True, timeout=60)
    sink.stop()


if __name__ == "__main__":
    harness.run("suppression", scenario)
