// tests/core/duration_test.cc: duration text for flags and config ("1h20m", lists): what
// parses to what, what is refused and why, and that the error names the bad token.
#include "core/duration.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

namespace ringrelay::core {
namespace {

using std::chrono::milliseconds;
using namespace std::chrono_literals;

struct accept_case {
    const char* name;
    std::string text;
    milliseconds expected;
};

class DurationAccepts : public ::testing::TestWithParam<accept_case> {};

TEST_P(DurationAccepts, YieldsMilliseconds) {
    const accept_case& c = GetParam();
    const auto d = parse_duration(c.text);
    ASSERT_TRUE(d.has_value()) << d.error().message;
    EXPECT_EQ(*d, c.expected);
}

// clang-format off
INSTANTIATE_TEST_SUITE_P(Texts, DurationAccepts, ::testing::Values(
    accept_case{"Seconds", "30s", 30s},
    accept_case{"Minutes", "5m", 5min},
    accept_case{"Hours", "4h", 4h},
    accept_case{"Days", "5d", 24h * 5},
    accept_case{"Milliseconds", "250ms", 250ms},
    accept_case{"HoursMinutes", "1h20m", 80min},
    accept_case{"HoursMinutesLater", "2h40m", 160min},
    accept_case{"AllUnits", "1d2h3m4s5ms", 24h + 2h + 3min + 4s + 5ms},
    accept_case{"SkipsUnits", "1d30s", 24h + 30s},
    accept_case{"Zero", "0s", 0ms},
    accept_case{"LeadingZeros", "007m", 7min},
    accept_case{"UnnormalisedMinutes", "90m", 90min},
    accept_case{"LargestDays", "106751991167d", milliseconds{106751991167LL * 86'400'000LL}},
    accept_case{"Maximum", "9223372036854775807ms", milliseconds::max()}),
    [](const auto& info) { return std::string(info.param.name); });
// clang-format on

struct reject_case {
    const char* name;
    std::string text;
    duration_error reason;
    std::string named;  // a token the message must quote
};

class DurationRejects : public ::testing::TestWithParam<reject_case> {};

TEST_P(DurationRejects, ReportsReasonAndNamesToken) {
    const reject_case& c = GetParam();
    const auto d = parse_duration(c.text);
    ASSERT_FALSE(d.has_value());
    EXPECT_EQ(d.error().reason, c.reason);
    EXPECT_NE(d.error().message.find(c.named), std::string::npos) << d.error().message;
}

// clang-format off
INSTANTIATE_TEST_SUITE_P(Texts, DurationRejects, ::testing::Values(
    reject_case{"Empty", "", duration_error::empty, "empty"},
    reject_case{"Negative", "-5m", duration_error::negative, "\"-5m\""},
    reject_case{"PlusSign", "+5m", duration_error::bad_number, "\"+5m\""},
    reject_case{"UnitOnly", "h", duration_error::bad_number, "\"h\""},
    reject_case{"NoUnit", "30", duration_error::missing_unit, "\"30\""},
    reject_case{"TrailingNumber", "1h30", duration_error::missing_unit, "\"30\""},
    reject_case{"UnknownUnit", "5x", duration_error::unknown_unit, "\"x\""},
    reject_case{"UpperCaseMinute", "5M", duration_error::unknown_unit, "\"M\""},
    reject_case{"WordUnit", "5sec", duration_error::unknown_unit, "\"sec\""},
    reject_case{"Microseconds", "5us", duration_error::unknown_unit, "\"us\""},
    reject_case{"Fraction", "1.5h", duration_error::bad_number, "\".\""},
    reject_case{"InnerSpace", "5 m", duration_error::bad_number, "\" \""},
    reject_case{"LeadingSpace", " 5m", duration_error::bad_number, "\" 5m\""},
    reject_case{"TrailingGarbage", "5m!", duration_error::bad_number, "\"!\""},
    reject_case{"TrailingSpace", "5m ", duration_error::bad_number, "\" \""},
    reject_case{"OutOfOrder", "20m1h", duration_error::unit_order, "\"1h\""},
    reject_case{"Repeated", "1h1h", duration_error::unit_order, "\"1h\""},
    reject_case{"MillisecondsBeforeSeconds", "5ms1s", duration_error::unit_order, "\"1s\""},
    reject_case{"DigitsOverflow", "99999999999999999999s", duration_error::overflow, "too large"},
    reject_case{"ProductOverflow", "106751991168d", duration_error::overflow, "too large"},
    reject_case{"SumOverflow", "106751991167d86400000s", duration_error::overflow, "too large"},
    reject_case{"ControlOctet", "5\x01m", duration_error::bad_number, "\"5?m\""}),
    [](const auto& info) { return std::string(info.param.name); });
// clang-format on

TEST(DurationList, ParsesDefaultRetryIntervals) {
    const auto l = parse_duration_list("5m,10m,20m,40m,1h20m,2h40m,4h");
    ASSERT_TRUE(l.has_value()) << l.error().message;
    const std::vector<milliseconds> expected{5min, 10min, 20min, 40min, 80min, 160min, 4h};
    EXPECT_EQ(*l, expected);
}

TEST(DurationList, ParsesSingleItem) {
    const auto l = parse_duration_list("5d");
    ASSERT_TRUE(l.has_value());
    EXPECT_EQ(*l, std::vector<milliseconds>{24h * 5});
}

TEST(DurationList, AllowsSpacesAroundCommas) {
    const auto l = parse_duration_list(" 5m , 10m,\t20m ");
    ASSERT_TRUE(l.has_value()) << l.error().message;
    EXPECT_EQ(*l, (std::vector<milliseconds>{5min, 10min, 20min}));
}

struct list_reject_case {
    const char* name;
    std::string text;
    duration_error reason;
    std::string named;
};

class DurationListRejects : public ::testing::TestWithParam<list_reject_case> {};

TEST_P(DurationListRejects, NamesItemAndToken) {
    const list_reject_case& c = GetParam();
    const auto l = parse_duration_list(c.text);
    ASSERT_FALSE(l.has_value());
    EXPECT_EQ(l.error().reason, c.reason);
    EXPECT_NE(l.error().message.find(c.named), std::string::npos) << l.error().message;
}

// clang-format off
INSTANTIATE_TEST_SUITE_P(Lists, DurationListRejects, ::testing::Values(
    list_reject_case{"Empty", "", duration_error::empty, "empty list"},
    list_reject_case{"OnlySpaces", "  ", duration_error::empty, "empty list"},
    list_reject_case{"EmptyItem", "5m,,10m", duration_error::empty, "item 2 is empty"},
    list_reject_case{"TrailingComma", "5m,", duration_error::empty, "item 2 is empty"},
    list_reject_case{"LeadingComma", ",5m", duration_error::empty, "item 1 is empty"},
    list_reject_case{"BadThirdItem", "5m,10m,2x", duration_error::unknown_unit, "item 3 \"2x\""},
    list_reject_case{"NegativeItem", "5m,-1m", duration_error::negative, "item 2 \"-1m\""},
    list_reject_case{"SemicolonSeparator", "5m;10m", duration_error::bad_number, "\";10m\""}),
    [](const auto& info) { return std::string(info.param.name); });
// clang-format on

struct format_case {
    const char* name;
    milliseconds value;
    std::string text;
};

class DurationFormats : public ::testing::TestWithParam<format_case> {};

TEST_P(DurationFormats, PrintsShortestTextThatParsesBack) {
    const format_case& c = GetParam();
    EXPECT_EQ(format_duration(c.value), c.text);
    const auto back = parse_duration(c.text);
    ASSERT_TRUE(back.has_value());
    EXPECT_EQ(*back, c.value);
}

// clang-format off
INSTANTIATE_TEST_SUITE_P(Values, DurationFormats, ::testing::Values(
    format_case{"Zero", 0ms, "0s"},
    format_case{"Milliseconds", 250ms, "250ms"},
    format_case{"HoursMinutes", 80min, "1h20m"},
    format_case{"Days", 24h * 5, "5d"},
    format_case{"AllUnits", 24h + 2h + 3min + 4s + 5ms, "1d2h3m4s5ms"},
    format_case{"Maximum", milliseconds::max(), "106751991167d7h12m55s807ms"}),
    [](const auto& info) { return std::string(info.param.name); });
// clang-format on

}  // namespace
}  // namespace ringrelay::core
