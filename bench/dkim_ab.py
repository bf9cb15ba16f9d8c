#!/usr/bin/env python3
# bench/dkim_ab.py: A/B of two ringrelay builds on bench/e2e's DKIM case (issue 16's
# performance goals): end to end (ringrelay-bench -> ringrelay -> ringrelay-sink), 2 KiB,
# 50 connections, durable, unsigned / Ed25519 / RSA-2048, with only the relay binary
# differing between A and B (the load generator, the sink and the key generator come from A's
# build). Rounds alternate A and B case by case (A unsigned, B unsigned, A Ed25519, ...);
# medians per (build, case), the ratios issue 16 asks for, and `openssl speed -multi CPUS
# -seconds 3 rsa2048 ed25519` measured in the same run. Every run checks each Reception record
# names its signature (bench/e2e.py's e2e_ringrelay). Nothing is asserted about speed.
#
#   flock /tmp/rr-build.lock bench/dkim_ab.py A_BUILD B_BUILD [--rounds 5] [--messages 20000]
#
# Prints a Markdown table on stdout and writes the runs as JSON with --json FILE.
import argparse
import json
import os
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e  # noqa: E402  (bench/e2e.py: processes, cgroups, the end-to-end run)


def use_build(build, relay_only):
    e2e.RINGRELAY = os.path.join(build, "tools", "ringrelay")
    if not relay_only:
        e2e.BENCH = os.path.join(build, "tools", "bench", "ringrelay-bench")
        e2e.RSINK = os.path.join(build, "tools", "sink", "ringrelay-sink")
        e2e.KEYGEN = os.path.join(build, "tools", "ringrelay-dkim-keygen")


def main():
    ap = argparse.ArgumentParser(description="A/B of two ringrelay builds on bench/e2e's DKIM case (see the header)")
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--messages", type=int, default=20000)
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--cases", default="unsigned,Ed25519,RSA-2048")
    ap.add_argument("--json")
    ap.add_argument("--no-openssl", action="store_true", help="skip openssl speed (profiling runs)")
    args = ap.parse_args()
    builds = {"A": os.path.abspath(args.a), "B": os.path.abspath(args.b)}
    use_build(builds["A"], relay_only=False)
    work = tempfile.mkdtemp(prefix="rr-dkim-ab-", dir=e2e.TMP)
    keys = {}
    for kind in ("ed25519", "rsa"):
        out = os.path.join(work, f"bench-{kind}.pem")
        r = e2e.subprocess.run([e2e.KEYGEN, e2e.BENCH_FROM_DOMAIN, f"bench-{kind}", "--type", kind, "--out", out],
                               capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            e2e.die(f"ringrelay-dkim-keygen: {r.stderr}")
        keys[kind] = ["--dkim-key", f"{e2e.BENCH_FROM_DOMAIN}:bench-{kind}:{out}"]
    cases = [c for c in (("unsigned", [], 0), ("Ed25519", keys["ed25519"], 1), ("RSA-2048", keys["rsa"], 1))
             if c[0] in args.cases.split(",")]
    runs = []
    try:
        for rnd in range(args.rounds):
            for case, extra, sigs in cases:
                for side in ("A", "B") if rnd % 2 == 0 else ("B", "A"):
                    use_build(builds[side], relay_only=True)
                    r = e2e.e2e_ringrelay(work, args.size, args.connections, n=args.messages, extra=extra,
                                          scenario="dkim", label=f" {side}", signatures=sigs)
                    r.update(side=side, case=case, round=rnd + 1)
                    e2e.log(f"round {rnd + 1} {side} {case}: {r['messages_per_second']:,.0f} msg/s, "
                            f"{r['cpu_s_per_1000']} CPU s per 1000 (relay)")
                    runs.append(r)
        limit = {"rsa2048": float("nan"), "ed25519": float("nan")} if args.no_openssl else e2e.openssl_sign_rates()
    finally:
        e2e.cleanup()
        e2e.shutil.rmtree(work, ignore_errors=True)
    med = {}
    for side in ("A", "B"):
        for case, _, _ in cases:
            rs = [r for r in runs if r["side"] == side and r["case"] == case]
            med[(side, case)] = {
                "msg_s": statistics.median(r["messages_per_second"] for r in rs),
                "relay_us_per_msg": statistics.median(r["cpu_s_per_1000"] * 1000 for r in rs)
                if all(r["cpu_s_per_1000"] is not None for r in rs) else None,
                "runs": [r["messages_per_second"] for r in rs]}
    print(f"openssl speed -mr -multi {os.cpu_count()} -seconds 3 rsa2048 ed25519: "
          f"{limit['rsa2048']:,.0f} RSA-2048 and {limit['ed25519']:,.0f} Ed25519 signatures/s\n")
    print("| build | case | msg/s (median) | runs | relay CPU us/msg | ratio |")
    print("|---|---|---:|---|---:|---:|")
    for side in ("A", "B"):
        for case, _, _ in cases:
            m = med[(side, case)]
            ratio = ""
            if case == "RSA-2048":
                ratio = f"{m['msg_s'] / limit['rsa2048']:.3f} of openssl RSA-2048"
            elif case == "Ed25519" and (side, "unsigned") in med:
                ratio = f"{m['msg_s'] / med[(side, 'unsigned')]['msg_s']:.3f} of unsigned"
            cpu = "" if m["relay_us_per_msg"] is None else f"{m['relay_us_per_msg']:.0f}"
            print(f"| {side} ({builds[side]}) | {case} | {m['msg_s']:,.0f} | "
                  f"{', '.join(f'{x:,.0f}' for x in m['runs'])} | {cpu} | {ratio} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"builds": builds, "openssl": limit, "runs": runs,
                       "medians": {f"{s} {c}": v for (s, c), v in med.items()}}, f, indent=1)


if __name__ == "__main__":
    main()
