// tools/bench/options.h: ringrelay-bench's command line (CLI11): what to send, where, how
// fast, and how to report. parse_options() is the one place in the tool that catches CLI11's
// exceptions; every bad value becomes a usage_exit with exit code 2 naming the flag.
// SECURITY: reads operator input (argv) only.
// --starttls (STARTTLS before MAIL, RFC 3207) and --auth USER:PASS (AUTH PLAIN, RFC 4954) are
// fields of bench_options below and become protocol::client_config settings.
#pragma once
#include <cstdint>
#include <expected>
#include <string>
#include <string_view>
#include <vector>

#include "core/net.h"
#include "protocol/client_session.h"

namespace ringrelay::bench {

inline constexpr std::uint32_t max_connections = 60000;  // one client IP: ~28k ephemeral ports anyway
inline constexpr std::uint32_t max_recipients = 10000;
inline constexpr std::uint64_t max_message_size = 100ull * 1024 * 1024;
inline constexpr unsigned max_shards = 64;
inline constexpr std::uint32_t max_domain_weight = 1'000'000;

struct weighted_domain {
    std::string name;  // lower case, as given
    std::uint32_t weight = 1;
    friend bool operator==(const weighted_domain&, const weighted_domain&) = default;
};

enum class run_mode : std::uint8_t {
    messages,  // --messages M: exactly M messages attempted, then stop
    duration,  // --duration S: send for S seconds, then QUIT and report
};

enum class output_format : std::uint8_t { text, json };
enum class progress_display : std::uint8_t { when_terminal, off };

struct bench_options {
    core::endpoint target;
    std::string target_text;  // as given: "127.0.0.1:2525"
    std::uint32_t connections = 0;
    run_mode mode = run_mode::messages;
    std::uint64_t messages = 0;   // run_mode::messages
    double duration_seconds = 0;  // run_mode::duration
    std::uint64_t size = 0;       // bytes of each message (header + body, CRLF lines)
    std::uint32_t recipients = 1;
    double rate = 0;  // messages/s, all shards together; 0 = closed loop
    std::vector<weighted_domain> domains{{"example.com", 1}};
    protocol::extension_use pipelining = protocol::extension_use::when_offered;
    protocol::extension_use chunking = protocol::extension_use::never;
    output_format format = output_format::text;
    progress_display progress = progress_display::when_terminal;
    unsigned shards = 0;                              // threads; never more than connections
    std::string from = "bench@ringrelay-bench.test";  // envelope sender; empty = null sender
    std::string helo = "ringrelay-bench";
    double timeout_seconds = 10;                    // connect / reply timeout, and give-up time
    std::uint32_t max_messages_per_connection = 0;  // 0 = unlimited; else QUIT and reconnect
    std::uint64_t seed = 1;                         // domain choice; same seed, same domains
    // --starttls: STARTTLS (RFC 3207) required on every connection, any certificate; a server
    // that does not offer it fails the messages (4.7.4) instead of being measured in clear.
    bool starttls = false;
    // --auth USER:PASS: SMTP AUTH (RFC 4954, PLAIN, else LOGIN) after EHLO (after TLS with
    // --starttls; without it the credentials go in clear, as asked).
    std::string auth_user;
    std::string auth_password;
};

// How the tool ends instead of running: --help (code 0, text for stdout) or a usage error
// (code 2, text for stderr).
struct usage_exit {
    int code = 2;
    std::string message;
};

// Parses and validates argv. Defaults: --shards min(2, online CPUs), capped at --connections.
[[nodiscard]] std::expected<bench_options, usage_exit> parse_options(int argc, const char* const* argv);

// "example.com:3,example.net:1" (a weight may be left out: 1). Domains are RFC 1035 names
// (letters, digits, '-', '.'; labels of 1..63 octets; at most 253 octets), lower-cased,
// each at most once; weights are integers 1..max_domain_weight.
[[nodiscard]] std::expected<std::vector<weighted_domain>, std::string> parse_domains(std::string_view text);

// "30" (seconds, fractions allowed) or a core::parse_duration text ("30s", "2m", "250ms").
[[nodiscard]] std::expected<double, std::string> parse_seconds(std::string_view text);

}  // namespace ringrelay::bench
