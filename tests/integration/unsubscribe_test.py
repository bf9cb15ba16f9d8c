#!/usr/bin/env python3
# tests/integration/unsubscribe_test.py: one-click unsubscribe (RFC 8058, issue 18) end to end.
# A relay with --unsubscribe-url (its own --http endpoint), --unsubscribe-key, an RSA --dkim-key
# for shop.example (ringrelay-dkim-keygen) delivers to ringrelay-sink --save:
#   1. a single-recipient message from shop.example arrives with List-Unsubscribe: <URL/u/TOKEN>
#      and List-Unsubscribe-Post: List-Unsubscribe=One-Click, and its DKIM signature (h= naming
#      both) verifies with Python's dkim (/usr/bin/python3; the key's TXT record served by a
#      dnsfunc); a message with two recipients and one with its own List-Unsubscribe get none;
#   2. POST of the link with one character of the MAC changed, from 127.0.0.2 (outside
#      --http-networks): 400, and the recipient is still accepted at RCPT;
#   3. POST of the link as delivered, from 127.0.0.2: 200, then shop.example's next RCPT to the
#      recipient gets the suppression 550 and another tenant's 250; GET /api/v1/suppressions
#      lists it with source "unsubscribe";
#   4. --unsubscribe-url without --unsubscribe-key, or with a key under 32 octets, stops the start
#      with a line naming the flag.
import json
import os
import re
import smtplib
import subprocess
import sys
import urllib.parse

import harness
from dkim_test import saved_messages as saved
from queue_api_test import curl
from suppression_api_test import rcpt_reply

PY = "/usr/bin/python3"
VERIFY = r'''
import json, sys
import dkim
name, txt = sys.argv[1].encode(), sys.argv[2].encode()
def dnsfunc(q, timeout=5):
    return txt if q.rstrip(b".") == name else None
msg = open(sys.argv[3], "rb").read()
try:
    ok = dkim.verify(msg, dnsfunc=dnsfunc)
except dkim.DKIMException:
    ok = False
print(json.dumps(bool(ok)))
'''


def send(relay, sender, rcpts, tag, extra=""):
    msg = (f"From: {sender}\r\nTo: {rcpts[0]}\r\nSubject: unsubscribe test {tag}\r\nX-Tag: {tag}\r\n{extra}"
           f"Message-ID: <{tag}@shop.example>\r\n\r\nHello {tag}.\r\n")
    with smtplib.SMTP(relay.host, relay.port, timeout=30) as s:
        s.sendmail(sender, rcpts, msg.encode())


def header(msg, name):
    head = re.sub(r"\r\n[ \t]", " ", msg.split(b"\r\n\r\n", 1)[0].decode(errors="replace"))  # unfolded
    return [l.split(":", 1)[1].strip() for l in head.split("\r\n") if l.lower().startswith(name.lower() + ":")]


def scenario(c):
    relay_bin, sink_bin, keygen = sys.argv[1], sys.argv[2], sys.argv[3]
    harness.find_tool("curl")
    harness.require_bindable(["127.0.0.2"])
    if not os.path.exists(PY) or subprocess.run([PY, "-c", "import dkim"]).returncode != 0:
        raise harness.Skip("/usr/bin/python3 with dkim (Debian python3-dkim) is needed")
    work = harness.temp_dir("rr-unsubscribe-")
    pem = os.path.join(work, "sel.shop.example.pem")
    r = subprocess.run([keygen, "shop.example", "sel", "--out", pem], capture_output=True, text=True, timeout=120)
    c.require(r.returncode == 0, "ringrelay-dkim-keygen makes an RSA key", r.stderr)
    txt = "".join(re.findall(r'"([^"]*)"', r.stdout))
    key_file = os.path.join(work, "unsubscribe.key")
    with open(key_file, "w") as f:
        f.write(os.urandom(32).hex() + "\n")
    port, http_port = harness.free_port(), harness.free_port()
    base = f"http://127.0.0.1:{http_port}"
    save = harness.temp_dir("rr-unsubscribe-sink-")
    sink = harness.start_sink(sink_bin, port, ["--save", save, "--duration", "120"])
    common = ["--smarthost", f"127.0.0.1:{port}", "--http", f"127.0.0.1:{http_port}",
              "--http-networks", "127.0.0.1/32", "--dkim-key", f"shop.example:sel:{pem}",
              "--unsubscribe-url", base + "/"]
    relay = harness.Relay(relay_bin, common + ["--unsubscribe-key", key_file], shards=2).start()
    c.check(any("unsubscribe links: " + base + "/u/TOKEN" in l for l in relay.stderr().splitlines()),
            "the start-up line names the links", relay.stderr()[-400:])

    # --- 1. the fields, signed ----------------------------------------------------------------------
    send(relay, "news@shop.example", ["reader@dest.test"], "one")
    send(relay, "news@shop.example", ["r1@dest.test", "r2@dest.test"], "two")
    send(relay, "news@shop.example", ["own@dest.test"], "own", "List-Unsubscribe: <mailto:unsub@shop.example>\r\n")
    c.require(harness.wait_until(lambda: {"one", "two", "own"} <= set(saved(save)), 60), "the sink got every message",
              sorted(saved(save)))
    msgs = saved(save)
    one = msgs.get("one", b"")
    links = header(one, "List-Unsubscribe")
    c.check(len(links) == 1 and links[0].startswith(f"<{base}/u/") and links[0].endswith(">"),
            "a single-recipient message gets List-Unsubscribe: <URL/u/TOKEN>", links)
    c.check(header(one, "List-Unsubscribe-Post") == ["List-Unsubscribe=One-Click"],
            "and List-Unsubscribe-Post: List-Unsubscribe=One-Click", header(one, "List-Unsubscribe-Post"))
    sig = " ".join(header(one, "DKIM-Signature"))
    h = re.search(r"\bh=([^;]*)", sig.replace("\r\n", "").replace(" ", ""))
    signed = (h.group(1).lower().split(":") if h else [])
    c.check("list-unsubscribe" in signed and "list-unsubscribe-post" in signed,
            "the DKIM signature's h= names both fields", sig)
    path = os.path.join(work, "one.eml")
    with open(path, "wb") as f:
        f.write(one)
    r = subprocess.run([PY, "-c", VERIFY, "sel._domainkey.shop.example", txt, path], capture_output=True, text=True,
                       timeout=60)
    c.check(r.stdout.strip() == "true", "Python's dkim verifies the signature over the added fields",
            (r.stdout, r.stderr[-300:]))
    c.check(header(msgs.get("two", b""), "List-Unsubscribe") == [], "a message with two recipients gets none")
    c.check(header(msgs.get("own", b""), "List-Unsubscribe") == ["<mailto:unsub@shop.example>"]
            and header(msgs.get("own", b""), "List-Unsubscribe-Post") == [],
            "a message with its own List-Unsubscribe is left as it is", header(msgs.get("own", b""), "List-Unsubscribe"))

    # --- 2. a tampered link ---------------------------------------------------------------------------
    url = links[0][1:-1] if links else base + "/u/x"
    tampered = url[:-2] + ("A" if url[-2] != "A" else "B") + url[-1]
    status, body = curl(["-X", "POST", "--data", "List-Unsubscribe=One-Click", tampered], source="127.0.0.2")
    c.check(status == 400, "POST of a tampered link (from outside --http-networks): 400", (status, body))
    c.check(rcpt_reply(relay, "news@shop.example", "reader@dest.test")[0] == 250,
            "after it the recipient is still accepted")

    # --- 3. the link as delivered ----------------------------------------------------------------------
    status, body = curl(["-X", "POST", "--data", "List-Unsubscribe=One-Click", url], source="127.0.0.2")
    c.check(status == 200 and json.loads(body or "null") == {"unsubscribed": True},
            "POST of the delivered link from anyone: 200", (status, body))
    c.check(rcpt_reply(relay, "news@shop.example", "reader@dest.test")[0] == 550,
            "shop.example's next RCPT to the recipient: the suppression 550")
    c.check(rcpt_reply(relay, "news@other.example", "reader@dest.test")[0] == 250, "another tenant's: 250")
    status, body = curl([base + "/api/v1/suppressions?address=" + urllib.parse.quote("reader@dest.test")])
    rows = (json.loads(body or "{}") if status == 200 else {}).get("suppressions", [])
    c.check([(x.get("tenant"), x.get("source")) for x in rows] == [("shop.example", "unsubscribe")],
            "GET /api/v1/suppressions lists it with source unsubscribe", (status, body))
    status, body = curl([base + "/api/v1/suppressions"], source="127.0.0.2")
    c.check(status == 403, "the API itself stays closed to that client (403)", (status, body))
    relay.stop()
    sink.terminate()
    harness.sink_result(sink, 30)

    # --- 4. bad keys stop the start -------------------------------------------------------------------
    short = os.path.join(work, "short.key")
    with open(short, "w") as f:
        f.write("too-short\n")
    for extra, want in (([], "--unsubscribe-key"), (["--unsubscribe-key", short], "at least 32")):
        try:
            r = subprocess.run([relay_bin, "--spool", os.path.join(work, "spool-bad"), "--listen", "127.0.0.1:0"]
                               + common + extra, capture_output=True, text=True, timeout=20, stdin=subprocess.DEVNULL)
            rc, err = r.returncode, r.stderr
        except subprocess.TimeoutExpired as e:  # it started and ran: killed by subprocess.run
            rc, err = None, str(e.stderr or "")
        c.check(rc not in (0, None) and want in err, f"the start stops, naming {want}", (rc, err[-300:]))


if __name__ == "__main__":
    harness.run("unsubscribe", scenario)
