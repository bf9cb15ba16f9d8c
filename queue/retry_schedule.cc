// queue/retry_schedule.cc: retry times and expiry for deferred recipients.
#include "queue/retry_schedule.h"

#include <algorithm>
#include <limits>
#include <utility>

#include "core/invariant.h"

namespace ringrelay::queue {
namespace {

using std::chrono::milliseconds;

retry_clock_time saturating_add(retry_clock_time t, milliseconds d) noexcept {
    RR_DEBUG_ASSERT(d.count() >= 0);
    std::int64_t sum = 0;
    if (__builtin_add_overflow(t.time_since_epoch().count(), d.count(), &sum)) {
        return retry_clock_time::max();
    }
    return retry_clock_time{milliseconds{sum}};
}

// interval * percent / 100 without overflow (interval >= 0, percent <= 100).
std::int64_t percent_of(std::int64_t interval, std::uint32_t percent) noexcept {
    return (interval / 100) * percent + (interval % 100) * percent / 100;
}

}  // namespace

std::vector<milliseconds> default_retry_intervals() {
    using namespace std::chrono_literals;
    return {5min, 10min, 20min, 40min, 80min, 160min, 4h};
}

std::uint64_t jitter_source::next() noexcept {
    // splitmix64 (Steele, Lea, Flood 2014; the constants of Vigna's reference code).
    std::uint64_t z = (_state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

std::expected<void, retry_policy_error>
validate_retry_policy(const std::vector<milliseconds>& intervals, milliseconds max_age,
                      std::uint32_t jitter_percent) noexcept {
    if (intervals.empty()) return std::unexpected(retry_policy_error::no_intervals);
    for (const milliseconds i : intervals) {
        if (i.count() <= 0) return std::unexpected(retry_policy_error::zero_interval);
    }
    if (max_age.count() <= 0) return std::unexpected(retry_policy_error::zero_max_age);
    if (jitter_percent > max_jitter_percent) return std::unexpected(retry_policy_error::jitter_too_large);
    return {};
}

retry_schedule::retry_schedule(std::vector<milliseconds> intervals, milliseconds max_age,
                               std::uint32_t jitter_percent)
    : _intervals(std::move(intervals)), _max_age(max_age), _jitter_percent(jitter_percent) {
    RR_ASSERT(validate_retry_policy(_intervals, _max_age, _jitter_percent).has_value());
}

milliseconds retry_schedule::interval_after(std::uint64_t attempts) const noexcept {
    const std::uint64_t n = _intervals.size();
    const std::uint64_t index = std::clamp<std::uint64_t>(attempts, 1, n) - 1;
    return _intervals[index];
}

retry_clock_time retry_schedule::expires_at(retry_clock_time arrival) const noexcept {
    return saturating_add(arrival, _max_age);
}

retry_decision retry_schedule::next_attempt(std::uint64_t attempts, retry_clock_time arrival,
                                            retry_clock_time now, jitter_source& random) const noexcept {
    const retry_clock_time deadline = expires_at(arrival);
    if (now >= deadline) return {retry_verdict::expired, deadline};

    const std::int64_t base = interval_after(attempts).count();
    std::int64_t delay = base;
    if (_jitter_percent != 0) {
        const std::int64_t span = percent_of(base, _jitter_percent);  // <= base / 2
        const std::uint64_t width = 2 * static_cast<std::uint64_t>(span) + 1;
        // Modulo bias is below width / 2^64: irrelevant for delays of at most years.
        const auto offset = static_cast<std::int64_t>(random.next() % width) - span;
        if (__builtin_add_overflow(base, offset, &delay)) delay = std::numeric_limits<std::int64_t>::max();
    }
    // base - span >= base / 2 > 0: the retry is never before now.
    const retry_clock_time next = saturating_add(now, milliseconds{delay});
    return {retry_verdict::retry, std::min(next, deadline)};
}

}  // namespace ringrelay::queue
