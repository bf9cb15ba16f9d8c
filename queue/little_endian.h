// queue/little_endian.h: integers as little-endian bytes, the byte order of every spool file
// (records, segment indexes). Written and read a byte at a time, so the bytes are the same on
// any host and need no alignment.
// SECURITY: get_le() reads sizeof(Int) bytes from `off` on; the caller checks they are there.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <type_traits>

namespace ringrelay::queue {

// Writes `v` to dst[0, sizeof(Int)), least significant byte first.
template <typename Int>
void store_le(char* dst, Int v) noexcept {
    static_assert(std::is_integral_v<Int>);
    for (std::size_t i = 0; i < sizeof(Int); ++i) dst[i] = static_cast<char>((static_cast<std::uint64_t>(v) >> (8 * i)) & 0xFF);
}

// Appends `v` to `out`, least significant byte first.
template <typename Int>
void put_le(std::string& out, Int v) {
    char b[sizeof(Int)];
    store_le(b, v);
    out.append(b, sizeof(Int));
}

// The Int stored at b[off, off + sizeof(Int)), least significant byte first.
template <typename Int>
[[nodiscard]] Int get_le(std::string_view b, std::size_t off) noexcept {
    static_assert(std::is_integral_v<Int>);
    std::uint64_t v = 0;
    for (std::size_t i = 0; i < sizeof(Int); ++i) v |= static_cast<std::uint64_t>(static_cast<unsigned char>(b[off + i])) << (8 * i);
    return static_cast<Int>(v);
}

}  // namespace ringrelay::queue
