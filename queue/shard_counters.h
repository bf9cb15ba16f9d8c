// queue/shard_counters.h: what one shard counts, for the relay's status output, the tests and
// the HTTP endpoint's /metrics (queue/metrics.h). Each shard owns one; only its own thread
// writes it (relaxed atomics: a reader on another shard sees each value whole, possibly a
// tick old, and never takes a lock or delays the writer). The struct's first member starts a
// cache line, so two shards' counters never share one.
#pragma once
#include <array>
#include <atomic>
#include <cstdint>

namespace ringrelay::queue {

// The upper bounds (microseconds) of the latency histograms' buckets, Prometheus' `le` (in
// seconds); a last bucket, +Inf, takes the rest. From 50 us (an fdatasync on a fast NVMe
// device) to 10 s (a disk in trouble).
inline constexpr std::array<std::uint64_t, 17> latency_bounds_us = {
    50, 100, 250, 500, 1'000, 2'500, 5'000, 10'000, 25'000, 50'000, 100'000, 250'000, 500'000,
    1'000'000, 2'500'000, 5'000'000, 10'000'000};

// A Prometheus histogram of latencies written by one shard and read by any: a count per bucket
// (not cumulative: the reader adds them up, and takes their total as the count, so a reader
// between two writes sees a count and buckets that agree) and the sum. Single writer: record()
// is a load and a store per field, no read-modify-write.
struct latency_histogram {
    std::array<std::atomic<std::uint64_t>, latency_bounds_us.size() + 1> buckets{};
    std::atomic<std::uint64_t> sum_us{0};

    void record(std::uint64_t us) noexcept {
        std::size_t i = 0;
        while (i < latency_bounds_us.size() && us > latency_bounds_us[i]) ++i;
        buckets[i].store(buckets[i].load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
        sum_us.store(sum_us.load(std::memory_order_relaxed) + us, std::memory_order_relaxed);
    }
};

struct shard_counters {
    // Written by the shard thread, read by others (tests, status output): own cache line.
    alignas(64) std::atomic<std::uint64_t> accepted_connections{0};
    std::atomic<std::uint64_t> messages_queued{0};
    std::atomic<std::uint64_t> messages_failed{0};
    std::atomic<std::uint64_t> open_connections{0};
    std::atomic<std::uint64_t> refused_connections{0};  // over --max-connections(-per-ip)
    std::atomic<std::uint64_t> early_talkers{0};        // spoke before the greeting: 521 5.5.1
    std::atomic<std::uint64_t> tls_handshakes{0};       // completed (STARTTLS and implicit)
    std::atomic<std::uint64_t> tls_failures{0};         // handshake or record failures, handshake timeouts
    std::atomic<std::uint64_t> tls_discarded_bytes{0};  // sent after STARTTLS, before the handshake
    std::atomic<std::uint64_t> auth_successes{0};
    std::atomic<std::uint64_t> auth_failures{0};        // failed AUTH attempts (535 or 421)
    std::atomic<std::uint64_t> auth_queued{0};          // AUTH attempts that waited for room (auth_wait_queue)
    std::atomic<std::uint64_t> auth_refused_for_load{0};// 454 4.7.0: wait queue full or wait too long
    std::atomic<std::uint64_t> delivered{0};
    std::atomic<std::uint64_t> queued_for_delivery{0};
    // Pieces of streamed bodies read into a registered buffer, and into plain memory (none
    // free, or none registered); core::fixed_buffer_counters, copied every tick.
    std::atomic<std::uint64_t> fixed_buffer_reads{0};
    std::atomic<std::uint64_t> plain_buffer_reads{0};
    // For /metrics (issue 18; queue/metrics.h). Copied every tick from the shard's own
    // counts (delivery, spool), or counted as they happen (bytes, signatures).
    std::atomic<std::uint64_t> deferred{0};             // recipients' attempts that failed temporarily
    std::atomic<std::uint64_t> bounced{0};              // recipients bounced
    std::atomic<std::uint64_t> expired{0};              // recipients expired (--max-age)
    std::atomic<std::uint64_t> dsns{0};                 // DSNs made (bounces, delays)
    std::atomic<std::uint64_t> received_bytes{0};       // SMTP bytes received (decrypted under TLS)
    std::atomic<std::uint64_t> dkim_signatures{0};      // DKIM-Signature fields added
    std::atomic<std::uint64_t> outbound_connections{0}; // outbound connections made
    std::atomic<std::uint64_t> spool_bytes{0};          // this shard's spool segments on disk
    std::atomic<std::uint64_t> spool_free_bytes{0};     // available to us on the spool's file system
    std::atomic<std::uint64_t> suppressed{0};           // RCPTs refused: on the suppression list
    std::atomic<std::uint64_t> suppressions_added{0};   // entries added by this shard's bounces
    std::atomic<std::uint64_t> body_cache_hits{0};      // bodies found in memory for an attempt
    std::atomic<std::uint64_t> body_cache_reads{0};     // bodies read back from the spool instead
    std::atomic<std::uint64_t> dns_lookups{0};          // MX lookups asked of the resolver
    std::atomic<std::uint64_t> dns_queries{0};          // DNS queries sent (RRsets not cached)
    std::atomic<std::uint64_t> dns_cache_hits{0};       // RRsets answered from the cache
    std::atomic<std::uint64_t> dns_failures{0};         // queries that ended in a temporary failure
    // Written as they happen (queue/metrics.h): the spool's group commits (the batch's write
    // and fdatasync), and a message's end of data to its 250 (DKIM signing and the commit).
    latency_histogram commit_latency;
    latency_histogram ack_latency;
};

}  // namespace ringrelay::queue
