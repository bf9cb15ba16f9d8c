// tests/protocol/data_reader_test.cc: the DATA/BDAT body scanner (RFC 5321 §4.5.2
// dot-unstuffing, §2.3.8 bare CR/LF, §4.5.3.1.6 line length; RFC 3030 raw chunks). Each case
// runs on the bulk reader unsplit, split at every offset and byte by byte, and on the
// reference reader; all must agree with the expected result.
#include "protocol/data_reader.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace ringrelay::protocol {
namespace {

enum flag : unsigned { none = 0, bare_cr = 1, bare_lf = 2, too_long = 4, over = 8, complete = 16 };

struct outcome {
    std::string body;
    std::size_t consumed = 0;
    unsigned flags = 0;
    std::uint64_t size = 0;
    bool operator==(const outcome&) const = default;
};

template <typename Reader>
outcome scan(data_framing framing, std::uint64_t limit, std::string_view in, const std::vector<std::size_t>& cuts) {
    Reader r;
    r.reset(framing, limit);
    outcome o;
    std::size_t begin = 0;
    for (std::size_t i = 0; i <= cuts.size(); ++i) {
        const std::size_t end = i < cuts.size() ? cuts[i] : in.size();
        const data_progress p = r.feed(in.substr(begin, end - begin), o.body);
        o.consumed += p.consumed;
        if (p.complete) {
            o.flags |= complete;
            break;
        }
        begin = end;
    }
    if (framing == data_framing::raw) r.finish(o.body);
    if (r.bare_cr()) o.flags |= bare_cr;
    if (r.bare_lf()) o.flags |= bare_lf;
    if (r.line_too_long()) o.flags |= too_long;
    if (r.over_limit()) o.flags |= over;
    o.size = r.size();
    if (r.over_limit()) o.body.clear();  // the body is unspecified past the limit
    return o;
}

struct reader_case {
    const char* name;
    data_framing framing;
    std::uint64_t limit;
    std::string in;
    std::string body;
    std::size_t consumed;
    unsigned flags;
};

class DataReader : public ::testing::TestWithParam<reader_case> {};

TEST_P(DataReader, AgreesWithExpectationAtEverySplit) {
    const reader_case& c = GetParam();
    const outcome expected{c.body, c.consumed, c.flags, (c.flags & over) ? 0 : c.body.size()};
    outcome whole = scan<data_reader>(c.framing, c.limit, c.in, {});
    if (c.flags & over) whole.size = 0;  // only the flag matters past the limit
    EXPECT_EQ(whole.body, expected.body);
    EXPECT_EQ(whole.consumed, expected.consumed);
    EXPECT_EQ(whole.flags, expected.flags);
    if (!(c.flags & over)) {
        EXPECT_EQ(whole.size, expected.size);
    }
    const outcome reference = scan<reference_data_reader>(c.framing, c.limit, c.in, {});
    const outcome fast = scan<data_reader>(c.framing, c.limit, c.in, {});
    EXPECT_EQ(fast, reference);
    for (std::size_t k = 1; k < c.in.size(); ++k) {
        ASSERT_EQ(scan<data_reader>(c.framing, c.limit, c.in, {k}), fast) << "split at " << k;
        ASSERT_EQ(scan<reference_data_reader>(c.framing, c.limit, c.in, {k}), fast) << "reference split at " << k;
    }
    std::vector<std::size_t> every;
    for (std::size_t k = 1; k < c.in.size(); ++k) every.push_back(k);
    EXPECT_EQ(scan<data_reader>(c.framing, c.limit, c.in, every), fast);
}

constexpr auto dot = data_framing::dot_stuffed;
constexpr auto raw = data_framing::raw;
const std::string long_ok(998, 'x');
const std::string long_bad(999, 'x');
// A body longer than one SIMD block, with CR/LF at varied offsets.
const std::string text = "Subject: a fairly long header line for scanning\r\n\r\nline one\r\nline two is longer\r\n";

// clang-format off
INSTANTIATE_TEST_SUITE_P(Bodies, DataReader, ::testing::Values(
    reader_case{"EmptyMessage", dot, 0, ".\r\n", "", 3, complete},
    reader_case{"OneLine", dot, 0, "hello\r\n.\r\n", "hello\r\n", 10, complete},
    reader_case{"StopsAfterTerminator", dot, 0, "a\r\n.\r\nMAIL", "a\r\n", 6, complete},
    reader_case{"LongerText", dot, 0, text + ".\r\n", text, text.size() + 3, complete},
    reader_case{"Incomplete", dot, 0, "abc\r\n", "abc\r\n", 5, none},
    reader_case{"DotStuffed", dot, 0, "..a\r\n.\r\n", ".a\r\n", 8, complete},
    reader_case{"DoubleDotLine", dot, 0, "..\r\n.\r\n", ".\r\n", 7, complete},
    reader_case{"DotInMiddleKept", dot, 0, "a.b\r\n.\r\n", "a.b\r\n", 8, complete},
    reader_case{"SingleDotUnstuffedNotEnd", dot, 0, ".a\r\n.\r\n", "a\r\n", 7, complete},
    reader_case{"LfDotLfIsNotEnd", dot, 0, "a\n.\nb\r\n.\r\n", "a\n.\nb\r\n", 10, bare_lf | complete},
    reader_case{"CrDotCrIsNotEnd", dot, 0, "a\r.\rb\r\n.\r\n", "a\r.\rb\r\n", 10, bare_cr | complete},
    reader_case{"LfDotCrLfIsNotEnd", dot, 0, "a\n.\r\nb\r\n.\r\n", "a\n.\r\nb\r\n", 11, bare_lf | complete},
    reader_case{"CrLfDotLfIsNotEnd", dot, 0, "a\r\n.\nb\r\n.\r\n", "a\r\n\nb\r\n", 11, bare_lf | complete},
    reader_case{"CrLfDotCrX", dot, 0, "a\r\n.\rx\r\n.\r\n", "a\r\n\rx\r\n", 11, bare_cr | complete},
    reader_case{"BareCrAtStart", dot, 0, "\rx\r\n.\r\n", "\rx\r\n", 7, bare_cr | complete},
    reader_case{"BareLfAtStart", dot, 0, "\n.\r\n", "\n.\r\n", 4, bare_lf},
    reader_case{"CrCrLf", dot, 0, "a\r\r\n.\r\n", "a\r\r\n", 7, bare_cr | complete},
    reader_case{"LineAtLimit", dot, 0, long_ok + "\r\n.\r\n", long_ok + "\r\n", 1003, complete},
    reader_case{"LineOverLimit", dot, 0, long_bad + "\r\n.\r\n", long_bad + "\r\n", 1004, too_long | complete},
    reader_case{"StuffedDotNotCounted", dot, 0, "." + long_ok + "\r\n.\r\n", long_ok + "\r\n", 1004, complete},
    reader_case{"SizeAtLimit", dot, 5, "abc\r\n.\r\n", "abc\r\n", 8, complete},
    reader_case{"SizeOverLimit", dot, 4, "abc\r\n.\r\n", "", 8, over | complete},
    reader_case{"RawKeepsDots", raw, 0, ".a\r\n.\r\n", ".a\r\n.\r\n", 7, none},
    reader_case{"RawAddsFinalCrLf", raw, 0, "ab", "ab\r\n", 2, none},
    reader_case{"RawTrailingCr", raw, 0, "ab\r", "ab\r\r\n", 3, bare_cr},
    reader_case{"RawBareLf", raw, 0, "a\nb\r\n", "a\nb\r\n", 5, bare_lf},
    reader_case{"RawEmpty", raw, 0, "", "", 0, none},
    reader_case{"RawLineTooLong", raw, 0, long_bad + "\r\n", long_bad + "\r\n", 1001, too_long},
    reader_case{"RawOverLimit", raw, 3, "abcd", "", 4, over}),
    [](const auto& info) { return std::string(info.param.name); });
// clang-format on

TEST(DataReaderLimit, KeepsNothingPastLimitButCountsEverything) {
    data_reader r;
    r.reset(data_framing::dot_stuffed, 10);
    std::string body;
    const std::string big(100, 'z');
    (void)r.feed(big, body);
    const auto p = r.feed("\r\n.\r\n", body);
    EXPECT_TRUE(p.complete);
    EXPECT_TRUE(r.over_limit());
    EXPECT_LE(body.size(), 10U);
    EXPECT_EQ(r.size(), 102U);
}

TEST(DataReaderReset, ClearsFlagsBetweenMessages) {
    data_reader r;
    std::string body;
    r.reset(data_framing::dot_stuffed, 0);
    (void)r.feed("a\nb\r\n.\r\n", body);
    ASSERT_TRUE(r.bare_lf());
    r.reset(data_framing::dot_stuffed, 0);
    EXPECT_FALSE(r.bare_lf());
    EXPECT_EQ(r.size(), 0U);
}

}  // namespace
}  // namespace ringrelay::protocol
