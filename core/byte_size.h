// core/byte_size.h: parses the sizes operators write in flags and the config file:
// "268435456", "256MiB", "32KiB", "1GiB" (binary multiples; "256MB" is refused rather than
// guessed at). Pure: no allocation except the error message.
// SECURITY: reads operator input (argv, the config file); never network input. Nothing reads
// past text.size(); the product is overflow-checked.
//
// Grammar: size = 1*DIGIT [ "KiB" / "MiB" / "GiB" / "TiB" ]   ; the unit's case as written
#pragma once
#include <cstdint>
#include <expected>
#include <string>
#include <string_view>

namespace ringrelay::core {

// The size in bytes, or a message naming the bad text: `"256MB": unknown unit "MB" (use KiB,
// MiB, GiB, TiB or plain bytes)`.
[[nodiscard]] std::expected<std::uint64_t, std::string> parse_byte_size(std::string_view text);

}  // namespace ringrelay::core
