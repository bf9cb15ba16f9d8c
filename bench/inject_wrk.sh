#!/bin/sh
# bench/inject_wrk.sh: HTTP injection (POST /api/v1/inject, issue 18) beside SMTP in the same run,
# both durable: one ringrelay --hold (spool on /var/tmp: a real fdatasync), then for SECONDS each
# `wrk` (Debian's; scripts/install-deps --bench) with bench/inject.lua (2 KiB messages as JSON)
# and `ringrelay-bench` over SMTP (2 KiB messages), CONNECTIONS connections each. Prints both
# rates, their ratio, wrk's non-2xx count and the relay's received counter (/metrics), which must
# equal the 2xx answers plus the SMTP messages acknowledged.
# Usage: flock /tmp/rr-build.lock bench/inject_wrk.sh [BUILD_DIR] [SECONDS] [CONNECTIONS] [SHARDS]
set -eu
build=${1:-build}
secs=${2:-10}
conns=${3:-16}
shards=${4:-2}
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d /var/tmp/rr-inject-bench.XXXXXX)
ports=$(python3 -c 'import socket
s=[socket.socket() for _ in range(2)]
[x.bind(("127.0.0.1",0)) for x in s]
print(" ".join(str(x.getsockname()[1]) for x in s))')
smtp=${ports% *}
http=${ports#* }
"$build/tools/ringrelay" --spool "$work/spool" --shards "$shards" --hold --listen "127.0.0.1:$smtp" \
    --http "127.0.0.1:$http" --log "$work/delivery.log" 2>"$work/relay.err" &
relay=$!
trap 'kill "$relay" 2>/dev/null; wait "$relay" 2>/dev/null; rm -rf "$work"' EXIT
i=0
until curl -s -o /dev/null "http://127.0.0.1:$http/metrics"; do
    i=$((i + 1)); [ "$i" -lt 100 ] || { cat "$work/relay.err"; exit 1; }; sleep 0.1
done
received() { curl -s "http://127.0.0.1:$http/metrics" | awk '/^ringrelay_messages_received_total/ {s += $2} END {print s + 0}'; }
echo "commit $(git -C "$here" rev-parse --short HEAD 2>/dev/null || echo '?'); load before: $(cut -d' ' -f1-3 /proc/loadavg); $(nproc) CPUs"
echo "== wrk -t2 -c$conns -d${secs}s -s bench/inject.lua http://127.0.0.1:$http/api/v1/inject"
wrk -t2 -c"$conns" -d"${secs}s" --latency -s "$here/inject.lua" "http://127.0.0.1:$http/api/v1/inject" | tee "$work/wrk.txt"
after_http=$(received)
echo "== ringrelay-bench --target 127.0.0.1:$smtp --connections $conns --duration $secs --size 2k --json"
"$build/tools/bench/ringrelay-bench" --target "127.0.0.1:$smtp" --connections "$conns" --duration "$secs" --size 2k \
    --json --quiet | tee "$work/smtp.json"
after_smtp=$(received)
python3 - "$work/wrk.txt" "$work/smtp.json" "$secs" "$after_http" "$after_smtp" <<'PY'
import json, re, sys
wrk = open(sys.argv[1]).read()
smtp = json.load(open(sys.argv[2]))
secs = float(sys.argv[3])
http_rate = float(re.search(r"Requests/sec:\s+([\d.]+)", wrk).group(1))
requests = int(re.search(r"(\d+) requests in", wrk).group(1))
non2xx = int((re.search(r"Non-2xx or 3xx responses: (\d+)", wrk) or [0, 0])[1])
smtp_rate = next((smtp[k] for k in ("messages_per_second", "rate", "msgs_per_s") if k in smtp), None)
print(f"HTTP inject: {http_rate:.0f} msg/s ({http_rate * 3600:.0f} msg/h), {requests} requests, {non2xx} not 2xx; "
      f"relay counted {sys.argv[4]}")
print(f"SMTP: {smtp_rate} msg/s; relay counted {int(sys.argv[5]) - int(sys.argv[4])} more")
if smtp_rate:
    print(f"ratio HTTP/SMTP: {http_rate / float(smtp_rate):.2f}")
PY
