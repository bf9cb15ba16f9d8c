// Unit tests of protocol/body_encoding.h: line-end normalization (RFC 5321 §2.3.8) and
// dot-stuffing (§4.5.2) of outgoing bodies. A labelled table gives, for each body, the exact
// DATA (stuffed) and BDAT (unstuffed) octets; for every case the size function agrees with the
// appended length, the one-octet reference agrees with the bulk walker, and text already in
// `out` is kept. Every body of up to 7 octets over {CR, LF, '.', 'a'} is also checked against
// the reference and the contract's output rules.
#include "protocol/body_encoding.h"

#include <gtest/gtest.h>

#include <ostream>
#include <string>

namespace ringrelay::protocol {
namespace {

using namespace std::string_literals;

struct body_case {
    const char* name;
    std::string body;
    std::string data;  // dot_stuffing::on
    std::string bdat;  // dot_stuffing::off; its size is normalized_body_size(body)
    friend void PrintTo(const body_case& c, std::ostream* os) { *os << c.name; }
};

std::string encode(std::string_view body, dot_stuffing stuffing) {
    std::string out;
    append_normalized_body(out, body, stuffing);
    return out;
}

std::string encode_reference(std::string_view body, dot_stuffing stuffing) {
    std::string out;
    reference_append_normalized_body(out, body, stuffing);
    return out;
}

class BodyEncoding : public ::testing::TestWithParam<body_case> {};

TEST_P(BodyEncoding, NormalizesLineEndsAndStuffsDotsForData) {
    const body_case& c = GetParam();
    EXPECT_EQ(encode(c.body, dot_stuffing::on), c.data);
    EXPECT_EQ(encode(c.body, dot_stuffing::off), c.bdat);
}

TEST_P(BodyEncoding, SizeIsTheUnstuffedLength) {
    const body_case& c = GetParam();
    EXPECT_EQ(normalized_body_size(c.body), c.bdat.size());
    EXPECT_EQ(normalized_body_size(c.body), encode(c.body, dot_stuffing::off).size());
}

TEST_P(BodyEncoding, AgreesWithOneOctetReference) {
    const body_case& c = GetParam();
    EXPECT_EQ(encode_reference(c.body, dot_stuffing::on), c.data);
    EXPECT_EQ(encode_reference(c.body, dot_stuffing::off), c.bdat);
}

TEST_P(BodyEncoding, AppendsBehindExistingOutput) {
    const body_case& c = GetParam();
    std::string out = "BDAT 5 LAST\r\n";
    append_normalized_body(out, c.body, dot_stuffing::off);
    EXPECT_EQ(out, "BDAT 5 LAST\r\n" + c.bdat);
}

// clang-format off
INSTANTIATE_TEST_SUITE_P(Bodies, BodyEncoding, ::testing::Values(
    body_case{"Empty", "", "", ""},
    body_case{"OneLine", "hello\r\n", "hello\r\n", "hello\r\n"},
    body_case{"NoFinalCrlf", "hello", "hello\r\n", "hello\r\n"},
    body_case{"NoFinalCrlfAfterLines", "a\r\nb", "a\r\nb\r\n", "a\r\nb\r\n"},
    body_case{"HeaderAndBody", "Subject: t\r\n\r\nhello\r\n", "Subject: t\r\n\r\nhello\r\n", "Subject: t\r\n\r\nhello\r\n"},
    body_case{"EmptyLinesKept", "\r\n\r\n", "\r\n\r\n", "\r\n\r\n"},
    body_case{"BareLf", "a\nb\n", "a\r\nb\r\n", "a\r\nb\r\n"},
    body_case{"BareLfOnly", "\n", "\r\n", "\r\n"},
    body_case{"BareCr", "a\rb\r", "a\r\nb\r\n", "a\r\nb\r\n"},
    body_case{"BareCrOnly", "\r", "\r\n", "\r\n"},
    body_case{"BareCrAtEnd", "a\r", "a\r\n", "a\r\n"},
    body_case{"CrCrLf", "\r\r\n", "\r\n\r\n", "\r\n\r\n"},            // a bare CR, then CRLF
    body_case{"LfCr", "a\n\rb", "a\r\n\r\nb\r\n", "a\r\n\r\nb\r\n"},  // LF then CR: two ends
    body_case{"CrDotLf", "\r.\n", "\r\n..\r\n", "\r\n.\r\n"},         // CR and LF split by a dot
    body_case{"CrLfCrLfSplit", "a\r\r\n\nb", "a\r\n\r\n\r\nb\r\n", "a\r\n\r\n\r\nb\r\n"},
    body_case{"LeadingDot", ".hidden\r\n", "..hidden\r\n", ".hidden\r\n"},
    body_case{"LoneDotLine", "a\r\n.\r\nb\r\n", "a\r\n..\r\nb\r\n", "a\r\n.\r\nb\r\n"},
    body_case{"DotOnlyBody", ".", "..\r\n", ".\r\n"},
    body_case{"DoubleDotLine", "..\r\n", "...\r\n", "..\r\n"},
    body_case{"DotMidLineKept", "a.b\r\n", "a.b\r\n", "a.b\r\n"},
    body_case{"DotAfterBareLf", "a\n.b", "a\r\n..b\r\n", "a\r\n.b\r\n"},
    body_case{"DotAfterBareCr", "a\r.b", "a\r\n..b\r\n", "a\r\n.b\r\n"},
    body_case{"SmugglingTerminator", "a\n.\nb", "a\r\n..\r\nb\r\n", "a\r\n.\r\nb\r\n"},  // "<LF>.<LF>"
    body_case{"SmugglingCrOnly", "a\r.\rb", "a\r\n..\r\nb\r\n", "a\r\n.\r\nb\r\n"},     // "<CR>.<CR>"
    body_case{"NulAndHighOctets", "\0\xff\x80\r\n"s, "\0\xff\x80\r\n"s, "\0\xff\x80\r\n"s},
    body_case{"LongLineNotFolded", std::string(1200, 'x'), std::string(1200, 'x') + "\r\n", std::string(1200, 'x') + "\r\n"},
    body_case{"ManyBareCrs", std::string(50, '\r'), [] { std::string s; for (int i = 0; i < 50; ++i) s += "\r\n"; return s; }(),
              [] { std::string s; for (int i = 0; i < 50; ++i) s += "\r\n"; return s; }()}),
    [](const auto& info) { return std::string(info.param.name); });
// clang-format on

// The contract's output rules: only CRLF line ends, the last line ended, and with stuffing no
// line that starts with a single '.' (every leading '.' is doubled).
void expect_well_formed(std::string_view out, dot_stuffing stuffing, std::string_view body) {
    const std::string what = testing::PrintToString(std::string(body));
    for (std::size_t i = 0; i < out.size(); ++i) {
        if (out[i] == '\r') {
            ASSERT_TRUE(i + 1 < out.size() && out[i + 1] == '\n') << "bare CR for " << what;
        }
        if (out[i] == '\n') {
            ASSERT_TRUE(i > 0 && out[i - 1] == '\r') << "bare LF for " << what;
        }
    }
    if (!out.empty()) {
        ASSERT_TRUE(out.ends_with("\r\n")) << "last line not ended for " << what;
    }
    if (stuffing == dot_stuffing::on) {
        for (std::size_t start = 0; start < out.size(); start = out.find('\n', start) + 1) {
            if (out[start] == '.') {
                ASSERT_TRUE(start + 1 < out.size() && out[start + 1] == '.') << "unstuffed dot for " << what;
            }
        }
    }
}

TEST(BodyEncodingExhaustive, AgreesWithReferenceOnEveryShortBody) {
    constexpr char alphabet[] = {'\r', '\n', '.', 'a'};
    std::string body;
    std::size_t checked = 0;
    for (std::size_t length = 0; length <= 7; ++length) {
        std::size_t combos = 1;
        for (std::size_t i = 0; i < length; ++i) combos *= 4;
        for (std::size_t k = 0; k < combos; ++k) {
            body.clear();
            for (std::size_t i = 0, v = k; i < length; ++i, v /= 4) body.push_back(alphabet[v % 4]);
            for (const dot_stuffing s : {dot_stuffing::off, dot_stuffing::on}) {
                const std::string fast = encode(body, s);
                ASSERT_EQ(fast, encode_reference(body, s)) << testing::PrintToString(body);
                expect_well_formed(fast, s, body);
                if (s == dot_stuffing::off) {
                    ASSERT_EQ(normalized_body_size(body), fast.size());
                }
            }
            ++checked;
        }
    }
    EXPECT_EQ(checked, 21845u);  // 4^0 + ... + 4^7
}

}  // namespace
}  // namespace ringrelay::protocol
