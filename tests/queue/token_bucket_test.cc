// Unit tests of queue/shaping_rate.h and queue/token_bucket.h (issue 17): the rate text
// operators write ("10/s", "600/min", ",max_burst=N") and its errors; the token bucket on a fake
// clock: the burst passes at once, then one token per period/count exactly, over any run length,
// with long idle times and a clock that steps back; rate changes keep whole tokens.
#include "queue/token_bucket.h"

#include <gtest/gtest.h>

#include <string>

#include "queue/shaping_rate.h"

using namespace ringrelay::queue;

namespace {

shaping_rate rate(std::string_view text) {
    auto r = parse_shaping_rate(text);
    EXPECT_TRUE(r.has_value()) << text << ": " << (r ? "" : r.error());
    return r.value_or(shaping_rate{});
}

struct rate_case {
    const char* label;
    const char* text;
    std::uint64_t count;
    std::uint64_t period_us;
    std::uint64_t burst;
};

class ShapingRateParse : public testing::TestWithParam<rate_case> {};

TEST_P(ShapingRateParse, ReadsCountPeriodAndBurst) {
    const rate_case& c = GetParam();
    const shaping_rate r = rate(c.text);
    EXPECT_EQ(r.count, c.count);
    EXPECT_EQ(r.period_us, c.period_us);
    EXPECT_EQ(r.burst, c.burst);
    EXPECT_TRUE(r.valid());
    EXPECT_EQ(parse_shaping_rate(format_shaping_rate(r)).value(), r) << format_shaping_rate(r);
}

INSTANTIATE_TEST_SUITE_P(
    Texts, ShapingRateParse,
    testing::Values(rate_case{"PerSecond", "10/s", 10, 1'000'000, 10},
                    rate_case{"PerSecondWord", "10/second", 10, 1'000'000, 10},
                    rate_case{"PerMinute", "600/min", 600, 60'000'000, 10},
                    rate_case{"PerMinuteShort", "600/m", 600, 60'000'000, 10},
                    rate_case{"PerMinuteRoundsBurstUp", "61/minute", 61, 60'000'000, 2},
                    rate_case{"PerHour", "100/h", 100, 3'600'000'000, 1},
                    rate_case{"PerHourWord", "7200/hour", 7200, 3'600'000'000, 2},
                    rate_case{"PerHourHr", "10000/hr", 10000, 3'600'000'000, 3},
                    rate_case{"PerDay", "20000/day", 20000, 86'400'000'000, 1},
                    rate_case{"ExplicitBurst", "600/min,max_burst=3", 600, 60'000'000, 3},
                    rate_case{"BurstCappedAtMax", "1000000000/s", 1'000'000'000, 1'000'000, 1'000'000}),
    [](const testing::TestParamInfo<rate_case>& i) { return i.param.label; });

struct bad_rate {
    const char* label;
    const char* text;
    const char* error;
};

class ShapingRateRefuse : public testing::TestWithParam<bad_rate> {};

TEST_P(ShapingRateRefuse, NamesTheTextAndReason) {
    const auto r = parse_shaping_rate(GetParam().text);
    ASSERT_FALSE(r.has_value()) << GetParam().text;
    EXPECT_EQ(r.error(), GetParam().error);
}

INSTANTIATE_TEST_SUITE_P(
    Texts, ShapingRateRefuse,
    testing::Values(
        bad_rate{"Empty", "", "\"\": expected COUNT/PERIOD, e.g. \"10/s\" or \"600/min\""},
        bad_rate{"NoPeriod", "10", "\"10\": expected COUNT/PERIOD, e.g. \"10/s\" or \"600/min\""},
        bad_rate{"UnknownPeriod", "10/x", "\"10/x\": unknown period \"x\" (use s, min, h or day)"},
        bad_rate{"UpperCasePeriod", "10/S", "\"10/S\": unknown period \"S\" (use s, min, h or day)"},
        bad_rate{"Zero", "0/s", "\"0/s\": the count must be at least 1"},
        bad_rate{"Negative", "-1/s", "\"-1/s\": the count \"-1\" is not a decimal integer"},
        bad_rate{"Fraction", "1.5/s", "\"1.5/s\": the count \"1.5\" is not a decimal integer"},
        bad_rate{"Separators", "1_000/h", "\"1_000/h\": the count \"1_000\" is not a decimal integer"},
        bad_rate{"TooLarge", "1000000001/s", "\"1000000001/s\": the count \"1000000001\" is above 1000000000"},
        bad_rate{"Spaces", "10 / s", "\"10 / s\": the count \"10 \" is not a decimal integer"},
        bad_rate{"PeriodMultiple", "10/5m", "\"10/5m\": unknown period \"5m\" (use s, min, h or day)"},
        bad_rate{"BadBurstKey", "10/s,burst=3", "\"10/s,burst=3\": expected \",max_burst=N\" after the rate"},
        bad_rate{"ZeroBurst", "10/s,max_burst=0", "\"10/s,max_burst=0\": max_burst must be at least 1"},
        bad_rate{"HugeBurst", "10/s,max_burst=1000001", "\"10/s,max_burst=1000001\": max_burst \"1000001\" is above 1000000"}),
    [](const testing::TestParamInfo<bad_rate>& i) { return i.param.label; });

TEST(ShapingRate, MilliPerSecond) {
    EXPECT_EQ(rate("10/s").milli_per_second(), 10'000u);
    EXPECT_EQ(rate("600/min").milli_per_second(), 10'000u);
    EXPECT_EQ(rate("36/h").milli_per_second(), 10u);
    EXPECT_EQ(rate_from_milli(2500).milli_per_second(), 2500u);
    EXPECT_EQ(rate_from_milli(2500).burst, 3u);  // 2.5 a second, rounded up
    EXPECT_TRUE(rate_from_milli(0).valid());
    EXPECT_EQ(format_shaping_rate(rate_from_milli(200'000)), "720000/h");
}

TEST(TokenBucket, BurstPassesThenOneTokenPerInterval) {
    token_bucket b(rate("10/s"), 1'000);
    for (int i = 0; i < 10; ++i) EXPECT_TRUE(b.try_take(1'000)) << i;
    EXPECT_FALSE(b.try_take(1'000));
    EXPECT_EQ(b.wait_us(1'000), 100'000u);
    EXPECT_FALSE(b.try_take(100'999));
    EXPECT_EQ(b.wait_us(100'999), 1u);
    EXPECT_TRUE(b.try_take(101'000));
    EXPECT_FALSE(b.try_take(101'000));
}

TEST(TokenBucket, IsFullOnlyWithItsWholeBurst) {
    token_bucket b(rate("10/s"), 0);
    EXPECT_TRUE(b.full(0));
    for (int i = 0; i < 10; ++i) ASSERT_TRUE(b.try_take(0)) << i;
    EXPECT_FALSE(b.full(999'999)) << "nine of the ten tokens are back";
    EXPECT_TRUE(b.full(1'000'000)) << "the whole burst is back";
}

TEST(TokenBucket, EmptyStartWaitsForTheFirstToken) {
    token_bucket b(rate("600/min"), 0, bucket_start::empty);
    EXPECT_EQ(b.tokens(0), 0u);
    EXPECT_EQ(b.wait_us(0), 100'000u);
    EXPECT_FALSE(b.try_take(99'999));
    EXPECT_TRUE(b.try_take(100'000));
}

TEST(TokenBucket, ExactOverALongRunWithAnOddRate) {
    // 3 a second: 333333.33 us apart. Take every token as soon as wait_us() says, and count:
    // exactly 3 per second over 100,000 s, no drift. (With a burst of 1 the fraction of a token
    // that arrives in the microsecond after the bucket filled is dropped, as a full bucket
    // drops tokens: such a bucket polled at whole microseconds runs slightly slow.)
    token_bucket b(rate("3/s"), 0, bucket_start::empty);
    std::uint64_t now = 0;
    std::uint64_t taken = 0;
    const std::uint64_t end = 100'000ull * 1'000'000;  // 100,000 s
    while (true) {
        now += b.wait_us(now);
        if (now > end) break;
        ASSERT_TRUE(b.try_take(now));
        ++taken;
    }
    EXPECT_EQ(taken, 300'000u);
}

TEST(TokenBucket, LongIdleFillsToTheBurstWithoutOverflow) {
    token_bucket b(rate("1000000000/s,max_burst=1000000"), 0, bucket_start::empty);
    EXPECT_EQ(b.tokens(UINT64_MAX / 2), 1'000'000u);
    token_bucket slow(rate("1/day"), 0, bucket_start::empty);
    EXPECT_EQ(slow.tokens(86'400'000'000ull - 1), 0u);
    EXPECT_EQ(slow.tokens(86'400'000'000ull), 1u);
    EXPECT_EQ(slow.tokens(UINT64_MAX), 1u);
}

TEST(TokenBucket, ClockSteppingBackIsNoTime) {
    token_bucket b(rate("1/s"), 10'000'000);
    EXPECT_TRUE(b.try_take(10'000'000));
    EXPECT_FALSE(b.try_take(5'000'000));
    EXPECT_FALSE(b.try_take(10'999'999));
    EXPECT_TRUE(b.try_take(11'000'000));
}

TEST(TokenBucket, SetRateKeepsWholeTokensUpToTheNewBurst) {
    token_bucket b(rate("100/s"), 0);
    EXPECT_EQ(b.tokens(0), 100u);
    b.set_rate(rate("10/s"), 0);
    EXPECT_EQ(b.tokens(0), 10u);
    for (int i = 0; i < 10; ++i) ASSERT_TRUE(b.try_take(0));
    EXPECT_FALSE(b.try_take(0));
    b.set_rate(rate("1000/s"), 0);
    EXPECT_EQ(b.tokens(0), 0u);
    EXPECT_EQ(b.wait_us(0), 1'000u);
}

}  // namespace
