// queue/shard_counters.h: what one shard counts, for the relay's status output, the tests and
// the HTTP endpoint's /metrics (queue/metrics.h). Each shard owns one; only its own thread
// writes it (relaxed atomics: a reader on another shard sees each value whole, possibly a
// tick old, and never takes a lock or delays the writer). The struct's first member starts a
// cache line, so two shards' counters never share one.
#pragma once
#include <atomic>
#include <cstdint>

namespace ringrelay::queue {

struct shard_counters {
    // Written by the shard thread, read by others (tests, status output): own cache line.
    alignas(64) std::atomic<std::uint64_t> accepted_connections{0};
    std::atomic<std::uint64_t> messages_queued{0};
    std::atomic<std::uint64_t> messages_failed{0};
    std::atomic<std::uint64_t> open_connections{0};
    std::atomic<std::uint64_t> refused_connections{0};  // over --max-connections(-per-ip)
    std::atomic<std::uint64_t> early_talkers{0};        // spoke before the greeting: 521 5.5.1
    std::atomic<std::uint64_t> proxy_header_failures{0};// balancers' connections closed without a usable PROXY header
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
};

}  // namespace ringrelay::queue
