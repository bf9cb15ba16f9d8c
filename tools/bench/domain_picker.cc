// tools/bench/domain_picker.cc: see domain_picker.h.
#include "tools/bench/domain_picker.h"

#include <algorithm>

#include "core/invariant.h"

namespace ringrelay::bench {

domain_picker::domain_picker(std::span<const weighted_domain> domains, std::uint64_t seed) : _state(seed) {
    RR_ASSERT(!domains.empty());
    std::uint64_t sum = 0;
    for (const weighted_domain& d : domains) {
        RR_ASSERT(d.weight > 0);
        sum += d.weight;
        _cumulative.push_back(sum);
    }
}

// splitmix64 (Steele, Lea, Flood 2014): passes BigCrush, one add and three multiplies.
std::uint64_t domain_picker::next() noexcept {
    std::uint64_t z = (_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

std::size_t domain_picker::pick() noexcept {
    if (_cumulative.size() == 1) return 0;
    // The modulo bias is below total / 2^64 (total <= 2^32 * domains): negligible.
    const std::uint64_t r = next() % _cumulative.back();
    return static_cast<std::size_t>(std::upper_bound(_cumulative.begin(), _cumulative.end(), r) - _cumulative.begin());
}

}  // namespace ringrelay::bench
