// tests/core/histogram_test.cc: core::histogram, the log-linear latency histogram: bucket
// arithmetic, percentiles against known distributions, exact min/max/mean, merge.
#include "core/histogram.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

using ringrelay::core::histogram;

namespace {

// The true percentile of sorted values, with the same definition as histogram::percentile:
// the smallest value with at least p% of the values at or below it.
std::uint64_t exact_percentile(const std::vector<std::uint64_t>& sorted, double p) {
    auto rank = static_cast<std::size_t>(std::ceil(p / 100.0 * static_cast<double>(sorted.size()) - 1e-9));
    rank = std::clamp<std::size_t>(rank, 1, sorted.size());
    return sorted[rank - 1];
}

// Relative precision promised by histogram.h: within 0.4% (half a bucket of 1/128).
void expect_close(std::uint64_t got, std::uint64_t want, const char* what) {
    const double tolerance = std::max(1.0, static_cast<double>(want) * 0.004);
    EXPECT_NEAR(static_cast<double>(got), static_cast<double>(want), tolerance) << what;
}

}  // namespace

TEST(Histogram, EmptyReportsZeroes) {
    const histogram h;
    EXPECT_EQ(h.count(), 0u);
    EXPECT_TRUE(h.empty());
    EXPECT_EQ(h.min(), 0u);
    EXPECT_EQ(h.max(), 0u);
    EXPECT_EQ(h.mean(), 0.0);
    EXPECT_EQ(h.percentile(50), 0u);
}

TEST(Histogram, BucketsAreContiguousAndWithinPrecision) {
    // Every bucket starts where the previous one ended, and is at most 1/128 of its values wide.
    std::uint64_t next = 0;
    for (std::size_t i = 0; i < histogram::bucket_count; ++i) {
        ASSERT_EQ(histogram::bucket_low(i), next) << "bucket " << i;
        const std::uint64_t width = histogram::bucket_width(i);
        if (i >= 256) {
            ASSERT_LE(width * histogram::sub_bucket_count, histogram::bucket_low(i)) << "bucket " << i;
        }
        ASSERT_EQ(histogram::bucket_of(histogram::bucket_low(i)), i);
        ASSERT_EQ(histogram::bucket_of(histogram::bucket_low(i) + width - 1), i);
        next = histogram::bucket_low(i) + width;
    }
    EXPECT_EQ(next, 0u) << "the last bucket must end exactly at 2^64 (wraps to 0)";
    EXPECT_EQ(histogram::bucket_of(std::numeric_limits<std::uint64_t>::max()), histogram::bucket_count - 1);
}

TEST(Histogram, SmallValuesAreExact) {
    histogram h;
    for (std::uint64_t v = 0; v < 256; ++v) h.record(v);
    for (int p = 1; p < 100; ++p) {
        // 256 values 0..255: the p-th percentile is value ceil(p * 256 / 100) - 1.
        const auto want = static_cast<std::uint64_t>((p * 256 + 99) / 100) - 1;
        EXPECT_EQ(h.percentile(p), want) << "p" << p;
    }
}

TEST(Histogram, UniformOneToOneMillionHasExpectedPercentiles) {
    histogram h;
    for (std::uint64_t v = 1; v <= 1'000'000; ++v) h.record(v);
    EXPECT_EQ(h.count(), 1'000'000u);
    EXPECT_EQ(h.min(), 1u);
    EXPECT_EQ(h.max(), 1'000'000u);
    EXPECT_DOUBLE_EQ(h.mean(), 500'000.5);
    expect_close(h.percentile(50), 500'000, "p50");
    expect_close(h.percentile(90), 900'000, "p90");
    expect_close(h.percentile(99), 990'000, "p99");
    expect_close(h.percentile(99.9), 999'000, "p99.9");
    expect_close(h.percentile(10), 100'000, "p10");
    EXPECT_EQ(h.percentile(0), 1u);
    EXPECT_EQ(h.percentile(100), 1'000'000u);
}

TEST(Histogram, FixedSetOfValues) {
    // 1,000 values: 900 of 100 us, 90 of 1 ms, 9 of 10 ms, 1 of 1 s (in ns).
    histogram h;
    h.record(100'000, 900);
    h.record(1'000'000, 90);
    h.record(10'000'000, 9);
    h.record(1'000'000'000);
    EXPECT_EQ(h.count(), 1000u);
    expect_close(h.percentile(50), 100'000, "p50");
    expect_close(h.percentile(90), 100'000, "p90");
    expect_close(h.percentile(90.1), 1'000'000, "p90.1");
    expect_close(h.percentile(99), 1'000'000, "p99");
    expect_close(h.percentile(99.9), 10'000'000, "p99.9");
    EXPECT_EQ(h.percentile(99.95), 1'000'000'000u);
    EXPECT_EQ(h.max(), 1'000'000'000u);
    EXPECT_EQ(h.min(), 100'000u);
    EXPECT_DOUBLE_EQ(h.mean(), (900.0 * 100'000 + 90.0 * 1'000'000 + 9.0 * 10'000'000 + 1e9) / 1000);
}

TEST(Histogram, RandomValuesStayWithinPrecisionAtEveryPercentile) {
    std::mt19937_64 rng(42);
    std::lognormal_distribution<double> latency(12.0, 1.5);  // around 160 us, long tail
    std::vector<std::uint64_t> values;
    histogram h;
    for (int i = 0; i < 200'000; ++i) {
        const auto v = static_cast<std::uint64_t>(latency(rng));
        values.push_back(v);
        h.record(v);
    }
    std::sort(values.begin(), values.end());
    for (const double p : {1.0, 25.0, 50.0, 75.0, 90.0, 99.0, 99.9, 99.99}) {
        expect_close(h.percentile(p), exact_percentile(values, p), "percentile");
    }
    EXPECT_EQ(h.min(), values.front());
    EXPECT_EQ(h.max(), values.back());
}

TEST(Histogram, MinAndMaxAreExactNotBucketed) {
    histogram h;
    h.record(1'234'567);
    h.record(987'654'321);
    EXPECT_EQ(h.min(), 1'234'567u);
    EXPECT_EQ(h.max(), 987'654'321u);
    EXPECT_EQ(h.percentile(0), 1'234'567u);
    EXPECT_EQ(h.percentile(100), 987'654'321u);
    // A single value: every percentile is that value, not its bucket's middle.
    histogram one;
    one.record(1'000'003);
    EXPECT_EQ(one.percentile(50), 1'000'003u);
}

TEST(Histogram, HugeValuesDoNotOverflow) {
    histogram h;
    h.record(std::numeric_limits<std::uint64_t>::max());
    h.record(std::numeric_limits<std::uint64_t>::max() - 1);
    h.record(1);
    EXPECT_EQ(h.max(), std::numeric_limits<std::uint64_t>::max());
    EXPECT_GT(h.percentile(50), std::numeric_limits<std::uint64_t>::max() / 2);
}

TEST(Histogram, MergeEqualsRecordingEverything) {
    std::mt19937_64 rng(7);
    std::uniform_int_distribution<std::uint64_t> pick(1, 50'000'000);
    histogram a, b, all;
    for (int i = 0; i < 50'000; ++i) {
        const std::uint64_t v = pick(rng);
        ((i % 3 == 0) ? a : b).record(v);
        all.record(v);
    }
    histogram merged;
    merged.merge(a);
    merged.merge(b);
    EXPECT_EQ(merged.count(), all.count());
    EXPECT_EQ(merged.min(), all.min());
    EXPECT_EQ(merged.max(), all.max());
    EXPECT_DOUBLE_EQ(merged.mean(), all.mean());
    for (double p = 0; p <= 100; p += 0.5) EXPECT_EQ(merged.percentile(p), all.percentile(p)) << "p" << p;
}

TEST(Histogram, MergeOfEmptyKeepsMinimum) {
    histogram a, empty;
    a.record(500);
    a.merge(empty);
    EXPECT_EQ(a.min(), 500u);
    empty.merge(a);
    EXPECT_EQ(empty.min(), 500u);
    EXPECT_EQ(empty.count(), 1u);
}

TEST(Histogram, ResetForgetsEverything) {
    histogram h;
    h.record(10, 5);
    h.reset();
    EXPECT_TRUE(h.empty());
    h.record(20);
    EXPECT_EQ(h.min(), 20u);
    EXPECT_EQ(h.percentile(50), 20u);
}
