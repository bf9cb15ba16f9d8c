// tools/sink/options.cc: see options.h. CLI11 reports through exceptions; they are caught here
// and nowhere else in the tool.
#include "tools/sink/options.h"

#include <CLI/CLI.hpp>
#include <cmath>
#include <random>
#include <thread>

namespace ringrelay::sink {

namespace {

constexpr const char* description =
    "ringrelay-sink: a fast SMTP receiving server for tests and benchmarks. It accepts mail over "
    "SMTP (PIPELINING, CHUNKING, 8BITMIME, SMTPUTF8), counts it and answers 250 without storing "
    "it, unless told to save it, to fail it on purpose, or to enforce per-client limits.\n"
    "\n"
    "Faults (decided per message when its data is complete; the three rates may add up to 1):\n"
    "  --defer-rate P       451 4.3.0 Mail server temporarily rejected message. Try again later.\n"
    "  --reject-rate P      550 5.7.1 [IP] Our system has detected that this message is likely unsolicited mail. ...\n"
    "  --disconnect-rate P  the connection is closed without a reply\n"
    "  --defer-reply TEXT, --reject-reply TEXT   the deferral's or rejection's whole reply line instead\n"
    "                       (a provider's own text, e.g. \"421 4.7.0 [TSS04] ...\"; a 421 closes the connection)\n"
    "  --delay-ms N         whatever the verdict, it comes N ms after the end of data\n"
    "Limits per client IP address, counted across all shards:\n"
    "  --max-connections-per-ip N   connection N+1 gets the banner\n"
    "                       421 4.7.0 Try again later, closing connection. (too many connections from your IP)\n"
    "  --max-rate-per-ip R  MAIL commands above R per second (a token bucket holding one second's\n"
    "                       worth, at least one) get 451 4.7.1 Message rate limit exceeded for IP, try again later\n"
    "\n"
    "--save DIR writes one file per accepted message, DIR/<QUEUE-ID>.eml (written as .<QUEUE-ID>.tmp "
    "and renamed once complete, so a reader never sees a partial file; not fsynced):\n"
    "  X-Sink-Queue-Id: <16 hex digits, as in the 250 reply>\n"
    "  X-Sink-Client: <client IP>\n"
    "  X-Sink-Helo: <EHLO/HELO argument>\n"
    "  X-Sink-Mail-From: <sender>          (<> for the null sender)\n"
    "  X-Sink-Rcpt-To: <recipient>         (one line per recipient, in RCPT order)\n"
    "  X-Sink-Size: <n>\n"
    "followed by exactly n bytes: the message as received (the sink's own Received: header, then "
    "the data with dot-stuffing removed, CRLF line ends, without the final \".\"). Every line "
    "above ends in CRLF.\n"
    "\n"
    "TLS: --tls (or --tls-cert FILE --tls-key FILE) offers STARTTLS (RFC 3207); without a certificate "
    "a self-signed one for --hostname is made in --tls-dir DIR (cert.pem, key.pem; default a temporary "
    "directory removed at exit). Without these flags the sink offers no STARTTLS (a peer lacking TLS). "
    "A message received under TLS has \"with ESMTPS\" and the protocol and cipher in the sink's "
    "Received: header (so in the --save file too).\n"
    "\n"
    "Statistics: one line per second on stderr (unless --quiet); a summary on stdout at exit "
    "(--json: one JSON object). --expect N exits 0 once N messages got 250 (deferred, rejected "
    "and dropped ones do not count), and 1 if a signal or --duration ends the run first. "
    "Without --expect it runs until SIGINT/SIGTERM (or --duration) and exits 0.";

bool is_probability(double p) noexcept { return std::isfinite(p) && p >= 0.0 && p <= 1.0; }

// A configured reply line: empty (the default text), or a code of `first` then two digits, a
// space and printable ASCII (no CR, LF or controls: it is sent verbatim). "" when it is fine.
std::string check_reply_line(std::string_view line, char first) {
    if (line.empty()) return {};
    if (line.size() < 5 || line[0] != first || line[1] < '0' || line[1] > '9' || line[2] < '0' || line[2] > '9' ||
        line[3] != ' ')
        return std::string("must start with a ") + first + "xx code and a space, e.g. \"" + first +
               (first == '4' ? "21 4.7.0 ...\"" : "50 5.7.1 ...\"");
    if (line.size() > 510) return "longer than an SMTP reply line may be (510 octets)";
    for (const char c : line)
        if (c < 0x20 || c > 0x7e) return "only printable ASCII (no line breaks or controls)";
    return {};
}

// CLI11 reads "-1" into an unsigned 64-bit option as 2^64-1; counts refuse a sign instead.
CLI::Validator unsigned_number() {
    return CLI::Validator(
        [](std::string& value) -> std::string {
            if (value.empty() || value.find_first_not_of("0123456789") != std::string::npos)
                return "expected a non-negative integer, got '" + value + "'";
            return {};
        },
        "UINT");
}

}  // namespace

std::expected<sink_options, options_exit> parse_options(int argc, const char* const* argv) {
    sink_options o;
    CLI::App app{description, "ringrelay-sink"};
    app.set_version_flag("--version", "ringrelay-sink 0.1.0");
    app.get_formatter()->column_width(34);
    app.add_option("--listen", o.listen_text, "ADDR:PORT to accept SMTP on; repeatable; port 0 picks a free one")
        ->required();
    app.add_option("--shards", o.shards, "threads, each with its own io_uring and listener (default: online CPUs)")
        ->check(unsigned_number());
    app.add_option("--expect", o.expect, "exit 0 once this many messages were accepted (250), across all shards")
        ->check(unsigned_number());
    app.add_option("--duration", o.duration_seconds, "stop after this many seconds")
        ->check(unsigned_number());
    app.add_option("--save", o.save_dir, "directory to write each accepted message to (format above)");
    app.add_option("--defer-rate", o.defer_rate, "probability 0..1 that a message gets 451 4.3.0 (default 0)");
    app.add_option("--reject-rate", o.reject_rate, "probability 0..1 that a message gets 550 5.7.1 (default 0)");
    app.add_option("--defer-reply", o.defer_reply,
                   "the whole reply line a deferred message gets, a 4xx code first (default \"451 4.3.0 Mail "
                   "server temporarily rejected message. Try again later.\"); a 421 also closes the connection, "
                   "e.g. \"421 4.7.0 [TSS04] Messages from 127.0.0.1 temporarily deferred\"");
    app.add_option("--reject-reply", o.reject_reply,
                   "the whole reply line a rejected message gets, a 5xx code first (default \"550 5.7.1 [IP] "
                   "Our system has detected ...\")");
    app.add_option("--disconnect-rate", o.disconnect_rate,
                   "probability 0..1 that the connection is closed at the end of a message's data (default 0)");
    app.add_option("--delay-ms", o.delay_ms, "milliseconds to wait before answering the end of data (default 0)")
        ->check(unsigned_number());
    app.add_option("--max-connections-per-ip", o.max_connections_per_ip,
                   "concurrent connections per client IP; above it 421 4.7.0 (default 0 = no limit)")
        ->check(unsigned_number());
    app.add_option("--max-rate-per-ip", o.max_rate_per_ip,
                   "MAIL commands per second per client IP; above it 451 4.7.1 (default 0 = no limit)");
    app.add_option("--hostname", o.hostname, "name in the banner, EHLO reply and Received: (default sink.invalid)");
    app.add_option("--seed", o.seed, "seed of the fault draws, for a repeatable run (default: random, printed)")
        ->check(unsigned_number());
    app.add_option("--max-message-size", o.max_message_size, "largest message in bytes, advertised in SIZE "
                                                             "(default 26214400)")
        ->check(unsigned_number());
    app.add_option("--timeout", o.command_timeout,
                   "seconds a command may take, or message content arriving below 500 bytes/s, before "
                   "421 4.4.2 (default 300; the relay's per-request deadline)")
        ->check(unsigned_number());
    app.add_flag("--tls", o.tls, "offer STARTTLS (self-signed certificate unless --tls-cert/--tls-key)");
    app.add_option("--tls-cert", o.tls_cert, "PEM certificate chain for STARTTLS (implies --tls)");
    app.add_option("--tls-key", o.tls_key, "PEM private key of --tls-cert");
    app.add_option("--tls-dir", o.tls_dir, "directory for the self-signed certificate (default: temporary)");
    bool no_ktls = false;
    app.add_flag("--no-ktls", no_ktls, "keep TLS records in user space even where the kernel could take them (kTLS)");
    bool quiet = false;
    bool json = false;
    app.add_flag("--quiet", quiet, "no per-second statistics on stderr");
    app.add_flag("--json", json, "print the final statistics as one JSON object");
    try {
        app.parse(argc, argv);
    } catch (const CLI::CallForHelp&) {
        return std::unexpected(options_exit{0, app.help()});
    } catch (const CLI::CallForVersion& e) {
        return std::unexpected(options_exit{0, e.what()});
    } catch (const CLI::ParseError& e) {
        return std::unexpected(
            options_exit{2, std::string("ringrelay-sink: ") + e.what() + "\nRun with --help for usage."});
    }
    o.seed_given = app.count("--seed") > 0;
    o.progress = quiet ? progress_lines::off : progress_lines::every_second;
    o.format = json ? output_format::json : output_format::text;
    auto fail = [](const std::string& what) {
        return std::unexpected(options_exit{2, "ringrelay-sink: " + what});
    };
    for (const std::string& l : o.listen_text) {
        auto e = core::parse_endpoint(l);
        if (!e) return fail("--listen: " + e.error());
        o.listen.push_back(*e);
    }
    if (o.shards == 0) {
        const unsigned n = std::thread::hardware_concurrency();
        o.shards = n == 0 ? 1 : n;
    }
    if (o.shards > max_shards) return fail("--shards: at most " + std::to_string(max_shards));
    const struct {
        const char* flag;
        double value;
    } rates[] = {{"--defer-rate", o.defer_rate}, {"--reject-rate", o.reject_rate},
                 {"--disconnect-rate", o.disconnect_rate}};
    for (const auto& r : rates) {
        if (!is_probability(r.value)) return fail(std::string(r.flag) + ": must be a probability between 0 and 1");
    }
    // A small tolerance: 0.7 + 0.2 + 0.1 is not exactly 1 in binary floating point.
    if (o.defer_rate + o.reject_rate + o.disconnect_rate > 1.0 + 1e-9)
        return fail("--defer-rate + --reject-rate + --disconnect-rate: must not add up to more than 1");
    if (auto bad = check_reply_line(o.defer_reply, '4'); !bad.empty()) return fail("--defer-reply: " + bad);
    if (auto bad = check_reply_line(o.reject_reply, '5'); !bad.empty()) return fail("--reject-reply: " + bad);
    if (!std::isfinite(o.max_rate_per_ip) || o.max_rate_per_ip < 0 || o.max_rate_per_ip > max_rate_per_ip_limit)
        return fail("--max-rate-per-ip: must be between 0 (no limit) and 1e9 messages per second");
    if (o.max_message_size == 0 || o.max_message_size > max_message_size_limit)
        return fail("--max-message-size: must be between 1 and 1073741824 bytes");
    if (o.command_timeout == 0) return fail("--timeout: must be at least 1 second");
    if (o.hostname.empty() || o.hostname.find_first_of(" \t\r\n") != std::string::npos)
        return fail("--hostname: must be non-empty, without spaces or line breaks");
    if (o.tls_cert.empty() != o.tls_key.empty()) return fail("--tls-cert and --tls-key: give both or neither");
    if (!o.tls_cert.empty()) o.tls = true;
    o.ktls = !no_ktls;
    if (!o.tls_dir.empty() && !o.tls) return fail("--tls-dir: only with --tls");
    if (!o.seed_given) {
        std::random_device rd;
        o.seed = (static_cast<std::uint64_t>(rd()) << 32) ^ rd();
    }
    return o;
}

}  // namespace ringrelay::sink
