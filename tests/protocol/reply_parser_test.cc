// tests/protocol/reply_parser_test.cc: SMTP reply parsing (RFC 5321 §4.2) and enhanced status
// codes (RFC 3463): well-formed single and multi-line replies, every hostile shape (overlong,
// too many lines, wrong continuation code, garbage, bare CR), each fed whole, split at every
// offset and byte by byte.
#include "protocol/reply_parser.h"

#include <gtest/gtest.h>

#include <ostream>
#include <string>
#include <vector>

namespace ringrelay::protocol {
namespace {

struct parsed {
    bool ok = false;
    reply_error error = reply_error::bad_code;
    std::vector<std::uint16_t> codes;
    std::vector<std::string> texts;
    std::vector<enhanced_status> enhanced;
    std::vector<std::size_t> lines;
    std::size_t consumed = 0;

    bool operator==(const parsed&) const = default;
};

// Feeds `input` in pieces ending at `cuts`; collects every complete reply.
parsed run(std::string_view input, const std::vector<std::size_t>& cuts) {
    reply_parser p;
    parsed out;
    std::size_t begin = 0;
    for (std::size_t i = 0; i <= cuts.size(); ++i) {
        const std::size_t end = i < cuts.size() ? cuts[i] : input.size();
        std::string_view piece = input.substr(begin, end - begin);
        begin = end;
        while (!piece.empty()) {
            const auto r = p.feed(piece);
            if (!r) {
                out.error = r.error();
                out.consumed = 0;  // after a failure the stream is abandoned; only the error counts
                return out;
            }
            EXPECT_LE(r->consumed, piece.size());
            EXPECT_TRUE(r->complete || r->consumed == piece.size());
            out.consumed += r->consumed;
            piece.remove_prefix(r->consumed);
            if (r->complete) {
                const parsed_reply rep = p.reply();
                out.codes.push_back(rep.code);
                out.texts.emplace_back(rep.text);
                out.enhanced.push_back(rep.enhanced);
                out.lines.push_back(rep.lines);
            }
        }
    }
    out.ok = true;
    return out;
}

// Whole, split once at every offset, and byte by byte: all must agree.
parsed run_everywhere(std::string_view input) {
    const parsed whole = run(input, {});
    for (std::size_t k = 1; k < input.size(); ++k) {
        EXPECT_EQ(run(input, {k}), whole) << "split at " << k;
    }
    std::vector<std::size_t> every;
    for (std::size_t k = 1; k < input.size(); ++k) every.push_back(k);
    EXPECT_EQ(run(input, every), whole) << "byte by byte";
    return whole;
}

TEST(ReplyParser, ParsesSingleLineReply) {
    const parsed r = run_everywhere("250 2.1.0 Ok\r\n");
    ASSERT_TRUE(r.ok);
    ASSERT_EQ(r.codes.size(), 1u);
    EXPECT_EQ(r.codes[0], 250);
    EXPECT_EQ(r.texts[0], "2.1.0 Ok");
    EXPECT_EQ(r.enhanced[0], (enhanced_status{2, 1, 0}));
    EXPECT_EQ(r.lines[0], 1u);
}

TEST(ReplyParser, JoinsMultiLineReplyWithLf) {
    const parsed r = run_everywhere("250-mx.example.net\r\n250-PIPELINING\r\n250 SIZE 10000\r\n");
    ASSERT_TRUE(r.ok);
    ASSERT_EQ(r.codes.size(), 1u);
    EXPECT_EQ(r.texts[0], "mx.example.net\nPIPELINING\nSIZE 10000");
    EXPECT_EQ(r.lines[0], 3u);
    EXPECT_FALSE(r.enhanced[0].present());
}

TEST(ReplyParser, AcceptsCodeAloneAndEmptyContinuation) {
    const parsed r = run_everywhere("250-\r\n250\r\n");
    ASSERT_TRUE(r.ok);
    ASSERT_EQ(r.codes.size(), 1u);
    EXPECT_EQ(r.texts[0], "\n");
    EXPECT_EQ(r.lines[0], 2u);
}

TEST(ReplyParser, ToleratesBareLfLineEnds) {
    const parsed r = run_everywhere("354 go ahead\n");
    ASSERT_TRUE(r.ok);
    EXPECT_EQ(r.codes, std::vector<std::uint16_t>{354});
    EXPECT_EQ(r.texts[0], "go ahead");
}

TEST(ReplyParser, StopsAfterEachCompleteReply) {
    reply_parser p;
    const auto r = p.feed("250 a\r\n550 b\r\n");
    ASSERT_TRUE(r.has_value());
    EXPECT_TRUE(r->complete);
    EXPECT_EQ(r->consumed, 7u);
    EXPECT_EQ(p.reply().code, 250);
    const auto s = p.feed("550 b\r\n");
    ASSERT_TRUE(s.has_value());
    EXPECT_EQ(p.reply().code, 550);
    EXPECT_EQ(p.reply().text, "b");
}

TEST(ReplyParser, ParsesPipelinedReplySequence) {
    const parsed r = run_everywhere("250 2.1.0 Ok\r\n550 5.1.1 <x@y>: unknown\r\n250 2.1.5 Ok\r\n354 go\r\n");
    ASSERT_TRUE(r.ok);
    EXPECT_EQ(r.codes, (std::vector<std::uint16_t>{250, 550, 250, 354}));
    EXPECT_EQ(r.enhanced[1], (enhanced_status{5, 1, 1}));
    EXPECT_EQ(r.texts[1], "5.1.1 <x@y>: unknown");
}

TEST(ReplyParser, ReportsIncompleteReplyAsMidReply) {
    reply_parser p;
    const auto r = p.feed("250-first\r\n250-sec");
    ASSERT_TRUE(r.has_value());
    EXPECT_FALSE(r->complete);
    EXPECT_EQ(r->consumed, 18u);
    EXPECT_TRUE(p.mid_reply());
}

struct hostile_case {
    const char* name;
    std::string input;
    reply_error error;

    friend void PrintTo(const hostile_case& c, std::ostream* os) { *os << c.name; }
};

class ReplyParserHostile : public ::testing::TestWithParam<hostile_case> {};

TEST_P(ReplyParserHostile, FailsWithTheRightErrorAtEverySplit) {
    const hostile_case& c = GetParam();
    const parsed r = run_everywhere(c.input);
    EXPECT_FALSE(r.ok);
    EXPECT_EQ(r.error, c.error);
}

std::string many_lines(std::size_t n) {
    std::string s;
    for (std::size_t i = 0; i < n; ++i) s += "250-x\r\n";
    return s + "250 end\r\n";
}

// clang-format off
const hostile_case hostile_cases[] = {
    {"OverlongLine", "250 " + std::string(600, 'a') + "\r\n", reply_error::line_too_long},
    {"OverlongLineWithoutEnd", "250 " + std::string(600, 'a'), reply_error::line_too_long},
    {"LineOfExactly513Octets", "250 " + std::string(507, 'a') + "\r\n", reply_error::line_too_long},
    {"TooManyLines", many_lines(max_reply_lines), reply_error::too_many_lines},
    {"ContinuationCodeDiffers", "250-first\r\n251 second\r\n", reply_error::code_mismatch},
    {"Garbage", "hello there\r\n", reply_error::bad_code},
    {"MissingCode", "\r\n", reply_error::bad_code},
    {"TwoDigitCode", "25 ok\r\n", reply_error::bad_code},
    {"CodeOutOfRange", "199 ok\r\n", reply_error::bad_code},
    {"SecondDigitOutOfRange", "260 ok\r\n", reply_error::bad_code},
    {"BadSeparator", "250_ok\r\n", reply_error::bad_separator},
    {"BareCrInLine", "250 o\rk\r\n", reply_error::bare_carriage_return},
    {"NulBeforeCode", std::string("\0" "250 ok\r\n", 9), reply_error::bad_code},
};
// clang-format on

INSTANTIATE_TEST_SUITE_P(Hostile, ReplyParserHostile, ::testing::ValuesIn(hostile_cases),
                         [](const auto& info) { return std::string(info.param.name); });

TEST(ReplyParser, AcceptsLineOfExactly512Octets) {
    const parsed r = run_everywhere("250 " + std::string(506, 'a') + "\r\n");
    ASSERT_TRUE(r.ok);
    EXPECT_EQ(r.texts[0].size(), 506u);
}

TEST(ReplyParser, AcceptsMaximumLineCount) {
    const parsed r = run_everywhere(many_lines(max_reply_lines - 1));
    ASSERT_TRUE(r.ok);
    EXPECT_EQ(r.lines[0], max_reply_lines);
}

TEST(ReplyParser, StaysFailedUntilReset) {
    reply_parser p;
    ASSERT_FALSE(p.feed("xyz\r\n").has_value());
    const auto again = p.feed("250 ok\r\n");
    ASSERT_FALSE(again.has_value());
    EXPECT_EQ(again.error(), reply_error::bad_code);
    p.reset();
    const auto fresh = p.feed("250 ok\r\n");
    ASSERT_TRUE(fresh.has_value());
    EXPECT_TRUE(fresh->complete);
}

struct enhanced_case {
    const char* name;
    std::uint16_t code;
    const char* text;
    enhanced_status expected;

    friend void PrintTo(const enhanced_case& c, std::ostream* os) { *os << c.name; }
};

class EnhancedStatus : public ::testing::TestWithParam<enhanced_case> {};

TEST_P(EnhancedStatus, ParsesOnlyWellFormedMatchingCodes) {
    const enhanced_case& c = GetParam();
    EXPECT_EQ(parse_enhanced_status(c.code, c.text), c.expected);
}

// clang-format off
const enhanced_case enhanced_cases[] = {
    {"Simple", 250, "2.0.0 Ok", {2, 0, 0}},
    {"ThreeDigitParts", 550, "5.123.456 no", {5, 123, 456}},
    {"AloneOnTheLine", 451, "4.3.0", {4, 3, 0}},
    {"ClassMismatch", 550, "4.1.1 no", {}},
    {"NoEnhancedCode", 250, "Ok", {}},
    {"FourDigitSubject", 550, "5.1234.1 no", {}},
    {"MissingDetail", 550, "5.1. no", {}},
    {"NoSpaceAfter", 550, "5.1.1x no", {}},
    {"ThreeHundredClass", 354, "3.0.0 go", {}},
    {"Empty", 250, "", {}},
};
// clang-format on

INSTANTIATE_TEST_SUITE_P(Codes, EnhancedStatus, ::testing::ValuesIn(enhanced_cases),
                         [](const auto& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace ringrelay::protocol
