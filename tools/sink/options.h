// tools/sink/options.h: ringrelay-sink's command line (CLI11): where to listen, what to do
// with each message (count, save, defer, reject, drop, delay), the per-client-address limits
// it enforces and how it reports. parse_options() is the one place in the tool that catches
// CLI11's exceptions; every bad value becomes an options_exit with exit code 2 naming the
// flag. Nothing here touches the file system or the network (--save DIR is checked at
// start-up by main).
// SECURITY: reads operator input (argv) only.
#pragma once
#include <cstdint>
#include <expected>
#include <string>
#include <vector>

#include "core/net.h"

namespace ringrelay::sink {

inline constexpr unsigned max_shards = 256;
inline constexpr double max_rate_per_ip_limit = 1e9;  // messages/s; the limiter counts in ns
inline constexpr std::uint64_t max_message_size_limit = 1ull << 30;

enum class output_format : std::uint8_t { text, json };
enum class progress_lines : std::uint8_t { every_second, off };

struct sink_options {
    std::vector<std::string> listen_text;   // as given, one per --listen
    std::vector<core::endpoint> listen;     // parsed, same order
    unsigned shards = 0;                    // threads; 0 on input = online CPUs (resolved)
    std::uint64_t expect = 0;               // exit 0 after this many 250s; 0 = no target
    std::uint32_t duration_seconds = 0;     // exit after this long; 0 = until a signal
    std::string save_dir;                   // empty = count only
    double defer_rate = 0;                  // probability per message of 451 4.3.0
    double reject_rate = 0;                 // ... of 550 5.7.1
    double disconnect_rate = 0;             // ... of closing without a reply
    std::string defer_reply;                // the deferral's whole reply line; empty = 451 4.3.0 ...
    std::string reject_reply;               // the rejection's; empty = 550 5.7.1 ...
    std::uint32_t delay_ms = 0;             // before the reply to the end of data
    std::uint32_t max_connections_per_ip = 0;  // 0 = no limit
    double max_rate_per_ip = 0;             // MAIL commands per second per IP; 0 = no limit
    std::string hostname = "sink.invalid";  // banner, EHLO reply, Received:
    std::uint64_t seed = 0;                 // fault draws; random unless --seed was given
    bool seed_given = false;
    std::uint64_t max_message_size = 26214400;  // advertised in SIZE
    std::uint32_t command_timeout = 300;    // seconds without input before 421 4.4.2
    // STARTTLS (RFC 3207): offered only with --tls or --tls-cert/--tls-key; without them the
    // sink is a peer lacking TLS (EHLO lists no STARTTLS, STARTTLS gets 502 5.5.1).
    bool tls = false;
    std::string tls_cert;                   // PEM chain, leaf first; empty: self-signed
    std::string tls_key;
    std::string tls_dir;                    // where the self-signed pair is kept; empty: a temp dir
    bool ktls = true;                       // kTLS where the start-up probe finds it works (--no-ktls: never)
    output_format format = output_format::text;
    progress_lines progress = progress_lines::every_second;
};

// How parsing ends when the sink should not run.
struct options_exit {
    int code;             // 0 for --help/--version, 2 for a bad flag or value
    std::string message;  // the help text or the error, to print
};

// Parses and validates argv. --help text documents every flag and the --save file format.
[[nodiscard]] std::expected<sink_options, options_exit> parse_options(int argc, const char* const* argv);

}  // namespace ringrelay::sink
