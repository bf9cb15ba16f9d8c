// core/histogram.h: a log-linear histogram of non-negative integer values (latencies in
// nanoseconds, sizes in bytes), in the manner of HdrHistogram: values below 256 are counted
// exactly; above, every power-of-two range [2^e, 2^(e+1)) is split into 128 equal buckets, so
// a bucket is at most 1/128 (0.78%) of its values wide and a reported percentile is within
// 0.4% of a value that was recorded. Covers the whole uint64 range in 7,424 buckets (58 KiB).
// Knows nothing of what it measures (used by ringrelay-bench, metrics).
//
// Ownership: one shard records into its own histogram (record() is O(1), allocation-free,
// not thread-safe); histograms of several shards are merge()d at the end or by the thread
// that owns them all. Construction allocates the bucket array once.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace ringrelay::core {

class histogram {
public:
    histogram();

    void record(std::uint64_t value) noexcept { record(value, 1); }
    // `count` occurrences of `value`.
    void record(std::uint64_t value, std::uint64_t count) noexcept;
    // Adds every value recorded in `other` (equal to having recorded them here).
    void merge(const histogram& other) noexcept;
    void reset() noexcept;

    [[nodiscard]] std::uint64_t count() const noexcept { return _count; }
    [[nodiscard]] bool empty() const noexcept { return _count == 0; }
    // Exact smallest / largest value recorded; 0 when empty.
    [[nodiscard]] std::uint64_t min() const noexcept { return _count == 0 ? 0 : _min; }
    [[nodiscard]] std::uint64_t max() const noexcept { return _max; }
    // Exact arithmetic mean (kept as a double sum); 0 when empty.
    [[nodiscard]] double mean() const noexcept;
    // The value at percentile `p` (0..100; clamped): the smallest recorded value v such that at
    // least p% of the values are <= v, reported as the middle of v's bucket (clamped to
    // [min(), max()], so percentile(0) == min() and percentile(100) == max()). 0 when empty.
    // O(buckets): for reports, not for the hot path.
    [[nodiscard]] std::uint64_t percentile(double p) const noexcept;

    // Bucket arithmetic, exposed for tests.
    static constexpr unsigned sub_bucket_bits = 7;
    static constexpr std::uint64_t sub_bucket_count = std::uint64_t{1} << sub_bucket_bits;  // per octave
    static constexpr std::size_t bucket_count = (64 - sub_bucket_bits + 1) * sub_bucket_count;
    [[nodiscard]] static std::size_t bucket_of(std::uint64_t value) noexcept;
    // Smallest value and width of bucket `index`.
    [[nodiscard]] static std::uint64_t bucket_low(std::size_t index) noexcept;
    [[nodiscard]] static std::uint64_t bucket_width(std::size_t index) noexcept;

private:
    std::vector<std::uint64_t> _buckets;  // bucket_count entries
    std::uint64_t _count = 0;
    std::uint64_t _min = 0;
    std::uint64_t _max = 0;
    double _sum = 0;
};

}  // namespace ringrelay::core
