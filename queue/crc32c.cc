// queue/crc32c.cc: see crc32c.h.
#include "queue/crc32c.h"

#include <array>
#include <cstring>

#if defined(__x86_64__)
#include <nmmintrin.h>
#endif

namespace ringrelay::queue {

namespace {

constexpr std::array<std::uint32_t, 256> make_table() {
    std::array<std::uint32_t, 256> t{};
    for (std::uint32_t i = 0; i < 256; ++i) {
        std::uint32_t c = i;
        for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        t[i] = c;
    }
    return t;
}
constexpr auto table = make_table();

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) std::uint32_t crc32c_hw(std::uint32_t crc, const char* p,
                                                           std::size_t n) noexcept {
    std::uint64_t c = ~crc;
    while (n >= 8) {
        std::uint64_t v;
        std::memcpy(&v, p, 8);
        c = _mm_crc32_u64(c, v);
        p += 8;
        n -= 8;
    }
    auto c32 = static_cast<std::uint32_t>(c);
    while (n > 0) {
        c32 = _mm_crc32_u8(c32, static_cast<unsigned char>(*p));
        ++p;
        --n;
    }
    return ~c32;
}
#endif

}  // namespace

std::uint32_t crc32c_portable(std::uint32_t crc, std::string_view data) noexcept {
    std::uint32_t c = ~crc;
    for (const char ch : data) c = table[(c ^ static_cast<unsigned char>(ch)) & 0xFF] ^ (c >> 8);
    return ~c;
}

std::uint32_t crc32c(std::uint32_t crc, std::string_view data) noexcept {
#if defined(__x86_64__)
    static const bool has_sse42 = __builtin_cpu_supports("sse4.2");  // immutable after first use
    if (has_sse42) return crc32c_hw(crc, data.data(), data.size());
#endif
    return crc32c_portable(crc, data);
}

}  // namespace ringrelay::queue
