// Unit tests of queue/crc32c.h against the published CRC-32C check value and the portable
// implementation.
#include "queue/crc32c.h"

#include <gtest/gtest.h>

#include <string>

using namespace ringrelay::queue;

TEST(Crc32c, MatchesTheStandardCheckValue) {
    // RFC 3720 appendix B.4 / the CRC catalogue: CRC-32C("123456789") = 0xE3069283.
    EXPECT_EQ(crc32c(0, "123456789"), 0xE3069283u);
    EXPECT_EQ(crc32c_portable(0, "123456789"), 0xE3069283u);
}

TEST(Crc32c, HardwareAndPortableAgreeForEveryLengthAndSplit) {
    std::string data;
    for (int i = 0; i < 300; ++i) data.push_back(static_cast<char>(i * 7 + 3));
    for (std::size_t len = 0; len <= data.size(); ++len) {
        const std::string_view s(data.data(), len);
        ASSERT_EQ(crc32c(0, s), crc32c_portable(0, s)) << len;
        const std::size_t half = len / 2;
        EXPECT_EQ(crc32c(crc32c(0, s.substr(0, half)), s.substr(half)), crc32c(0, s)) << len;
    }
}
