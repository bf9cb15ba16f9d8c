// core/config.h: ringrelay's configuration: embedded defaults, then the JSON config file
// (--config, parsed with simdjson), then command-line flags (CLI11), each overriding the one
// before. A bad value is an error naming the flag or key, reported at start-up.
//
// Every flag is one row of the flag table in config.cc (a flag_descriptor, below, as Postfix's
// CONFIG_INT_TABLE rows): its name, the config field it sets, range and help. The row drives
// the CLI11 option, the JSON key, the "given on the command line wins" copy, the range check,
// and the "(default X)" in --help, printed from the field's initialiser here: a default is
// typed once, in this struct. Adding a flag is a field here and a row there.
// SECURITY: reads operator input (argv, the config file); never network input.
#pragma once
#include <cstdint>
#include <expected>
#include <limits>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "core/net.h"
#include "core/redis_url.h"

namespace ringrelay::core {

// --spool-segment-size's accepted range.
inline constexpr std::uint64_t min_spool_segment_bytes = 1ull << 20;
inline constexpr std::uint64_t max_spool_segment_bytes = 1ull << 30;

struct config {
    std::vector<std::string> listen{"127.0.0.1:2525"};
    unsigned shards = 0;  // 0 = number of online CPUs
    std::string spool = "./var/spool";
    // A shard's spool segment is closed, and the next one opened, once it holds this much
    // (queue/spool.h); 1MiB to 1GiB. Smaller segments are compacted and deleted sooner, in
    // more files.
    std::string spool_segment_size = "64MiB";
    std::string hostname;  // default: gethostname()
    std::string postmaster;  // where <postmaster> goes; empty = postmaster@ the hostname (queue::relay checks it)
    std::vector<std::string> relay_networks{"127.0.0.0/8", "::1/128"};
    std::vector<std::string> relay_domains;
    std::uint64_t max_message_size = 26214400;
    std::uint32_t max_recipients = 1000;
    std::uint32_t command_timeout = 300;   // seconds
    std::uint32_t min_data_rate = 500;     // bytes/s message content must average, or the timeout runs
    std::uint32_t shutdown_timeout = 30;   // seconds a transaction may take to finish on SIGTERM
    std::uint32_t max_errors = 20;
    std::uint32_t max_connections = 10000;      // inbound, all shards; 0 = no limit
    std::uint32_t max_connections_per_ip = 0;   // inbound per client IPv4 /32 or IPv6 /64; 0 = no limit
    std::string log = "-";                 // '-' = stdout, '' = off
    bool list_spool = false;
    bool hold = false;                     // accept and spool, deliver nothing (Postfix's hold queue)
    bool drain = false;                    // listen for nothing, deliver the spool, exit when it is empty

    // Inbound TLS (issue 5): STARTTLS on every --listen port, implicit TLS on --listen-tls.
    // Without --tls-cert/--tls-key a self-signed certificate is kept in SPOOL/tls.
    std::vector<std::string> listen_tls;   // "ADDR:PORT" (RFC 8314: the handshake first)
    std::string tls_cert;                  // PEM certificate chain, leaf first
    std::string tls_key;                   // PEM private key (unencrypted)
    bool starttls = true;                  // offer STARTTLS on --listen ports (--no-starttls turns it off)
    bool ktls = true;                      // hand inbound TLS records to the kernel when it can (--no-ktls)
    std::string tls_ciphers;               // inbound TLS 1.2 cipher list (OpenSSL syntax); empty = OpenSSL's default
    std::string tls_ciphersuites;          // inbound TLS 1.3 suites, colon-separated; empty = OpenSSL's default

    // SMTP AUTH (RFC 4954), offered only under TLS unless auth_plaintext.
    std::string auth_users;                // "user:scrypt-PHC" per line (ringrelay-passwd); empty = no AUTH
    bool auth_plaintext = false;           // also offer AUTH on unencrypted connections (TLS-terminating proxy)
    std::uint32_t auth_max_failures = 3;   // failed AUTH per connection, then 421 4.7.0 and close
    std::uint32_t auth_max_failures_per_ip = 10;  // failed AUTH per client address per window, then 421 4.7.0
    std::uint32_t auth_failure_window = 600;      // seconds over which per-address failures are counted
    // A password check that finds no room (its address's checks in flight, a paced user, a
    // full work pool) waits in its shard's queue instead of failing: at most this many per
    // shard (0 = none wait: 454 4.7.0 at once), each for at most this many seconds; beyond
    // either, 454 4.7.0.
    std::uint32_t auth_queue_size = 256;
    std::uint32_t auth_queue_timeout = 10;

    // Delivery (the "Deliver mail" issue).
    std::vector<std::string> routes;       // "DOMAIN=HOST:PORT"; DOMAIN '*' matches every domain
    std::string smarthost;                 // "HOST:PORT": same as --route '*=HOST:PORT'
    std::string retry_intervals = "5m,10m,20m,40m,1h20m,2h40m,4h";  // the last repeats
    std::string max_age = "5d";
    // One "Action: delayed" DSN (RFC 3464) per message still queued this long after arrival;
    // "0" = never, as Postfix's delay_warning_time = 0.
    std::string delay_warning = "0";
    // Bodies of queued messages live in the spool; this much memory (all shards together)
    // keeps recently received ones so a first attempt need not read them back.
    std::string body_cache_size = "256MiB";
    // Bounce classification rules (etc/bounce-classes.json format) over the embedded ones: a rule
    // named like an embedded one replaces it, others are tried first. Empty: the embedded only.
    std::string bounce_classes;
    std::uint32_t max_connections_per_destination = 16;
    std::uint32_t max_messages_per_connection = 1000;
    std::uint32_t idle_connection_timeout = 5;  // seconds an unused outbound connection stays
    // Traffic shaping (issue 17): rules files over the shipped etc/shaping.json (compiled in),
    // each over the ones before; the three flags above are the default rule's values.
    std::vector<std::string> shaping;
    bool default_shaping = true;           // --no-default-shaping: without the shipped provider rules
    // The header field naming a message's campaign (issue 17; queue/campaign_header.h): read and
    // stripped at reception; the bottom layer of the rules' "campaign_header". Empty: none.
    std::string campaign_header;
    std::string dns_server;                // "ADDR:PORT"; empty = /etc/resolv.conf
    std::uint16_t smtp_port = 25;          // port of MX targets (tests use another)
    // Outbound TLS: the policy for a domain is its own --route-tls entry, else a '*' entry,
    // else --outbound-tls. "opportunistic": STARTTLS when offered, plaintext if it is not offered
    // or fails; "required": TLS or defer, never plaintext; "verify": required, and the peer's
    // certificate must chain to --outbound-ca-file (default: the system store) and name the
    // MX host (or the route's HOST); "disabled": never STARTTLS.
    std::string outbound_tls = "opportunistic";
    std::vector<std::string> route_tls;    // "DOMAIN=POLICY"; DOMAIN '*' matches every domain
    std::string outbound_ca_file;          // PEM CA bundle for "verify"; empty = OpenSSL's default paths
    // Egress sources and pools (issue 17; queue/egress.h): checked and loaded by the relay.
    std::vector<std::string> egress_sources;  // "NAME=ADDRESS[,ehlo=HOSTNAME]"
    std::vector<std::string> egress_pools;    // "NAME=SOURCE[:WEIGHT],..."
    std::vector<std::string> pool_for;        // "SELECTOR=POOL": sender-domain:D, auth-user:U or *

    // DKIM signing (RFC 6376, RFC 8463). The From: domain, or its nearest parent with keys,
    // picks the keys that sign a message; queue/dkim_signer loads them.
    std::vector<std::string> dkim_keys;    // "DOMAIN:SELECTOR:KEYFILE" (PEM RSA >= 1024 bits or Ed25519)
    std::string dkim_sign_all;             // a domain with --dkim-key whose keys also sign every message
    std::vector<std::string> dkim_headers; // header names to sign; empty = the default set
    std::string dkim_canonicalization = "relaxed/relaxed";  // header/body: simple or relaxed each
    std::string dkim_expiration;           // x= is t= plus this duration; empty = no x=

    // Suppression list (issue 16): recipients that hard-bounced, per tenant (AUTH user, else
    // sender domain), refused at RCPT; kept in SPOOL/suppression (queue/suppression.h).
    bool suppression = true;               // --no-suppression: no list is kept or checked
    std::string suppression_ttl = "90d";   // an entry expires this long after it was added; "0" = never
    // Offline commands on a stopped relay's spool (they refuse while one runs on it), then exit.
    std::string list_suppressed;           // --list-suppressed [TENANT]: "*" = every tenant; empty = not asked
    std::string suppress;                  // --suppress TENANT:ADDRESS
    std::string unsuppress;                // --unsuppress TENANT:ADDRESS
    // One-click unsubscribe (RFC 8058; queue/unsubscribe.h): the links' base URL ("" = off) and
    // the file holding their HMAC key.
    std::string unsubscribe_url;
    std::string unsubscribe_key;

    // HTTP endpoint (issue 18; core/http_connection.h, queue/http_api.h): served by the shards.
    std::vector<std::string> http;         // "ADDR:PORT"; none by default
    std::vector<std::string> http_tls;     // "ADDR:PORT" for HTTPS (the SMTP certificate); none by default
    std::vector<std::string> http_networks{"127.0.0.0/8", "::1/128"};  // may call every path; others 403
    std::uint32_t http_timeout = 30;       // seconds a request may take to arrive whole, then 408

    // Behind a load balancer (issue 19): connections from these networks start with a PROXY
    // protocol header (v1 or v2) whose source address is the client's (queue/proxy_stage.h).
    std::vector<std::string> proxy_protocol_from;  // CIDR,...; none by default
    std::uint32_t proxy_protocol_timeout = 5;      // seconds the header may take to arrive whole
    // Shared limits (issue 19; core/redis_url.h, core/redis_client.h): the Redis every node of a
    // fleet counts its shared limits in; empty: none, every limit is this node's own.
    std::string redis;                             // "redis://HOST:PORT/DB" or "unix:PATH"
    // The nodes sharing the limits: without Redis (unreachable or erring) a node keeps
    // limit / cluster_size of each shared limit (issue 19).
    std::uint32_t cluster_size = 1;

    // Derived by load_config (parsed forms of the strings above).
    std::vector<endpoint> listen_endpoints;
    std::uint64_t body_cache_bytes = 256ull << 20;  // --body-cache-size
    std::uint64_t spool_segment_bytes = 64ull << 20;  // --spool-segment-size
    std::vector<endpoint> listen_tls_endpoints;
    std::vector<cidr> relay_cidrs;
    std::vector<endpoint> http_endpoints;  // --http
    std::vector<endpoint> http_tls_endpoints;  // --http-tls
    std::vector<cidr> http_cidrs;          // --http-networks
    std::vector<cidr> proxy_cidrs;         // --proxy-protocol-from
    std::optional<redis_url> redis_address;  // --redis; nullopt when not given
    struct route {
        std::string domain;  // lower-case; "*" = any
        endpoint next_hop;
    };
    std::vector<route> route_table;  // --route entries in order, then --smarthost as "*"
    enum class tls_policy : std::uint8_t { disabled, opportunistic, required, verify };
    tls_policy outbound_tls_policy = tls_policy::opportunistic;
    struct route_tls_entry {
        std::string domain;  // lower-case; "*" = any
        tls_policy policy;
    };
    std::vector<route_tls_entry> route_tls_table;  // --route-tls entries in order
    // The policy for `domain` (lower-case): its own --route-tls entry, else '*', else --outbound-tls.
    [[nodiscard]] tls_policy tls_policy_for(std::string_view domain) const noexcept;
};

// The field a flag sets; its type is the flag's type: a switch (bool), an unsigned integer
// (`unsigned` is std::uint32_t here), text, or a list of text (repeatable on the command line,
// each value comma-split unless the row's form is whole_items; in JSON a string or an array of
// strings).
using flag_member = std::variant<bool config::*, std::uint16_t config::*, std::uint32_t config::*,
                                 std::uint64_t config::*, std::string config::*, std::vector<std::string> config::*>;

// How a row's text is read beyond its field's type.
enum class flag_form : std::uint8_t {
    plain,
    negated,        // a bool switch "--no-X" that sets the field false; JSON key "X": true or false
    duration,       // text holding one duration ("5d", core/duration.h), which must be positive
    duration_list,  // text holding a comma-separated list of durations, at least one
    duration_or_zero,  // text holding one duration, or 0 ("0", "0s"): the row's help says what 0 means
    optional_value,    // text that may be given without its value ("--list-suppressed" alone): then "*"
    byte_size,         // text holding a size in bytes ("268435456", "256MiB"; core/byte_size.h); JSON
                       // also takes a number
    whole_items,       // a list whose items hold commas of their own: never comma-split (repeat the
                       // flag; in JSON an array, one item a string)
};

inline constexpr std::uint64_t flag_no_max = std::numeric_limits<std::uint64_t>::max();

// One row of the flag table. Designated initialisers name the fields a row sets.
struct flag_descriptor {
    std::string_view name;  // "--max-errors"
    flag_member member;     // the field it sets, whose initialiser is the default
    flag_form form = flag_form::plain;
    // Integers: the accepted range, checked by finish_config: "--NAME: must be at least 1",
    // "at most 256", "must be between 1 and 3600 seconds" (`unit`, plural; singular for 1).
    std::uint64_t min = 0;
    std::uint64_t max = flag_no_max;
    std::string_view unit = {};
    // What 0, "" or an empty list stands for, printed as the default: "(default 0 = no
    // limit)", "(default 10000; 0 = no limit)", "(default gethostname)". Without it an empty
    // default is not printed.
    std::string_view unset_means = {};
    std::string_view json_key = {};  // empty: the name without "--" (and without "no-" if negated)
    bool command_line_only = false;  // no JSON key at all
    std::string_view help = {};      // what it does; the default is appended from config{}
    // SIGHUP (issue 18): a running relay takes this flag's new value from the re-read config
    // (queue/relay.h reload_config()); false: the value needs a restart, and a change to it is
    // named in the reload's log line and not applied.
    bool live = false;
};

// The rows, in the order --help lists them.
[[nodiscard]] std::span<const flag_descriptor> config_flags() noexcept;
// The JSON key of a row; empty for a command-line-only flag.
[[nodiscard]] std::string_view json_key(const flag_descriptor& f) noexcept;
// The default as --help prints it after "(default ", from config{}; nullopt when none is
// printed (a switch, an empty value without unset_means).
[[nodiscard]] std::optional<std::string> default_text(const flag_descriptor& f);
// The row's description in --help: its help, then "(default ...)".
[[nodiscard]] std::string help_text(const flag_descriptor& f);
// `ringrelay --dump-flags`: a JSON array, one object per row in --help order, with "name",
// "type", "json_key" (null if none), "default" (null if none is printed) and "description"
// (as --help prints it). scripts/gen-flags-doc reads it for docs/flags.md.
[[nodiscard]] std::string dump_flags_json();

// SIGHUP: the rows whose values differ between `a` and `b` (raw values, as given), in --help order.
[[nodiscard]] std::vector<const flag_descriptor*> changed_flags(const config& a, const config& b);
// Copies the fields of `rows` from `from` into `to`, and the derived fields those rows feed
// (relay_cidrs, route_table, route_tls_table and outbound_tls_policy, http_cidrs). Both are
// finished configs; only live rows may be given (a derived field is copied whole, so every row
// it is derived from must be live).
void copy_flags(config& to, const config& from, std::span<const flag_descriptor* const> rows);

// "disabled" | "opportunistic" | "required" | "verify".
[[nodiscard]] std::expected<config::tls_policy, std::string> parse_tls_policy(std::string_view text);
[[nodiscard]] std::string_view to_string(config::tls_policy p) noexcept;

// How start-up should end when it does not run the daemon.
struct config_exit {
    int code;             // 0 for --help/--version, 2 for a bad flag or value
    std::string message;  // help text or the error, to print
};

// Parses argv (and the --config file it names) into a validated config: read_config, then
// finish_config.
[[nodiscard]] std::expected<config, config_exit> load_config(int argc, const char* const* argv);

// The flags and the --config file they name layered over the defaults, not yet checked
// (no finish_config); --help, --version and --dump-flags end here with code 0.
[[nodiscard]] std::expected<config, config_exit> read_config(int argc, const char* const* argv);

// Applies a JSON config document to `c`; the error names the offending key.
[[nodiscard]] std::expected<void, std::string> apply_json_config(std::string_view json, config& c);

// Checks values (each row's range or form, then the checks between fields) and fills the
// derived fields; the error names the flag.
[[nodiscard]] std::expected<void, std::string> finish_config(config& c);

}  // namespace ringrelay::core
