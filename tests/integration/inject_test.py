#!/usr/bin/env python3
# tests/integration/inject_test.py: POST /api/v1/inject (issue 18) with curl against a relay that
# delivers to ringrelay-sink (--smarthost, --save), argv: ringrelay, ringrelay-sink,
# ringrelay-dkim-keygen, ringrelay-powerloss.
#   1. A message given whole (LF line ends): 200 with success_count 1 and the queue id; the sink
#      receives it with CRLF line ends, the relay's Received: "with HTTP", a Date: and a
#      Message-ID: added; the Reception record says "protocol": "HTTP" and the queue id.
#   2. A message built from parts (text, html, an attachment of random bytes, a header): the
#      delivered message parses with Python's email package: multipart/mixed holding
#      multipart/alternative (text/plain and text/html, the texts given) and the attachment with
#      its name and the very bytes; its DKIM signature (--dkim-key example.org) verifies with
#      dkimpy (/usr/bin/python3, python3-dkim) against the key ringrelay-dkim-keygen printed.
#   3. Policy as SMTP's: a recipient outside --relay-domains (the HTTP client is not in
#      --relay-networks here) and one on the sender domain's suppression list (--suppress
#      offline before the start) are in failed_recipients, the others delivered; all refused:
#      422, nothing queued; over --max-message-size: 413.
#   4. Errors: 400 naming the field, 405, 403 outside --http-networks.
#   5. 200 means durable: ringrelay-powerloss --hold (writes reach the file only when an
#      fdatasync covering them completes), one injection, SIGKILL as soon as curl has the 200,
#      restart on the same spool with the smarthost: the message is delivered. And the proof
#      that this part can fail: the same with RINGRELAY_TEST_NONDURABLE=1 (fdatasync returns at
#      once, a batch reaches the file one batch later) loses the message.
import base64
import email
import email.policy
import json
import os
import random
import re
import subprocess
import sys

import harness
from dkim_test import keygen

PY = "/usr/bin/python3"


def curl(url, body, method="POST", source=None):
    extra = ["--interface", source] if source else []
    args = ["curl", "-s", "-S", "-m", "30", "-w", "\n%{http_code}", "-X", method] + extra
    if body is not None:
        args += ["-H", "Content-Type: application/json", "--data-binary", "@-"]
    r = subprocess.run(args + [url], input=(body or "").encode(), capture_output=True, timeout=40)
    text, _, status = r.stdout.decode("utf-8", "replace").rpartition("\n")
    try:
        doc = json.loads(text)
    except ValueError:
        doc = None
    return int(status or 0), doc, text


def saved(save_dir):
    """The messages the sink saved, as bytes (its X-Sink-* lines removed), in file order."""
    out = []
    for name in sorted(os.listdir(save_dir)):
        if name.endswith(".eml"):
            data = open(os.path.join(save_dir, name), "rb").read()
            size = int(re.search(rb"X-Sink-Size: (\d+)\r\n", data).group(1))
            out.append(data[len(data) - size:])
    return out


def with_tag(save_dir, tag):
    for m in saved(save_dir):
        if tag.encode() in m:
            return m
    return None


def inject_body(recipients, content, sender="app@example.org"):
    return json.dumps({"envelope_sender": sender, "recipients": [{"email": r} for r in recipients],
                       "content": content})


def durable_round(c, powerloss, sink_bin, nondurable):
    """Section 5: one injection into ringrelay-powerloss --hold, SIGKILL after the 200, restart
    with the smarthost. Returns whether the message was delivered."""
    spool = os.path.join(harness.temp_dir("rr-inject-crash-"), "spool")
    http_port = harness.free_port()
    url = f"http://127.0.0.1:{http_port}/api/v1/inject"
    env_flags = ["--http", f"127.0.0.1:{http_port}", "--http-networks", "127.0.0.1/32"]
    if nondurable:
        os.environ["RINGRELAY_TEST_NONDURABLE"] = "1"
    try:
        relay = harness.Relay(powerloss, env_flags, spool=spool, hold=True).start()
    finally:
        os.environ.pop("RINGRELAY_TEST_NONDURABLE", None)
    tag = f"crash-{'nondurable' if nondurable else 'durable'}-{random.randrange(1 << 30)}"
    status, doc, text = curl(url, inject_body(["r@dest.test"], f"Subject: {tag}\nX-Tag: {tag}\n\nsurvives\n"))
    relay.kill()
    c.require(status == 200 and doc and doc.get("queue_id"), f"{'non-durable' if nondurable else 'durable'} round: 200",
              (status, text))
    port = harness.free_port()
    save = harness.temp_dir("rr-inject-crash-sink-")
    sink = harness.start_sink(sink_bin, port, ["--save", save, "--duration", "60"])
    again = harness.Relay(powerloss, ["--smarthost", f"127.0.0.1:{port}"], spool=spool).start()
    delivered = harness.wait_until(lambda: with_tag(save, tag) is not None, 20)
    again.stop()
    sink.terminate()
    harness.sink_result(sink, 30)
    return delivered


def scenario(c):
    relay_bin, sink_bin, keygen_bin, powerloss_bin = sys.argv[1:5]
    harness.find_tool("curl")
    work = harness.temp_dir("rr-inject-")
    key, (record_name, record_txt) = keygen(keygen_bin, work, "example.org", "inj", "rsa")
    port = harness.free_port()
    save = harness.temp_dir("rr-inject-sink-")
    sink = harness.start_sink(sink_bin, port, ["--save", save, "--duration", "200"])
    http_port = harness.free_port()
    base = f"http://127.0.0.1:{http_port}"
    url = base + "/api/v1/inject"
    spool = os.path.join(work, "spool")
    r = subprocess.run([relay_bin, "--spool", spool, "--suppress", "example.org:gone@dest.test"],
                       capture_output=True, text=True, timeout=60)
    c.require(r.returncode == 0, "--suppress example.org:gone@dest.test before the start", r.stderr)
    relay = harness.Relay(relay_bin, ["--smarthost", f"127.0.0.1:{port}", "--http", f"127.0.0.1:{http_port}",
                                      "--http-networks", "127.0.0.1/32", "--relay-networks", "10.255.0.0/16",
                                      "--relay-domains", "dest.test", "--dkim-key", f"example.org:inj:{key}",
                                      "--max-message-size", "200000"], spool=spool).start()
    records = lambda kind: [x for x in harness.log_records(relay.log_path) if x.get("type") == kind]  # noqa: E731

    # --- 1. a message given whole ---------------------------------------------------------------
    raw = "From: App <app@example.org>\nTo: r@dest.test\nSubject: raw\nX-Tag: raw-1\n\nline one\nline two\n"
    status, doc, text = curl(url, inject_body(["r@dest.test"], raw))
    c.check(status == 200 and doc and doc.get("success_count") == 1 and doc.get("fail_count") == 0
            and doc.get("failed_recipients") == [] and re.fullmatch(r"[0-9A-F]{16}", str(doc.get("queue_id"))),
            "a message given whole: 200, one recipient, the queue id", (status, text))
    qid = (doc or {}).get("queue_id")
    c.require(harness.wait_until(lambda: with_tag(save, "raw-1") is not None, 30), "it reaches the sink",
              relay.stderr()[-500:])
    m = with_tag(save, "raw-1")
    head, _, body = m.partition(b"\r\n\r\n")
    c.check(body == b"line one\r\nline two\r\n" and b"\n" not in m.replace(b"\r\n", b""),
            "delivered with CRLF line ends, the body as given", m[-200:])
    c.check(re.search(rb"Received: from 127\.0\.0\.1 \(127\.0\.0\.1\)\r\n\tby mx\.test\.invalid \(ringrelay\) with HTTP id "
                      + qid.encode(), head) is not None, "a Received: field \"with HTTP\" and the queue id", head[:600])
    c.check(re.search(rb"\r\nDate: [A-Z][a-z]{2}, \d\d [A-Z][a-z]{2} \d{4} ", head) is not None
            and (b"\r\nMessage-ID: <" + qid.encode() + b"@mx.test.invalid>\r\n") in head,
            "Date: and Message-ID: added", head[:800])
    rec = harness.reception_record(relay, qid)
    c.check(rec is not None and rec.get("protocol") == "HTTP" and rec.get("client") == "127.0.0.1"
            and rec.get("sender") == "app@example.org" and rec.get("recipients") == ["r@dest.test"]
            and len(rec.get("dkim") or []) == 1, "the Reception record: protocol HTTP, client, envelope, signed", rec)

    # --- 2. a message built from parts ------------------------------------------------------------
    blob = random.Random(18).randbytes(5000)
    text_body = "Grüße,\nthe text part.\n"
    html_body = "<p>the <b>html</b> part</p>\n"
    parts = {"from": "Zoë App <app@example.org>", "subject": "Built ✓", "text_body": text_body, "html_body": html_body,
             "attachments": [{"file_name": "report 1.bin", "content_type": "application/octet-stream",
                              "data": base64.b64encode(blob).decode()}],
             "headers": {"To": "r@dest.test", "X-Tag": "built-2"}}
    status, doc, text = curl(url, inject_body(["r@dest.test"], parts))
    c.check(status == 200 and doc and doc.get("success_count") == 1, "a message built from parts: 200", (status, text))
    c.require(harness.wait_until(lambda: with_tag(save, "built-2") is not None, 30), "it reaches the sink")
    m = with_tag(save, "built-2")
    c.check(all(len(line) <= 998 for line in m.split(b"\r\n")) and b"\n" not in m.replace(b"\r\n", b""),
            "every line CRLF and at most 998 octets", None)
    msg = email.message_from_bytes(m, policy=email.policy.default)
    kinds = [p.get_content_type() for p in msg.walk()]
    c.check(kinds == ["multipart/mixed", "multipart/alternative", "text/plain", "text/html", "application/octet-stream"],
            "multipart/mixed: multipart/alternative (text, html), then the attachment", kinds)
    c.check(str(msg["Subject"]) == "Built ✓" and msg["From"].addresses[0].display_name == "Zoë App"
            and msg["From"].addresses[0].addr_spec == "app@example.org" and msg["MIME-Version"] == "1.0",
            "Subject: and From: decode to what was given", (msg["Subject"], msg["From"]))
    # (The parts' line ends are CRLF as sent; the texts were given with LF.)
    texts = {p.get_content_type(): p.get_content().replace("\r\n", "\n") for p in msg.walk()
             if p.get_content_maintype() == "text"}
    c.check(texts.get("text/plain") == text_body and texts.get("text/html") == html_body,
            "the text and html parts hold the texts given", texts)
    attachment = [p for p in msg.walk() if p.get_content_type() == "application/octet-stream"]
    c.check(attachment and attachment[0].get_filename() == "report 1.bin" and attachment[0].get_content() == blob,
            "the attachment: its name and the very bytes", attachment and attachment[0].get_filename())
    if os.path.exists(PY) and subprocess.run([PY, "-c", "import dkim"]).returncode == 0:
        path = os.path.join(work, "built.eml")
        with open(path, "wb") as f:
            f.write(m)
        r = subprocess.run([PY, "-c", "import dkim,sys; m=open(sys.argv[1],'rb').read(); "
                            "print(dkim.verify(m, dnsfunc=lambda q, timeout=5: sys.argv[2].encode()))", path, record_txt],
                           capture_output=True, text=True, timeout=60)
        c.check(r.stdout.strip() == "True" and b"DKIM-Signature:" in m,
                "its DKIM signature (d=example.org) verifies with dkimpy", r.stdout + r.stderr[-300:])
    else:
        print("inject_test: /usr/bin/python3 has no dkim module; the DKIM check is skipped")

    # --- 3. policy ---------------------------------------------------------------------------------
    status, doc, text = curl(url, inject_body(["ok@dest.test", "x@elsewhere.test", "gone@dest.test"],
                                              "Subject: policy\nX-Tag: policy-3\n\nx\n"))
    c.check(status == 200 and doc and doc.get("success_count") == 1 and doc.get("fail_count") == 2
            and doc.get("failed_recipients") == ["x@elsewhere.test", "gone@dest.test"],
            "outside --relay-domains and suppressed: failed_recipients, the other accepted", (status, text))
    c.check("relay access denied" in str((doc or {}).get("errors")) and "suppressed" in str((doc or {}).get("errors")),
            "errors says why for each", doc)
    c.require(harness.wait_until(lambda: with_tag(save, "policy-3") is not None, 30), "the accepted one is delivered")
    c.check(b"X-Sink-Rcpt" not in with_tag(save, "policy-3") and
            any(r.get("recipient") == "gone@dest.test" for r in records("Suppressed")),
            "a Suppressed record for the suppressed recipient", records("Suppressed"))
    before = len(records("Reception"))
    status, doc, text = curl(url, inject_body(["x@elsewhere.test"], "Subject: none\n\nx\n"))
    c.check(status == 422 and doc and doc.get("success_count") == 0 and doc.get("queue_id") is None
            and doc.get("failed_recipients") == ["x@elsewhere.test"] and doc.get("error"),
            "every recipient refused: 422, no queue id", (status, text))
    status, doc, text = curl(url, inject_body(["r@dest.test"], "Subject: big\n\n" + ("y" * 900 + "\n") * 250))
    c.check(status == 413 and "--max-message-size" in str((doc or {}).get("error")), "over --max-message-size: 413",
            (status, text))
    c.check(len(records("Reception")) == before, "nothing queued for either", len(records("Reception")) - before)

    # --- 4. errors -----------------------------------------------------------------------------------
    status, doc, text = curl(url, inject_body(["r@dest.test"], {"from": "app@example.org", "text_body": "x",
                                                                "headers": {"Content-Type": "text/plain"}}))
    c.check(status == 400 and (doc or {}).get("error") == "\"content.headers.Content-Type\": made by the relay",
            "a header the relay makes: 400 naming the field", (status, text))
    status, doc, text = curl(url, "{\"envelope_sender\": \"a@example.org\"")
    c.check(status == 400 and "not valid JSON" in str((doc or {}).get("error")), "bad JSON: 400", (status, text))
    status, doc, text = curl(url, None, method="GET")
    c.check(status == 405, "GET: 405", (status, text))
    status, doc, text = curl(url, inject_body(["r@dest.test"], "Subject: x\n\nx\n"), source="127.0.0.2")
    c.check(status == 403, "a client outside --http-networks: 403", (status, text))
    relay.stop()
    sink.terminate()
    harness.sink_result(sink, 30)

    # --- 5. 200 means durable -----------------------------------------------------------------------
    c.check(durable_round(c, powerloss_bin, sink_bin, nondurable=False),
            "SIGKILL right after the 200, restart: the message is delivered", None)
    c.check(not durable_round(c, powerloss_bin, sink_bin, nondurable=True),
            "the same with a relay that answers before its fdatasync (RINGRELAY_TEST_NONDURABLE): lost "
            "(the durability check can fail)", None)


if __name__ == "__main__":
    harness.run("inject", scenario)
