# bench/lib/common.sh: shell functions shared by the end-to-end benchmark scripts in bench/
# (acceptance.sh, relay_e2e.sh, e2e.py). Sourced, never run. The sourcing script sets, before
# sourcing:
#   BENCH_NAME               prefix of every message ("acceptance: ...")
#   ROOT BUILD_DIR RINGRELAY where the source tree, the build and the binary are
#   SOURCE SINK              paths of Postfix's smtp-source and smtp-sink
#   PORT_BASE                first loopback port pick_port tries
# and owns the globals PF_CONF and PF_MASTER_PID (the running private Postfix instance, if
# any) that stop_postfix and pf_start use. Bash only; set -euo pipefail is the caller's.
# shellcheck shell=bash

log() { echo "$BENCH_NAME: $*" >&2; }
die() {
    echo "$BENCH_NAME: error: $*" >&2
    exit 1
}

# ---------------------------------------------------------------------------------------
# Processes: everything a script starts is stopped by its own PID.
PF_CONF=${PF_CONF:-}
PF_MASTER_PID=${PF_MASTER_PID:-}

stop_pid() {  # stop_pid PID SECONDS: SIGTERM, wait up to SECONDS, then SIGKILL
    local pid=$1 secs=$2 i
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < secs * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    log "PID $pid ignored SIGTERM for ${secs}s; killing it"
    kill -KILL "$pid" 2>/dev/null || true
}

stop_postfix() {
    [[ -n $PF_CONF ]] || return 0
    postfix -c "$PF_CONF" stop >/dev/null 2>&1 || true
    if [[ -n $PF_MASTER_PID ]]; then stop_pid "$PF_MASTER_PID" 15; fi
    PF_CONF=""
    PF_MASTER_PID=""
}

# ---------------------------------------------------------------------------------------
# What a run needs.
ensure_postfix() {
    if [[ -x $SOURCE && -x $SINK && -x /usr/sbin/postfix && -x /usr/sbin/postsuper ]]; then return; fi
    log "installing postfix (for smtp-source, smtp-sink and the peer server)"
    "$ROOT/scripts/install-deps" --bench
    [[ -x $SOURCE && -x $SINK ]] || die "postfix is installed but $SOURCE or $SINK is missing"
}

ensure_ringrelay() {
    if [[ -x $RINGRELAY ]]; then return; fi
    [[ $RINGRELAY == "$BUILD_DIR/tools/ringrelay" ]] || die "RINGRELAY=$RINGRELAY is not executable"
    log "building $RINGRELAY"
    "$ROOT/scripts/install-deps"
    # Other builds may share this tree: configure and build under the shared lock.
    # shellcheck disable=SC2016 # expanded by the inner bash
    flock /tmp/rr-build.lock bash -c '[[ -f "$1/build.ninja" ]] || meson setup "$1" "$2"' _ "$BUILD_DIR" "$ROOT"
    flock /tmp/rr-build.lock ninja -C "$BUILD_DIR" tools/ringrelay
    [[ -x $RINGRELAY ]] || die "build did not produce $RINGRELAY"
}

# ---------------------------------------------------------------------------------------
# Loopback ports.
port_listening() {  # is something listening on TCP port $1 (IPv4 or IPv6)?
    local hex
    hex=$(printf '%04X' "$1")
    awk -v h="$hex" 'FNR > 1 { n = split($2, a, ":"); if (a[n] == h && $4 == "0A") f = 1 } END { exit !f }' \
        /proc/net/tcp /proc/net/tcp6 2>/dev/null
}

NEXT_PORT=$PORT_BASE
pick_port() {  # sets PORT to the next free loopback port
    local tries
    for ((tries = 0; tries < 200; tries++)); do
        PORT=$NEXT_PORT
        NEXT_PORT=$((NEXT_PORT + 1))
        if ! port_listening "$PORT"; then return; fi
    done
    die "no free port from $PORT_BASE on"
}

wait_listening() {  # wait_listening PORT PID WHAT: up to 15 s
    local i
    for ((i = 0; i < 150; i++)); do
        port_listening "$1" && return 0
        if [[ -n $2 ]] && ! kill -0 "$2" 2>/dev/null; then die "$3 exited before listening on port $1"; fi
        sleep 0.1
    done
    die "$3 is not listening on port $1 after 15 s"
}

# ---------------------------------------------------------------------------------------
# The private Postfix instance: config dir DIR/etc, queue DIR/queue, data DIR/data, log
# DIR/maillog; /etc/postfix is not touched. The caller writes DIR/etc/main.cf.
pf_setup_dir() {  # pf_setup_dir DIR PORT PURPOSE <<EXTRA: a private Postfix instance
    # (config, queue and log under DIR; /etc/postfix untouched), smtpd on 127.0.0.1:PORT,
    # relaying for loopback, no DNS, logging to DIR/maillog. The script's own main.cf lines
    # (hold or relayhost, process limits) come on stdin. Then started: see pf_start.
    local dir=$1 port=$2 purpose=$3
    mkdir -p "$dir/etc" "$dir/queue"  # data/ is created by postfix itself, owned by postfix
    {
        cat <<EOF
# Private Postfix instance for $purpose
compatibility_level = 3.6
queue_directory = $dir/queue
data_directory = $dir/data
meta_directory = /etc/postfix
mail_owner = postfix
setgid_group = postdrop
myhostname = postfix-bench.example.org
mydomain = example.org
myorigin = \$myhostname
mydestination =
relay_domains =
inet_interfaces = loopback-only
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
smtpd_recipient_restrictions = permit_mynetworks, reject
# No DNS anywhere (disable_dns_lookups is the deprecated spelling of this).
smtp_dns_support_level = disabled
smtp_host_lookup = native
alias_maps =
alias_database =
local_recipient_maps =
biff = no
# There is no syslog here; log to a file through postlogd, as a real system logs too.
maillog_file_prefixes = $dir
maillog_file = $dir/maillog
EOF
        cat  # the script's own lines
    } >"$dir/etc/main.cf"
    pf_write_master_cf "$dir" "$port"
    pf_start "$dir" "$port"
}

pf_write_master_cf() {  # pf_write_master_cf DIR PORT: smtpd on 127.0.0.1:PORT
    # chroot off (column 5 'n'): the queue is a temp dir with no chroot files in it.
    cat >"$1/etc/master.cf" <<EOF
127.0.0.1:$2 inet n - n - - smtpd
cleanup   unix  n - n - 0 cleanup
qmgr      unix  n - n 300 1 qmgr
rewrite   unix  - - n - - trivial-rewrite
bounce    unix  - - n - 0 bounce
defer     unix  - - n - 0 bounce
trace     unix  - - n - 0 bounce
verify    unix  - - n - 1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n - - proxymap
proxywrite unix - - n - 1 proxymap
smtp      unix  - - n - - smtp
relay     unix  - - n - - smtp
showq     unix  n - n - - showq
error     unix  - - n - - error
retry     unix  - - n - - error
discard   unix  - - n - - discard
anvil     unix  - - n - 1 anvil
scache    unix  - - n - 1 scache
postlog   unix-dgram n - n - 1 postlogd
tlsmgr    unix  - - n 1000? 1 tlsmgr
EOF
}

pf_tls_setup() {  # pf_tls_setup DIR: smtpd TLS for the instance in DIR (before pf_setup_dir)
    # A self-signed EC P-256 certificate in DIR/tls, the kind ringrelay makes for itself in
    # SPOOL/tls, so both servers' handshakes sign with the same key type. Prints the main.cf
    # lines that offer STARTTLS with it (smtpd_tls_security_level = may: the client decides)
    # and log one line per TLS connection (protocol and cipher) to DIR/maillog. smtpd reads
    # the key as root before it drops privileges, so the key stays mode 0600, root's.
    local dir=$1
    mkdir -p "$dir/tls"
    if ! openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
        -subj "/CN=postfix-bench.example.org" -keyout "$dir/tls/key.pem" -out "$dir/tls/cert.pem" \
        >"$dir/tls/openssl.out" 2>&1; then
        cat "$dir/tls/openssl.out" >&2
        die "openssl req could not make a certificate in $dir/tls"
    fi
    chmod 600 "$dir/tls/key.pem"
    cat <<EOF
# STARTTLS offered with a self-signed certificate (pf_tls_setup)
smtpd_tls_security_level = may
smtpd_tls_cert_file = $dir/tls/cert.pem
smtpd_tls_key_file = $dir/tls/key.pem
smtpd_tls_loglevel = 1
EOF
}

pf_start() {  # pf_start DIR PORT: check and start it; sets PF_CONF, PF_MASTER_PID, PF_VERSION
    local dir=$1
    # Postfix commands print diagnostics only to a terminal or the maillog.
    if ! postfix -c "$dir/etc" check >"$dir/check.out" 2>&1; then
        cat "$dir/check.out" "$dir/maillog" 2>/dev/null >&2 || true
        die "postfix -c $dir/etc check failed (for its message: script -qc 'postfix -c $dir/etc check' /dev/null)"
    fi
    PF_CONF=$dir/etc
    if ! postfix -c "$dir/etc" start >"$dir/start.out" 2>&1; then
        cat "$dir/start.out" "$dir/maillog" 2>/dev/null >&2 || true
        die "private postfix did not start"
    fi
    PF_MASTER_PID=$(tr -d ' \n' <"$dir/queue/pid/master.pid" 2>/dev/null || true)
    [[ $PF_MASTER_PID =~ ^[0-9]+$ ]] || die "private postfix started but left no master.pid"
    wait_listening "$2" "$PF_MASTER_PID" "postfix master"
    # shellcheck disable=SC2034 # read by the sourcing script
    PF_VERSION=$(postconf -c "$dir/etc" -h mail_version)
}

# ---------------------------------------------------------------------------------------
# Figures.
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
rate() { awk -v n="$1" -v s="$2" 'BEGIN { printf "%.0f", n / s }'; }
json_list() { local IFS=,; echo "[$*]"; }
