// core/duration.h: parses and prints the durations operators write in flags and the config
// file: "30s", "5m", "1h20m", "5d", "250ms", and comma-separated lists of them
// ("5m,10m,20m,40m,1h20m,2h40m,4h" for --retry-intervals). Pure: no clocks, no allocation
// except the error message and the list.
// SECURITY: reads operator input (argv, the config file); never network input. Nothing reads
// past text.size(); every sum and product is overflow-checked.
//
// Grammar (ours; Go's time.ParseDuration and Postfix's time units are the models):
//   duration = 1*( 1*DIGIT unit )      ; units strictly decreasing, each at most once
//   unit     = "d" / "h" / "m" / "s" / "ms"   ; lower case only: "M" is not a month
//   list     = duration *( *WSP "," *WSP duration )   ; spaces allowed around commas only
// Refused: the empty string, a sign ("-5m", "+5m"), a number without a unit ("30"),
// fractions ("1.5h"), unknown or upper-case units, units out of order or repeated ("20m1h",
// "1h1h"), spaces inside a duration, and any value above std::chrono::milliseconds::max().
// "0s" is a valid duration; callers that need a positive one check it themselves.
#pragma once
#include <chrono>
#include <cstdint>
#include <expected>
#include <string>
#include <string_view>
#include <vector>

namespace ringrelay::core {

enum class duration_error : std::uint8_t {
    empty,           // "" (or an empty list item: "5m,,10m", "5m,")
    negative,        // "-5m": durations are never negative
    bad_number,      // a unit without digits before it ("h", "1hm"), a sign, '.', a space
    missing_unit,    // digits at the end without a unit ("30", "1h30")
    unknown_unit,    // "5x", "5M", "5sec"
    unit_order,      // "20m1h", "1h1h": units must be strictly decreasing
    overflow,        // more than std::chrono::milliseconds::max()
};

struct duration_failure {
    duration_error reason;
    std::string message;  // names the bad token: `"5x": unknown unit "x" (use d, h, m, s or ms)`
};

// Parses one duration (the whole of `text`).
[[nodiscard]] std::expected<std::chrono::milliseconds, duration_failure>
parse_duration(std::string_view text);

// Parses a non-empty comma-separated list; the message of an error also names the item's
// position ("item 3 \"2x\": ...").
[[nodiscard]] std::expected<std::vector<std::chrono::milliseconds>, duration_failure>
parse_duration_list(std::string_view text);

// The shortest text parse_duration() reads back as `d`: "1h20m", "250ms", "0s".
// Precondition: d >= 0 (checked with RR_ASSERT).
[[nodiscard]] std::string format_duration(std::chrono::milliseconds d);

}  // namespace ringrelay::core
