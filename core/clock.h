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
// Nanoseconds from CLOCK_MONOTONIC, not coarse: the clock of io_uring's absolute timeouts
// (core/alarm.h); monotonic_ms() may trail it by a scheduler tick (1-4 ms).
[[nodiscard]] std::int64_t monotonic_ns() noexcept;
// "Sat, 28 Nov 2026 03:35:26 +0000" for `unix_seconds`.
[[nodiscard]] std::string rfc5322_date(std::int64_t unix_seconds);
// "2026-11-28T03:35:26.123456Z".
[[nodiscard]] std::string iso8601_us(std::int64_t unix_microseconds);

// The two clocks above behind an interface, for units whose timing is tested with a clock a
// test moves by hand (queue/destination_pool.h, queue/tls_client_policy.h). Stateless; the
// instance system_time() returns reads the real clocks and may be shared by every shard.
class time_source {
public:
    [[nodiscard]] virtual std::int64_t monotonic_ms() const noexcept = 0;
    [[nodiscard]] virtual std::int64_t unix_us() const noexcept = 0;

protected:
    ~time_source() = default;
};
[[nodiscard]] const time_source& system_time() noexcept;

// Shard-local cache of the current RFC 5322 date.
class date_cache {
public:
    [[nodiscard]] std::string_view now();

private:
    std::int64_t _second = -1;
    std::string _text;
};

}  // namespace ringrelay::core
