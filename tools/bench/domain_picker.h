// tools/bench/domain_picker.h: picks recipient domains by weight (--domains d1:w1,d2:w2) with a
// small deterministic PRNG (splitmix64), so a run with the same --seed sends the same domains.
// pick() is O(log domains), allocation-free.
//
// Ownership: one per shard (seeded with the run's seed and the shard index); shard-local.
#pragma once
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "tools/bench/options.h"

namespace ringrelay::bench {

class domain_picker {
public:
    // `domains` must be non-empty with positive weights (parse_domains guarantees it); only the
    // weights are kept: pick() returns an index into `domains`.
    domain_picker(std::span<const weighted_domain> domains, std::uint64_t seed);

    [[nodiscard]] std::size_t pick() noexcept;

private:
    [[nodiscard]] std::uint64_t next() noexcept;

    std::vector<std::uint64_t> _cumulative;  // running sums of the weights
    std::uint64_t _state;
};

}  // namespace ringrelay::bench
