// core/clock.cc: see clock.h.
#include "core/clock.h"

#include <ctime>

namespace ringrelay::core {

std::int64_t monotonic_ms() noexcept {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return static_cast<std::int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

std::int64_t unix_us() noexcept {
    timespec ts{};
    clock_gettime(CLOCK_REALTIME, &ts);
    return static_cast<std::int64_t>(ts.tv_sec) * 1000000 + ts.tv_nsec / 1000;
}

std::int64_t monotonic_ns() noexcept {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

namespace {
class system_clocks final : public time_source {
public:
    std::int64_t monotonic_ms() const noexcept override { return core::monotonic_ms(); }
    std::int64_t unix_us() const noexcept override { return core::unix_us(); }
};
const system_clocks system_clocks_instance{};  // no state: shared by every thread
}  // namespace

const time_source& system_time() noexcept { return system_clocks_instance; }

std::string rfc5322_date(std::int64_t unix_seconds) {
    const std::time_t t = static_cast<std::time_t>(unix_seconds);
    std::tm tm{};
    gmtime_r(&t, &tm);
    char buf[64];
    const std::size_t n = std::strftime(buf, sizeof buf, "%a, %d %b %Y %H:%M:%S +0000", &tm);
    return {buf, n};
}

std::string iso8601_us(std::int64_t us) {
    const std::time_t t = static_cast<std::time_t>(us / 1000000);
    std::tm tm{};
    gmtime_r(&t, &tm);
    char buf[64];
    std::size_t n = std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
    n += static_cast<std::size_t>(std::snprintf(buf + n, sizeof buf - n, ".%06lldZ",
                                                static_cast<long long>(us % 1000000)));
    return {buf, n};
}

std::string_view date_cache::now() {
    timespec ts{};
    clock_gettime(CLOCK_REALTIME_COARSE, &ts);
    if (ts.tv_sec != _second) {
        _second = ts.tv_sec;
        _text = rfc5322_date(_second);
    }
    return _text;
}

}  // namespace ringrelay::core
