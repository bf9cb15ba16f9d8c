// queue/metrics.cc: see metrics.h.
#include "queue/metrics.h"

#include <array>
#include <atomic>
#include <charconv>
#include <cstdint>
#include <string_view>

#include "core/clock.h"
#include "protocol/bounce_class.h"

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
    {"ringrelay_auth_successes_total", metric_type::counter, "AUTH attempts (SMTP AUTH, HTTP Basic) that succeeded.",
     &shard_counters::auth_successes},
    {"ringrelay_auth_failures_total", metric_type::counter, "AUTH attempts (SMTP AUTH, HTTP Basic) that failed.",
     &shard_counters::auth_failures},
    {"ringrelay_dkim_signatures_total", metric_type::counter, "DKIM-Signature fields added to messages.",
     &shard_counters::dkim_signatures},
    {"ringrelay_messages_suppressed_total", metric_type::counter,
     "Recipients refused at RCPT because they are on the suppression list (550 5.1.1).", &shard_counters::suppressed},
    {"ringrelay_suppressions_added_total", metric_type::counter,
     "Recipients added to the suppression list by this shard's hard bounces.", &shard_counters::suppressions_added},
    {"ringrelay_spool_free_bytes", metric_type::gauge, "Bytes available to the relay on the spool's file system.",
     &shard_counters::spool_free_bytes},
    {"ringrelay_body_cache_hits_total", metric_type::counter,
     "Delivery attempts whose message body was found in the body cache.", &shard_counters::body_cache_hits},
    {"ringrelay_body_cache_misses_total", metric_type::counter,
     "Delivery attempts whose message body was read back from the spool.", &shard_counters::body_cache_reads},
    {"ringrelay_dns_lookups_total", metric_type::counter, "MX lookups asked of the resolver.",
     &shard_counters::dns_lookups},
    {"ringrelay_dns_queries_total", metric_type::counter, "DNS queries sent (record sets not cached).",
     &shard_counters::dns_queries},
    {"ringrelay_dns_cache_hits_total", metric_type::counter, "DNS record sets answered from the cache.",
     &shard_counters::dns_cache_hits},
    {"ringrelay_dns_failures_total", metric_type::counter, "DNS queries that ended in a temporary failure.",
     &shard_counters::dns_failures},
};

struct histogram_row {
    std::string_view name;
    std::string_view help;
    latency_histogram shard_counters::*member;
};

constexpr histogram_row histogram_table[] = {
    {"ringrelay_group_commit_seconds",
     "Spool group commits: the batch's write and fdatasync, from submission to completion.",
     &shard_counters::commit_latency},
    {"ringrelay_acknowledgement_seconds",
     "Messages accepted: from the end of their data to the 250 (DKIM signing and the group commit).",
     &shard_counters::ack_latency},
};

// Outcomes by provider and egress source, summed over the shards: one family per outcome.
struct outcome_row {
    std::string_view name;
    std::string_view help;
    std::uint64_t provider_outcomes::*member;
};

constexpr outcome_row outcome_table[] = {
    {"ringrelay_provider_messages_delivered_total", "Recipients delivered, by the site's provider and egress source.",
     &provider_outcomes::delivered},
    {"ringrelay_provider_messages_deferred_total",
     "Delivery attempts to a recipient that failed temporarily, by provider and egress source.",
     &provider_outcomes::deferred},
    {"ringrelay_provider_messages_bounced_total", "Recipients bounced, by provider and egress source.",
     &provider_outcomes::bounced},
    {"ringrelay_provider_messages_expired_total",
     "Recipients that expired after a failed attempt, by provider and egress source.", &provider_outcomes::expired},
};

// The label value for "no provider matched".
constexpr std::string_view no_provider = "none";
// The site series that sums every site past max_site_series.
constexpr std::string_view other_sites = "_other";

void append_number(std::string& out, std::uint64_t n) {
    char digits[24];
    const auto r = std::to_chars(digits, digits + sizeof digits, n);
    out.append(digits, r.ptr);
}

void append_seconds(std::string& out, double seconds) {
    char digits[64];
    const auto r = std::to_chars(digits, digits + sizeof digits, seconds, std::chars_format::fixed);
    out.append(digits, r.ptr);
}

// A label value, escaped as the text format wants (backslash, double quote, line feed).
void append_label_value(std::string& out, std::string_view v) {
    for (const char c : v) {
        if (c == '\\') {
            out += "\\\\";
        } else if (c == '"') {
            out += "\\\"";
        } else if (c == '\n') {
            out += "\\n";
        } else {
            out += c;
        }
    }
}

void append_header(std::string& out, std::string_view name, std::string_view type, std::string_view help) {
    out += "# HELP ";
    out += name;
    out += ' ';
    out += help;
    out += "\n# TYPE ";
    out += name;
    out += ' ';
    out += type;
    out += '\n';
}

void render_histograms(std::span<const shard_counters* const> shards, std::string& out) {
    for (const histogram_row& h : histogram_table) {
        append_header(out, h.name, "histogram", h.help);
        for (std::size_t i = 0; i < shards.size(); ++i) {
            if (shards[i] == nullptr) continue;
            const latency_histogram& l = shards[i]->*h.member;
            std::uint64_t cumulative = 0;
            for (std::size_t b = 0; b < l.buckets.size(); ++b) {
                cumulative += l.buckets[b].load(std::memory_order_relaxed);
                out += h.name;
                out += "_bucket{shard=\"";
                append_number(out, i);
                out += "\",le=\"";
                if (b < latency_bounds_us.size()) {
                    append_seconds(out, static_cast<double>(latency_bounds_us[b]) / 1e6);
                } else {
                    out += "+Inf";
                }
                out += "\"} ";
                append_number(out, cumulative);
                out += '\n';
            }
            out += h.name;
            out += "_sum{shard=\"";
            append_number(out, i);
            out += "\"} ";
            append_seconds(out, static_cast<double>(l.sum_us.load(std::memory_order_relaxed)) / 1e6);
            out += '\n';
            out += h.name;
            out += "_count{shard=\"";
            append_number(out, i);
            out += "\"} ";
            append_number(out, cumulative);
            out += '\n';
        }
    }
}

// Every shard's last snapshot, merged: sites by name (the deepest max_site_series), outcomes
// by (provider, source), bounces by class.
struct merged_snapshots {
    std::vector<site_depth> sites;
    site_depth rest;
    std::vector<provider_outcomes> outcomes;
    std::array<std::uint64_t, protocol::bounce_class_count> bounced_by_class{};
};

merged_snapshots merge_snapshots(std::span<const shard_snapshot_slot* const> slots) {
    merged_snapshots m;
    for (const shard_snapshot_slot* slot : slots) {
        if (slot == nullptr) continue;
        const auto held = slot->read();
        const shard_snapshot* s = held.get();
        if (s == nullptr) continue;  // the shard published under us every time: left out of this scrape
        m.sites.insert(m.sites.end(), s->sites.begin(), s->sites.end());
        if (s->rest.messages != 0 || s->rest.oldest_arrival_us != 0) {
            m.rest.messages += s->rest.messages;
            if (s->rest.oldest_arrival_us != 0 &&
                (m.rest.oldest_arrival_us == 0 || s->rest.oldest_arrival_us < m.rest.oldest_arrival_us))
                m.rest.oldest_arrival_us = s->rest.oldest_arrival_us;
        }
        for (const provider_outcomes& o : s->outcomes) {
            provider_outcomes& to = outcomes_for(m.outcomes, o.provider, o.source);
            for (const outcome_row& r : outcome_table) to.*r.member += o.*r.member;
        }
        for (std::size_t c = 0; c < m.bounced_by_class.size(); ++c) m.bounced_by_class[c] += s->bounced_by_class[c];
    }
    keep_deepest(m.sites, m.rest, max_site_series);
    return m;
}

void render_sites(const merged_snapshots& m, std::string& out, std::uint64_t now_unix_us) {
    const auto each_site = [&](auto&& value) {
        for (const site_depth& d : m.sites) value(d.site, d);
        value(other_sites, m.rest);
    };
    append_header(out, "ringrelay_queue_messages", "gauge",
                  "Messages waiting at a site on its owner shard (ready queue, tenant and campaign holds), by site name; "
                  "the sites past the deepest 50 summed in site=\"_other\".");
    each_site([&](std::string_view site, const site_depth& d) {
        out += "ringrelay_queue_messages{site=\"";
        append_label_value(out, site);
        out += "\"} ";
        append_number(out, d.messages);
        out += '\n';
    });
    append_header(out, "ringrelay_queue_oldest_seconds", "gauge",
                  "Age of the oldest message at the head of a site's queues (0: none waiting), by site name.");
    each_site([&](std::string_view site, const site_depth& d) {
        out += "ringrelay_queue_oldest_seconds{site=\"";
        append_label_value(out, site);
        out += "\"} ";
        const std::uint64_t age =
            d.messages == 0 || d.oldest_arrival_us == 0 || d.oldest_arrival_us > now_unix_us ? 0 : now_unix_us - d.oldest_arrival_us;
        append_seconds(out, static_cast<double>(age) / 1e6);
        out += '\n';
    });
}

void render_outcomes(const merged_snapshots& m, std::string& out) {
    for (const outcome_row& r : outcome_table) {
        append_header(out, r.name, "counter", r.help);
        for (const provider_outcomes& o : m.outcomes) {
            out += r.name;
            out += "{provider=\"";
            append_label_value(out, o.provider.empty() ? no_provider : std::string_view(o.provider));
            out += "\",source=\"";
            append_label_value(out, o.source);
            out += "\"} ";
            append_number(out, o.*r.member);
            out += '\n';
        }
    }
    append_header(out, "ringrelay_messages_bounced_by_class_total", "counter",
                  "Recipients bounced, by bounce class (etc/bounce-classes.json).");
    for (std::size_t c = 0; c < m.bounced_by_class.size(); ++c) {
        out += "ringrelay_messages_bounced_by_class_total{class=\"";
        out += protocol::to_string(static_cast<protocol::bounce_class>(c));
        out += "\"} ";
        append_number(out, m.bounced_by_class[c]);
        out += '\n';
    }
}

}  // namespace

void render_metrics(const metrics_sources& sources, std::string& out) {
    render_metrics(sources, out, static_cast<std::uint64_t>(core::unix_us()));
}

void render_metrics(const metrics_sources& sources, std::string& out, std::uint64_t now_unix_us) {
    const auto shards = sources.shards();
    for (const metric_row& m : metric_table) {
        append_header(out, m.name, m.type == metric_type::counter ? "counter" : "gauge", m.help);
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
    render_histograms(shards, out);
    const merged_snapshots merged = merge_snapshots(sources.snapshots());
    render_sites(merged, out, now_unix_us);
    render_outcomes(merged, out);
}

}  // namespace ringrelay::queue
