// queue/metrics.cc: see metrics.h.
#include "queue/metrics.h"

#include <atomic>
#include <charconv>
#include <cstdint>
#include <string_view>

namespace ringrelay::queue {

namespace {

enum class metric_type : std::uint8_t { counter, gauge };

struct metric_row {
    std::string_view name;
    metric_type type;
    std::string_view help;
    std::atomic<std::uint64_t> shard_counters::*member;
};

// One row a metric; a series per shard.
constexpr metric_row metric_table[] = {
    {"ringrelay_messages_received_total", metric_type::counter,
     "Messages accepted and made durable (250 after DATA or BDAT).", &shard_counters::messages_queued},
    {"ringrelay_messages_receive_failed_total", metric_type::counter,
     "Messages whose storage failed (answered 4xx; the client tries again).", &shard_counters::messages_failed},
    {"ringrelay_messages_delivered_total", metric_type::counter,
     "Recipients delivered (one per recipient of a message).", &shard_counters::delivered},
    {"ringrelay_messages_deferred_total", metric_type::counter,
     "Delivery attempts to a recipient that failed temporarily (deferred for a retry).", &shard_counters::deferred},
    {"ringrelay_messages_bounced_total", metric_type::counter, "Recipients bounced (permanent failure).",
     &shard_counters::bounced},
    {"ringrelay_messages_expired_total", metric_type::counter,
     "Recipients that expired undelivered (--max-age).", &shard_counters::expired},
    {"ringrelay_dsns_total", metric_type::counter, "Delivery status notifications made (bounces, delays).",
     &shard_counters::dsns},
    {"ringrelay_spool_messages", metric_type::gauge, "Messages in the spool not yet final for every recipient.",
     &shard_counters::queued_for_delivery},
    {"ringrelay_spool_bytes", metric_type::gauge, "Bytes of spool segment files on disk.",
     &shard_counters::spool_bytes},
    {"ringrelay_connections_in_total", metric_type::counter, "Inbound SMTP connections accepted.",
     &shard_counters::accepted_connections},
    {"ringrelay_connections_in_open", metric_type::gauge, "Inbound SMTP connections open.",
     &shard_counters::open_connections},
    {"ringrelay_connections_in_refused_total", metric_type::counter,
     "Inbound SMTP connections refused over --max-connections or --max-connections-per-ip.",
     &shard_counters::refused_connections},
    {"ringrelay_connections_out_total", metric_type::counter, "Outbound SMTP connections made (connect attempts).",
     &shard_counters::outbound_connections},
    {"ringrelay_received_bytes_total", metric_type::counter, "SMTP bytes received (decrypted under TLS).",
     &shard_counters::received_bytes},
    {"ringrelay_early_talkers_total", metric_type::counter, "Clients that spoke before the greeting (521).",
     &shard_counters::early_talkers},
    {"ringrelay_proxy_header_failures_total", metric_type::counter,
     "Load balancers' connections closed for a malformed, late or cut-off PROXY header (--proxy-protocol-from).",
     &shard_counters::proxy_header_failures},
    {"ringrelay_tls_handshakes_total", metric_type::counter, "Inbound TLS handshakes completed.",
     &shard_counters::tls_handshakes},
    {"ringrelay_tls_failures_total", metric_type::counter, "Inbound TLS handshakes or records that failed.",
     &shard_counters::tls_failures},
    {"ringrelay_auth_successes_total", metric_type::counter, "SMTP AUTH attempts that succeeded.",
     &shard_counters::auth_successes},
    {"ringrelay_auth_failures_total", metric_type::counter, "SMTP AUTH attempts that failed.",
     &shard_counters::auth_failures},
    {"ringrelay_dkim_signatures_total", metric_type::counter, "DKIM-Signature fields added to messages.",
     &shard_counters::dkim_signatures},
};

void append_number(std::string& out, std::uint64_t n) {
    char digits[24];
    const auto r = std::to_chars(digits, digits + sizeof digits, n);
    out.append(digits, r.ptr);
}

}  // namespace

void render_metrics(const metrics_sources& sources, std::string& out) {
    const auto shards = sources.shards();
    for (const metric_row& m : metric_table) {
        out += "# HELP ";
        out += m.name;
        out += ' ';
        out += m.help;
        out += "\n# TYPE ";
        out += m.name;
        out += m.type == metric_type::counter ? " counter\n" : " gauge\n";
        for (std::size_t i = 0; i < shards.size(); ++i) {
            if (shards[i] == nullptr) continue;
            out += m.name;
            out += "{shard=\"";
            append_number(out, i);
            out += "\"} ";
            append_number(out, (shards[i]->*m.member).load(std::memory_order_relaxed));
            out += '\n';
        }
    }
}

}  // namespace ringrelay::queue
