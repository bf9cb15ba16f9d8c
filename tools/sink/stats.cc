// tools/sink/stats.cc: see stats.h.
#include "tools/sink/stats.h"

#include <cinttypes>
#include <cstdio>

namespace ringrelay::sink {

namespace {

std::uint64_t get(const std::atomic<std::uint64_t>& a) noexcept { return a.load(std::memory_order_relaxed); }

double per_second(std::uint64_t now, std::uint64_t before, double seconds) noexcept {
    if (seconds <= 0 || now < before) return 0;
    return static_cast<double>(now - before) / seconds;
}

// "2.1 GB", "215.3 MB", "12.0 kB", "512 B" (decimal units).
std::string human_bytes(double b) {
    char buf[32];
    if (b >= 1e9) {
        std::snprintf(buf, sizeof buf, "%.1f GB", b / 1e9);
    } else if (b >= 1e6) {
        std::snprintf(buf, sizeof buf, "%.1f MB", b / 1e6);
    } else if (b >= 1e3) {
        std::snprintf(buf, sizeof buf, "%.1f kB", b / 1e3);
    } else {
        std::snprintf(buf, sizeof buf, "%.0f B", b);
    }
    return buf;
}

}  // namespace

void add(totals& into, const shard_stats& s) noexcept {
    into.received += get(s.received);
    into.deferred += get(s.deferred);
    into.rejected += get(s.rejected);
    into.disconnected += get(s.disconnected);
    into.rate_limited += get(s.rate_limited);
    into.refused_connections += get(s.refused_connections);
    into.connections += get(s.connections);
    into.open_connections += get(s.open_connections);
    into.bytes += get(s.bytes);
    into.save_errors += get(s.save_errors);
    into.tls_handshakes += get(s.tls_handshakes);
    into.tls_failures += get(s.tls_failures);
    into.received_tls += get(s.received_tls);
}

totals snapshot(std::span<const shard_stats* const> shards) noexcept {
    totals t;
    for (const shard_stats* s : shards) add(t, *s);
    return t;
}

std::string progress_line(const totals& now, const totals& before, double seconds) {
    char buf[512];
    auto rate = [&](std::uint64_t totals::*field) { return per_second(now.*field, before.*field, seconds); };
    std::snprintf(buf, sizeof buf,
                  "received %.0f/s (%" PRIu64 "), deferred %.0f/s (%" PRIu64 "), rejected %.0f/s (%" PRIu64
                  "), disconnected %.0f/s (%" PRIu64 "), rate-limited %.0f/s (%" PRIu64
                  "), refused connections %.0f/s (%" PRIu64 "), %s/s (%s), %" PRIu64 " open connection(s)",
                  rate(&totals::received), now.received, rate(&totals::deferred), now.deferred,
                  rate(&totals::rejected), now.rejected, rate(&totals::disconnected), now.disconnected,
                  rate(&totals::rate_limited), now.rate_limited, rate(&totals::refused_connections),
                  now.refused_connections, human_bytes(rate(&totals::bytes)).c_str(),
                  human_bytes(static_cast<double>(now.bytes)).c_str(), now.open_connections);
    std::string line = buf;
    if (now.save_errors != 0) line += ", " + std::to_string(now.save_errors) + " save error(s)";
    return line;
}

std::string summary_text(const totals& t, double seconds, std::uint64_t expected) {
    char buf[1024];
    const double rate = seconds > 0 ? static_cast<double>(t.received) / seconds : 0;
    std::snprintf(buf, sizeof buf,
                  "ringrelay-sink: %" PRIu64 " message(s) received in %.3f s: %.0f messages/s, %.0f messages/hour\n"
                  "  received             %" PRIu64 "%s\n"
                  "  deferred (451 4.3.0) %" PRIu64 "\n"
                  "  rejected (550 5.7.1) %" PRIu64 "\n"
                  "  disconnected         %" PRIu64 "\n"
                  "  rate-limited MAIL    %" PRIu64 "\n"
                  "  connections          %" PRIu64 " (%" PRIu64 " refused with 421 4.7.0)\n"
                  "  bytes read           %" PRIu64 " (%s, %s/s)\n",
                  t.received, seconds, rate, rate * 3600.0, t.received,
                  expected != 0 ? (" of " + std::to_string(expected) + " expected").c_str() : "", t.deferred,
                  t.rejected, t.disconnected, t.rate_limited, t.connections, t.refused_connections, t.bytes,
                  human_bytes(static_cast<double>(t.bytes)).c_str(),
                  human_bytes(seconds > 0 ? static_cast<double>(t.bytes) / seconds : 0).c_str());
    std::string out = buf;
    if (t.save_errors != 0) out += "  save errors          " + std::to_string(t.save_errors) + "\n";
    if (t.tls_handshakes != 0 || t.tls_failures != 0) {
        out += "  TLS                  " + std::to_string(t.tls_handshakes) + " handshake(s), " +
               std::to_string(t.tls_failures) + " failure(s), " + std::to_string(t.received_tls) +
               " message(s) received under TLS\n";
    }
    return out;
}

std::string summary_json(const totals& t, double seconds, std::uint64_t expected) {
    char buf[1024];
    const double rate = seconds > 0 ? static_cast<double>(t.received) / seconds : 0;
    std::snprintf(buf, sizeof buf,
                  "{\"received\":%" PRIu64 ",\"expected\":%" PRIu64 ",\"deferred\":%" PRIu64 ",\"rejected\":%" PRIu64
                  ",\"disconnected\":%" PRIu64 ",\"rate_limited\":%" PRIu64 ",\"connections\":%" PRIu64
                  ",\"refused_connections\":%" PRIu64 ",\"bytes\":%" PRIu64 ",\"save_errors\":%" PRIu64
                  ",\"tls_handshakes\":%" PRIu64 ",\"tls_failures\":%" PRIu64 ",\"received_tls\":%" PRIu64
                  ",\"seconds\":%.6f,\"messages_per_second\":%.1f,\"messages_per_hour\":%.0f}\n",
                  t.received, expected, t.deferred, t.rejected, t.disconnected, t.rate_limited, t.connections,
                  t.refused_connections, t.bytes, t.save_errors, t.tls_handshakes, t.tls_failures, t.received_tls,
                  seconds, rate, rate * 3600.0);
    return buf;
}

}  // namespace ringrelay::sink
