// tools/sink/stats.h: ringrelay-sink's counters and how they are printed: one line a second
// on stderr (rates over the last interval and totals) and the final summary on stdout (text
// or one JSON object).
//
// Each shard owns one shard_stats and is its only writer (bump(): a plain load and store,
// no locked instruction on the per-message path); the main thread reads every shard's with
// snapshot() once a second.
#pragma once
#include <atomic>
#include <cstdint>
#include <span>
#include <string>

namespace ringrelay::sink {

// One shard's counters. Written by that shard only, read by the main thread: own cache lines.
struct alignas(64) shard_stats {
    std::atomic<std::uint64_t> received{0};             // messages answered 250
    std::atomic<std::uint64_t> deferred{0};             // injected 451 4.3.0
    std::atomic<std::uint64_t> rejected{0};             // injected 550 5.7.1
    std::atomic<std::uint64_t> disconnected{0};         // injected drops
    std::atomic<std::uint64_t> rate_limited{0};         // MAIL answered 451 4.7.1
    std::atomic<std::uint64_t> refused_connections{0};  // banner 421 4.7.0
    std::atomic<std::uint64_t> connections{0};          // accepted, refused ones included
    std::atomic<std::uint64_t> open_connections{0};     // now (a gauge)
    std::atomic<std::uint64_t> bytes{0};                // read from clients
    std::atomic<std::uint64_t> save_errors{0};          // --save failures (answered 451 4.3.0)
    std::atomic<std::uint64_t> tls_handshakes{0};       // STARTTLS handshakes completed
    std::atomic<std::uint64_t> tls_failures{0};         // handshakes (or records) that failed
    std::atomic<std::uint64_t> received_tls{0};         // of `received`, those under TLS
};

// Adds n to a counter that only the calling thread writes.
inline void bump(std::atomic<std::uint64_t>& counter, std::uint64_t n = 1) noexcept {
    counter.store(counter.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
}

struct totals {
    std::uint64_t received = 0;
    std::uint64_t deferred = 0;
    std::uint64_t rejected = 0;
    std::uint64_t disconnected = 0;
    std::uint64_t rate_limited = 0;
    std::uint64_t refused_connections = 0;
    std::uint64_t connections = 0;
    std::uint64_t open_connections = 0;
    std::uint64_t bytes = 0;
    std::uint64_t save_errors = 0;
    std::uint64_t tls_handshakes = 0;
    std::uint64_t tls_failures = 0;
    std::uint64_t received_tls = 0;
};

// The sum over every shard's counters now.
[[nodiscard]] totals snapshot(std::span<const shard_stats* const> shards) noexcept;
void add(totals& into, const shard_stats& from) noexcept;

// "1s: received 104231/s (1042310), deferred 0/s (0), ..., 215.3 MB/s (2.1 GB), 50 open":
// rates from `before` to `now` over `seconds`, then totals.
[[nodiscard]] std::string progress_line(const totals& now, const totals& before, double seconds);

// The final statistics over the whole run of `seconds`; `expected` is --expect (0: none).
[[nodiscard]] std::string summary_text(const totals& t, double seconds, std::uint64_t expected);
[[nodiscard]] std::string summary_json(const totals& t, double seconds, std::uint64_t expected);

}  // namespace ringrelay::sink
