// Unit tests of core/log.h: JSON escaping keeps every line valid JSON whatever the bytes.
#include "core/log.h"

#include <gtest/gtest.h>

using ringrelay::core::append_json_escaped;

namespace {
std::string esc(std::string_view s) {
    std::string out;
    append_json_escaped(out, s);
    return out;
}
}  // namespace

TEST(JsonEscape, EscapesQuotesBackslashesAndControls) {
    EXPECT_EQ(esc("a\"b\\c"), "a\\\"b\\\\c");
    EXPECT_EQ(esc(std::string_view("x\r\n\t\0y", 6)), "x\\u000d\\u000a\\u0009\\u0000y");
}

TEST(JsonEscape, KeepsValidUtf8AndEscapesInvalidBytes) {
    EXPECT_EQ(esc("caf\xc3\xa9"), "caf\xc3\xa9");
    EXPECT_EQ(esc("bad\xff\xc3"), "bad\\u00ff\\u00c3");
}
