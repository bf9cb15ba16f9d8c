// tools/bench/options.cc: see options.h. CLI11 reports through exceptions; they are caught
// here and nowhere else in the tool.
#include "tools/bench/options.h"

#include <CLI/CLI.hpp>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <limits>
#include <thread>

#include "core/duration.h"
#include "tools/bench/message_template.h"

namespace ringrelay::bench {
namespace {

constexpr std::string_view program = "ringrelay-bench";

usage_exit usage_error(const std::string& message) {
    return {2, std::string(program) + ": " + message + "\nRun with --help for usage."};
}

bool domain_char(char c) noexcept { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.'; }

std::expected<std::string, std::string> check_domain(std::string_view text) {
    std::string name;
    name.reserve(text.size());
    for (const char c : text) name.push_back(c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c);
    if (name.empty()) return std::unexpected(std::string("empty domain"));
    if (name.size() > 253) return std::unexpected("domain longer than 253 octets: '" + name + "'");
    if (!std::all_of(name.begin(), name.end(), domain_char))
        return std::unexpected("'" + name + "' is not a domain name (letters, digits, '-' and '.')");
    std::size_t start = 0;
    while (start <= name.size()) {
        std::size_t dot = name.find('.', start);
        if (dot == std::string::npos) dot = name.size();
        const std::size_t len = dot - start;
        if (len == 0 || len > 63) return std::unexpected("'" + name + "' has an empty or over-long label");
        if (name[start] == '-' || name[dot - 1] == '-')
            return std::unexpected("'" + name + "': a label may not start or end with '-'");
        start = dot + 1;
    }
    return name;
}

// "2048", "2k", "2KiB", "1m", "1MiB" (k = 1024).
std::expected<std::uint64_t, std::string> parse_size(std::string_view text) {
    std::uint64_t n = 0;
    const auto r = std::from_chars(text.data(), text.data() + text.size(), n);
    if (r.ec != std::errc{} || r.ptr == text.data())
        return std::unexpected("'" + std::string(text) + "' is not a size");
    std::string_view unit = text.substr(static_cast<std::size_t>(r.ptr - text.data()));
    std::uint64_t scale = 1;
    if (unit == "k" || unit == "K" || unit == "KiB") {
        scale = 1024;
    } else if (unit == "m" || unit == "M" || unit == "MiB") {
        scale = 1024 * 1024;
    } else if (!unit.empty()) {
        return std::unexpected("'" + std::string(text) + "': unknown unit (use k or M)");
    }
    if (n > max_message_size / scale + 1) return std::unexpected("'" + std::string(text) + "' is too large");
    return n * scale;
}

// A decimal integer without sign (CLI11 would wrap "-5" around into a huge unsigned value).
template <typename Int>
std::expected<Int, std::string> parse_count(const std::string& text, const char* flag) {
    std::uint64_t n = 0;
    const auto r = std::from_chars(text.data(), text.data() + text.size(), n);
    if (r.ec != std::errc{} || r.ptr != text.data() + text.size() || text.empty() ||
        n > std::numeric_limits<Int>::max())
        return std::unexpected(std::string(flag) + ": '" + text + "' is not a whole number in range");
    return static_cast<Int>(n);
}

bool printable_without_space(std::string_view s) noexcept {
    return std::all_of(s.begin(), s.end(), [](char c) { return c > 0x20 && c < 0x7f; });
}

}  // namespace

std::expected<double, std::string> parse_seconds(std::string_view text) {
    double seconds = 0;
    const auto r = std::from_chars(text.data(), text.data() + text.size(), seconds);
    if (r.ec == std::errc{} && r.ptr == text.data() + text.size() && !text.empty()) {
        if (!std::isfinite(seconds) || seconds < 0)
            return std::unexpected("'" + std::string(text) + "' is not a duration");
        return seconds;
    }
    auto d = core::parse_duration(text);
    if (!d) return std::unexpected(d.error().message);
    return static_cast<double>(d->count()) / 1000.0;
}

std::expected<std::vector<weighted_domain>, std::string> parse_domains(std::string_view text) {
    std::vector<weighted_domain> out;
    std::size_t start = 0;
    while (start <= text.size()) {
        std::size_t comma = text.find(',', start);
        if (comma == std::string_view::npos) comma = text.size();
        const std::string_view item = text.substr(start, comma - start);
        start = comma + 1;
        if (item.empty()) return std::unexpected(std::string("empty item in the domain list"));
        const std::size_t colon = item.find(':');
        auto name = check_domain(item.substr(0, colon));
        if (!name) return std::unexpected(name.error());
        weighted_domain d{std::move(*name), 1};
        if (colon != std::string_view::npos) {
            const std::string_view w = item.substr(colon + 1);
            std::uint64_t weight = 0;
            const auto r = std::from_chars(w.data(), w.data() + w.size(), weight);
            if (r.ec != std::errc{} || r.ptr != w.data() + w.size() || w.empty() || weight == 0 ||
                weight > max_domain_weight) {
                return std::unexpected("weight of " + d.name + " must be an integer from 1 to " +
                                       std::to_string(max_domain_weight) + ", got '" + std::string(w) + "'");
            }
            d.weight = static_cast<std::uint32_t>(weight);
        }
        for (const weighted_domain& seen : out)
            if (seen.name == d.name) return std::unexpected("domain " + d.name + " is listed twice");
        out.push_back(std::move(d));
    }
    return out;
}

std::expected<bench_options, usage_exit> parse_options(int argc, const char* const* argv) {
    bench_options o;
    CLI::App app{
        "ringrelay-bench: SMTP load generator on io_uring. Opens --connections connections to --target, "
        "sends many messages over each (PIPELINING when offered, BDAT with --chunking) and reports "
        "throughput, acknowledgement latency and replies by code.\n"
        "Example: ringrelay-bench --target 127.0.0.1:2525 --connections 50 --messages 100000 --size 2k\n"
        "Exit code: 0 if every message was accepted, 1 if any failed, 2 on a usage error."};
    app.set_version_flag("--version", "ringrelay-bench 0.1.0");
    std::string target, duration, size, domains, timeout;
    std::string connections, message_count, recipients, shards, per_connection, seed;
    bool json = false, quiet = false, chunking = false, no_pipelining = false;
    app.add_option("--target", target, "ADDR:PORT of the SMTP server (numeric address or localhost)")
        ->type_name("ADDR:PORT")
        ->required();
    app.add_option("--connections", connections, "concurrent SMTP connections, divided among the shards")
        ->type_name("N")
        ->required();
    auto* messages =
        app.add_option("--messages", message_count, "send exactly this many messages, then stop")->type_name("M");
    auto* dur = app.add_option("--duration", duration, "send for this long (\"30\", \"30s\", \"2m\"), then QUIT")
                    ->type_name("S");
    messages->excludes(dur);
    app.add_option("--size", size, "bytes per message, header included (\"2048\", \"2k\", \"1M\")")
        ->type_name("BYTES")
        ->required();
    app.add_option("--recipients", recipients, "recipients per message, user<k>@<domain> (default 1)")->type_name("R");
    app.add_option("--rate", o.rate,
                   "open loop: messages per second at fixed arrival times, all connections together; latency "
                   "counts from the scheduled time (default: closed loop, next message as soon as one is answered)")
        ->type_name("MSGS_PER_S");
    app.add_option("--domains", domains, "recipient domains with weights, d1:w1,d2:w2 (default example.com)")
        ->type_name("D:W,...");
    app.add_flag("--chunking", chunking, "send BDAT (RFC 3030) when the server offers CHUNKING");
    app.add_flag("--no-pipelining", no_pipelining, "one command per reply even if PIPELINING is offered");
    app.add_flag("--json", json, "print the summary as one JSON object on stdout");
    app.add_option("--shards", shards, "threads, each with its own io_uring (default: min(2, CPUs))")->type_name("N");
    app.add_option("--from", o.from, "envelope sender (default bench@ringrelay-bench.test; '' = null sender)")
        ->type_name("ADDRESS");
    app.add_option("--helo", o.helo, "name sent in EHLO (default ringrelay-bench)")->type_name("NAME");
    app.add_option("--timeout", timeout,
                   "connect and reply timeout; also give up when nothing connects for this long (default 10s)")
        ->type_name("S");
    app.add_option("--max-messages-per-connection", per_connection,
                   "QUIT and reconnect after this many messages (default 0 = never)")
        ->type_name("K");
    app.add_flag("--quiet", quiet, "no progress line on stderr");
    app.add_flag("--starttls", o.starttls,
                 "STARTTLS on every connection (required: a server without it fails the messages; no certificate check)");
    std::string auth;
    app.add_option("--auth", auth, "SMTP AUTH PLAIN (LOGIN if PLAIN is not offered) as USER:PASS, after STARTTLS")
        ->type_name("USER:PASS");
    app.add_option("--seed", seed, "seed for the domain choice (default 1)")->type_name("N");
    try {
        app.parse(argc, argv);
    } catch (const CLI::CallForHelp&) {
        return std::unexpected(usage_exit{0, app.help()});
    } catch (const CLI::CallForVersion& e) {
        return std::unexpected(usage_exit{0, e.what()});
    } catch (const CLI::ParseError& e) {
        return std::unexpected(usage_error(e.what()));
    }

    auto target_endpoint = core::parse_endpoint(target);
    if (!target_endpoint) return std::unexpected(usage_error("--target: " + target_endpoint.error()));
    if (target_endpoint->port() == 0) return std::unexpected(usage_error("--target: port 0 cannot be connected to"));
    o.target = *target_endpoint;
    o.target_text = target;

    auto count = parse_count<std::uint32_t>(connections, "--connections");
    if (!count) return std::unexpected(usage_error(count.error()));
    o.connections = *count;
    if (o.connections == 0 || o.connections > max_connections)
        return std::unexpected(usage_error("--connections must be from 1 to " + std::to_string(max_connections)));

    if (messages->count() == 0 && app.count("--duration") == 0)
        return std::unexpected(usage_error("give either --messages M or --duration S"));
    if (messages->count() > 0) {
        o.mode = run_mode::messages;
        auto n = parse_count<std::uint64_t>(message_count, "--messages");
        if (!n) return std::unexpected(usage_error(n.error()));
        o.messages = *n;
        if (o.messages == 0) return std::unexpected(usage_error("--messages must be at least 1"));
    } else {
        o.mode = run_mode::duration;
        auto s = parse_seconds(duration);
        if (!s) return std::unexpected(usage_error("--duration: " + s.error()));
        if (*s <= 0) return std::unexpected(usage_error("--duration must be positive"));
        o.duration_seconds = *s;
    }

    if (!o.from.empty() && (!printable_without_space(o.from) || o.from.find_first_of("<>") != std::string::npos ||
                            o.from.find('@') == std::string::npos || o.from.size() > 254)) {
        return std::unexpected(usage_error("--from: '" + o.from + "' is not a mailbox (local@domain)"));
    }
    if (o.helo.empty() || !printable_without_space(o.helo) || o.helo.size() > 255)
        return std::unexpected(usage_error("--helo: must be a name without spaces"));

    auto bytes = parse_size(size);
    if (!bytes) return std::unexpected(usage_error("--size: " + bytes.error()));
    const std::size_t smallest = message_template::minimum_size(o.from);
    if (*bytes < smallest || *bytes > max_message_size) {
        return std::unexpected(usage_error("--size must be from " + std::to_string(smallest) +
                                           " (the generated header) to " + std::to_string(max_message_size) +
                                           " bytes"));
    }
    o.size = *bytes;

    if (app.count("--recipients") > 0) {
        auto n = parse_count<std::uint32_t>(recipients, "--recipients");
        if (!n) return std::unexpected(usage_error(n.error()));
        o.recipients = *n;
    }
    if (o.recipients == 0 || o.recipients > max_recipients)
        return std::unexpected(usage_error("--recipients must be from 1 to " + std::to_string(max_recipients)));
    if (app.count("--rate") > 0 && (!std::isfinite(o.rate) || o.rate <= 0))
        return std::unexpected(usage_error("--rate must be a positive number of messages per second"));
    if (app.count("--domains") > 0) {
        auto d = parse_domains(domains);
        if (!d) return std::unexpected(usage_error("--domains: " + d.error()));
        o.domains = std::move(*d);
    }
    if (app.count("--auth") > 0) {
        const std::size_t colon = auth.find(':');
        if (colon == std::string::npos || colon == 0)
            return std::unexpected(usage_error("--auth: expected USER:PASS (the password may contain ':')"));
        o.auth_user = auth.substr(0, colon);
        o.auth_password = auth.substr(colon + 1);
        if (!o.starttls)
            return std::unexpected(usage_error("--auth needs --starttls (the password would cross the network in clear)"));
    }
    if (chunking) o.chunking = protocol::extension_use::when_offered;
    if (no_pipelining) o.pipelining = protocol::extension_use::never;
    if (json) o.format = output_format::json;
    if (quiet) o.progress = progress_display::off;
    if (app.count("--timeout") > 0) {
        auto t = parse_seconds(timeout);
        if (!t) return std::unexpected(usage_error("--timeout: " + t.error()));
        if (*t <= 0) return std::unexpected(usage_error("--timeout must be positive"));
        o.timeout_seconds = *t;
    }
    if (app.count("--max-messages-per-connection") > 0) {
        auto n = parse_count<std::uint32_t>(per_connection, "--max-messages-per-connection");
        if (!n) return std::unexpected(usage_error(n.error()));
        o.max_messages_per_connection = *n;
    }
    if (app.count("--seed") > 0) {
        auto n = parse_count<std::uint64_t>(seed, "--seed");
        if (!n) return std::unexpected(usage_error(n.error()));
        o.seed = *n;
    }
    if (app.count("--shards") > 0) {
        auto n = parse_count<unsigned>(shards, "--shards");
        if (!n || *n == 0 || *n > max_shards)
            return std::unexpected(usage_error("--shards must be from 1 to " + std::to_string(max_shards)));
        o.shards = *n;
    } else {
        o.shards = std::clamp(std::thread::hardware_concurrency(), 1u, 2u);
    }
    o.shards = std::min<unsigned>(o.shards, o.connections);
    return o;
}

}  // namespace ringrelay::bench
