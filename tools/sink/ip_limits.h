// tools/sink/ip_limits.h: the per-client message rate ringrelay-sink enforces
// (--max-rate-per-ip: above it MAIL gets 451 4.7.1), counted across all shards. Clients are
// grouped as the relay groups them, in the slots of the shared core::address_counter (IPv4
// /32, IPv6 /64) that core::listener admits them with; the connection limit
// (--max-connections-per-ip) is that counter's, enforced by the listener.
//
// The rate limit is a token bucket in GCRA form (the generic cell rate algorithm, ITU-T
// I.371): one atomic "theoretical arrival time" per slot, so concurrent shards need one CAS
// per message and no lock. The bucket holds one second's worth of messages (at least one):
// a burst of up to max(1, floor(R)) passes at once, then one message per 1/R seconds.
// Time is passed in by the caller (monotonic nanoseconds), so tests inject their own clock.
//
// Threading: every method may be called from any thread; the object outlives the shards.
#pragma once
#include <atomic>
#include <cstdint>
#include <memory>

#include "core/address_counter.h"

namespace ringrelay::sink {

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

// One bucket per slot of a core::address_counter of `slots` slots.
class per_ip_rate {
public:
    // max_rate 0 means no limit (and no table).
    explicit per_ip_rate(double max_rate_per_second, std::size_t slots = core::address_counter::default_slots);
    per_ip_rate(const per_ip_rate&) = delete;
    per_ip_rate& operator=(const per_ip_rate&) = delete;

    [[nodiscard]] bool enabled() const noexcept { return _slots != nullptr; }
    // Takes one message from the bucket of `slot` (core::address_counter::slot_of) at `now_ns`
    // (monotonic); true without a limit.
    [[nodiscard]] bool acquire(std::size_t slot, std::int64_t now_ns) noexcept;

private:
    // Each bucket on its own cache line: shards take messages of different clients.
    struct alignas(64) bucket {
        std::atomic<std::int64_t> tat_ns{0};
    };
    // Fixed after construction.
    const rate_limit _rate;
    const std::size_t _count;
    // Written by every shard.
    std::unique_ptr<bucket[]> _slots;
};

}  // namespace ringrelay::sink
