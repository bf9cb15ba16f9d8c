// core/config.cc: see config.h. CLI11 reports through exceptions; this file is the one place
// in core/ that catches them, turning each into a config_exit value.
#include "core/config.h"

#include "core/duration.h"

#include <unistd.h>

#include <CLI/CLI.hpp>
#include <simdjson.h>
#include <algorithm>
#include <fstream>
#include <sstream>
#include <thread>

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

std::expected<std::vector<std::string>, std::string> json_strings(simdjson::dom::element v,
                                                                  const std::string& key) {
    std::vector<std::string> out;
    if (v.is_string()) {
        out.emplace_back(std::string_view(v.get_string().value_unsafe()));
        return split_list(out);
    }
    if (!v.is_array()) return std::unexpected("config key '" + key + "': expected a string or an array of strings");
    simdjson::dom::array items;
    if (v.get_array().get(items) != simdjson::SUCCESS)
        return std::unexpected("config key '" + key + "': expected an array");
    for (simdjson::dom::element item : items) {
        if (!item.is_string()) return std::unexpected("config key '" + key + "': every item must be a string");
        out.emplace_back(std::string_view(item.get_string().value_unsafe()));
    }
    return split_list(out);
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

std::string lower(std::string s) {
    std::transform(s.begin(), s.end(), s.begin(), [](unsigned char ch) { return static_cast<char>(std::tolower(ch)); });
    return s;
}

}  // namespace

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
        const simdjson::dom::element v = field.value;
        std::expected<void, std::string> ok;
        auto set = [&](auto&& result, auto& target) -> std::expected<void, std::string> {
            if (!result) return std::unexpected(result.error());
            target = std::move(*result);
            return {};
        };
        if (key == "listen") ok = set(json_strings(v, key), c.listen);
        else if (key == "shards") ok = set(json_uint<unsigned>(v, key), c.shards);
        else if (key == "spool") ok = set(json_string(v, key), c.spool);
        else if (key == "hostname") ok = set(json_string(v, key), c.hostname);
        else if (key == "postmaster") ok = set(json_string(v, key), c.postmaster);
        else if (key == "relay-networks") ok = set(json_strings(v, key), c.relay_networks);
        else if (key == "relay-domains") ok = set(json_strings(v, key), c.relay_domains);
        else if (key == "max-message-size") ok = set(json_uint<std::uint64_t>(v, key), c.max_message_size);
        else if (key == "max-recipients") ok = set(json_uint<std::uint32_t>(v, key), c.max_recipients);
        else if (key == "min-data-rate") ok = set(json_uint<std::uint32_t>(v, key), c.min_data_rate);
        else if (key == "command-timeout") ok = set(json_uint<std::uint32_t>(v, key), c.command_timeout);
        else if (key == "shutdown-timeout") ok = set(json_uint<std::uint32_t>(v, key), c.shutdown_timeout);
        else if (key == "max-errors") ok = set(json_uint<std::uint32_t>(v, key), c.max_errors);
        else if (key == "max-connections") ok = set(json_uint<std::uint32_t>(v, key), c.max_connections);
        else if (key == "max-connections-per-ip") ok = set(json_uint<std::uint32_t>(v, key), c.max_connections_per_ip);
        else if (key == "log") ok = set(json_string(v, key), c.log);
        else if (key == "route") ok = set(json_strings(v, key), c.routes);
        else if (key == "smarthost") ok = set(json_string(v, key), c.smarthost);
        else if (key == "retry-intervals") ok = set(json_string(v, key), c.retry_intervals);
        else if (key == "max-age") ok = set(json_string(v, key), c.max_age);
        else if (key == "max-connections-per-destination")
            ok = set(json_uint<std::uint32_t>(v, key), c.max_connections_per_destination);
        else if (key == "max-messages-per-connection")
            ok = set(json_uint<std::uint32_t>(v, key), c.max_messages_per_connection);
        else if (key == "idle-connection-timeout") ok = set(json_uint<std::uint32_t>(v, key), c.idle_connection_timeout);
        else if (key == "dns-server") ok = set(json_string(v, key), c.dns_server);
        else if (key == "listen-tls") ok = set(json_strings(v, key), c.listen_tls);
        else if (key == "tls-cert") ok = set(json_string(v, key), c.tls_cert);
        else if (key == "tls-key") ok = set(json_string(v, key), c.tls_key);
        else if (key == "auth-users") ok = set(json_string(v, key), c.auth_users);
        else if (key == "tls-ciphers") ok = set(json_string(v, key), c.tls_ciphers);
        else if (key == "tls-ciphersuites") ok = set(json_string(v, key), c.tls_ciphersuites);
        else if (key == "auth-max-failures") ok = set(json_uint<std::uint32_t>(v, key), c.auth_max_failures);
        else if (key == "auth-max-failures-per-ip") ok = set(json_uint<std::uint32_t>(v, key), c.auth_max_failures_per_ip);
        else if (key == "auth-failure-window") ok = set(json_uint<std::uint32_t>(v, key), c.auth_failure_window);
        else if (key == "auth-queue-size") ok = set(json_uint<std::uint32_t>(v, key), c.auth_queue_size);
        else if (key == "auth-queue-timeout") ok = set(json_uint<std::uint32_t>(v, key), c.auth_queue_timeout);
        else if (key == "outbound-tls") ok = set(json_string(v, key), c.outbound_tls);
        else if (key == "route-tls") ok = set(json_strings(v, key), c.route_tls);
        else if (key == "outbound-ca-file") ok = set(json_string(v, key), c.outbound_ca_file);
        else if (key == "starttls" || key == "auth-plaintext" || key == "ktls") {
            if (!v.is_bool()) return std::unexpected("config key '" + key + "': expected true or false");
            (key == "starttls" ? c.starttls : key == "ktls" ? c.ktls : c.auth_plaintext) = v.get_bool().value_unsafe();
        }
        else if (key == "hold") {
            if (!v.is_bool()) return std::unexpected("config key 'hold': expected true or false");
            c.hold = v.get_bool().value_unsafe();
        } else if (key == "smtp-port") ok = set(json_uint<std::uint16_t>(v, key), c.smtp_port);
        else return std::unexpected("config key '" + std::string(field.key) + "': unknown key");
        if (!ok) return ok;
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

std::expected<void, std::string> finish_config(config& c) {
    if (c.shards == 0) {
        const unsigned n = std::thread::hardware_concurrency();
        c.shards = n == 0 ? 1 : n;
    }
    if (c.shards > 256) return std::unexpected("--shards: at most 256");
    if (c.listen.empty()) return std::unexpected("--listen: at least one ADDR:PORT is needed");
    c.listen_endpoints.clear();
    for (const std::string& l : c.listen) {
        auto e = parse_endpoint(l);
        if (!e) return std::unexpected("--listen: " + e.error());
        c.listen_endpoints.push_back(*e);
    }
    c.listen_tls_endpoints.clear();
    for (const std::string& l : c.listen_tls) {
        auto e = parse_endpoint(l);
        if (!e) return std::unexpected("--listen-tls: " + e.error());
        c.listen_tls_endpoints.push_back(*e);
    }
    if (c.tls_cert.empty() != c.tls_key.empty())
        return std::unexpected(c.tls_cert.empty() ? "--tls-key: needs --tls-cert as well"
                                                  : "--tls-cert: needs --tls-key as well");
    if (c.auth_max_failures == 0) return std::unexpected("--auth-max-failures: must be at least 1");
    if (c.auth_max_failures_per_ip == 0) return std::unexpected("--auth-max-failures-per-ip: must be at least 1");
    if (c.auth_failure_window == 0) return std::unexpected("--auth-failure-window: must be at least 1 second");
    if (c.auth_queue_size > 65536) return std::unexpected("--auth-queue-size: at most 65536");
    if (c.auth_queue_timeout == 0 || c.auth_queue_timeout > 3600)
        return std::unexpected("--auth-queue-timeout: must be between 1 and 3600 seconds");
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
    c.relay_cidrs.clear();
    for (const std::string& n : c.relay_networks) {
        auto net = parse_cidr(n);
        if (!net) return std::unexpected("--relay-networks: " + net.error());
        c.relay_cidrs.push_back(*net);
    }
    for (std::string& d : c.relay_domains) {
        d = lower(d);
        if (d.empty() || d.find_first_of(" \t\r\n@<>") != std::string::npos)
            return std::unexpected("--relay-domains: bad domain '" + d + "'");
    }
    // A record's payload is at most 1 GiB (queue/record.h); leave room for the envelope.
    if (c.max_message_size == 0 || c.max_message_size > (1ull << 30) - (1ull << 20))
        return std::unexpected("--max-message-size: must be between 1 and 1072693248 bytes");
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
    if (auto d = parse_duration_list(c.retry_intervals); !d || d->empty())
        return std::unexpected("--retry-intervals: " + (d ? std::string("at least one interval is needed") : d.error().message));
    if (auto d = parse_duration(c.max_age); !d || d->count() <= 0)
        return std::unexpected("--max-age: " + (d ? std::string("must be positive") : d.error().message));
    if (c.smtp_port == 0) return std::unexpected("--smtp-port: must be 1-65535");
    if (c.max_connections_per_destination == 0)
        return std::unexpected("--max-connections-per-destination: must be at least 1");
    if (c.max_messages_per_connection == 0) return std::unexpected("--max-messages-per-connection: must be at least 1");
    if (!c.dns_server.empty())
        if (auto e = parse_endpoint(c.dns_server); !e) return std::unexpected("--dns-server: " + e.error());
    if (c.max_recipients == 0) return std::unexpected("--max-recipients: must be at least 1");
    if (c.command_timeout == 0) return std::unexpected("--command-timeout: must be at least 1 second");
    if (c.max_errors == 0) return std::unexpected("--max-errors: must be at least 1");
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

std::expected<config, config_exit> load_config(int argc, const char* const* argv) {
    config c;
    CLI::App app{"ringrelay: an SMTP relay node on io_uring. It accepts mail over SMTP and answers "
                 "250 only once the message is on stable storage.\n"
                 "Flags override the JSON config file (--config), which overrides the embedded defaults."};
    app.set_version_flag("--version", "ringrelay 0.1.0");
    std::string config_file;
    std::vector<std::string> listen, listen_tls, relay_networks, relay_domains;
    config flags;  // values given on the command line
    app.add_option("--config", config_file, "JSON config file; keys are the flag names without '--'");
    app.add_option("--listen", listen, "ADDR:PORT to accept SMTP on; repeatable (default 127.0.0.1:2525)");
    app.add_option("--listen-tls", listen_tls,
                   "ADDR:PORT to accept SMTP over implicit TLS on (RFC 8314, port 465 in production); repeatable");
    app.add_option("--tls-cert", flags.tls_cert,
                   "PEM certificate (chain, leaf first) for STARTTLS and --listen-tls; without it a self-signed "
                   "certificate for --hostname is made on first start and kept in SPOOL/tls");
    app.add_option("--tls-key", flags.tls_key, "PEM private key of --tls-cert (not passphrase-protected)");
    app.add_option("--tls-ciphers", flags.tls_ciphers,
                   "inbound TLS 1.2 cipher list in OpenSSL syntax (default: OpenSSL's)");
    app.add_option("--tls-ciphersuites", flags.tls_ciphersuites,
                   "inbound TLS 1.3 cipher suites, colon-separated (default: OpenSSL's)");
    bool no_starttls = false;
    bool no_ktls = false;
    app.add_flag("--no-ktls", no_ktls,
                 "keep TLS records in user space (OpenSSL) even where the kernel offers kTLS");
    app.add_flag("--no-starttls", no_starttls, "do not offer STARTTLS on --listen ports (--listen-tls still works)");
    app.add_option("--auth-users", flags.auth_users,
                   "file of 'user:hash' lines (hashes from ringrelay-passwd); enables AUTH PLAIN and LOGIN, "
                   "offered only under TLS");
    app.add_flag("--auth-plaintext", flags.auth_plaintext,
                 "offer AUTH on unencrypted connections too (only behind a TLS-terminating proxy on a trusted network)");
    app.add_option("--auth-max-failures", flags.auth_max_failures,
                   "failed AUTH attempts per connection before 421 4.7.0 and close (default 3)");
    app.add_option("--auth-max-failures-per-ip", flags.auth_max_failures_per_ip,
                   "failed AUTH attempts per client address within --auth-failure-window before its AUTH is "
                   "refused with 421 4.7.0 (default 10)");
    app.add_option("--auth-failure-window", flags.auth_failure_window,
                   "seconds over which per-address AUTH failures count (default 600)");
    app.add_option("--auth-queue-size", flags.auth_queue_size,
                   "password checks per shard that may wait for room (checks of their address in flight, "
                   "a paced user, busy check threads) instead of failing; beyond it 454 4.7.0 "
                   "(default 256; 0 = none wait)");
    app.add_option("--auth-queue-timeout", flags.auth_queue_timeout,
                   "seconds a password check may wait for room before 454 4.7.0 (default 10)");
    app.add_option("--shards", flags.shards, "shard threads, each with its own io_uring (default: online CPUs)");
    app.add_option("--spool", flags.spool, "spool directory (default ./var/spool)");
    app.add_option("--hostname", flags.hostname, "name in the banner, EHLO reply and Received: (default: gethostname)");
    app.add_option("--postmaster", flags.postmaster,
                   "ADDRESS that RCPT TO:<postmaster> and <postmaster@HOSTNAME> are delivered to, routed like any "
                   "recipient (default postmaster@ the --hostname)");
    app.add_option("--relay-networks", relay_networks,
                   "CIDR,... of clients that may relay anywhere (default 127.0.0.0/8,::1/128)");
    app.add_option("--relay-domains", relay_domains,
                   "DOMAIN,... anyone may send to; '.example.org' also matches subdomains (default none)");
    app.add_option("--max-message-size", flags.max_message_size,
                   "largest message in bytes, advertised in SIZE (default 26214400)");
    app.add_option("--max-recipients", flags.max_recipients, "recipients per message (default 1000)");
    app.add_option("--command-timeout", flags.command_timeout,
                   "seconds to wait for a command or data before 421 4.4.2 (default 300)");
    app.add_option("--min-data-rate", flags.min_data_rate,
                   "bytes/s a client must average while sending message content; slower, and only "
                   "--command-timeout runs (like Postfix's smtpd_min_data_rate; default 500, 0 = off)");
    app.add_option("--shutdown-timeout", flags.shutdown_timeout,
                   "seconds a transaction in progress may take to finish after SIGTERM (default 30)");
    app.add_option("--max-errors", flags.max_errors, "error replies per session before 421 4.7.0 (default 20)");
    app.add_option("--max-connections", flags.max_connections,
                   "inbound connections at once, all shards; above it 421 4.7.0 (default 10000; 0 = no limit)");
    app.add_option("--max-connections-per-ip", flags.max_connections_per_ip,
                   "inbound connections at once from one IPv4 address or IPv6 /64; above it 421 4.7.0 "
                   "(default 0 = no limit)");
    app.add_option("--log", flags.log, "delivery log, JSON lines; '-' for stdout, '' for none (default '-')");
    app.add_flag("--list-spool", flags.list_spool, "print the number and ids of spooled messages, then exit");
    app.add_flag("--hold", flags.hold, "accept and spool mail but deliver nothing (it stays in the spool until a "
                                       "run without --hold)");
    std::vector<std::string> routes;
    app.add_option("--route", routes, "DOMAIN=HOST:PORT: deliver DOMAIN's mail to that next hop; repeatable; "
                                      "'*' matches every domain (numeric HOST for now)");
    app.add_option("--smarthost", flags.smarthost, "HOST:PORT: deliver everything there (same as --route '*=HOST:PORT')");
    app.add_option("--retry-intervals", flags.retry_intervals,
                   "waits between delivery attempts of a deferred recipient; the last repeats, each jittered "
                   "(default 5m,10m,20m,40m,1h20m,2h40m,4h)");
    app.add_option("--max-age", flags.max_age, "after this long undelivered mail expires and bounces (default 5d)");
    app.add_option("--max-connections-per-destination", flags.max_connections_per_destination,
                   "outbound connections per next hop (default 16)");
    app.add_option("--max-messages-per-connection", flags.max_messages_per_connection,
                   "messages sent over one outbound connection before it is closed (default 1000)");
    app.add_option("--idle-connection-timeout", flags.idle_connection_timeout,
                   "seconds an idle outbound connection is kept for reuse (default 5)");
    app.add_option("--dns-server", flags.dns_server, "ADDR:PORT of the DNS server for MX lookups (default /etc/resolv.conf)");
    app.add_option("--smtp-port", flags.smtp_port, "TCP port of the mail exchangers found by MX lookup (default 25)");
    app.add_option("--outbound-tls", flags.outbound_tls,
                   "TLS policy for delivery: disabled, opportunistic (STARTTLS when offered; the default), "
                   "required (TLS or defer, never plaintext) or verify (required plus certificate checks)");
    std::vector<std::string> route_tls;
    app.add_option("--route-tls", route_tls,
                   "DOMAIN=POLICY: the --outbound-tls policy for one recipient domain; repeatable; '*' matches all");
    app.add_option("--outbound-ca-file", flags.outbound_ca_file,
                   "PEM CA certificates that 'verify' trusts (default: OpenSSL's system store)");
    try {
        app.parse(argc, argv);
    } catch (const CLI::CallForHelp& e) {
        return std::unexpected(config_exit{0, app.help()});
    } catch (const CLI::CallForVersion& e) {
        return std::unexpected(config_exit{0, e.what()});
    } catch (const CLI::ParseError& e) {
        return std::unexpected(config_exit{2, std::string("ringrelay: ") + e.what() + "\nRun with --help for usage."});
    }
    if (!config_file.empty()) {
        std::ifstream in(config_file, std::ios::binary);
        if (!in) return std::unexpected(config_exit{2, "ringrelay: cannot read config file '" + config_file + "'"});
        std::stringstream ss;
        ss << in.rdbuf();
        if (auto ok = apply_json_config(ss.str(), c); !ok)
            return std::unexpected(config_exit{2, "ringrelay: " + config_file + ": " + ok.error()});
    }
    auto given = [&](const char* name) { return app.count(name) > 0; };
    if (given("--listen")) c.listen = split_list(listen);
    if (given("--listen-tls")) c.listen_tls = split_list(listen_tls);
    if (given("--tls-cert")) c.tls_cert = flags.tls_cert;
    if (given("--tls-key")) c.tls_key = flags.tls_key;
    if (given("--no-starttls")) c.starttls = false;
    if (given("--no-ktls")) c.ktls = false;
    if (given("--tls-ciphers")) c.tls_ciphers = flags.tls_ciphers;
    if (given("--tls-ciphersuites")) c.tls_ciphersuites = flags.tls_ciphersuites;
    if (given("--auth-users")) c.auth_users = flags.auth_users;
    if (given("--auth-plaintext")) c.auth_plaintext = true;
    if (given("--auth-max-failures")) c.auth_max_failures = flags.auth_max_failures;
    if (given("--auth-max-failures-per-ip")) c.auth_max_failures_per_ip = flags.auth_max_failures_per_ip;
    if (given("--auth-failure-window")) c.auth_failure_window = flags.auth_failure_window;
    if (given("--auth-queue-size")) c.auth_queue_size = flags.auth_queue_size;
    if (given("--auth-queue-timeout")) c.auth_queue_timeout = flags.auth_queue_timeout;
    if (given("--outbound-tls")) c.outbound_tls = flags.outbound_tls;
    if (given("--route-tls")) c.route_tls = split_list(route_tls);
    if (given("--outbound-ca-file")) c.outbound_ca_file = flags.outbound_ca_file;
    if (given("--shards")) c.shards = flags.shards;
    if (given("--spool")) c.spool = flags.spool;
    if (given("--hostname")) c.hostname = flags.hostname;
    if (given("--postmaster")) c.postmaster = flags.postmaster;
    if (given("--relay-networks")) c.relay_networks = split_list(relay_networks);
    if (given("--relay-domains")) c.relay_domains = split_list(relay_domains);
    if (given("--max-message-size")) c.max_message_size = flags.max_message_size;
    if (given("--max-recipients")) c.max_recipients = flags.max_recipients;
    if (given("--command-timeout")) c.command_timeout = flags.command_timeout;
    if (given("--min-data-rate")) c.min_data_rate = flags.min_data_rate;
    if (given("--shutdown-timeout")) c.shutdown_timeout = flags.shutdown_timeout;
    if (given("--max-errors")) c.max_errors = flags.max_errors;
    if (given("--max-connections")) c.max_connections = flags.max_connections;
    if (given("--max-connections-per-ip")) c.max_connections_per_ip = flags.max_connections_per_ip;
    if (given("--log")) c.log = flags.log;
    c.list_spool = flags.list_spool;
    if (given("--hold")) c.hold = true;
    if (given("--route")) c.routes = split_list(routes);
    if (given("--smarthost")) c.smarthost = flags.smarthost;
    if (given("--retry-intervals")) c.retry_intervals = flags.retry_intervals;
    if (given("--max-age")) c.max_age = flags.max_age;
    if (given("--max-connections-per-destination")) c.max_connections_per_destination = flags.max_connections_per_destination;
    if (given("--max-messages-per-connection")) c.max_messages_per_connection = flags.max_messages_per_connection;
    if (given("--idle-connection-timeout")) c.idle_connection_timeout = flags.idle_connection_timeout;
    if (given("--dns-server")) c.dns_server = flags.dns_server;
    if (given("--smtp-port")) c.smtp_port = flags.smtp_port;
    if (auto ok = finish_config(c); !ok) return std::unexpected(config_exit{2, "ringrelay: " + ok.error()});
    return c;
}

}  // namespace ringrelay::core
