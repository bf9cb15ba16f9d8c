// queue/shaping_rate.h: a rate limit of traffic shaping (issue 17), as operators write it in a
// shaping rules file ("10/s", "600/min", "1000/h", "20000/day", optionally ",max_burst=N"), and
// its exact integer form for a token bucket (queue/token_bucket.h). KumoMTA's throttle spec is
// the model for the text (crates/throttle in KumoCorp/kumomta: LIMIT/PERIOD, the same period
// words, ",max_burst="); "local:" prefixes, period multiples ("10/5m") and digit separators
// ("1_000/h") are not taken. Pure: no clocks, no I/O.
// SECURITY: reads operator input (a rules file); never network input. Bounded: a count of at
// most max_rate_count, a burst of at most max_rate_burst; every product is overflow-free by
// those bounds (see token_bucket.h).
#pragma once
#include <cstdint>
#include <expected>
#include <string>
#include <string_view>

namespace ringrelay::queue {

inline constexpr std::uint64_t max_rate_count = 1'000'000'000;  // per period
inline constexpr std::uint64_t max_rate_burst = 1'000'000;      // tokens a bucket holds at most
inline constexpr std::uint64_t us_per_second = 1'000'000;

// `count` events per `period_us` microseconds, with a bucket of `burst` tokens.
// Invariant (valid()): 1 <= count <= max_rate_count, period_us is one of 1 s, 1 min, 1 h, 1 day
// or 1000 s (the controller's milli-per-second form, below), 1 <= burst <= max_rate_burst.
struct shaping_rate {
    std::uint64_t count = 1;
    std::uint64_t period_us = us_per_second;
    std::uint64_t burst = 1;

    [[nodiscard]] bool valid() const noexcept;
    // Events per second times 1000, rounded down (0 for less than one every 1000 s).
    [[nodiscard]] std::uint64_t milli_per_second() const noexcept;
    friend bool operator==(const shaping_rate&, const shaping_rate&) = default;
};

// The burst given when the text names none: one second's worth of events, rounded up, at least
// one and at most max_rate_burst ("10/s" -> 10, "600/min" -> 10, "100/h" -> 1). A bucket that
// starts full lets that many go at once; a receiver enforcing R/s with its own one-second
// bucket (ringrelay-sink --max-rate-per-ip, Postfix's anvil per minute) takes such a burst.
[[nodiscard]] std::uint64_t default_burst(std::uint64_t count, std::uint64_t period_us) noexcept;

// A rate of `milli` thousandths of an event per second (>= 1), burst as default_burst(): the
// form the closed-loop controller (queue/throttle_controller.h) computes in.
[[nodiscard]] shaping_rate rate_from_milli(std::uint64_t milli) noexcept;

// Parses "COUNT/PERIOD[,max_burst=N]": COUNT a positive decimal integer (no sign, no
// separators), PERIOD one of s, sec, second, m, min, minute, h, hr, hour, d, day (lower case).
// Errors name the text and the reason: "\"10/x\": unknown period \"x\" (use s, min, h or day)".
[[nodiscard]] std::expected<shaping_rate, std::string> parse_shaping_rate(std::string_view text);

// The text parse_shaping_rate() reads back as `r` ("10/s", "600/min,max_burst=3"), for a rate
// whose period is one a file can name; the burst is written only when it differs from
// default_burst(). A controller rate (period 1000 s) is written for display only, as events
// per hour ("612000/h", rounded down; the burst left out).
[[nodiscard]] std::string format_shaping_rate(const shaping_rate& r);

}  // namespace ringrelay::queue
