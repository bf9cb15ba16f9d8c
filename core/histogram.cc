// core/histogram.cc: see histogram.h. Bucket index = shift * 128 + (value >> shift), with
// shift = max(0, bit_width(value) - 8): values below 256 map to themselves, and each octave
// above to 128 buckets of width 2^shift.
#include "core/histogram.h"

#include <algorithm>
#include <bit>
#include <cmath>

namespace ringrelay::core {

histogram::histogram() : _buckets(bucket_count, 0) {}

std::size_t histogram::bucket_of(std::uint64_t value) noexcept {
    const int width = std::bit_width(value);
    const unsigned shift =
        width > static_cast<int>(sub_bucket_bits) + 1 ? static_cast<unsigned>(width) - (sub_bucket_bits + 1) : 0;
    return static_cast<std::size_t>(shift) * sub_bucket_count + static_cast<std::size_t>(value >> shift);
}

std::uint64_t histogram::bucket_low(std::size_t index) noexcept {
    if (index < 2 * sub_bucket_count) return index;
    const std::size_t shift = index / sub_bucket_count - 1;
    return static_cast<std::uint64_t>(index - shift * sub_bucket_count) << shift;
}

std::uint64_t histogram::bucket_width(std::size_t index) noexcept {
    if (index < 2 * sub_bucket_count) return 1;
    return std::uint64_t{1} << (index / sub_bucket_count - 1);
}

void histogram::record(std::uint64_t value, std::uint64_t count) noexcept {
    if (count == 0) return;
    _buckets[bucket_of(value)] += count;
    if (_count == 0 || value < _min) _min = value;
    if (value > _max) _max = value;
    _count += count;
    _sum += static_cast<double>(value) * static_cast<double>(count);
}

void histogram::merge(const histogram& other) noexcept {
    if (other._count == 0) return;
    for (std::size_t i = 0; i < bucket_count; ++i) _buckets[i] += other._buckets[i];
    if (_count == 0 || other._min < _min) _min = other._min;
    _max = std::max(_max, other._max);
    _count += other._count;
    _sum += other._sum;
}

void histogram::reset() noexcept {
    std::fill(_buckets.begin(), _buckets.end(), 0);
    _count = 0;
    _min = 0;
    _max = 0;
    _sum = 0;
}

double histogram::mean() const noexcept { return _count == 0 ? 0 : _sum / static_cast<double>(_count); }

std::uint64_t histogram::percentile(double p) const noexcept {
    if (_count == 0) return 0;
    if (!(p > 0)) return _min;  // also NaN
    if (p >= 100) return _max;
    // The rank of the value asked for, 1-based; the small tolerance keeps 99.9% of 1,000 at
    // rank 999 despite binary rounding of 99.9.
    const double exact = p / 100.0 * static_cast<double>(_count);
    auto rank = static_cast<std::uint64_t>(std::ceil(exact - exact * 1e-12));
    rank = std::clamp<std::uint64_t>(rank, 1, _count);
    if (rank == _count) return _max;
    std::uint64_t seen = 0;
    for (std::size_t i = 0; i < bucket_count; ++i) {
        seen += _buckets[i];
        if (seen >= rank) {
            const std::uint64_t middle = bucket_low(i) + (bucket_width(i) - 1) / 2;
            return std::clamp(middle, _min, _max);
        }
    }
    return _max;
}

}  // namespace ringrelay::core
