// tests/queue/retry_schedule_test.cc: the retry/expiry policy for deferred recipients: the
// default sequence, repetition of the last interval, jitter bounds, expiry at the deadline
// (one last attempt at expiry, then a bounce), and no overflow for any attempt count or time.
#include "queue/retry_schedule.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <limits>
#include <set>
#include <string>
#include <vector>

#include "core/duration.h"

namespace ringrelay::queue {
namespace {

using std::chrono::milliseconds;
using namespace std::chrono_literals;

const retry_clock_time arrival{milliseconds{1'800'000'000'000}};  // 2027-01-15, any fixed time

retry_schedule defaults_without_jitter() {
    return retry_schedule(default_retry_intervals(), default_max_age, 0);
}

TEST(RetrySchedule, DefaultIntervalsMatchTheFlagDefaultText) {
    const auto parsed = core::parse_duration_list("5m,10m,20m,40m,1h20m,2h40m,4h");
    ASSERT_TRUE(parsed.has_value());
    EXPECT_EQ(default_retry_intervals(), *parsed);
    const auto age = core::parse_duration("5d");
    ASSERT_TRUE(age.has_value());
    EXPECT_EQ(default_max_age, *age);
}

struct sequence_case {
    const char* name;
    std::uint64_t attempts;
    milliseconds delay;
};

class RetryScheduleDefaults : public ::testing::TestWithParam<sequence_case> {};

TEST_P(RetryScheduleDefaults, RetriesAfterTheIntervalForTheAttempt) {
    const sequence_case& c = GetParam();
    const retry_schedule s = defaults_without_jitter();
    jitter_source random(1);
    const retry_clock_time now = arrival + 1h;
    const retry_decision d = s.next_attempt(c.attempts, arrival, now, random);
    EXPECT_EQ(d.verdict, retry_verdict::retry);
    EXPECT_EQ(d.at - now, c.delay);
    EXPECT_EQ(s.interval_after(c.attempts), c.delay);
}

// clang-format off
INSTANTIATE_TEST_SUITE_P(Attempts, RetryScheduleDefaults, ::testing::Values(
    sequence_case{"ZeroCountsAsFirst", 0, 5min},
    sequence_case{"First", 1, 5min},
    sequence_case{"Second", 2, 10min},
    sequence_case{"Third", 3, 20min},
    sequence_case{"Fourth", 4, 40min},
    sequence_case{"Fifth", 5, 80min},
    sequence_case{"Sixth", 6, 160min},
    sequence_case{"Seventh", 7, 4h},
    sequence_case{"EighthRepeatsLast", 8, 4h},
    sequence_case{"HundredthRepeatsLast", 100, 4h},
    sequence_case{"MillionthRepeatsLast", 1'000'000, 4h},
    sequence_case{"MaximumAttemptsRepeatsLast", std::numeric_limits<std::uint64_t>::max(), 4h}),
    [](const auto& info) { return std::string(info.param.name); });
// clang-format on

TEST(RetrySchedule, DefaultPolicyMakesThirtySixAttemptsInFiveDays) {
    // Retries at 5, 15, 35, 75, 155, 315, 555 min, then every 4h up to 7035 min; the next
    // (7275 min) is after the 7200-min deadline, so it moves to the deadline; that one fails
    // too and the recipient expires.
    const retry_schedule s = defaults_without_jitter();
    jitter_source random(7);
    retry_clock_time now = arrival;  // the first attempt, at arrival
    std::uint64_t attempts = 1;
    std::vector<retry_clock_time> times{now};
    while (true) {
        const retry_decision d = s.next_attempt(attempts, arrival, now, random);
        if (d.verdict == retry_verdict::expired) {
            EXPECT_EQ(d.at, arrival + default_max_age);
            break;
        }
        ASSERT_GT(d.at, now);
        now = d.at;
        times.push_back(now);
        ++attempts;
        ASSERT_LT(attempts, 1000u);
    }
    ASSERT_EQ(times.size(), 36u);
    EXPECT_EQ(times[1] - arrival, 5min);
    EXPECT_EQ(times[7] - arrival, 555min);
    EXPECT_EQ(times[34] - arrival, 7035min);
    EXPECT_EQ(times[35], arrival + default_max_age);
}

struct expiry_case {
    const char* name;
    milliseconds age;  // now - arrival at the failed attempt
    retry_verdict verdict;
    milliseconds at;   // expected decision time, relative to arrival
};

class RetryScheduleExpiry : public ::testing::TestWithParam<expiry_case> {};

TEST_P(RetryScheduleExpiry, DecidesAtTheBoundary) {
    // max_age 10h, a single 4h interval, no jitter.
    const expiry_case& c = GetParam();
    const retry_schedule s({4h}, 10h, 0);
    jitter_source random(3);
    const retry_decision d = s.next_attempt(3, arrival, arrival + c.age, random);
    EXPECT_EQ(d.verdict, c.verdict);
    EXPECT_EQ(d.at - arrival, c.at);
}

// clang-format off
INSTANTIATE_TEST_SUITE_P(Ages, RetryScheduleExpiry, ::testing::Values(
    expiry_case{"WellBefore", 1h, retry_verdict::retry, 5h},
    expiry_case{"NextJustBeforeDeadline", 6h - 1ms, retry_verdict::retry, 10h - 1ms},
    expiry_case{"NextExactlyAtDeadline", 6h, retry_verdict::retry, 10h},
    expiry_case{"NextJustAfterDeadlineMovesToIt", 6h + 1ms, retry_verdict::retry, 10h},
    expiry_case{"LastMillisecondGetsOneLastAttempt", 10h - 1ms, retry_verdict::retry, 10h},
    expiry_case{"AtDeadlineExpires", 10h, retry_verdict::expired, 10h},
    expiry_case{"AfterDeadlineExpires", 10h + 1ms, retry_verdict::expired, 10h},
    expiry_case{"LongAfterDeadlineExpires", 24h * 365, retry_verdict::expired, 10h},
    expiry_case{"ClockSteppedBack", -2h, retry_verdict::retry, 2h}),
    [](const auto& info) { return std::string(info.param.name); });
// clang-format on

TEST(RetrySchedule, JitterStaysWithinTenPercentAndCoversTheRange) {
    const retry_schedule s(default_retry_intervals(), default_max_age);  // default 10%
    jitter_source random(42);
    const retry_clock_time now = arrival + 1h;
    const milliseconds base = 40min;
    milliseconds low = milliseconds::max();
    milliseconds high = milliseconds::zero();
    long double sum = 0;
    constexpr int draws = 100'000;
    for (int i = 0; i < draws; ++i) {
        const retry_decision d = s.next_attempt(4, arrival, now, random);
        ASSERT_EQ(d.verdict, retry_verdict::retry);
        const milliseconds delay = d.at - now;
        ASSERT_GE(delay, base - base / 10);
        ASSERT_LE(delay, base + base / 10);
        low = std::min(low, delay);
        high = std::max(high, delay);
        sum += static_cast<long double>(delay.count());
    }
    // 100k uniform draws over +/-240 s: the extremes come within 1 s of the bounds.
    EXPECT_LT(low, base - base / 10 + 1s);
    EXPECT_GT(high, base + base / 10 - 1s);
    const long double mean = sum / draws;
    EXPECT_NEAR(static_cast<double>(mean), static_cast<double>(base.count()), 2'000.0);
}

TEST(RetrySchedule, JitterIsDeterministicForASeed) {
    const retry_schedule s(default_retry_intervals(), default_max_age);
    jitter_source a(99);
    jitter_source b(99);
    jitter_source c(100);
    std::set<milliseconds> distinct;
    bool differs_from_other_seed = false;
    for (std::uint64_t attempt = 1; attempt <= 20; ++attempt) {
        const retry_decision da = s.next_attempt(attempt, arrival, arrival + 1h, a);
        const retry_decision db = s.next_attempt(attempt, arrival, arrival + 1h, b);
        const retry_decision dc = s.next_attempt(attempt, arrival, arrival + 1h, c);
        EXPECT_EQ(da.at, db.at);
        differs_from_other_seed = differs_from_other_seed || da.at != dc.at;
        distinct.insert(da.at - arrival);
    }
    EXPECT_TRUE(differs_from_other_seed);
    EXPECT_GT(distinct.size(), 10u);
}

TEST(RetrySchedule, SeedZeroStillJitters) {
    const retry_schedule s({1h}, default_max_age);
    jitter_source random(0);
    std::set<milliseconds> delays;
    for (int i = 0; i < 10; ++i) delays.insert(s.next_attempt(1, arrival, arrival, random).at - arrival);
    EXPECT_GT(delays.size(), 5u);
}

TEST(RetrySchedule, LargestJitterIsNeverBeforeNow) {
    const retry_schedule s({1ms, 3ms, 1s}, default_max_age, max_jitter_percent);
    jitter_source random(5);
    for (int i = 0; i < 10'000; ++i) {
        const std::uint64_t attempt = 1 + static_cast<std::uint64_t>(i % 3);
        const retry_decision d = s.next_attempt(attempt, arrival, arrival + 1s, random);
        ASSERT_EQ(d.verdict, retry_verdict::retry);
        const milliseconds delay = d.at - (arrival + 1s);
        const milliseconds base = s.interval_after(attempt);
        ASSERT_GE(delay, base - base / 2);
        ASSERT_LE(delay, base + base / 2);
        ASSERT_GT(delay, 0ms);
    }
}

TEST(RetrySchedule, JitteredRetryNeverPassesTheDeadline) {
    const retry_schedule s({4h}, 10h, max_jitter_percent);
    jitter_source random(11);
    for (int i = 0; i < 10'000; ++i) {
        const retry_decision d = s.next_attempt(2, arrival, arrival + 7h, random);
        ASSERT_EQ(d.verdict, retry_verdict::retry);
        ASSERT_LE(d.at, arrival + 10h);
        ASSERT_GE(d.at, arrival + 9h);
    }
}

TEST(RetrySchedule, ExpiredDecisionDrawsNoRandomness) {
    const retry_schedule s({1h}, 2h);
    jitter_source used(8);
    jitter_source fresh(8);
    (void)s.next_attempt(1, arrival, arrival + 3h, used);
    EXPECT_EQ(used.next(), fresh.next());
}

TEST(RetrySchedule, SaturatesNearTheEndOfTime) {
    const retry_schedule s({milliseconds::max() / 2}, milliseconds::max(), max_jitter_percent);
    jitter_source random(13);
    const retry_clock_time late = retry_clock_time::max() - 1h;
    EXPECT_EQ(s.expires_at(late), retry_clock_time::max());
    for (int i = 0; i < 1000; ++i) {
        const retry_decision d = s.next_attempt(1'000'000, late, late + 30min, random);
        ASSERT_EQ(d.verdict, retry_verdict::retry);
        ASSERT_EQ(d.at, retry_clock_time::max());
    }
    const retry_decision end = s.next_attempt(1, late, retry_clock_time::max(), random);
    EXPECT_EQ(end.verdict, retry_verdict::expired);
}

struct policy_case {
    const char* name;
    std::vector<milliseconds> intervals;
    milliseconds max_age;
    std::uint32_t jitter;
    bool valid;
    retry_policy_error reason;
};

class RetryPolicyValidation : public ::testing::TestWithParam<policy_case> {};

TEST_P(RetryPolicyValidation, AcceptsOnlyUsablePolicies) {
    const policy_case& c = GetParam();
    const auto r = validate_retry_policy(c.intervals, c.max_age, c.jitter);
    ASSERT_EQ(r.has_value(), c.valid);
    if (!c.valid) {
        EXPECT_EQ(r.error(), c.reason);
    }
}

constexpr auto any_reason = retry_policy_error::no_intervals;

// clang-format off
INSTANTIATE_TEST_SUITE_P(Policies, RetryPolicyValidation, ::testing::Values(
    policy_case{"Defaults", default_retry_intervals(), default_max_age, default_jitter_percent, true, any_reason},
    policy_case{"NoJitter", {1s}, 1s, 0, true, any_reason},
    policy_case{"LargestJitter", {1s}, 1s, max_jitter_percent, true, any_reason},
    policy_case{"NoIntervals", {}, 5h, 10, false, retry_policy_error::no_intervals},
    policy_case{"ZeroInterval", {5min, 0ms}, 5h, 10, false, retry_policy_error::zero_interval},
    policy_case{"NegativeInterval", {-5min}, 5h, 10, false, retry_policy_error::zero_interval},
    policy_case{"ZeroMaxAge", {5min}, 0ms, 10, false, retry_policy_error::zero_max_age},
    policy_case{"NegativeMaxAge", {5min}, -1h, 10, false, retry_policy_error::zero_max_age},
    policy_case{"JitterTooLarge", {5min}, 5h, max_jitter_percent + 1, false, retry_policy_error::jitter_too_large}),
    [](const auto& info) { return std::string(info.param.name); });
// clang-format on

}  // namespace
}  // namespace ringrelay::queue
