// queue/retry_schedule.h: when a deferred recipient is tried next, and when it expires
// (docs/ARCHITECTURE.md "Delivery": 4xx and connection failures defer with backoff; messages expire after
// a configurable age with a DSN). Flags: --retry-intervals (default
// 5m,10m,20m,40m,1h20m,2h40m,4h; the last interval repeats) and --max-age (default 5d), parsed
// by core/duration.h. RFC 5321 §4.5.4.1: retry at least 30 minutes apart is the RFC's advice
// (our first steps are shorter, like Postfix's minimal_backoff_time) and give up after 4-5 days.
// Pure: the caller passes the clock readings and the random source; nothing here reads a clock.
//
// Expiry (Postfix's rule, qmgr maximal_queue_lifetime, made bounded): after a failed attempt at
// `now`, a recipient whose age (now - arrival) is >= max_age expires: bounce it with a DSN.
// Otherwise the next attempt is now + interval +/- jitter, but never later than arrival +
// max_age: a retry that would fall after the deadline is moved to the deadline itself, so the
// recipient gets one last attempt at expiry and then expires when that attempt fails too.
// (Postfix lets the last retry overshoot the lifetime by up to one backoff; KumoMTA expires
// at once and so gives up to one interval early. Moving the retry to the deadline keeps both
// promises: the full max_age of tries, and never longer.)
//
// Lifecycle: one per shard scheduler, fixed after construction, read-only.
#pragma once
#include <chrono>
#include <cstdint>
#include <expected>
#include <vector>

namespace ringrelay::queue {

// Wall-clock time (the spool stores arrival as Unix microseconds, so expiry survives
// restarts); callers convert from core::unix_us().
using retry_clock_time = std::chrono::sys_time<std::chrono::milliseconds>;

inline constexpr std::chrono::milliseconds default_max_age = std::chrono::days{5};
inline constexpr std::uint32_t default_jitter_percent = 10;
inline constexpr std::uint32_t max_jitter_percent = 50;

// 5m, 10m, 20m, 40m, 1h20m, 2h40m, 4h (the flag's default text).
[[nodiscard]] std::vector<std::chrono::milliseconds> default_retry_intervals();

// A small deterministic random source for jitter (splitmix64: every seed, zero included, gives
// a full-period sequence). One per shard; tests seed it to get repeatable schedules.
class jitter_source {
public:
    explicit jitter_source(std::uint64_t seed) noexcept : _state(seed) {}
    [[nodiscard]] std::uint64_t next() noexcept;

private:
    std::uint64_t _state;  // shard-local
};

enum class retry_policy_error : std::uint8_t {
    no_intervals,      // --retry-intervals is empty
    zero_interval,     // an interval is 0 (or negative): a retry storm
    zero_max_age,      // --max-age is 0 (or negative)
    jitter_too_large,  // above max_jitter_percent
};

// Checks what the constructor requires; load the flags, then call this before constructing.
[[nodiscard]] std::expected<void, retry_policy_error>
validate_retry_policy(const std::vector<std::chrono::milliseconds>& intervals,
                      std::chrono::milliseconds max_age,
                      std::uint32_t jitter_percent = default_jitter_percent) noexcept;

enum class retry_verdict : std::uint8_t {
    retry,    // try again at `at`
    expired,  // give up: bounce with a DSN (status 4.4.7, RFC 3463 §3.5)
};

struct retry_decision {
    retry_verdict verdict = retry_verdict::retry;
    // retry: the next attempt, now <= at <= arrival + max_age.
    // expired: the deadline, arrival + max_age (for the DSN and the log).
    retry_clock_time at;
};

class retry_schedule {
public:
    // Preconditions (RR_ASSERT): validate_retry_policy() accepts the arguments.
    retry_schedule(std::vector<std::chrono::milliseconds> intervals,
                   std::chrono::milliseconds max_age,
                   std::uint32_t jitter_percent = default_jitter_percent);

    // Decides what follows the failed attempt number `attempts` (1 after the first failure;
    // 0 is treated as 1) made at `now`, for a message that arrived at `arrival`. The delay is
    // intervals[min(attempts, size) - 1] scaled by a uniform factor in
    // [1 - jitter, 1 + jitter] drawn from `random` (one draw per retry decision, none when
    // expired or when jitter is 0). A `now` earlier than `arrival` (clock stepped back) counts
    // as age 0. Saturates instead of overflowing for any attempts and any times.
    [[nodiscard]] retry_decision next_attempt(std::uint64_t attempts, retry_clock_time arrival,
                                              retry_clock_time now, jitter_source& random) const noexcept;

    // The un-jittered delay after failed attempt `attempts` (same indexing as next_attempt).
    [[nodiscard]] std::chrono::milliseconds interval_after(std::uint64_t attempts) const noexcept;
    // arrival + max_age, saturated.
    [[nodiscard]] retry_clock_time expires_at(retry_clock_time arrival) const noexcept;

    [[nodiscard]] const std::vector<std::chrono::milliseconds>& intervals() const noexcept { return _intervals; }
    [[nodiscard]] std::chrono::milliseconds max_age() const noexcept { return _max_age; }
    [[nodiscard]] std::uint32_t jitter_percent() const noexcept { return _jitter_percent; }

private:
    // Fixed after construction.
    std::vector<std::chrono::milliseconds> _intervals;
    std::chrono::milliseconds _max_age;
    std::uint32_t _jitter_percent;
};

}  // namespace ringrelay::queue
