// tools/sink/faults.h: ringrelay-sink's injected faults. Each message whose data is complete
// gets one verdict, drawn with the configured probabilities: accept (250), defer (451 4.3.0),
// reject (550 5.7.1) or disconnect (close without a reply). The draw is one xoshiro256**
// step and a compare against precomputed thresholds: no floating point, no allocation.
//
// Threading: one fault_picker per shard (seeded with the run's seed and the shard index, so
// a run with --seed is repeatable shard by shard).
#pragma once
#include <cstdint>

namespace ringrelay::sink {

enum class verdict : std::uint8_t { accept, defer, reject, disconnect };

struct fault_rates {
    double defer = 0;       // each 0..1; together at most 1
    double reject = 0;
    double disconnect = 0;
};

class fault_picker {
public:
    fault_picker(const fault_rates& rates, std::uint64_t seed) noexcept;

    // The verdict for the next message. Always accept (and no draw) when every rate is 0.
    [[nodiscard]] verdict next() noexcept;
    [[nodiscard]] bool active() const noexcept { return _active; }

private:
    [[nodiscard]] std::uint64_t draw() noexcept;

    std::uint64_t _state[4];
    // Cumulative thresholds in units of 2^-53: a draw below _disconnect disconnects, below
    // _reject rejects, below _defer defers, else accepts.
    std::uint64_t _disconnect;
    std::uint64_t _reject;
    std::uint64_t _defer;
    bool _active;
};

}  // namespace ringrelay::sink
