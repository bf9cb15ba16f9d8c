// tools/sink/ip_limits.h: the per-client-address limits ringrelay-sink enforces, counted across
// all shards: concurrent connections (--max-connections-per-ip: above it the banner is
// 421 4.7.0) and the message rate (--max-rate-per-ip: above it MAIL gets 451 4.7.1).
//
// One fixed table of cache-line-sized slots, one per distinct client address (IPv4 exact;
// IPv6 by a 64-bit hash of all 128 bits, so two v6 addresses share a slot only on a hash
// collision). Lock-free: a slot is claimed by CAS on its key and never given back; counts
// are atomics. Nothing allocates after construction. A full table (more distinct addresses
// than slots) puts the newcomers in one shared overflow slot, which only makes their limits
// stricter; a sink in a test sees a handful of addresses.
//
// The rate limit is a token bucket in GCRA form (the generic cell rate algorithm, ITU-T
// I.371): one atomic "theoretical arrival time" per slot, so concurrent shards need one CAS
// per message and no lock. The bucket holds one second's worth of messages (at least one):
// a burst of up to max(1, floor(R)) passes at once, then one message per 1/R seconds.
// Time is passed in by the caller (monotonic nanoseconds), so tests inject their own clock.
//
// Threading: every method may be called from any thread; the object outlives the shards.
#pragma once
#include <sys/socket.h>

#include <atomic>
#include <cstdint>
#include <memory>

namespace ringrelay::sink {

// The key of a client address: IPv4 (and IPv4-mapped IPv6) exact; IPv6 hashed. Never 0.
[[nodiscard]] std::uint64_t address_key(const sockaddr* peer) noexcept;

// A GCRA token bucket of `per_second` tokens a second holding max(1, floor(per_second)).
class rate_limit {
public:
    // per_second > 0.
    explicit rate_limit(double per_second) noexcept;

    // Takes one token from the bucket whose state is `tat` (theoretical arrival time, ns;
    // 0 for a full bucket) at time `now_ns`; false if the bucket is empty. Lock-free.
    [[nodiscard]] bool try_acquire(std::atomic<std::int64_t>& tat, std::int64_t now_ns) const noexcept;

    [[nodiscard]] std::int64_t interval_ns() const noexcept { return _interval_ns; }
    [[nodiscard]] std::int64_t burst() const noexcept { return _burst; }

private:
    std::int64_t _interval_ns;  // 1/R
    std::int64_t _burst;        // tokens the bucket holds
    std::int64_t _tolerance_ns; // (burst - 1) * interval: how far ahead tat may run
};

// One client address's counts.
struct alignas(64) ip_slot {
    std::atomic<std::uint64_t> key{0};          // address_key(); 0 = free
    std::atomic<std::uint32_t> connections{0};  // open now
    std::atomic<std::int64_t> tat_ns{0};        // rate_limit state
};

class per_ip_limits {
public:
    static constexpr std::size_t default_slots = 16384;  // a power of two

    // max_connections 0 and max_rate 0 mean no limit.
    per_ip_limits(std::uint32_t max_connections, double max_rate_per_second,
                  std::size_t slots = default_slots);
    per_ip_limits(const per_ip_limits&) = delete;
    per_ip_limits& operator=(const per_ip_limits&) = delete;

    // True if any limit is set; without limits the sink never looks at the table.
    [[nodiscard]] bool enabled() const noexcept { return _max_connections != 0 || _has_rate; }

    // The slot of `key` (address_key()), claimed on first sight. Never null; stable for the
    // object's lifetime.
    [[nodiscard]] ip_slot& slot(std::uint64_t key) noexcept;

    // Counts one more connection unless the slot already has max_connections.
    [[nodiscard]] bool acquire_connection(ip_slot& s) noexcept;
    // Gives back one acquire_connection() that succeeded.
    void release_connection(ip_slot& s) noexcept;
    // Takes one message from the slot's rate at `now_ns` (monotonic); true without a limit.
    [[nodiscard]] bool acquire_message(ip_slot& s, std::int64_t now_ns) noexcept;

    [[nodiscard]] std::uint32_t max_connections() const noexcept { return _max_connections; }
    [[nodiscard]] bool overflowed() const noexcept { return _overflowed.load(std::memory_order_relaxed); }

private:
    // Fixed after construction.
    const std::uint32_t _max_connections;
    const bool _has_rate;
    const rate_limit _rate;
    const std::size_t _mask;
    // Written by every shard (each slot is its own cache line).
    std::unique_ptr<ip_slot[]> _slots;
    ip_slot _overflow;
    std::atomic<bool> _overflowed{false};
};

}  // namespace ringrelay::sink
