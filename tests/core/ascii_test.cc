// Unit tests of core/ascii.h: ASCII-only case-insensitive equality, prefix and suffix (letters
// fold, nothing else does: not '@'/'`', '['/'{', digits or UTF-8), and the decimal append.
#include "core/ascii.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <limits>
#include <ostream>
#include <string>

namespace ringrelay::core {
namespace {

static_assert(ascii_lower('A') == 'a' && ascii_lower('Z') == 'z' && ascii_lower('a') == 'a');
static_assert(ascii_upper('a') == 'A' && ascii_upper('z') == 'Z' && ascii_upper('@') == '@');
static_assert(iequals("EHLO", "ehlo") && istarts_with("Received: x", "RECEIVED:") && iends_with("a.Example", ".example"));

struct compare_case {
    const char* name;
    std::string a;
    std::string b;
    bool equal;        // iequals(a, b)
    bool starts_with;  // istarts_with(a, b)
    bool ends_with;    // iends_with(a, b)
    friend void PrintTo(const compare_case& c, std::ostream* os) { *os << c.name; }
};

class AsciiCompare : public ::testing::TestWithParam<compare_case> {};

TEST_P(AsciiCompare, FoldsOnlyAsciiLetters) {
    const compare_case& c = GetParam();
    EXPECT_EQ(iequals(c.a, c.b), c.equal);
    EXPECT_EQ(iequals(c.b, c.a), c.equal);  // symmetric
    EXPECT_EQ(istarts_with(c.a, c.b), c.starts_with);
    EXPECT_EQ(iends_with(c.a, c.b), c.ends_with);
}

// clang-format off
INSTANTIATE_TEST_SUITE_P(Strings, AsciiCompare, ::testing::Values(
    compare_case{"BothEmpty", "", "", true, true, true},
    compare_case{"EmptyPrefix", "abc", "", false, true, true},
    compare_case{"Identical", "PIPELINING", "PIPELINING", true, true, true},
    compare_case{"LowerAgainstUpper", "pipelining", "PIPELINING", true, true, true},
    compare_case{"MixedCase", "PostMaster", "postmaster", true, true, true},
    compare_case{"DigitsUnchanged", "8bitmime", "8BITMIME", true, true, true},
    compare_case{"DifferentLength", "AUTH", "AUTH=", false, false, false},
    compare_case{"PrefixOnly", "AUTH=LOGIN", "auth=", false, true, false},
    compare_case{"SuffixOnly", "mail.Example.ORG", ".example.org", false, false, true},
    compare_case{"LongerThanWhole", "ab", "abc", false, false, false},
    compare_case{"AtIsNotBacktick", "@", "`", false, false, false},        // 0x40 / 0x60: no blind |0x20
    compare_case{"BracketIsNotBrace", "[", "{", false, false, false},      // 0x5B / 0x7B
    compare_case{"CaretIsNotTilde", "^", "~", false, false, false},        // 0x5E / 0x7E
    compare_case{"Utf8NotFolded", "\xc3\xbc", "\xc3\x9c", false, false, false},  // ü / Ü
    compare_case{"HighOctetsExact", "\xc3\xbc", "\xc3\xbc", true, true, true},
    compare_case{"NulCompared", std::string("a\0b", 3), std::string("A\0B", 3), true, true, true},
    compare_case{"NulDiffers", std::string("a\0b", 3), "a b", false, false, false}),
    [](const auto& info) { return std::string(info.param.name); });
// clang-format on

struct decimal_case {
    const char* name;
    std::string before;
    std::uint64_t n;
    std::string after;
    friend void PrintTo(const decimal_case& c, std::ostream* os) { *os << c.name; }
};

class AsciiAppendDecimal : public ::testing::TestWithParam<decimal_case> {};

TEST_P(AsciiAppendDecimal, AppendsDigitsBehindExistingText) {
    const decimal_case& c = GetParam();
    std::string out = c.before;
    append_decimal(out, c.n);
    EXPECT_EQ(out, c.after);
}

INSTANTIATE_TEST_SUITE_P(Numbers, AsciiAppendDecimal, ::testing::Values(
    decimal_case{"Zero", "", 0, "0"},
    decimal_case{"One", "", 1, "1"},
    decimal_case{"PowerOfTen", "", 10000000000, "10000000000"},
    decimal_case{"BehindText", "SIZE=", 10240000, "SIZE=10240000"},
    decimal_case{"Largest", "", std::numeric_limits<std::uint64_t>::max(), "18446744073709551615"}),
    [](const auto& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace ringrelay::core
