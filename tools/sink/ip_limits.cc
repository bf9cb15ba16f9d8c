// tools/sink/ip_limits.cc: see ip_limits.h.
#include "tools/sink/ip_limits.h"

#include <algorithm>
#include <cmath>

#include "core/invariant.h"

namespace ringrelay::sink {

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

per_ip_rate::per_ip_rate(double max_rate_per_second, std::size_t slots)
    : _rate(max_rate_per_second > 0 ? max_rate_per_second : 1.0),
      _count(slots),
      _slots(max_rate_per_second > 0 ? std::make_unique<bucket[]>(slots) : nullptr) {}

bool per_ip_rate::acquire(std::size_t slot, std::int64_t now_ns) noexcept {
    if (_slots == nullptr) return true;
    RR_ASSERT(slot < _count);
    return _rate.try_acquire(_slots[slot].tat_ns, now_ns);
}

}  // namespace ringrelay::sink
