#!/usr/bin/env bash
# bench/relay_e2e.sh: end-to-end relay throughput of ringrelay beside Postfix, in the same
# run on the same machine: smtp-source -> relay -> smtp-sink. The figure is delivered
# messages per second: the time from the first message sent until the final destination
# (smtp-sink) has received every one of them, and the relay holds nothing any more.
#
#   sudo bench/relay_e2e.sh                     # defaults below: about 1-1.5 minutes on 2 cores
#   ROUNDS=5 RR_MSGS=50000 bench/relay_e2e.sh   # every knob is an environment variable
#
# Client: Postfix's smtp-source with connection reuse (-d: every session sends about
# msgs/SESSIONS transactions over one connection; see acceptance.sh), 2 KiB payload:
#   smtp-source -d -s 50 -l 2048 -m COUNT -M client.example.org \
#               -f sender@example.org -t rcpt@example.net 127.0.0.1:RELAYPORT
# It aborts (non-zero exit) on any unexpected reply, so a clean exit means every message
# was accepted.
# Final destination: one Postfix smtp-sink for the whole run (it stores nothing; it
# advertises PIPELINING but not CHUNKING, so both relays send DATA):
#   smtp-sink -c -u nobody 127.0.0.1:SINKPORT 1000
# Its -c counters ("mesg=N", one update per "." received, written to a file) give the exact
# number of messages it received; each round counts from the value it had at the start.
# CHECK_DUPS=1 also dumps every message (-D FILE) and checks the content: the Message-Id
# headers smtp-source wrote (unique per run) arrive once each, and nothing but printable
# ASCII arrives. Dearer (the sink writes ~2.5 KB per message), so off by default.
#
# Relays, both on the same filesystem ($BENCH_TMP), durable as shipped:
#   ringrelay  build/tools/ringrelay --listen 127.0.0.1:PORT --spool DIR --log DIR/log.jsonl
#              --smarthost 127.0.0.1:SINKPORT --max-connections-per-destination RR_CONNS
#              (fresh spool every round; shards = online CPUs unless RR_SHARDS). Done when
#              the sink has all COUNT. Checked afterwards: clean SIGTERM exit, the delivery
#              log has COUNT Delivery records for COUNT distinct queue ids and no
#              TransientFailure/Bounce, `--list-spool` says 0.
#   postfix    a private instance of Debian's Postfix (config, queue and data dirs under a
#              temp dir; /etc/postfix is not touched), smtpd on 127.0.0.1:PORT, relaying for
#              127.0.0.0/8 to relayhost = [127.0.0.1]:SINKPORT (bracketed and numeric: no
#              MX or host lookup; smtp_dns_support_level = disabled). Its durability, queue
#              manager, flow control and SMTP connection cache (on demand, the default) are
#              left at their defaults; default_process_limit = 100 (the default, spelled
#              out) and smtp_destination_concurrency_limit = PF_CONCURRENCY, by default
#              ringrelay's own ceiling of RR_CONNS x shards connections to the next hop
#              (Postfix's default is 20). Done when the sink has all COUNT and the queue
#              (incoming, active, deferred, hold, maildrop) is empty. Checked afterwards:
#              the maillog has COUNT more status=sent lines and no deferred/bounced ones.
#
# Each round runs ringrelay, then postfix; the reported figure is the median round. Timings
# are never asserted: the exit status is non-zero only if something broke (a process did
# not start or stop cleanly, smtp-source failed, a count is wrong, or delivery did not
# finish within DRAIN_TIMEOUT). Needs root (the private Postfix runs its daemons as the
# postfix user). Installs Postfix if missing and builds ringrelay if its binary is missing.
# Loopback only; every load is bounded in count and time.
#
# Environment (defaults):
#   RR_MSGS=20000 PF_MSGS=5000  messages per round for each relay
#   SESSIONS=50 MSG_SIZE=2048 ROUNDS=3
#   RR_CONNS=16            ringrelay --max-connections-per-destination (per next hop: one shard owns it)
#   RR_SHARDS=             ringrelay --shards (empty: its default, online CPUs)
#   RR_ARGS=               extra ringrelay flags, split on spaces
#   PF_CONCURRENCY=RR_CONNS*shards   Postfix smtp_destination_concurrency_limit
#   CHECK_DUPS=0           1: dump messages at the sink and check Message-Ids for duplicates
#   RUN_TIMEOUT=180        seconds one smtp-source run may take before it counts as broken
#   DRAIN_TIMEOUT=240      seconds from the first message until all must be delivered
#   PORT_BASE=27125        first loopback port tried (the next free ones are used)
#   BENCH_TMP=$TMPDIR|/tmp where the spool and the Postfix queue live
#   BUILD_DIR=build  RINGRELAY=$BUILD_DIR/tools/ringrelay
#   KEEP=1                 keep the temp dir (spools, logs, Postfix maillog) for inspection
set -euo pipefail
export LC_ALL=C

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD_DIR=${BUILD_DIR:-$ROOT/build}
RINGRELAY=${RINGRELAY:-$BUILD_DIR/tools/ringrelay}
RR_MSGS=${RR_MSGS:-20000}
PF_MSGS=${PF_MSGS:-5000}
SESSIONS=${SESSIONS:-50}
MSG_SIZE=${MSG_SIZE:-2048}
ROUNDS=${ROUNDS:-3}
RR_CONNS=${RR_CONNS:-16}
RR_SHARDS=${RR_SHARDS:-}
RR_ARGS=${RR_ARGS:-}
CHECK_DUPS=${CHECK_DUPS:-0}
RUN_TIMEOUT=${RUN_TIMEOUT:-180}
DRAIN_TIMEOUT=${DRAIN_TIMEOUT:-240}
PORT_BASE=${PORT_BASE:-27125}
BENCH_TMP=${BENCH_TMP:-${TMPDIR:-/tmp}}
KEEP=${KEEP:-0}
SOURCE=/usr/sbin/smtp-source
SINK=/usr/sbin/smtp-sink
HELO=client.example.org
SENDER=sender@example.org
RCPT=rcpt@example.net
POLL=0.05  # seconds between checks of the sink's counter

BENCH_NAME=relay_e2e
# shellcheck source=bench/lib/common.sh
. "$ROOT/bench/lib/common.sh"

for v in RR_MSGS PF_MSGS SESSIONS MSG_SIZE ROUNDS RR_CONNS RUN_TIMEOUT DRAIN_TIMEOUT PORT_BASE; do
    [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a non-negative integer, not '${!v}'"
done
[[ -z $RR_SHARDS || $RR_SHARDS =~ ^[1-9][0-9]*$ ]] || die "RR_SHARDS must be empty or a positive integer"
((RR_MSGS > 0 && PF_MSGS > 0 && SESSIONS > 0 && ROUNDS > 0 && RR_CONNS > 0)) ||
    die "RR_MSGS, PF_MSGS, SESSIONS, ROUNDS and RR_CONNS must be > 0"
RR_SHARDS_EFF=${RR_SHARDS:-$(nproc)}
PF_CONCURRENCY=${PF_CONCURRENCY:-$((RR_CONNS * RR_SHARDS_EFF))}
[[ $PF_CONCURRENCY =~ ^[1-9][0-9]*$ ]] || die "PF_CONCURRENCY must be a positive integer"
[[ $(id -u) -eq 0 ]] || die "run as root (the private Postfix instance needs it)"

# ---------------------------------------------------------------------------------------
# State for the exit trap: everything started here is stopped by its own PID.
WORK=""
SRC_PID=""
RR_PID=""
SINK_PID=""
PF_CONF=""
PF_MASTER_PID=""

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [[ -n $SRC_PID ]]; then stop_pid "$SRC_PID" 5; fi
    if [[ -n $RR_PID ]]; then stop_pid "$RR_PID" 35; fi
    stop_postfix
    if [[ -n $SINK_PID ]]; then stop_pid "$SINK_PID" 5; fi
    if [[ -n $WORK ]]; then
        if [[ $KEEP == 1 || $rc -eq 1 ]]; then  # kept after a failure, not after ^C
            log "kept $WORK"
        else
            rm -rf "$WORK"
        fi
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

now_us() { echo "${EPOCHREALTIME/./}"; }  # microseconds, no fork
secs() { awk -v d="$1" 'BEGIN { printf "%.3f", d / 1e6 }'; }

# ---------------------------------------------------------------------------------------
# The final destination.
SINK_PORT=""
SINK_OUT=""
SINK_DUMP=""
sink_start() {
    local dir=$WORK/sink dump_args=()
    mkdir -p "$dir"
    chown nobody "$dir"
    SINK_OUT=$dir/counters
    if [[ $CHECK_DUPS == 1 ]]; then
        SINK_DUMP=$dir/dump
        dump_args=(-D "$SINK_DUMP")
    fi
    pick_port
    SINK_PORT=$PORT
    # Bounded like everything else: it outlives the longest possible run, then stops.
    # smtp-sink drops root privileges to -u's user once the socket is open.
    timeout $((ROUNDS * 2 * (DRAIN_TIMEOUT + 60) + 300)) \
        "$SINK" -c "${dump_args[@]}" -u nobody "127.0.0.1:$SINK_PORT" 1000 >"$SINK_OUT" 2>"$dir/stderr" &
    SINK_PID=$!
    wait_listening "$SINK_PORT" "$SINK_PID" smtp-sink
}

SINK_N=0
sink_count() {  # sets SINK_N to the sink's "mesg=" counter (messages received so far)
    local t re='.*mesg=([0-9]+)'
    t=$(tail -c 80 "$SINK_OUT" 2>/dev/null) || t=""
    if [[ $t =~ $re ]]; then SINK_N=${BASH_REMATCH[1]}; else SINK_N=0; fi
}

sink_check_alive() {
    kill -0 "$SINK_PID" 2>/dev/null || { cat "$WORK/sink/stderr" >&2; die "smtp-sink died"; }
}

CONTENT_FAILURES=()
declare -A CONTENT=([ringrelay]=unchecked [postfix]=unchecked)
dump_offset() { if [[ -n $SINK_DUMP && -f $SINK_DUMP ]]; then stat -c %s "$SINK_DUMP"; else echo 0; fi; }

check_dups() {  # check_dups WHAT OFFSET COUNT: the messages dumped since OFFSET are intact
    [[ -n $SINK_DUMP ]] || return 0
    local part=$WORK/sink/part ids distinct binary dups
    tail -c +$(($2 + 1)) "$SINK_DUMP" >"$part"
    # smtp-source's Message-Id is unique per run (pid.session.count), and everything it and
    # both relays write is printable ASCII.
    ids=$(grep -a -c -i '^Message-Id:' "$part" || true)
    distinct=$(grep -a -i '^Message-Id:' "$part" | sort -u | wc -l)
    binary=$(grep -a -c -P '[^\t\x20-\x7e]' "$part" || true)
    if [[ $ids != "$3" || $distinct != "$3" || $binary != 0 ]]; then
        dups=$(grep -a -i '^Message-Id:' "$part" | sort | uniq -d | head -3 | tr '\n' ' ' || true)
        # Broken, but the timings still mean something: finish the run, then exit 1.
        CONTENT_FAILURES+=("$1: the sink received $3 messages but they hold $ids Message-Id lines, $distinct distinct (repeated e.g.: ${dups:-none}), and $binary line(s) with bytes other than printable ASCII")
        log "error: ${CONTENT_FAILURES[-1]}"
        DUPS_NOTE=", CONTENT CHECK FAILED"
        CONTENT[$1]=failed
        return 0
    fi
    rm -f "$part"
    DUPS_NOTE=", $distinct distinct Message-Ids and only ASCII at the sink"
    [[ ${CONTENT[$1]} == failed ]] || CONTENT[$1]=ok
}

# ---------------------------------------------------------------------------------------
# One timed run: smtp-source into the relay, the sink's counter polled until it has COUNT
# more and the relay reports itself empty. Sets DELIVERED_S (first message sent to all
# delivered) and ACCEPTED_S (to smtp-source's exit: all accepted).
DELIVERED_S=""
ACCEPTED_S=""
relay_empty() {  # relay_empty WHAT: can the relay still hold something? (0: it cannot)
    case $1 in
        ringrelay) return 0 ;;  # checked after its stop: --list-spool and the delivery log
        postfix)
            local q=$WORK/postfix/queue n
            n=$(find "$q/incoming" "$q/active" "$q/deferred" "$q/hold" "$q/maildrop" -type f 2>/dev/null | wc -l)
            ((n == 0))
            ;;
    esac
}

timed_run() {  # timed_run WHAT PORT COUNT OUTFILE RELAY_PID
    local what=$1 port=$2 count=$3 out=$4 relay_pid=$5 base t0 t now rc got
    sink_count
    base=$SINK_N
    DELIVERED_S=""
    ACCEPTED_S=""
    t0=$(now_us)
    # In the background so that a signal to this script is handled at once.
    timeout "$RUN_TIMEOUT" "$SOURCE" -d -s "$SESSIONS" -l "$MSG_SIZE" -m "$count" -M "$HELO" \
        -f "$SENDER" -t "$RCPT" "127.0.0.1:$port" >"$out" 2>&1 &
    SRC_PID=$!
    while :; do
        now=$(now_us)
        if [[ -n $SRC_PID ]] && ! kill -0 "$SRC_PID" 2>/dev/null; then
            ACCEPTED_S=$(secs $((now - t0)))
            rc=0
            wait "$SRC_PID" || rc=$?
            SRC_PID=""
            if ((rc != 0)); then
                sed 's/^/  smtp-source: /' "$out" >&2
                if ((rc == 124)); then die "$what: smtp-source did not finish $count messages in ${RUN_TIMEOUT}s"; fi
                die "$what: smtp-source exited with status $rc"
            fi
        fi
        sink_count
        got=$((SINK_N - base))
        if ((got >= count)) && relay_empty "$what"; then
            DELIVERED_S=$(secs $((now - t0)))
            break
        fi
        if ((now - t0 > DRAIN_TIMEOUT * 1000000)); then
            die "$what: after ${DRAIN_TIMEOUT}s the sink has $got of $count messages (smtp-source $([[ -n $SRC_PID ]] && echo "still running" || echo "done in ${ACCEPTED_S}s")); kept in $WORK"
        fi
        [[ -z $relay_pid ]] || kill -0 "$relay_pid" 2>/dev/null || die "$what died during the run"
        sink_check_alive
        sleep "$POLL"
    done
    # smtp-source may still be saying QUIT on its sessions.
    if [[ -n $SRC_PID ]]; then
        rc=0
        wait "$SRC_PID" || rc=$?
        t=$(now_us)
        ACCEPTED_S=$(secs $((t - t0)))
        SRC_PID=""
        ((rc == 0)) || { sed 's/^/  smtp-source: /' "$out" >&2; die "$what: smtp-source exited with status $rc"; }
    fi
}

sink_exact() {  # sink_exact WHAT BASE COUNT: once the relay can send nothing more
    sink_count
    (( SINK_N - $2 == $3 )) || die "$1: the sink received $((SINK_N - $2)) message(s) for $3 sent"
}

# ---------------------------------------------------------------------------------------
ringrelay_round() {  # ringrelay_round ROUND
    local dir=$WORK/ringrelay.$1 i rc=0 base off listed deliveries ids transient bounces args=()
    mkdir -p "$dir"
    pick_port
    args=(--listen "127.0.0.1:$PORT" --spool "$dir/spool" --log "$dir/log.jsonl"
        --smarthost "127.0.0.1:$SINK_PORT" --max-connections-per-destination "$RR_CONNS")
    [[ -z $RR_SHARDS ]] || args+=(--shards "$RR_SHARDS")
    # shellcheck disable=SC2206 # RR_ARGS is split on spaces on purpose
    [[ -z $RR_ARGS ]] || args+=($RR_ARGS)
    : >"$dir/stderr"
    # Bounded: it stops by itself if this script cannot stop it. --foreground: without it
    # timeout relays our SIGTERM twice (to the child and to its process group), and a second
    # SIGTERM makes ringrelay exit at once instead of gracefully.
    timeout --foreground -k 10 $((RUN_TIMEOUT + DRAIN_TIMEOUT + 120)) "$RR_BIN" "${args[@]}" 2>"$dir/stderr" &
    RR_PID=$!
    for ((i = 0; i < 150; i++)); do
        grep -q "listening on" "$dir/stderr" && break
        kill -0 "$RR_PID" 2>/dev/null || { cat "$dir/stderr" >&2; die "ringrelay exited at start-up"; }
        sleep 0.1
    done
    grep -q "listening on" "$dir/stderr" || { cat "$dir/stderr" >&2; die "ringrelay did not say 'listening on' in 15 s"; }
    RR_SHARDS_SEEN=$(sed -n 's/.*listening on .* with \([0-9]*\) shard(s).*/\1/p' "$dir/stderr" | head -1 || true)

    sink_count
    base=$SINK_N
    off=$(dump_offset)
    timed_run ringrelay "$PORT" "$RR_MSGS" "$dir/source.out" "$RR_PID"

    # The sink has everything; the Delivery records follow the 250s (up to 15 s).
    for ((i = 0; i < 150; i++)); do
        deliveries=$(grep -c '"type":"Delivery"' "$dir/log.jsonl" || true)
        ((deliveries >= RR_MSGS)) && break
        sleep 0.1
    done
    kill -0 "$RR_PID" 2>/dev/null || { cat "$dir/stderr" >&2; die "ringrelay died during the run"; }
    kill -TERM "$RR_PID"
    for ((i = 0; i < 400; i++)); do
        kill -0 "$RR_PID" 2>/dev/null || break
        sleep 0.1
    done
    kill -0 "$RR_PID" 2>/dev/null && { cat "$dir/stderr" >&2; die "ringrelay still running 40 s after SIGTERM"; }
    wait "$RR_PID" || rc=$?
    RR_PID=""
    ((rc == 0)) || { cat "$dir/stderr" >&2; die "ringrelay exited with status $rc after SIGTERM"; }

    # Anything beyond the usual start/stop lines is worth seeing.
    grep -v -e 'ringrelay: kernel ' -e 'ringrelay: listening on ' -e 'ringrelay: stopping: ' \
        -e 'ringrelay: stopped: ' "$dir/stderr" | sed 's/^/  ringrelay said: /' >&2 || true

    "$RR_BIN" --list-spool --spool "$dir/spool" >"$dir/list" 2>"$dir/list.err" ||
        { cat "$dir/list.err" >&2; die "ringrelay --list-spool failed"; }
    if [[ -s $dir/list.err ]]; then sed 's/^/  list-spool: /' "$dir/list.err" >&2; die "ringrelay --list-spool reported problems"; fi
    listed=$(sed -n '1s/^\([0-9]*\) message(s) in .*/\1/p' "$dir/list")
    deliveries=$(grep -c '"type":"Delivery"' "$dir/log.jsonl" || true)
    ids=$(grep '"type":"Delivery"' "$dir/log.jsonl" | sed -n 's/.*"queue_id":"\([^"]*\)".*/\1/p' | sort -u | wc -l)
    transient=$(grep -c '"type":"TransientFailure"' "$dir/log.jsonl" || true)
    bounces=$(grep -c '"type":"Bounce"' "$dir/log.jsonl" || true)
    if ((transient > 0 || bounces > 0)); then
        log "ringrelay round $1: $transient TransientFailure and $bounces Bounce record(s), e.g.:"
        grep -m 3 -e '"type":"TransientFailure"' -e '"type":"Bounce"' "$dir/log.jsonl" | sed 's/^/  /' >&2
    fi
    sink_exact ringrelay "$base" "$RR_MSGS"
    if [[ $listed != 0 || $deliveries != "$RR_MSGS" || $ids != "$RR_MSGS" || $bounces != 0 ]]; then
        die "ringrelay: sent $RR_MSGS, the sink got them all, but the spool still lists ${listed:-?}, the log has $deliveries Delivery records (${ids} distinct queue ids) and $bounces Bounce; kept in $dir"
    fi
    DUPS_NOTE=""
    check_dups ringrelay "$off" "$RR_MSGS"
    RR_NOTE="$deliveries Delivery records, $transient TransientFailure, spool empty$DUPS_NOTE"
}

pf_setup() {
    pick_port
    PF_PORT=$PORT
    pf_setup_dir "$WORK/postfix" "$PF_PORT" \
        "bench/relay_e2e.sh: accept from loopback, relay everything to 127.0.0.1:$SINK_PORT." <<EOF
# Every message goes to the next hop; bracketed and numeric: no MX or A lookup.
relayhost = [127.0.0.1]:$SINK_PORT
# 50 sessions need 50 smtpd processes, and the smtp clients up to the concurrency limit;
# this is Postfix's default, spelled out.
default_process_limit = 100
# Parallel connections to the next hop (Postfix's default is 20): ringrelay's ceiling.
smtp_destination_concurrency_limit = $PF_CONCURRENCY
# Connection reuse: Postfix's defaults, spelled out (scache is in master.cf).
smtp_connection_cache_on_demand = yes
EOF
}

pf_round() {  # pf_round ROUND
    local dir=$WORK/postfix base off sent0 sent bad0 bad i
    sink_count
    base=$SINK_N
    off=$(dump_offset)
    sent0=$(grep -c ' status=sent ' "$dir/maillog" 2>/dev/null || true)
    bad0=$(grep -c -e ' status=deferred ' -e ' status=bounced ' "$dir/maillog" 2>/dev/null || true)
    timed_run postfix "$PF_PORT" "$PF_MSGS" "$dir/source.$1.out" "$PF_MASTER_PID"
    sink_exact postfix "$base" "$PF_MSGS"
    # The maillog goes through postlogd: give it a moment to catch up (up to 15 s).
    for ((i = 0; i < 150; i++)); do
        sent=$(($(grep -c ' status=sent ' "$dir/maillog" || true) - sent0))
        ((sent >= PF_MSGS)) && break
        sleep 0.1
    done
    bad=$(($(grep -c -e ' status=deferred ' -e ' status=bounced ' "$dir/maillog" || true) - bad0))
    ((sent == PF_MSGS && bad == 0)) ||
        die "postfix: the sink got $PF_MSGS but the maillog has $sent status=sent and $bad deferred/bounced lines this round; kept in $WORK"
    DUPS_NOTE=""
    check_dups postfix "$off" "$PF_MSGS"
    PF_NOTE="$sent status=sent in the maillog, queue empty$DUPS_NOTE"
}

# ---------------------------------------------------------------------------------------
ensure_postfix
ensure_ringrelay
mkdir -p "$BENCH_TMP"
WORK=$(mktemp -d "$BENCH_TMP/rr-relay-e2e.XXXXXX")
chmod 755 "$WORK"  # the postfix user reaches its data directory by absolute path
# A private copy: a rebuild of the shared build tree during the run must not change it.
RR_BIN=$WORK/ringrelay
cp "$RINGRELAY" "$RR_BIN"

LOAD_START=$(cut -d' ' -f1 /proc/loadavg)
log "$(nproc) CPU(s), 1-min load average $LOAD_START before the run (other work on the machine skews every figure); spool and queue on $(df -PT "$WORK" | awk 'NR == 2 { print $2 " " $1 }'); $ROUNDS round(s)"
RR_SUM=$(sha256sum "$RR_BIN" | cut -c1-12)
log "ringrelay: copy of $RINGRELAY ($(stat -c '%y' "$RINGRELAY" | cut -c1-19), sha256 $RR_SUM...)"
sink_start
log "smtp-sink listening on 127.0.0.1:$SINK_PORT$([[ $CHECK_DUPS == 1 ]] && echo ", dumping to $SINK_DUMP")"
pf_setup
log "postfix $PF_VERSION listening on 127.0.0.1:$PF_PORT, relayhost [127.0.0.1]:$SINK_PORT, smtp_destination_concurrency_limit $PF_CONCURRENCY (private instance in $WORK/postfix)"

rr_s=()
rr_acc=()
pf_s=()
pf_acc=()
RR_SHARDS_SEEN=""
for ((r = 1; r <= ROUNDS; r++)); do
    ringrelay_round "$r"
    rr_s+=("$DELIVERED_S")
    rr_acc+=("$ACCEPTED_S")
    log "round $r/$ROUNDS: ringrelay  $RR_MSGS msgs delivered in $DELIVERED_S s (all accepted after $ACCEPTED_S s; $RR_NOTE)"
    pf_round "$r"
    pf_s+=("$DELIVERED_S")
    pf_acc+=("$ACCEPTED_S")
    log "round $r/$ROUNDS: postfix    $PF_MSGS msgs delivered in $DELIVERED_S s (all accepted after $ACCEPTED_S s; $PF_NOTE)"
done
stop_postfix
sink_count
log "smtp-sink received $SINK_N message(s) in all ($((ROUNDS * (RR_MSGS + PF_MSGS))) sent)"

rr_med=$(median "${rr_s[@]}")
pf_med=$(median "${pf_s[@]}")
rr_rate=$(rate "$RR_MSGS" "$rr_med")
pf_rate=$(rate "$PF_MSGS" "$pf_med")
per_hour() { awk -v n="$1" -v s="$2" 'BEGIN { printf "%.0f", n / s * 3600 }'; }
ratio=$(awk -v a="$RR_MSGS" -v b="$rr_med" -v c="$PF_MSGS" -v d="$pf_med" 'BEGIN { printf "%.1f", (a / b) / (c / d) }')
shards=${RR_SHARDS_SEEN:-$RR_SHARDS_EFF}

row() {  # row NAME MSGS SECONDS [NOTE]
    awk -v name="$1" -v n="$2" -v s="$3" -v note="${4:-}" \
        'BEGIN { r = n / s; printf "%-10s %7d msgs in %6.2f s  %7.0f/s  %11.0f/h (%5.2f M/h)%s\n", name, n, s, r, r * 3600, r * 3600 / 1e6, note }'
}
rounds_note=""
((ROUNDS > 1)) && rounds_note=", median of $ROUNDS rounds"
echo "relay end to end (smtp-source -d -> relay -> smtp-sink; $((MSG_SIZE / 1024)) KiB, $SESSIONS sessions, durable, delivered messages$rounds_note)"
row ringrelay "$RR_MSGS" "$rr_med" "   ($shards shards, <= $RR_CONNS connections to the sink)"
row postfix "$PF_MSGS" "$pf_med" "   (Postfix $PF_VERSION, smtp_destination_concurrency_limit $PF_CONCURRENCY)"
echo "ratio ringrelay/postfix: ${ratio}x   (1-min load average $LOAD_START before the run)"
printf '{"bench":"relay_e2e","message_bytes":%d,"sessions":%d,"client":"smtp-source -d","sink":"smtp-sink","cpus":%d,"loadavg_before":%s,"rounds":%d,' \
    "$MSG_SIZE" "$SESSIONS" "$(nproc)" "$LOAD_START" "$ROUNDS"
printf '"ringrelay":{"binary_sha256":"%s","content_check":"%s","messages":%d,"shards":%d,"max_connections_per_destination":%d,"seconds":%s,"median_seconds":%s,"accepted_seconds":%s,"per_second":%s,"per_hour":%s},' \
    "$RR_SUM" "${CONTENT[ringrelay]}" "$RR_MSGS" "$shards" "$RR_CONNS" "$(json_list "${rr_s[@]}")" "$rr_med" "$(json_list "${rr_acc[@]}")" "$rr_rate" "$(per_hour "$RR_MSGS" "$rr_med")"
printf '"postfix":{"version":"%s","content_check":"%s","messages":%d,"smtp_destination_concurrency_limit":%d,"seconds":%s,"median_seconds":%s,"accepted_seconds":%s,"per_second":%s,"per_hour":%s},' \
    "$PF_VERSION" "${CONTENT[postfix]}" "$PF_MSGS" "$PF_CONCURRENCY" "$(json_list "${pf_s[@]}")" "$pf_med" "$(json_list "${pf_acc[@]}")" "$pf_rate" "$(per_hour "$PF_MSGS" "$pf_med")"
printf '"ratio":%s}\n' "$ratio"
if ((${#CONTENT_FAILURES[@]} > 0)); then
    for f in "${CONTENT_FAILURES[@]}"; do echo "$BENCH_NAME: error: $f" >&2; done
    exit 1
fi
