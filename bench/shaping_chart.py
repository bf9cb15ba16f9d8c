#!/usr/bin/env python3
# bench/shaping_chart.py: traffic shaping against a rate-enforcing receiver, in one run (issue
# 17's chart). Three relays, each with MESSAGES (default 3,000) messages of 2 KiB queued at once,
# each delivering to its own
#   ringrelay-sink --max-connections-per-ip 5 --max-rate-per-ip 200
# (the same limits; one sink per relay, so their per-IP counters do not mix), at the same time:
#   (a) ringrelay with its controller: no rule for the site (--no-default-shaping), the closed
#       loop on (the default);
#   (b) ringrelay without it: a rules file {"default": {"adaptive": false}}, so the closed loop
#       is off and the default rule's limits stay as configured (connection_limit 16 from
#       --max-connections-per-destination, no message rate): the relay pushes as hard as its
#       connections allow. (A greeting refused with 421 still defers no mail: that is the
#       engine's, not the controller's.)
#   (c) Postfix relaying to the same sink configuration (relayhost; its own concurrency
#       feedback, default limits), queue_run_delay/minimal_backoff_time/maximal_backoff_time 1s
#       as ringrelay's --retry-intervals 1s.
# ringrelay spools its messages under --hold and restarts without it; Postfix takes them into its
# hold queue (smtpd_end_of_data_restrictions = check_client_access static:hold), and
# `postsuper -H ALL` releases them (to its deferred queue, scanned every second). The sinks start together, then all three
# relays are let go. Per second, from each sink's own progress line (one a second on stderr,
# cumulative counts): delivered (messages that got 250) and refused (MAIL commands refused for the
# rate + connections refused at the greeting). Each run ends when its sink has every message or
# after DURATION seconds (default 120).
#
#   flock /tmp/rr-build.lock bench/shaping_chart.py      (root, for Postfix; loopback only)
#   env: MESSAGES, DURATION, BUILD_DIR, RESULTS_DIR
# Output: RESULTS_DIR/shaping-chart.csv (second, system, delivered, refused),
# RESULTS_DIR/shaping-chart.svg (one panel per system; written here, no plotting library) and a
# Markdown table on stdout (totals, refused share of attempts, delivered rate after the first 10 s).
# Nothing is asserted about speed; the exit status is non-zero only when a run broke.
import csv
import json
import os
import re
import subprocess
import sys
import tempfile
import time

import e2e

MESSAGES = int(os.environ.get("MESSAGES", "3000"))
DURATION = int(os.environ.get("DURATION", "120"))
SIZE = 2048
LIMIT_CONNECTIONS = 5
LIMIT_RATE = 200
SYSTEMS = ("ringrelay (controller)", "ringrelay (no controller)", "Postfix")
PROGRESS = re.compile(r"received [\d.]+/s \((\d+)\).*rate-limited [\d.]+/s \((\d+)\), "
                      r"refused connections [\d.]+/s \((\d+)\)")


def start_sink(port, stderr_path):
    args = [e2e.RSINK, "--listen", f"127.0.0.1:{port}", "--shards", "1", "--json", "--expect", str(MESSAGES),
            "--max-connections-per-ip", str(LIMIT_CONNECTIONS), "--max-rate-per-ip", str(LIMIT_RATE),
            "--duration", str(DURATION)]
    p = e2e.spawn(args, stdout=subprocess.PIPE, stderr=open(stderr_path, "w"))
    e2e.wait_listening(port, p, "ringrelay-sink")
    return p


def held_ringrelay(work, name):
    """A spool holding MESSAGES messages (ringrelay --hold, filled by ringrelay-bench)."""
    spool = os.path.join(work, f"spool-{name}")
    port = e2e.pick_port()
    p = e2e.spawn([e2e.RINGRELAY, "--listen", f"127.0.0.1:{port}", "--spool", spool, "--hold",
                   "--hostname", "ringrelay-bench.example"])
    e2e.wait_listening(port, p, "ringrelay --hold")
    e2e.run_bench(port, 8, MESSAGES, SIZE)
    e2e.stop(p)
    return spool


def delivering_ringrelay(work, name, spool, sink_port, extra):
    port = e2e.pick_port()
    return e2e.spawn([e2e.RINGRELAY, "--listen", f"127.0.0.1:{port}", "--spool", spool, "--hostname",
                      "ringrelay-bench.example", "--log", os.path.join(work, f"log-{name}.jsonl"), "--smarthost",
                      f"127.0.0.1:{sink_port}", "--retry-intervals", "1s", "--no-default-shaping"] + extra)


def held_postfix(work, sink_port):
    d, port, _group, version = e2e.start_postfix(work, e2e.PF_HOLD + [
        f"relayhost = [127.0.0.1]:{sink_port}", "queue_run_delay = 1s", "minimal_backoff_time = 1s",
        "maximal_backoff_time = 1s"])
    e2e.run_bench(port, 8, MESSAGES, SIZE)
    return d, version


def release_postfix(d):
    conf = os.path.join(d, "etc")
    # To the deferred queue, which its qmgr scans every queue_run_delay (1 s).
    subprocess.run(["postsuper", "-c", conf, "-H", "ALL"], check=True, capture_output=True)


def per_second(stderr_path):
    """[(delivered, refused)] per progress line (one a second), from the cumulative counts."""
    out, last = [], (0, 0)
    with open(stderr_path, errors="replace") as f:
        for line in f:
            m = PROGRESS.search(line)
            if not m:
                continue
            got = (int(m.group(1)), int(m.group(2)) + int(m.group(3)))
            out.append((got[0] - last[0], got[1] - last[1]))
            last = got
    return out


def svg_chart(series, path):
    """One panel per system: delivered (green) and refused (red) per second, the sink's limit dashed."""
    width, panel_h, left, top, gap = 900, 200, 60, 30, 50
    seconds = max((len(s) for s in series.values()), default=1)
    peak = max([LIMIT_RATE * 1.25] + [max(d, r) for s in series.values() for d, r in s])
    ymax = min((int(peak / 100) + 1) * 100, 4 * LIMIT_RATE)  # higher values are clipped (and labelled)
    plot_w = width - left - 20
    height = top + len(series) * (panel_h + gap) + 20  # the legend below the last panel's axis
    x = lambda t: left + plot_w * t / max(seconds - 1, 1)  # noqa: E731

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'font-family="sans-serif" font-size="12">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{left}" y="18" font-size="14">Per second, against ringrelay-sink --max-connections-per-ip '
           f'{LIMIT_CONNECTIONS} --max-rate-per-ip {LIMIT_RATE}; {MESSAGES} messages of 2 KiB queued at once</text>']
    for i, (name, s) in enumerate(series.items()):
        y0 = top + i * (panel_h + gap) + 20
        y = lambda v, y0=y0: y0 + panel_h - panel_h * min(v, ymax) / ymax  # noqa: E731
        out.append(f'<text x="{left}" y="{y0 - 6}" font-weight="bold">{name}</text>')
        top_refused = max((r for _, r in s), default=0)
        if top_refused > ymax:
            out.append(f'<text x="{left + plot_w}" y="{y0 - 6}" text-anchor="end" fill="#cf222e">refused/s clipped '
                       f'at {ymax}; peak {top_refused}/s</text>')
        out.append(f'<rect x="{left}" y="{y0}" width="{plot_w}" height="{panel_h}" fill="none" stroke="#888"/>')
        for v in range(0, ymax + 1, 100):
            out.append(f'<text x="{left - 6}" y="{y(v) + 4}" text-anchor="end">{v}</text>')
        step = 10 if seconds <= 150 else 30
        for t in range(0, seconds, step):
            out.append(f'<line x1="{x(t):.1f}" y1="{y0 + panel_h}" x2="{x(t):.1f}" y2="{y0 + panel_h + 4}" '
                       'stroke="#888"/>')
            out.append(f'<text x="{x(t):.1f}" y="{y0 + panel_h + 16}" text-anchor="middle">{t} s</text>')
        out.append(f'<line x1="{left}" y1="{y(LIMIT_RATE):.1f}" x2="{left + plot_w}" y2="{y(LIMIT_RATE):.1f}" '
                   'stroke="#555" stroke-dasharray="4 4"/>')
        for k, colour in ((0, "#1a7f37"), (1, "#cf222e")):
            pts = " ".join(f"{x(t):.1f},{y(v[k]):.1f}" for t, v in enumerate(s))
            out.append(f'<polyline points="{pts}" fill="none" stroke="{colour}" stroke-width="1.5"/>')
    ly = height - 12
    out.append(f'<text x="{left}" y="{ly}" fill="#1a7f37">delivered/s</text>'
               f'<text x="{left + 100}" y="{ly}" fill="#cf222e">refused/s (MAIL + connections)</text>'
               f'<text x="{left + 320}" y="{ly}" fill="#555">dashed: the sink\'s {LIMIT_RATE}/s</text>')
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


def summary_row(name, s, stats):
    delivered = sum(d for d, _ in s)
    refused = sum(r for _, r in s)
    attempts = delivered + refused
    late = s[10:]
    # Seconds after the first 10 until the sink had everything (the last second with a delivery).
    last = max((t for t, (d, _) in enumerate(s) if d), default=0)
    late_seconds = max(last + 1 - 10, 0)
    late_rate = sum(d for d, _ in late) / late_seconds if late_seconds else 0.0
    return {"system": name, "delivered": stats.get("received", delivered), "seconds": round(stats.get("seconds", 0), 1),
            "refused_mail": stats.get("rate_limited"), "refused_connections": stats.get("refused_connections"),
            "refused_share": round(refused / attempts, 4) if attempts else None,
            "delivered_per_s_after_10s": round(late_rate, 1)}


def main():
    if os.geteuid() != 0:
        sys.exit("bench/shaping_chart.py: root is needed (a private Postfix instance)")
    for p in (e2e.RINGRELAY, e2e.RSINK, e2e.BENCH):
        if not os.access(p, os.X_OK):
            sys.exit(f"bench/shaping_chart.py: {p} is not built")
    work = tempfile.mkdtemp(prefix="rr-shaping-chart-", dir=e2e.TMP)
    os.chmod(work, 0o755)  # Postfix's own users must reach its queue under it
    try:
        ports = {name: e2e.pick_port() for name in SYSTEMS}
        rules = os.path.join(work, "no-controller.json")
        with open(rules, "w") as f:
            json.dump({"default": {"adaptive": False}}, f)
        e2e.log(f"shaping chart: {MESSAGES} messages each, queueing")
        spools = {name: held_ringrelay(work, str(i)) for i, name in enumerate(SYSTEMS[:2])}
        pf_dir, pf_version = held_postfix(work, ports["Postfix"])
        stderr = {name: os.path.join(work, f"sink-{ports[name]}.err") for name in SYSTEMS}
        sinks = {name: start_sink(ports[name], stderr[name]) for name in SYSTEMS}
        extra = {SYSTEMS[0]: [], SYSTEMS[1]: ["--shaping", rules]}
        relays = [delivering_ringrelay(work, str(i), spools[name], ports[name], extra[name])
                  for i, name in enumerate(SYSTEMS[:2])]
        release_postfix(pf_dir)
        e2e.log(f"shaping chart: delivering (at most {DURATION} s)")
        stats = {}
        for name, p in sinks.items():
            out, _ = p.communicate(timeout=DURATION + 60)
            stats[name] = json.loads(out) if out.strip().startswith("{") else {}
        for p in relays:
            e2e.stop(p)
        series = {name: per_second(stderr[name]) for name in SYSTEMS}
    finally:
        e2e.cleanup()
    os.makedirs(e2e.RESULTS_DIR, exist_ok=True)
    with open(os.path.join(e2e.RESULTS_DIR, "shaping-chart.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["second", "system", "delivered", "refused"])
        for name, s in series.items():
            for t, (d, r) in enumerate(s):
                w.writerow([t, name, d, r])
    svg_chart(series, os.path.join(e2e.RESULTS_DIR, "shaping-chart.svg"))
    rows = [summary_row(name, series[name], stats[name]) for name in SYSTEMS]
    print(f"{MESSAGES} messages of 2 KiB each, ringrelay-sink --max-connections-per-ip {LIMIT_CONNECTIONS} "
          f"--max-rate-per-ip {LIMIT_RATE}, at most {DURATION} s; Postfix {pf_version}\n")
    print("| system | delivered | seconds | refused MAIL | refused connections | refused share of attempts | "
          "delivered/s after 10 s |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        share = "" if r["refused_share"] is None else f"{100 * r['refused_share']:.2f}%"
        print(f"| {r['system']} | {r['delivered']} | {r['seconds']} | {r['refused_mail']} | "
              f"{r['refused_connections']} | {share} | {r['delivered_per_s_after_10s']} |")


if __name__ == "__main__":
    main()
