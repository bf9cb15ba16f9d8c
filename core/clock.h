// core/clock.h: time for a shard: a coarse monotonic clock for deadlines and the cached
// RFC 5322 date for Received: headers (re-formatted at most once a second).
#pragma once
#include <cstdint>
#include <string>
#include <string_view>

namespace ringrelay::core {

// Milliseconds from CLOCK_MONOTONIC_COARSE.
[[nodiscard]] std::int64_t monotonic_ms() noexcept;
// Microseconds since the Unix epoch (CLOCK_REALTIME).
[[nodiscard]] std::int64_t unix_us() noexcept;
// "Sat, 28 Nov 2026 03:35:26 +0000" for `unix_seconds`.
[[nodiscard]] std::string rfc5322_date(std::int64_t unix_seconds);
// "2026-11-28T03:35:26.123456Z".
[[nodiscard]] std::string iso8601_us(std::int64_t unix_microseconds);

// Shard-local cache of the current RFC 5322 date.
class date_cache {
public:
    [[nodiscard]] std::string_view now();

private:
    std::int64_t _second = -1;
    std::string _text;
};

}  // namespace ringrelay::core
