// tools/sink/faults.cc: see faults.h.
#include "tools/sink/faults.h"

#include <algorithm>
#include <cmath>

namespace ringrelay::sink {

namespace {

constexpr double unit = 9007199254740992.0;  // 2^53

std::uint64_t splitmix64(std::uint64_t& x) noexcept {
    std::uint64_t z = (x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

std::uint64_t threshold(double p) noexcept {
    return static_cast<std::uint64_t>(std::llround(std::clamp(p, 0.0, 1.0) * unit));
}

constexpr std::uint64_t rotl(std::uint64_t x, int k) noexcept { return (x << k) | (x >> (64 - k)); }

}  // namespace

fault_picker::fault_picker(const fault_rates& rates, std::uint64_t seed) noexcept
    : _disconnect(threshold(rates.disconnect)),
      _reject(threshold(rates.disconnect + rates.reject)),
      _defer(threshold(rates.disconnect + rates.reject + rates.defer)),
      _active(_defer != 0) {
    for (std::uint64_t& s : _state) s = splitmix64(seed);
}

std::uint64_t fault_picker::draw() noexcept {  // xoshiro256** (Blackman, Vigna)
    const std::uint64_t result = rotl(_state[1] * 5, 7) * 9;
    const std::uint64_t t = _state[1] << 17;
    _state[2] ^= _state[0];
    _state[3] ^= _state[1];
    _state[1] ^= _state[2];
    _state[0] ^= _state[3];
    _state[2] ^= t;
    _state[3] = rotl(_state[3], 45);
    return result;
}

verdict fault_picker::next() noexcept {
    if (!_active) return verdict::accept;
    const std::uint64_t u = draw() >> 11;  // uniform in [0, 2^53)
    if (u < _disconnect) return verdict::disconnect;
    if (u < _reject) return verdict::reject;
    if (u < _defer) return verdict::defer;
    return verdict::accept;
}

}  // namespace ringrelay::sink
