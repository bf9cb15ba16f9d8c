// core/config.cc: see config.h. The flag table (flag_table below) and what it drives: the
// JSON keys, the CLI11 options, --help and --dump-flags, the range checks. CLI11 reports
// through exceptions; read_config here is the one place in core/ that catches them, turning
// each into a config_exit value.
#include "core/config.h"

#include "core/byte_size.h"
#include "core/duration.h"

#include <unistd.h>

#include <CLI/CLI.hpp>
#include <simdjson.h>
#include <algorithm>
#include <cctype>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <thread>
#include <type_traits>

namespace ringrelay::core {

namespace {

std::vector<std::string> split_list(const std::vector<std::string>& items) {
    std::vector<std::string> out;
    for (const std::string& item : items) {
        std::size_t start = 0;
        while (start <= item.size()) {
            std::size_t comma = item.find(',', start);
            if (comma == std::string::npos) comma = item.size();
            std::string part = item.substr(start, comma - start);
            part.erase(0, part.find_first_not_of(" \t"));
            part.erase(part.find_last_not_of(" \t") + 1);
            if (!part.empty()) out.push_back(part);
            start = comma + 1;
        }
    }
    return out;
}

// split: comma-split each item (every list but a whole_items row's).
std::expected<std::vector<std::string>, std::string> json_strings(simdjson::dom::element v,
                                                                  const std::string& key, bool split) {
    std::vector<std::string> out;
    if (v.is_string()) {
        out.emplace_back(std::string_view(v.get_string().value_unsafe()));
        return split ? split_list(out) : out;
    }
    if (!v.is_array()) return std::unexpected("config key '" + key + "': expected a string or an array of strings");
    simdjson::dom::array items;
    if (v.get_array().get(items) != simdjson::SUCCESS)
        return std::unexpected("config key '" + key + "': expected an array");
    for (simdjson::dom::element item : items) {
        if (!item.is_string()) return std::unexpected("config key '" + key + "': every item must be a string");
        out.emplace_back(std::string_view(item.get_string().value_unsafe()));
    }
    return split ? split_list(out) : out;
}

template <typename Int>
std::expected<Int, std::string> json_uint(simdjson::dom::element v, const std::string& key) {
    std::uint64_t n = 0;
    if (v.is_uint64()) {
        n = v.get_uint64().value_unsafe();
    } else if (v.is_int64() && v.get_int64().value_unsafe() >= 0) {
        n = static_cast<std::uint64_t>(v.get_int64().value_unsafe());
    } else {
        return std::unexpected("config key '" + key + "': expected a non-negative integer");
    }
    if (n > std::numeric_limits<Int>::max()) return std::unexpected("config key '" + key + "': value too large");
    return static_cast<Int>(n);
}

std::expected<std::string, std::string> json_string(simdjson::dom::element v, const std::string& key) {
    if (!v.is_string()) return std::unexpected("config key '" + key + "': expected a string");
    return std::string(std::string_view(v.get_string().value_unsafe()));
}

template <typename... F>
struct overloaded : F... {
    using F::operator()...;
};
template <typename... F>
overloaded(F...) -> overloaded<F...>;  // clang 16 (the fuzz build) lacks aggregate deduction

std::string lower(std::string s) {
    std::transform(s.begin(), s.end(), s.begin(), [](unsigned char ch) { return static_cast<char>(std::tolower(ch)); });
    return s;
}


// The flags, in --help order. A row's default is its field's initialiser in config.h.
constexpr flag_descriptor flag_table[] = {
    {.name = "--listen", .member = &config::listen, .help = "ADDR:PORT to accept SMTP on; repeatable"},
    {.name = "--listen-tls", .member = &config::listen_tls,
     .help = "ADDR:PORT to accept SMTP over implicit TLS on (RFC 8314, port 465 in production); repeatable"},
    {.name = "--tls-cert", .member = &config::tls_cert,
     .help = "PEM certificate (chain, leaf first) for STARTTLS and --listen-tls; without it a self-signed "
             "certificate for --hostname is made on first start and kept in SPOOL/tls", .live = true},
    {.name = "--tls-key", .member = &config::tls_key, .help = "PEM private key of --tls-cert (not passphrase-protected)", .live = true},
    {.name = "--tls-ciphers", .member = &config::tls_ciphers, .unset_means = "OpenSSL's",
     .help = "inbound TLS 1.2 cipher list in OpenSSL syntax"},
    {.name = "--tls-ciphersuites", .member = &config::tls_ciphersuites, .unset_means = "OpenSSL's",
     .help = "inbound TLS 1.3 cipher suites, colon-separated"},
    {.name = "--no-ktls", .member = &config::ktls, .form = flag_form::negated,
     .help = "keep TLS records in user space (OpenSSL) even where the kernel offers kTLS"},
    {.name = "--no-starttls", .member = &config::starttls, .form = flag_form::negated,
     .help = "do not offer STARTTLS on --listen ports (--listen-tls still works)"},
    {.name = "--auth-users", .member = &config::auth_users,
     .help = "file of 'user:hash' lines (hashes from ringrelay-passwd); enables AUTH PLAIN and LOGIN, "
             "offered only under TLS", .live = true},
    {.name = "--auth-plaintext", .member = &config::auth_plaintext,
     .help = "offer AUTH on unencrypted connections too (only behind a TLS-terminating proxy on a trusted network)"},
    {.name = "--auth-max-failures", .member = &config::auth_max_failures, .min = 1,
     .help = "failed AUTH attempts per connection before 421 4.7.0 and close"},
    {.name = "--auth-max-failures-per-ip", .member = &config::auth_max_failures_per_ip, .min = 1,
     .help = "failed AUTH attempts per client address within --auth-failure-window before its AUTH is "
             "refused with 421 4.7.0"},
    {.name = "--auth-failure-window", .member = &config::auth_failure_window, .min = 1, .unit = "seconds",
     .help = "seconds over which per-address AUTH failures count"},
    {.name = "--auth-queue-size", .member = &config::auth_queue_size, .max = 65536, .unset_means = "none wait",
     .help = "password checks per shard that may wait for room (checks of their address in flight, a paced "
             "user, busy check threads) instead of failing; beyond it 454 4.7.0"},
    {.name = "--auth-queue-timeout", .member = &config::auth_queue_timeout, .min = 1, .max = 3600,
     .unit = "seconds", .help = "seconds a password check may wait for room before 454 4.7.0"},
    {.name = "--shards", .member = &config::shards, .max = 256, .unset_means = "online CPUs",
     .help = "shard threads, each with its own io_uring"},
    {.name = "--spool", .member = &config::spool, .help = "spool directory"},
    {.name = "--spool-segment-size", .member = &config::spool_segment_size, .form = flag_form::byte_size,
     .help = "a spool segment file is closed and the next one begun once it holds this much; bytes, or with "
             "KiB, MiB or GiB; from 1MiB to 1GiB (smaller segments are compacted and deleted sooner)"},
    {.name = "--hostname", .member = &config::hostname, .unset_means = "gethostname",
     .help = "name in the banner, EHLO reply and Received:"},
    {.name = "--postmaster", .member = &config::postmaster, .unset_means = "postmaster@ the --hostname",
     .help = "ADDRESS that RCPT TO:<postmaster> and <postmaster@HOSTNAME> are delivered to, routed like any "
             "recipient"},
    {.name = "--relay-networks", .member = &config::relay_networks,
     .help = "CIDR,... of clients that may relay anywhere", .live = true},
    {.name = "--relay-domains", .member = &config::relay_domains, .unset_means = "none",
     .help = "DOMAIN,... anyone may send to; '.example.org' also matches subdomains", .live = true},
    // A record's payload is at most 1 GiB (queue/record.h); leave room for the envelope.
    {.name = "--max-message-size", .member = &config::max_message_size, .min = 1,
     .max = (1ull << 30) - (1ull << 20), .unit = "bytes", .help = "largest message in bytes, advertised in SIZE", .live = true},
    {.name = "--max-recipients", .member = &config::max_recipients, .min = 1, .help = "recipients per message", .live = true},
    {.name = "--command-timeout", .member = &config::command_timeout, .min = 1, .unit = "seconds",
     .help = "seconds to wait for a command or data before 421 4.4.2"},
    {.name = "--min-data-rate", .member = &config::min_data_rate, .unset_means = "off",
     .help = "bytes/s a client must average while sending message content; slower, and only "
             "--command-timeout runs, like Postfix's smtpd_min_data_rate", .live = true},
    {.name = "--shutdown-timeout", .member = &config::shutdown_timeout,
     .help = "seconds a transaction in progress may take to finish after SIGTERM"},
    {.name = "--max-errors", .member = &config::max_errors, .min = 1,
     .help = "error replies per session before 421 4.7.0", .live = true},
    {.name = "--max-connections", .member = &config::max_connections, .unset_means = "no limit",
     .help = "inbound connections at once, all shards; above it 421 4.7.0"},
    {.name = "--max-connections-per-ip", .member = &config::max_connections_per_ip, .unset_means = "no limit",
     .help = "inbound connections at once from one IPv4 address or IPv6 /64; above it 421 4.7.0"},
    {.name = "--proxy-protocol-from", .member = &config::proxy_protocol_from, .unset_means = "none",
     .help = "CIDR,... of load balancers whose connections start with a PROXY protocol header (v1 or v2, "
             "HAProxy's send-proxy / send-proxy-v2): the address it carries is the client's for relay "
             "networks, per-IP limits, AUTH throttles, Received: and the log; a PROXY line from anywhere "
             "else gets 421"},
    {.name = "--proxy-protocol-timeout", .member = &config::proxy_protocol_timeout, .min = 1, .max = 3600,
     .unit = "seconds",
     .help = "seconds a --proxy-protocol-from connection may take to send its whole PROXY header before it "
             "is closed (Postfix's smtpd_upstream_proxy_timeout)"},
    {.name = "--redis", .member = &config::redis, .unset_means = "none",
     .help = "redis://HOST:PORT/DB or unix:PATH of the Redis that the nodes of a fleet share their limits "
             "through (issue 19); a malformed URL stops the start"},
    {.name = "--cluster-size", .member = &config::cluster_size, .min = 1, .max = 1000,
     .help = "nodes sharing the limits kept in --redis: while Redis is unreachable or erring, each node "
             "keeps limit / cluster-size of each shared limit"},
    {.name = "--http", .member = &config::http, .unset_means = "none",
     .help = "ADDR:PORT to serve HTTP on (GET /metrics, Prometheus text format; the queue control API /api/v1/...); repeatable"},
    {.name = "--http-tls", .member = &config::http_tls, .unset_means = "none",
     .help = "ADDR:PORT to serve HTTPS on (implicit TLS with --tls-cert/--tls-key, which it needs; the same "
             "paths as --http); repeatable"},
    {.name = "--http-networks", .member = &config::http_networks,
     .help = "CIDR,... of clients that may call every path of the HTTP endpoint; others get 403, except "
             "POST /api/v1/inject over --http-tls with HTTP Basic credentials from --auth-users", .live = true},
    {.name = "--http-timeout", .member = &config::http_timeout, .min = 1, .max = 3600, .unit = "seconds",
     .help = "seconds an HTTP request may take to arrive whole before 408 (and an idle connection stays open)"},
    {.name = "--log", .member = &config::log, .help = "delivery log, JSON lines; '-' for stdout, '' for none"},
    {.name = "--list-spool", .member = &config::list_spool, .command_line_only = true,
     .help = "print the number and ids of spooled messages, then exit"},
    {.name = "--hold", .member = &config::hold,
     .help = "accept and spool mail but deliver nothing (it stays in the spool until a run without --hold)"},
    {.name = "--drain", .member = &config::drain,
     .help = "accept nothing (no SMTP listener), try everything the spool holds now, exit 0 once nothing "
             "is left (or at SIGTERM, as usual); to retire a node (SIGUSR2 drains a running relay)"},
    {.name = "--route", .member = &config::routes,
     .help = "DOMAIN=HOST:PORT: deliver DOMAIN's mail to that next hop; repeatable; '*' matches every domain "
             "(numeric HOST for now)", .live = true},
    {.name = "--smarthost", .member = &config::smarthost,
     .help = "HOST:PORT: deliver everything there (same as --route '*=HOST:PORT')", .live = true},
    {.name = "--retry-intervals", .member = &config::retry_intervals, .form = flag_form::duration_list,
     .help = "waits between delivery attempts of a deferred recipient, down to the millisecond (250ms,1s,5m); "
             "the last repeats, each jittered"},
    {.name = "--max-age", .member = &config::max_age, .form = flag_form::duration,
     .help = "after this long undelivered mail expires and bounces"},
    {.name = "--delay-warning", .member = &config::delay_warning, .form = flag_form::duration_or_zero,
     .help = "send the sender one delay notice (a DSN with Action: delayed) for a message still queued this long "
             "after arrival, at its first deferral after that; never for null-sender mail; 0 = never"},
    {.name = "--body-cache-size", .member = &config::body_cache_size, .form = flag_form::byte_size,
     .help = "memory (all shards together) for the bodies of recently received messages, so a first "
             "delivery attempt need not read them back from the spool; bytes, or with KiB, MiB or GiB; 0 = none"},
    {.name = "--bounce-classes", .member = &config::bounce_classes,
     .unset_means = "the embedded etc/bounce-classes.json only",
     .help = "FILE of bounce classification rules (JSON, as etc/bounce-classes.json) over the embedded ones: "
             "a rule named like an embedded one replaces it, the others are tried first; a file that does "
             "not load stops the start"},
    {.name = "--max-connections-per-destination", .member = &config::max_connections_per_destination, .min = 1,
     .help = "outbound connections per site (the default shaping rule's connection_limit)", .live = true},
    {.name = "--max-messages-per-connection", .member = &config::max_messages_per_connection, .min = 1,
     .help = "messages sent over one outbound connection before it is closed (the default shaping rule's "
             "max_deliveries_per_connection)", .live = true},
    {.name = "--idle-connection-timeout", .member = &config::idle_connection_timeout,
     .help = "seconds an idle outbound connection is kept for reuse (the default shaping rule's idle_timeout)", .live = true},
    {.name = "--shaping", .member = &config::shaping,
     .help = "FILE of traffic shaping rules (JSON, as etc/shaping.json) over the shipped ones and the earlier "
             "--shaping files; repeatable, later files override earlier ones field by field; a file that does not "
             "load stops the start (and is refused by SIGHUP, keeping the rules in use)", .live = true},
    {.name = "--no-default-shaping", .member = &config::default_shaping, .form = flag_form::negated,
     .help = "do not load the shipped etc/shaping.json provider rules: only the default rule (the three flags "
             "above) and the --shaping files shape delivery", .live = true},
    {.name = "--campaign-header", .member = &config::campaign_header, .unset_means = "none",
     .help = "NAME of the header field that names a message's campaign (e.g. X-Campaign-Id): its value keys the "
             "shaping rules' \"campaigns\" limits, and every field of that name is stripped from the message "
             "before it is signed and stored; a --shaping file's \"campaign_header\" overrides it", .live = true},
    {.name = "--dns-server", .member = &config::dns_server, .unset_means = "/etc/resolv.conf",
     .help = "ADDR:PORT of the DNS server for MX lookups"},
    {.name = "--smtp-port", .member = &config::smtp_port, .min = 1, .max = 65535,
     .help = "TCP port of the mail exchangers found by MX lookup"},
    {.name = "--outbound-tls", .member = &config::outbound_tls,
     .help = "TLS policy for delivery: disabled, opportunistic (STARTTLS when offered), required (TLS or "
             "defer, never plaintext) or verify (required plus certificate checks)", .live = true},
    {.name = "--route-tls", .member = &config::route_tls,
     .help = "DOMAIN=POLICY: the --outbound-tls policy for one recipient domain; repeatable; '*' matches all", .live = true},
    {.name = "--outbound-ca-file", .member = &config::outbound_ca_file, .unset_means = "OpenSSL's system store",
     .help = "PEM CA certificates that 'verify' trusts", .live = true},
    {.name = "--egress-source", .member = &config::egress_sources, .form = flag_form::whole_items,
     .help = "NAME=ADDRESS[,ehlo=HOSTNAME]: an egress source: outbound connections of its pools bind ADDRESS "
             "(IPv4 or IPv6, which this host must have) and greet with HOSTNAME (default --hostname); repeatable"},
    {.name = "--egress-pool", .member = &config::egress_pools, .form = flag_form::whole_items,
     .help = "NAME=SOURCE[:WEIGHT],...: a pool of egress sources, each message's source chosen by weighted round "
             "robin (weight a positive integer, default 1); repeatable"},
    {.name = "--pool-for", .member = &config::pool_for,
     .help = "SELECTOR=POOL: mail whose selector matches goes out through POOL; SELECTOR is "
             "sender-domain:DOMAIN, auth-user:USER or *; repeatable, the first match wins; mail no selector "
             "matches uses the system-chosen address (egress source \"default\")"},
    {.name = "--dkim-key", .member = &config::dkim_keys,
     .help = "DOMAIN:SELECTOR:KEYFILE: sign mail whose From: domain is DOMAIN (or a subdomain without keys "
             "of its own) with this PEM key (RSA of 1024 bits or more: rsa-sha256; Ed25519: ed25519-sha256); "
             "repeatable: several keys for one domain make several signatures", .live = true},
    {.name = "--dkim-sign-all", .member = &config::dkim_sign_all,
     .help = "DOMAIN: its --dkim-key keys also sign every message (the ESP's own signature, for feedback loops)", .live = true},
    {.name = "--dkim-headers", .member = &config::dkim_headers,
     .unset_means = "those present of RFC 6376 5.4.1's set (From, Reply-To, Subject, Date, To, Cc, Resent-*, "
                    "In-Reply-To, References, List-*) and List-Unsubscribe-Post, Message-ID, MIME-Version, "
                    "Content-Type, Content-Transfer-Encoding",
     .help = "header fields to sign (comma-separated names); From is always signed; From, Subject, To, Date, "
             "Message-ID, MIME-Version and Content-Type are signed once more than they occur", .live = true},
    {.name = "--dkim-canonicalization", .member = &config::dkim_canonicalization,
     .help = "c= of the signatures: header/body, each simple or relaxed", .live = true},
    {.name = "--dkim-expiration", .member = &config::dkim_expiration, .form = flag_form::duration,
     .unset_means = "no x= tag", .help = "signatures expire this long after they are made (x=)", .live = true},
    {.name = "--no-suppression", .member = &config::suppression, .form = flag_form::negated,
     .help = "keep no suppression list: recipients that hard-bounced are neither added to their sender's list "
             "nor refused at RCPT"},
    {.name = "--suppression-ttl", .member = &config::suppression_ttl, .form = flag_form::duration_or_zero,
     .help = "how long a recipient stays on a suppression list after its hard bounce; 0 = for ever"},
    {.name = "--list-suppressed", .member = &config::list_suppressed, .form = flag_form::optional_value,
     .command_line_only = true,
     .help = "[TENANT]: print the suppression list of TENANT (without it: of every tenant) from the spool of a "
             "stopped relay, then exit"},
    {.name = "--suppress", .member = &config::suppress, .command_line_only = true,
     .help = "TENANT:ADDRESS: put ADDRESS on TENANT's suppression list in the spool of a stopped relay, then exit"},
    {.name = "--unsuppress", .member = &config::unsuppress, .command_line_only = true,
     .help = "TENANT:ADDRESS: take ADDRESS off TENANT's suppression list in the spool of a stopped relay, then exit"},
    {.name = "--unsubscribe-url", .member = &config::unsubscribe_url, .unset_means = "none",
     .help = "BASE URL of one-click unsubscribe links (RFC 8058): a single-recipient message without a "
             "List-Unsubscribe field gets List-Unsubscribe: <BASE/u/TOKEN> and List-Unsubscribe-Post before it is "
             "signed; POST /u/TOKEN on an --http endpoint (open to everyone) puts the recipient on the tenant's "
             "suppression list. BASE must reach that endpoint (through a proxy of yours, usually)"},
    {.name = "--unsubscribe-key", .member = &config::unsubscribe_key, .unset_means = "none",
     .help = "FILE whose first line is the HMAC-SHA-256 key of the unsubscribe links (32 octets or more: "
             "openssl rand -hex 32); needed with --unsubscribe-url; a new key invalidates the links sent before"},
};

static_assert(std::is_same_v<unsigned, std::uint32_t>, "flag_member has no alternative for config::shards");

constexpr bool is_integer(const flag_member& m) noexcept {
    return !std::holds_alternative<bool config::*>(m) && !std::holds_alternative<std::string config::*>(m) &&
           !std::holds_alternative<std::vector<std::string> config::*>(m);
}

constexpr std::uint64_t integer_max(const flag_member& m) noexcept {
    if (std::holds_alternative<std::uint16_t config::*>(m)) return std::numeric_limits<std::uint16_t>::max();
    if (std::holds_alternative<std::uint32_t config::*>(m)) return std::numeric_limits<std::uint32_t>::max();
    return std::numeric_limits<std::uint64_t>::max();
}

constexpr std::string_view derived_json_key(const flag_descriptor& f) noexcept {
    if (f.command_line_only) return {};
    if (!f.json_key.empty()) return f.json_key;
    return f.name.substr(f.form == flag_form::negated ? 5 : 2);
}

// Parses every item of a list flag into `out` (cleared first); an error names the flag.
template <typename Parse, typename T>
std::expected<void, std::string> parse_each(const std::vector<std::string>& items, Parse parse, std::vector<T>& out,
                                            std::string_view flag) {
    out.clear();
    for (const std::string& item : items) {
        auto v = parse(item);
        if (!v) return std::unexpected(std::string(flag) + ": " + v.error());
        out.push_back(*v);
    }
    return {};
}

// Not constexpr: a row that calls it stops the build, and the compiler's message quotes the text.
void bad_flag_row(const char*) {}

// Compile-time checks of the table; a mistake in a row is a build error quoting the rule broken.
consteval bool table_is_sound() {
    constexpr std::span<const flag_descriptor> rows(flag_table);
    for (std::size_t i = 0; i < rows.size(); ++i) {
        const flag_descriptor& f = rows[i];
        if (f.name.size() < 3 || !f.name.starts_with("--")) bad_flag_row("a name starts with --");
        if (f.help.empty()) bad_flag_row("every row has help");
        const bool is_bool = std::holds_alternative<bool config::*>(f.member);
        const bool is_text = std::holds_alternative<std::string config::*>(f.member);
        if (f.form == flag_form::negated && (!is_bool || !f.name.starts_with("--no-")))
            bad_flag_row("a negated switch is a bool named --no-X");
        if ((f.form == flag_form::duration || f.form == flag_form::duration_list ||
             f.form == flag_form::duration_or_zero) && !is_text)
            bad_flag_row("a duration is held as text");
        if (f.form == flag_form::byte_size && !is_text) bad_flag_row("a byte size is held as text");
        if (f.form == flag_form::whole_items && !std::holds_alternative<std::vector<std::string> config::*>(f.member))
            bad_flag_row("whole items are a list's");
        if (f.form == flag_form::optional_value && (!is_text || !f.command_line_only))
            bad_flag_row("an optional value is text, on the command line only");
        if (!is_integer(f.member) && (f.min != 0 || f.max != flag_no_max || !f.unit.empty()))
            bad_flag_row("only integers have a range or a unit");
        if (is_integer(f.member) && f.max != flag_no_max && (f.max > integer_max(f.member) || f.min > f.max))
            bad_flag_row("the range fits the field's type");
        if (is_bool && !f.unset_means.empty()) bad_flag_row("a switch has no unset_means");
        if (f.command_line_only && !f.json_key.empty()) bad_flag_row("a command-line-only row has no JSON key");
        for (std::size_t j = 0; j < i; ++j) {
            if (rows[j].name == f.name) bad_flag_row("names are unique");
            if (rows[j].member == f.member) bad_flag_row("one row per config field");
            if (!derived_json_key(f).empty() && derived_json_key(rows[j]) == derived_json_key(f))
                bad_flag_row("JSON keys are unique");
        }
    }
    return true;
}
static_assert(table_is_sound());

const flag_descriptor* find_json_key(std::string_view key) noexcept {
    for (const flag_descriptor& f : flag_table)
        if (!f.command_line_only && derived_json_key(f) == key) return &f;
    return nullptr;
}

std::expected<void, std::string> set_from_json(const flag_descriptor& f, simdjson::dom::element v,
                                               const std::string& key, config& c) {
    using result = std::expected<void, std::string>;
    auto assign = [](auto&& parsed, auto& target) -> result {
        if (!parsed) return std::unexpected(parsed.error());
        target = std::move(*parsed);
        return {};
    };
    return std::visit(
        overloaded{
            [&](bool config::*m) -> result {
                if (!v.is_bool()) return std::unexpected("config key '" + key + "': expected true or false");
                c.*m = v.get_bool().value_unsafe();
                return {};
            },
            [&](std::string config::*m) -> result {
                if (f.form == flag_form::byte_size && (v.is_uint64() || v.is_int64())) {
                    auto n = json_uint<std::uint64_t>(v, key);
                    if (!n) return std::unexpected(n.error());
                    c.*m = std::to_string(*n);
                    return {};
                }
                return assign(json_string(v, key), c.*m);
            },
            [&](std::vector<std::string> config::*m) -> result {
                return assign(json_strings(v, key, f.form != flag_form::whole_items), c.*m);
            },
            [&]<typename Int>(Int config::*m) -> result { return assign(json_uint<Int>(v, key), c.*m); },
        },
        f.member);
}

// "must be at least 1 second", "at most 256", "must be between 1 and 3600 seconds".
std::string range_reason(const flag_descriptor& f) {
    auto with_unit = [&](std::uint64_t n, bool plural) {
        std::string text = std::to_string(n);
        if (f.unit.empty()) return text;
        std::string_view unit = f.unit;
        if (!plural && n == 1 && unit.ends_with('s')) unit.remove_suffix(1);
        return text + " " + std::string(unit);
    };
    if (f.min > 0 && f.max != flag_no_max)
        return "must be between " + std::to_string(f.min) + " and " + with_unit(f.max, true);
    if (f.min > 0) return "must be at least " + with_unit(f.min, false);
    return "at most " + with_unit(f.max, false);
}

// The row's own check of the value `c` holds: its range or its form.
std::expected<void, std::string> check_row(const flag_descriptor& f, const config& c) {
    const std::string name(f.name);
    if (f.form == flag_form::duration_list) {
        auto d = parse_duration_list(c.*std::get<std::string config::*>(f.member));
        if (!d || d->empty())
            return std::unexpected(name + ": " + (d ? std::string("at least one interval is needed") : d.error().message));
    } else if (f.form == flag_form::duration &&
               !(c.*std::get<std::string config::*>(f.member)).empty()) {  // empty: unset_means
        auto d = parse_duration(c.*std::get<std::string config::*>(f.member));
        if (!d || d->count() <= 0)
            return std::unexpected(name + ": " + (d ? std::string("must be positive") : d.error().message));
    } else if (f.form == flag_form::byte_size) {
        if (auto n = parse_byte_size(c.*std::get<std::string config::*>(f.member)); !n)
            return std::unexpected(name + ": " + n.error());
    } else if (f.form == flag_form::duration_or_zero) {
        const std::string& text = c.*std::get<std::string config::*>(f.member);
        if (text != "0")
            if (auto d = parse_duration(text); !d) return std::unexpected(name + ": " + d.error().message);
    }
    if (!is_integer(f.member) || (f.min == 0 && f.max == flag_no_max)) return {};
    const std::uint64_t value = std::visit(
        [&]<typename T>(T config::*m) -> std::uint64_t {
            if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) return c.*m;
            return 0;
        },
        f.member);
    if (value < f.min || value > f.max) return std::unexpected(name + ": " + range_reason(f));
    return {};
}

// Text in a JSON string, quotes included.
std::string json_quoted(std::string_view text) {
    std::string out = "\"";
    for (const char ch : text) {
        switch (ch) {
        case '"': out += "\\\""; break;
        case '\\': out += "\\\\"; break;
        case '\n': out += "\\n"; break;
        case '\t': out += "\\t"; break;
        default:
            if (static_cast<unsigned char>(ch) < 0x20) {
                char escaped[8];
                std::snprintf(escaped, sizeof escaped, "\\u%04x", static_cast<unsigned>(ch));
                out += escaped;
            } else {
                out += ch;
            }
        }
    }
    return out + "\"";
}

std::string_view type_name(const flag_descriptor& f) noexcept {
    switch (f.form) {
    case flag_form::negated: return "negated-switch";
    case flag_form::duration: return "duration";
    case flag_form::duration_or_zero: return "duration-or-zero";
    case flag_form::duration_list: return "duration-list";
    case flag_form::optional_value: return "optional-text";
    case flag_form::byte_size: return "byte-size";
    case flag_form::whole_items:
    case flag_form::plain: break;
    }
    if (std::holds_alternative<bool config::*>(f.member)) return "switch";
    if (std::holds_alternative<std::string config::*>(f.member)) return "text";
    if (std::holds_alternative<std::vector<std::string> config::*>(f.member)) return "list";
    return "uint";
}

}  // namespace

std::span<const flag_descriptor> config_flags() noexcept { return flag_table; }

std::string_view json_key(const flag_descriptor& f) noexcept { return derived_json_key(f); }

std::optional<std::string> default_text(const flag_descriptor& f) {
    static const config defaults{};
    // A value of punctuation only ("-") is quoted so that it reads as a value.
    auto shown = [](const std::string& v) {
        const bool word = std::any_of(v.begin(), v.end(), [](unsigned char ch) { return std::isalnum(ch) != 0; });
        return word ? v : "'" + v + "'";
    };
    auto unset = [&]() -> std::optional<std::string> {
        if (f.unset_means.empty()) return std::nullopt;
        return std::string(f.unset_means);
    };
    return std::visit(
        overloaded{
            [&](bool config::*) -> std::optional<std::string> { return std::nullopt; },
            [&](std::string config::*m) -> std::optional<std::string> {
                const std::string& v = defaults.*m;
                return v.empty() ? unset() : shown(v);
            },
            [&](std::vector<std::string> config::*m) -> std::optional<std::string> {
                const std::vector<std::string>& v = defaults.*m;
                if (v.empty()) return unset();
                std::string joined;
                for (const std::string& item : v) joined += (joined.empty() ? "" : ",") + item;
                return shown(joined);
            },
            [&]<typename Int>(Int config::*m) -> std::optional<std::string> {
                const Int v = defaults.*m;
                if (v == 0 && !f.unset_means.empty()) return "0 = " + std::string(f.unset_means);
                return std::to_string(v);
            },
        },
        f.member);
}

std::string help_text(const flag_descriptor& f) {
    std::string text(f.help);
    const std::optional<std::string> d = default_text(f);
    if (d) {
        text += " (default " + *d;
        // A non-zero default still says what 0 would mean: "(default 10000; 0 = no limit)".
        if (is_integer(f.member) && !f.unset_means.empty() && !d->starts_with("0 = "))
            text += "; 0 = " + std::string(f.unset_means);
        text += ")";
    }
    if (f.live) text += " [SIGHUP applies a change]";
    return text;
}

std::vector<const flag_descriptor*> changed_flags(const config& a, const config& b) {
    std::vector<const flag_descriptor*> out;
    for (const flag_descriptor& f : flag_table)
        if (std::visit([&](auto m) { return a.*m != b.*m; }, f.member)) out.push_back(&f);
    return out;
}

void copy_flags(config& to, const config& from, std::span<const flag_descriptor* const> rows) {
    for (const flag_descriptor* f : rows) {
        std::visit([&](auto m) { to.*m = from.*m; }, f->member);
        const std::string_view n = f->name;
        if (n == "--relay-networks") to.relay_cidrs = from.relay_cidrs;
        if (n == "--route" || n == "--smarthost") to.route_table = from.route_table;
        if (n == "--route-tls" || n == "--outbound-tls") {
            to.route_tls_table = from.route_tls_table;
            to.outbound_tls_policy = from.outbound_tls_policy;
        }
        if (n == "--http-networks") to.http_cidrs = from.http_cidrs;
    }
}

std::string dump_flags_json() {
    std::string out = "[";
    for (const flag_descriptor& f : flag_table) {
        const std::string_view key = json_key(f);
        const std::optional<std::string> d = default_text(f);
        out += out.size() > 1 ? ",\n " : "\n ";
        out += "{\"name\": " + json_quoted(f.name) + ", \"type\": " + json_quoted(type_name(f)) +
               ", \"json_key\": " + (key.empty() ? std::string("null") : json_quoted(key)) +
               ", \"default\": " + (d ? json_quoted(*d) : std::string("null")) +
               ", \"description\": " + json_quoted(help_text(f)) + "}";
    }
    return out + "\n]";
}

std::expected<void, std::string> apply_json_config(std::string_view json, config& c) {
    simdjson::dom::parser parser;
    simdjson::padded_string padded(json);
    simdjson::dom::element root;
    if (auto err = parser.parse(padded).get(root); err)
        return std::unexpected(std::string("config file is not valid JSON: ") + simdjson::error_message(err));
    simdjson::dom::object top;
    if (root.get_object().get(top) != simdjson::SUCCESS)
        return std::unexpected("config file: the top level must be a JSON object");
    for (auto field : top) {
        std::string key(field.key);
        std::replace(key.begin(), key.end(), '_', '-');
        const flag_descriptor* f = find_json_key(key);
        if (f == nullptr) return std::unexpected("config key '" + std::string(field.key) + "': unknown key");
        if (auto ok = set_from_json(*f, field.value, key, c); !ok) return ok;
    }
    return {};
}

std::expected<config::tls_policy, std::string> parse_tls_policy(std::string_view text) {
    if (text == "disabled") return config::tls_policy::disabled;
    if (text == "opportunistic") return config::tls_policy::opportunistic;
    if (text == "required") return config::tls_policy::required;
    if (text == "verify") return config::tls_policy::verify;
    return std::unexpected("expected disabled, opportunistic, required or verify, got '" + std::string(text) + "'");
}

std::string_view to_string(config::tls_policy p) noexcept {
    switch (p) {
    case config::tls_policy::disabled: return "disabled";
    case config::tls_policy::opportunistic: return "opportunistic";
    case config::tls_policy::required: return "required";
    case config::tls_policy::verify: return "verify";
    }
    return "?";
}

// The domain's own entry wins over '*' wherever they stand (as --route does): a
// '--route-tls *=opportunistic' before 'bank.example=required' must not downgrade the bank.
config::tls_policy config::tls_policy_for(std::string_view domain) const noexcept {
    const route_tls_entry* any = nullptr;
    for (const route_tls_entry& e : route_tls_table) {
        if (e.domain == domain) return e.policy;
        if (e.domain == "*" && any == nullptr) any = &e;
    }
    return any != nullptr ? any->policy : outbound_tls_policy;
}

// The DKIM flags' forms; the keys themselves are loaded (and their domains and selectors
// checked) by queue/dkim_signer at start-up.
static std::expected<void, std::string> check_dkim(config& c) {
    std::vector<std::string> domains;
    for (const std::string& k : c.dkim_keys) {
        const auto first = k.find(':');
        const auto second = first == std::string::npos ? first : k.find(':', first + 1);
        if (first == 0 || second == std::string::npos || second == first + 1 || second + 1 == k.size())
            return std::unexpected("--dkim-key: expected DOMAIN:SELECTOR:KEYFILE, got '" + k + "'");
        domains.push_back(lower(k.substr(0, first)));
    }
    if (!c.dkim_sign_all.empty() &&
        std::find(domains.begin(), domains.end(), lower(c.dkim_sign_all)) == domains.end())
        return std::unexpected("--dkim-sign-all: no --dkim-key for " + c.dkim_sign_all);
    for (const std::string& h : c.dkim_headers) {
        const bool name_ok = !h.empty() && std::all_of(h.begin(), h.end(), [](char ch) {
            return ch > ' ' && ch < 127 && ch != ':';  // RFC 5322 ftext
        });
        if (!name_ok) return std::unexpected("--dkim-headers: '" + h + "' is not a header field name");
    }
    static constexpr std::string_view canonicalizations[] = {"relaxed/relaxed", "relaxed/simple", "simple/simple",
                                                             "simple/relaxed", "relaxed", "simple"};
    if (std::find(std::begin(canonicalizations), std::end(canonicalizations), c.dkim_canonicalization) ==
        std::end(canonicalizations))
        return std::unexpected("--dkim-canonicalization: expected relaxed/relaxed, relaxed/simple, simple/simple or "
                               "simple/relaxed, got '" + c.dkim_canonicalization + "'");
    return {};
}

std::expected<void, std::string> finish_config(config& c) {
    if (c.shards == 0) {
        const unsigned n = std::thread::hardware_concurrency();
        c.shards = n == 0 ? 1 : n;
    }
    for (const flag_descriptor& f : flag_table)
        if (auto ok = check_row(f, c); !ok) return ok;
    // What a row cannot say: values that need parsing into the derived fields, and flags
    // checked against each other.
    c.body_cache_bytes = *parse_byte_size(c.body_cache_size);  // checked by its row
    c.spool_segment_bytes = *parse_byte_size(c.spool_segment_size);
    if (c.spool_segment_bytes < min_spool_segment_bytes || c.spool_segment_bytes > max_spool_segment_bytes)
        return std::unexpected("--spool-segment-size: must be between 1MiB and 1GiB, got '" + c.spool_segment_size + "'");
    if (c.listen.empty()) return std::unexpected("--listen: at least one ADDR:PORT is needed");
    if (c.drain && c.hold) return std::unexpected("--drain: delivers the spool, and --hold delivers nothing: use one of them");
    if (auto ok = parse_each(c.listen, parse_endpoint, c.listen_endpoints, "--listen"); !ok) return ok;
    if (auto ok = parse_each(c.listen_tls, parse_endpoint, c.listen_tls_endpoints, "--listen-tls"); !ok) return ok;
    if (c.tls_cert.empty() != c.tls_key.empty())
        return std::unexpected(c.tls_cert.empty() ? "--tls-key: needs --tls-cert as well"
                                                  : "--tls-cert: needs --tls-key as well");
    if (auto p = parse_tls_policy(c.outbound_tls); !p) {
        return std::unexpected("--outbound-tls: " + p.error());
    } else {
        c.outbound_tls_policy = *p;
    }
    c.route_tls_table.clear();
    for (const std::string& r : c.route_tls) {
        const auto eq = r.find('=');
        if (eq == std::string::npos || eq == 0)
            return std::unexpected("--route-tls: expected DOMAIN=POLICY, got '" + r + "'");
        auto p = parse_tls_policy(r.substr(eq + 1));
        if (!p) return std::unexpected("--route-tls: " + p.error());
        c.route_tls_table.push_back(config::route_tls_entry{lower(r.substr(0, eq)), *p});
    }
    if (auto ok = parse_each(c.relay_networks, parse_cidr, c.relay_cidrs, "--relay-networks"); !ok) return ok;
    if (auto ok = parse_each(c.http, parse_endpoint, c.http_endpoints, "--http"); !ok) return ok;
    if (auto ok = parse_each(c.http_tls, parse_endpoint, c.http_tls_endpoints, "--http-tls"); !ok) return ok;
    if (!c.http_tls.empty() && c.tls_cert.empty())
        return std::unexpected("--http-tls: needs a certificate: give --tls-cert and --tls-key (HTTPS serves the "
                               "SMTP certificate; none is made up for it)");
    if (auto ok = parse_each(c.http_networks, parse_cidr, c.http_cidrs, "--http-networks"); !ok) return ok;
    if (auto ok = parse_each(c.proxy_protocol_from, parse_cidr, c.proxy_cidrs, "--proxy-protocol-from"); !ok)
        return ok;
    c.redis_address.reset();
    if (!c.redis.empty()) {
        auto u = parse_redis_url(c.redis);
        if (!u) return std::unexpected("--redis: " + u.error());
        c.redis_address = std::move(*u);
    }
    for (std::string& d : c.relay_domains) {
        d = lower(d);
        if (d.empty() || d.find_first_of(" \t\r\n@<>") != std::string::npos)
            return std::unexpected("--relay-domains: bad domain '" + d + "'");
    }
    c.route_table.clear();
    auto add_route = [&](const std::string& text, const std::string& flag) -> std::expected<void, std::string> {
        const auto eq = text.find('=');
        if (eq == std::string::npos || eq == 0)
            return std::unexpected(flag + ": expected DOMAIN=HOST:PORT, got '" + text + "'");
        auto hop = parse_endpoint(text.substr(eq + 1));
        if (!hop) return std::unexpected(flag + ": " + hop.error());
        c.route_table.push_back(config::route{lower(text.substr(0, eq)), *hop});
        return {};
    };
    for (const std::string& r : c.routes)
        if (auto ok = add_route(r, "--route"); !ok) return ok;
    if (!c.smarthost.empty())
        if (auto ok = add_route("*=" + c.smarthost, "--smarthost"); !ok) return ok;
    if (!c.dns_server.empty())
        if (auto e = parse_endpoint(c.dns_server); !e) return std::unexpected("--dns-server: " + e.error());
    if (auto ok = check_dkim(c); !ok) return ok;
    if (c.spool.empty()) return std::unexpected("--spool: must not be empty");
    if (c.hostname.empty()) {
        char name[256] = {};
        if (gethostname(name, sizeof name - 1) == 0 && name[0] != '\0') {
            c.hostname = name;
        } else {
            c.hostname = "localhost";
        }
    }
    if (c.hostname.find_first_of(" \t\r\n") != std::string::npos)
        return std::unexpected("--hostname: must not contain spaces or line breaks");
    return {};
}

std::expected<config, config_exit> read_config(int argc, const char* const* argv) {
    // Hidden from --help, for scripts/gen-flags-doc; alone, as CLI11 2.1 prints a stray blank
    // line after the options when one of them is hidden.
    if (argc == 2 && std::string_view(argv[1]) == "--dump-flags")
        return std::unexpected(config_exit{0, dump_flags_json()});
    CLI::App app{"ringrelay: an SMTP relay node on io_uring. It accepts mail over SMTP and answers "
                 "250 only once the message is on stable storage.\n"
                 "Flags override the JSON config file (--config), which overrides the embedded defaults."};
    app.set_version_flag("--version", "ringrelay 0.1.0");
    std::string config_file;
    app.add_option("--config", config_file, "JSON config file; keys are the flag names without '--'");
    config flags;  // the values given on the command line, copied over the file's below
    for (const flag_descriptor& f : flag_table) {
        const std::string name(f.name);
        std::visit(overloaded{
                       [&](bool config::*m) { app.add_flag(name, flags.*m, help_text(f)); },
                       [&](std::vector<std::string> config::*m) {
                           (flags.*m).clear();  // only what is given, not the default
                           app.add_option(name, flags.*m, help_text(f));
                       },
                       [&](std::string config::*m) {
                           CLI::Option* o = app.add_option(name, flags.*m, help_text(f));
                           if (f.form == flag_form::optional_value) o->expected(0, 1);
                       },
                       [&](auto m) { app.add_option(name, flags.*m, help_text(f)); },
                   },
                   f.member);
    }
    try {
        app.parse(argc, argv);
    } catch (const CLI::CallForHelp& e) {
        return std::unexpected(config_exit{0, app.help()});
    } catch (const CLI::CallForVersion& e) {
        return std::unexpected(config_exit{0, e.what()});
    } catch (const CLI::ParseError& e) {
        return std::unexpected(config_exit{2, std::string("ringrelay: ") + e.what() + "\nRun with --help for usage."});
    }
    config c;
    if (!config_file.empty()) {
        std::ifstream in(config_file, std::ios::binary);
        if (!in) return std::unexpected(config_exit{2, "ringrelay: cannot read config file '" + config_file + "'"});
        std::stringstream ss;
        ss << in.rdbuf();
        if (auto ok = apply_json_config(ss.str(), c); !ok)
            return std::unexpected(config_exit{2, "ringrelay: " + config_file + ": " + ok.error()});
    }
    // A flag given on the command line wins over the file. A switch given sets its field
    // (false for --no-X) whatever value CLI11 read for it ("--hold=false" still holds).
    for (const flag_descriptor& f : flag_table) {
        if (app.count(std::string(f.name)) == 0) continue;
        std::visit(overloaded{
                       [&](bool config::*m) { c.*m = f.form != flag_form::negated; },
                       [&](std::vector<std::string> config::*m) {
                           c.*m = f.form == flag_form::whole_items ? flags.*m : split_list(flags.*m);
                       },
                       // Given without its value: "*" (for --list-suppressed, every tenant).
                       [&](std::string config::*m) {
                           c.*m = f.form == flag_form::optional_value && (flags.*m).empty() ? "*" : flags.*m;
                       },
                       [&](auto m) { c.*m = flags.*m; },
                   },
                   f.member);
    }
    return c;
}

std::expected<config, config_exit> load_config(int argc, const char* const* argv) {
    auto c = read_config(argc, argv);
    if (!c) return c;
    if (auto ok = finish_config(*c); !ok) return std::unexpected(config_exit{2, "ringrelay: " + ok.error()});
    return c;
}

}  // namespace ringrelay::core
