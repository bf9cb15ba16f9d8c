// core/address_counter.h: concurrent counts per client address, shared by every shard
// (connections per IP for --max-connections-per-ip), plus one total. Lock-free: each count
// is an atomic in a fixed table indexed by a keyed hash of the address, so no shard waits
// and nothing allocates after construction.
//
// Addresses are grouped as IPv4 /32 and IPv6 /64 (one host or one customer network behind a
// v6 prefix counts once; Postfix's anvil and the big mailbox providers group v6 the same
// way). Two groups whose hashes meet in one slot share a count: with 65,536 slots and 1,000
// busy clients that happens to about 1.5% of them, and only ever makes the limit stricter,
// never looser. The hash key is random per process so a client cannot aim at a victim's slot.
//
// Threading: acquire()/release() from any thread; the object outlives every shard.
#pragma once
#include <netinet/in.h>
#include <sys/socket.h>

#include <sys/random.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <memory>

namespace ringrelay::core {

// Adds one to `n` unless it already holds `limit` (0 = no limit); lock-free.
[[nodiscard]] inline bool bounded_increment(std::atomic<std::uint32_t>& n, std::uint32_t limit) noexcept {
    std::uint32_t now = n.load(std::memory_order_relaxed);
    do {
        if (limit != 0 && now >= limit) return false;
    } while (!n.compare_exchange_weak(now, now + 1, std::memory_order_acq_rel, std::memory_order_relaxed));
    return true;
}

class address_counter {
public:
    static constexpr std::size_t default_slots = 65536;  // a power of two

    explicit address_counter(std::size_t slots = default_slots)
        : _mask(slots - 1), _slots(std::make_unique<std::atomic<std::uint32_t>[]>(slots)) {
        // getrandom(2) cannot fail for 8 bytes once the pool is initialised; if it somehow
        // does, the clock still keeps the key unknown to a remote client.
        if (::getrandom(&_key, sizeof _key, 0) != static_cast<ssize_t>(sizeof _key))
            _key = static_cast<std::uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count()) *
                   0x9e3779b97f4a7c15ULL;
        for (std::size_t i = 0; i < slots; ++i) _slots[i].store(0, std::memory_order_relaxed);
    }
    address_counter(const address_counter&) = delete;
    address_counter& operator=(const address_counter&) = delete;

    // The slot `peer` counts in (AF_INET / AF_INET6; anything else shares slot 0).
    [[nodiscard]] std::size_t slot_of(const sockaddr* peer) const noexcept {
        std::uint64_t bits = 0;
        std::uint64_t family = 0;
        if (peer->sa_family == AF_INET) {
            std::uint32_t a = 0;
            std::memcpy(&a, &reinterpret_cast<const sockaddr_in*>(peer)->sin_addr, sizeof a);
            bits = a;
            family = 4;
        } else if (peer->sa_family == AF_INET6) {
            const auto* v6 = reinterpret_cast<const sockaddr_in6*>(peer);
            // An IPv4-mapped address (::ffff:a.b.c.d) counts as its IPv4 address.
            if (IN6_IS_ADDR_V4MAPPED(&v6->sin6_addr)) {
                std::uint32_t a = 0;
                std::memcpy(&a, v6->sin6_addr.s6_addr + 12, sizeof a);
                bits = a;
                family = 4;
            } else {
                std::memcpy(&bits, v6->sin6_addr.s6_addr, sizeof bits);  // the /64 prefix
                family = 6;
            }
        } else {
            return 0;
        }
        return static_cast<std::size_t>(mix(bits ^ _key, family)) & _mask;
    }

    // Counts one more in `slot` unless it already holds `limit` (0 = no limit).
    [[nodiscard]] bool acquire(std::size_t slot, std::uint32_t limit) noexcept {
        return bounded_increment(_slots[slot], limit);
    }
    // Gives back one acquire() of `slot`.
    void release(std::size_t slot) noexcept { _slots[slot].fetch_sub(1, std::memory_order_acq_rel); }
    [[nodiscard]] std::uint32_t count(std::size_t slot) const noexcept {
        return _slots[slot].load(std::memory_order_relaxed);
    }

private:
    // A strong 64-bit mixer (splitmix64's finaliser) over the keyed bits.
    static std::uint64_t mix(std::uint64_t x, std::uint64_t family) noexcept {
        x ^= family * 0x9e3779b97f4a7c15ULL;
        x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
        x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
        return x ^ (x >> 31);
    }

    // Fixed after construction.
    const std::size_t _mask;
    std::uint64_t _key = 0;
    // Written by every shard.
    std::unique_ptr<std::atomic<std::uint32_t>[]> _slots;
};

// One count shared by every shard with an upper limit (--max-connections).
class shared_limit {
public:
    [[nodiscard]] bool acquire(std::uint32_t limit) noexcept { return bounded_increment(_count, limit); }
    void release() noexcept { _count.fetch_sub(1, std::memory_order_acq_rel); }
    [[nodiscard]] std::uint32_t count() const noexcept { return _count.load(std::memory_order_relaxed); }

private:
    alignas(64) std::atomic<std::uint32_t> _count{0};
};

}  // namespace ringrelay::core
