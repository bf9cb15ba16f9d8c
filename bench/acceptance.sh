#!/usr/bin/env bash
# bench/acceptance.sh: acceptance throughput of ringrelay beside Postfix, in the same run on
# the same machine. Durable acceptance only: every 250 to DATA means the message is on
# stable storage (ringrelay: fdatasync of its spool segment; Postfix: its default fsync of
# the queue file), and nothing is delivered onward.
#
#   sudo bench/acceptance.sh                    # defaults below: 1-1.5 minutes on 2 cores
#   ROUNDS=5 RR_MSGS=50000 bench/acceptance.sh  # every knob is an environment variable
#
# Client: Postfix's smtp-source, 50 parallel sessions, 2 KiB payload, with connection
# reuse. In smtp-source `-d` means "Don't disconnect after sending a message; send the next
# message over the same connection" (smtp-source(1); its usage line lists it under -cdLNov),
# so `-d` *is* connection reuse: each of the 50 sessions sends about msgs/50 transactions
# (EHLO once, then MAIL/RCPT/DATA repeatedly, one QUIT). Without -d it would reconnect for
# every message. The exact command, for each server, is
#   smtp-source -d -s 50 -l 2048 -m COUNT -M client.example.org \
#               -f sender@example.org -t rcpt@example.net 127.0.0.1:PORT
# smtp-source aborts (non-zero exit) on any reply other than the expected 2xx/3xx, so a
# clean exit means every message was acknowledged; the script then counts what each server
# stored and the figure only counts if that equals what was sent.
#
# Servers, each fresh for every round, both on the same filesystem ($BENCH_TMP):
#   ringrelay  build/tools/ringrelay --hold --listen 127.0.0.1:PORT --spool DIR --log DIR/log.jsonl
#              (--hold: like Postfix's hold queue, nothing is delivered)
#              (default shards = online CPUs). Checked afterwards: clean SIGTERM exit, its
#              "stopped: N message(s) queued", `--list-spool` count, and the delivery log's
#              Reception records (count and distinct queue ids).
#   postfix    a private instance of Debian's Postfix (config dir, queue and data dirs under
#              a temp dir; /etc/postfix is not touched), smtpd on 127.0.0.1:PORT, relaying
#              for 127.0.0.0/8, every message put on hold at end of data
#              (smtpd_end_of_data_restrictions = check_client_access static:HOLD) so the
#              queue manager never delivers anything: only acceptance is measured. Postfix's
#              durability and flow control are left at their defaults. Checked afterwards:
#              files in the hold queue == sent, and nothing in incoming/active/deferred.
#   smtp-sink  (optional, SINK_MSGS=0 skips) Postfix's smtp-sink, which stores nothing: the
#              rate of smtp-source against a trivial server, i.e. the client's ceiling on
#              this machine. Client and server share the same CPUs in every measurement.
#
# Each round runs sink, ringrelay, postfix in turn; the reported figure is the median round.
# Timings are never asserted: the exit status is non-zero only if something broke (a
# server did not start or stop cleanly, smtp-source failed, or a stored count is wrong).
# Needs root (the private Postfix instance runs its daemons as the postfix user). Installs
# Postfix (for smtp-source/smtp-sink too) if missing, and builds ringrelay if its binary is
# missing. Loopback only; every load is bounded in count and time.
#
# Environment (defaults):
#   RR_MSGS=20000 PF_MSGS=5000 SINK_MSGS=20000   messages per round for each target
#   SESSIONS=50 MSG_SIZE=2048 ROUNDS=3
#   RUN_TIMEOUT=180        seconds one smtp-source run may take before it counts as broken
#   PORT_BASE=27025        first loopback port tried (the next free ones are used)
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
SINK_MSGS=${SINK_MSGS:-20000}
SESSIONS=${SESSIONS:-50}
MSG_SIZE=${MSG_SIZE:-2048}
ROUNDS=${ROUNDS:-3}
RUN_TIMEOUT=${RUN_TIMEOUT:-180}
PORT_BASE=${PORT_BASE:-27025}
BENCH_TMP=${BENCH_TMP:-${TMPDIR:-/tmp}}
KEEP=${KEEP:-0}
SOURCE=/usr/sbin/smtp-source
SINK=/usr/sbin/smtp-sink
HELO=client.example.org
SENDER=sender@example.org
RCPT=rcpt@example.net

BENCH_NAME=acceptance
# shellcheck source=bench/lib/common.sh
. "$ROOT/bench/lib/common.sh"

for v in RR_MSGS PF_MSGS SINK_MSGS SESSIONS MSG_SIZE ROUNDS RUN_TIMEOUT PORT_BASE; do
    [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a non-negative integer, not '${!v}'"
done
((RR_MSGS > 0 && PF_MSGS > 0 && SESSIONS > 0 && ROUNDS > 0)) || die "RR_MSGS, PF_MSGS, SESSIONS and ROUNDS must be > 0"
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
    if [[ -n $SINK_PID ]]; then stop_pid "$SINK_PID" 5; fi
    stop_postfix
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

# ---------------------------------------------------------------------------------------
# One timed smtp-source run.
ELAPSED=""
run_source() {  # run_source PORT COUNT OUTFILE WHAT: times one smtp-source run into ELAPSED
    local port=$1 count=$2 out=$3 what=$4 t0 t1 rc=0
    t0=$EPOCHREALTIME
    # In the background so that a signal to this script is handled at once (wait returns).
    timeout "$RUN_TIMEOUT" "$SOURCE" -d -s "$SESSIONS" -l "$MSG_SIZE" -m "$count" -M "$HELO" \
        -f "$SENDER" -t "$RCPT" "127.0.0.1:$port" >"$out" 2>&1 &
    SRC_PID=$!
    wait "$SRC_PID" || rc=$?
    t1=$EPOCHREALTIME
    SRC_PID=""
    if ((rc != 0)); then
        sed 's/^/  smtp-source: /' "$out" >&2
        if ((rc == 124)); then die "$what: smtp-source did not finish $count messages in ${RUN_TIMEOUT}s"; fi
        die "$what: smtp-source exited with status $rc"
    fi
    ELAPSED=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
}

# ---------------------------------------------------------------------------------------
# One measurement per target.
sink_round() {  # sink_round ROUND
    local dir=$WORK/sink.$1
    mkdir -p "$dir"
    pick_port
    # smtp-sink drops root privileges to -u's user once the socket is open.
    timeout $((RUN_TIMEOUT + 30)) "$SINK" -u postfix "127.0.0.1:$PORT" 256 >"$dir/stderr" 2>&1 &
    SINK_PID=$!
    wait_listening "$PORT" "$SINK_PID" smtp-sink
    run_source "$PORT" "$SINK_MSGS" "$dir/source.out" smtp-sink
    stop_pid "$SINK_PID" 5
    wait "$SINK_PID" 2>/dev/null || true
    SINK_PID=""
}

ringrelay_round() {  # ringrelay_round ROUND
    local dir=$WORK/ringrelay.$1 i rc=0 listed queued receptions ids
    mkdir -p "$dir"
    pick_port
    "$RINGRELAY" --hold --listen "127.0.0.1:$PORT" --spool "$dir/spool" --log "$dir/log.jsonl" 2>"$dir/stderr" &
    RR_PID=$!
    for ((i = 0; i < 150; i++)); do
        grep -q "listening on" "$dir/stderr" && break
        kill -0 "$RR_PID" 2>/dev/null || { cat "$dir/stderr" >&2; die "ringrelay exited at start-up"; }
        sleep 0.1
    done
    grep -q "listening on" "$dir/stderr" || { cat "$dir/stderr" >&2; die "ringrelay did not say 'listening on' in 15 s"; }

    run_source "$PORT" "$RR_MSGS" "$dir/source.out" ringrelay

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

    queued=$(sed -n 's/.*stopped: \([0-9]*\) message(s) queued.*/\1/p' "$dir/stderr")
    "$RINGRELAY" --list-spool --spool "$dir/spool" >"$dir/list" 2>"$dir/list.err" ||
        { cat "$dir/list.err" >&2; die "ringrelay --list-spool failed"; }
    if [[ -s $dir/list.err ]]; then sed 's/^/  list-spool: /' "$dir/list.err" >&2; die "ringrelay --list-spool reported problems"; fi
    listed=$(sed -n '1s/^\([0-9]*\) message(s) in .*/\1/p' "$dir/list")
    ids=$(tail -n +2 "$dir/list" | awk '{ print $1 }' | sort -u | wc -l)
    receptions=$(grep -c '"type":"Reception"' "$dir/log.jsonl" || true)
    local logids
    logids=$(grep '"type":"Reception"' "$dir/log.jsonl" | sed -n 's/.*"queue_id":"\([^"]*\)".*/\1/p' | sort -u | wc -l)
    if [[ $listed != "$RR_MSGS" || $ids != "$RR_MSGS" || $queued != "$RR_MSGS" || $receptions != "$RR_MSGS" || $logids != "$RR_MSGS" ]]; then
        die "ringrelay: sent $RR_MSGS but spool lists ${listed:-?} (${ids} distinct ids), stop line says ${queued:-?} queued, log has $receptions Reception records (${logids} distinct ids); kept in $dir"
    fi
}

pf_setup() {
    pick_port
    PF_PORT=$PORT
    pf_setup_dir "$WORK/postfix" "$PF_PORT" "bench/acceptance.sh: accept from loopback, hold everything." <<EOF
# Every accepted message goes to the hold queue: the queue manager never delivers it.
smtpd_end_of_data_restrictions = check_client_access static:HOLD
# 50 sessions need 50 smtpd processes (plus cleanup); this is Postfix's default, spelled out.
default_process_limit = 100
EOF
}

pf_round() {  # pf_round ROUND
    local dir=$WORK/postfix q d n held
    q=$dir/queue
    run_source "$PF_PORT" "$PF_MSGS" "$dir/source.$1.out" postfix
    held=$(find "$q/hold" -type f | wc -l)
    for d in incoming active deferred corrupt; do
        n=$(find "$q/$d" -type f | wc -l)
        ((n == 0)) || die "postfix: $n file(s) in $d/ (expected everything on hold)"
    done
    ((held == PF_MSGS)) || die "postfix: sent $PF_MSGS but $held message(s) are on hold"
    # Empty the hold queue so every round starts alike.
    postsuper -c "$dir/etc" -d ALL hold >/dev/null 2>&1 || die "postsuper -d ALL hold failed"
}

# ---------------------------------------------------------------------------------------
ensure_postfix
ensure_ringrelay
mkdir -p "$BENCH_TMP"
WORK=$(mktemp -d "$BENCH_TMP/rr-acceptance.XXXXXX")
chmod 755 "$WORK"  # the postfix user reaches its data directory by absolute path

LOAD_START=$(cut -d' ' -f1 /proc/loadavg)
log "$(nproc) CPU(s), 1-min load average $LOAD_START before the run (other work on the machine skews every figure); spool and queue on $(df -PT "$WORK" | awk 'NR == 2 { print $2 " " $1 }'); $ROUNDS round(s)"
pf_setup
log "postfix $PF_VERSION listening on 127.0.0.1:$PF_PORT (private instance in $WORK/postfix)"

sink_s=()
rr_s=()
pf_s=()
for ((r = 1; r <= ROUNDS; r++)); do
    if ((SINK_MSGS > 0)); then
        sink_round "$r"
        sink_s+=("$ELAPSED")
        log "round $r/$ROUNDS: smtp-sink  $SINK_MSGS msgs in $ELAPSED s"
    fi
    ringrelay_round "$r"
    rr_s+=("$ELAPSED")
    log "round $r/$ROUNDS: ringrelay  $RR_MSGS msgs in $ELAPSED s (spool, log and stop line all say $RR_MSGS)"
    pf_round "$r"
    pf_s+=("$ELAPSED")
    log "round $r/$ROUNDS: postfix    $PF_MSGS msgs in $ELAPSED s ($PF_MSGS on hold)"
done
stop_postfix

rr_med=$(median "${rr_s[@]}")
pf_med=$(median "${pf_s[@]}")
rr_rate=$(rate "$RR_MSGS" "$rr_med")
pf_rate=$(rate "$PF_MSGS" "$pf_med")
ratio=$(awk -v a="$RR_MSGS" -v b="$rr_med" -v c="$PF_MSGS" -v d="$pf_med" 'BEGIN { printf "%.1f", (a / b) / (c / d) }')

row() {  # row NAME MSGS SECONDS [NOTE]
    awk -v name="$1" -v n="$2" -v s="$3" -v note="${4:-}" \
        'BEGIN { r = n / s; printf "%-10s %7d msgs in %6.2f s  %7.0f/s  %6.1f M/h%s\n", name, n, s, r, r * 3600 / 1e6, note }'
}
rounds_note=""
((ROUNDS > 1)) && rounds_note=", median of $ROUNDS rounds"
echo "acceptance ($((MSG_SIZE / 1024)) KiB, $SESSIONS sessions, smtp-source -d, durable$rounds_note)"
row ringrelay "$RR_MSGS" "$rr_med"
row postfix "$PF_MSGS" "$pf_med" "   (Postfix $PF_VERSION, queue on hold)"
sink_json=""
if ((SINK_MSGS > 0)); then
    sink_med=$(median "${sink_s[@]}")
    row smtp-sink "$SINK_MSGS" "$sink_med" "   (client ceiling: stores nothing)"
    sink_json=$(printf ',"smtp_sink":{"messages":%d,"seconds":%s,"median_seconds":%s,"per_second":%s}' \
        "$SINK_MSGS" "$(json_list "${sink_s[@]}")" "$sink_med" "$(rate "$SINK_MSGS" "$sink_med")")
fi
echo "ratio ringrelay/postfix: ${ratio}x   (1-min load average $LOAD_START before the run)"
printf '{"bench":"acceptance","message_bytes":%d,"sessions":%d,"client":"smtp-source -d","cpus":%d,"loadavg_before":%s,"rounds":%d,' \
    "$MSG_SIZE" "$SESSIONS" "$(nproc)" "$LOAD_START" "$ROUNDS"
printf '"ringrelay":{"messages":%d,"seconds":%s,"median_seconds":%s,"per_second":%s,"per_hour":%s},' \
    "$RR_MSGS" "$(json_list "${rr_s[@]}")" "$rr_med" "$rr_rate" "$((rr_rate * 3600))"
printf '"postfix":{"version":"%s","messages":%d,"seconds":%s,"median_seconds":%s,"per_second":%s,"per_hour":%s}' \
    "$PF_VERSION" "$PF_MSGS" "$(json_list "${pf_s[@]}")" "$pf_med" "$pf_rate" "$((pf_rate * 3600))"
printf '%s,"ratio":%s}\n' "$sink_json" "$ratio"
