// queue/crc32c.h: CRC-32C (Castagnoli), the checksum of spool records. Uses the SSE4.2
// crc32 instruction when the CPU has it, a table otherwise; both give the same value.
#pragma once
#include <cstdint>
#include <string_view>

namespace ringrelay::queue {

// Continues a CRC over `data`; start with crc = 0.
[[nodiscard]] std::uint32_t crc32c(std::uint32_t crc, std::string_view data) noexcept;
// The portable table version (for tests: must equal crc32c()).
[[nodiscard]] std::uint32_t crc32c_portable(std::uint32_t crc, std::string_view data) noexcept;

}  // namespace ringrelay::queue
