// tools/sink/ip_limits.cc: see ip_limits.h.
#include "tools/sink/ip_limits.h"

#include <netinet/in.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/invariant.h"

namespace ringrelay::sink {

namespace {

std::uint64_t mix(std::uint64_t x) noexcept {  // splitmix64's finaliser
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

constexpr std::uint64_t v4_tag = 1ULL << 62;  // v4 keys: tag | address; v6 keys: top bit set
constexpr std::uint64_t v6_tag = 1ULL << 63;

}  // namespace

std::uint64_t address_key(const sockaddr* peer) noexcept {
    std::uint32_t v4 = 0;
    if (peer->sa_family == AF_INET) {
        std::memcpy(&v4, &reinterpret_cast<const sockaddr_in*>(peer)->sin_addr, sizeof v4);
        return v4_tag | v4;
    }
    if (peer->sa_family == AF_INET6) {
        const auto* a = reinterpret_cast<const sockaddr_in6*>(peer)->sin6_addr.s6_addr;
        if (IN6_IS_ADDR_V4MAPPED(reinterpret_cast<const in6_addr*>(a))) {
            std::memcpy(&v4, a + 12, sizeof v4);
            return v4_tag | v4;
        }
        std::uint64_t hi = 0;
        std::uint64_t lo = 0;
        std::memcpy(&hi, a, 8);
        std::memcpy(&lo, a + 8, 8);
        return v6_tag | mix(mix(hi) ^ lo);
    }
    return v4_tag | (1ULL << 32);  // not an IP: one shared key, outside the v4 range
}

rate_limit::rate_limit(double per_second) noexcept {
    RR_ASSERT(per_second > 0);
    _interval_ns = std::max<std::int64_t>(1, std::llround(1e9 / per_second));
    _burst = std::max<std::int64_t>(1, static_cast<std::int64_t>(std::floor(per_second)));
    _tolerance_ns = (_burst - 1) * _interval_ns;
}

bool rate_limit::try_acquire(std::atomic<std::int64_t>& tat, std::int64_t now_ns) const noexcept {
    std::int64_t current = tat.load(std::memory_order_relaxed);
    for (;;) {
        const std::int64_t start = std::max(current, now_ns);
        if (start - now_ns > _tolerance_ns) return false;
        if (tat.compare_exchange_weak(current, start + _interval_ns, std::memory_order_relaxed)) return true;
    }
}

per_ip_limits::per_ip_limits(std::uint32_t max_connections, double max_rate_per_second, std::size_t slots)
    : _max_connections(max_connections),
      _has_rate(max_rate_per_second > 0),
      _rate(max_rate_per_second > 0 ? max_rate_per_second : 1.0),
      _mask(slots - 1),
      _slots(std::make_unique<ip_slot[]>(slots)) {
    RR_ASSERT(slots != 0 && (slots & (slots - 1)) == 0);
}

ip_slot& per_ip_limits::slot(std::uint64_t key) noexcept {
    RR_ASSERT(key != 0);
    std::size_t i = static_cast<std::size_t>(mix(key)) & _mask;
    for (std::size_t probes = 0; probes <= _mask; ++probes, i = (i + 1) & _mask) {
        ip_slot& s = _slots[i];
        std::uint64_t k = s.key.load(std::memory_order_acquire);
        if (k == key) return s;
        if (k == 0) {
            if (s.key.compare_exchange_strong(k, key, std::memory_order_acq_rel)) return s;
            if (k == key) return s;  // another shard claimed it for the same address
        }
    }
    _overflowed.store(true, std::memory_order_relaxed);
    return _overflow;
}

bool per_ip_limits::acquire_connection(ip_slot& s) noexcept {
    std::uint32_t n = s.connections.load(std::memory_order_relaxed);
    do {
        if (_max_connections != 0 && n >= _max_connections) return false;
    } while (!s.connections.compare_exchange_weak(n, n + 1, std::memory_order_relaxed));
    return true;
}

void per_ip_limits::release_connection(ip_slot& s) noexcept {
    const std::uint32_t before = s.connections.fetch_sub(1, std::memory_order_relaxed);
    RR_ASSERT(before != 0);
}

bool per_ip_limits::acquire_message(ip_slot& s, std::int64_t now_ns) noexcept {
    return !_has_rate || _rate.try_acquire(s.tat_ns, now_ns);
}

}  // namespace ringrelay::sink
