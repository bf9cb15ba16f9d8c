// core/byte_size.cc: see byte_size.h.
#include "core/byte_size.h"

#include <limits>

namespace ringrelay::core {

std::expected<std::uint64_t, std::string> parse_byte_size(std::string_view text) {
    std::string quoted(1, '"');
    quoted.append(text);
    quoted.push_back('"');
    std::size_t i = 0;
    std::uint64_t n = 0;
    constexpr std::uint64_t max = std::numeric_limits<std::uint64_t>::max();
    while (i < text.size() && text[i] >= '0' && text[i] <= '9') {
        const auto digit = static_cast<std::uint64_t>(text[i] - '0');
        if (n > (max - digit) / 10) return std::unexpected(quoted + ": too large");
        n = n * 10 + digit;
        ++i;
    }
    if (i == 0) return std::unexpected(quoted + ": expected a number of bytes, e.g. 268435456 or 256MiB");
    const std::string_view unit = text.substr(i);
    unsigned shift = 0;
    if (unit.empty()) {
        shift = 0;
    } else if (unit == "KiB") {
        shift = 10;
    } else if (unit == "MiB") {
        shift = 20;
    } else if (unit == "GiB") {
        shift = 30;
    } else if (unit == "TiB") {
        shift = 40;
    } else {
        return std::unexpected(quoted + ": unknown unit \"" + std::string(unit) +
                               "\" (use KiB, MiB, GiB, TiB or plain bytes)");
    }
    if (shift != 0 && n > (max >> shift)) return std::unexpected(quoted + ": too large");
    return n << shift;
}

}  // namespace ringrelay::core
