// tests/tools/bench/message_template_test.cc: the generated message: exact size, CRLF lines of
// printable US-ASCII, the RFC 5322 header fields, and the per-message sequence stamp.
#include "tools/bench/message_template.h"

#include <gtest/gtest.h>

#include <set>
#include <string>
#include <string_view>
#include <vector>

namespace ringrelay::bench {
namespace {

constexpr std::int64_t some_time = 1'795'000'000;  // 2026-11-18
constexpr std::string_view from = "bench@ringrelay-bench.test";

message_template make(std::uint64_t size) {
    auto m = message_template::make(size, from, some_time, 0x0123456789abcdefull);
    EXPECT_TRUE(m.has_value()) << (m ? "" : m.error());
    return *m;
}

std::vector<std::string_view> lines_of(std::string_view text) {
    std::vector<std::string_view> lines;
    while (!text.empty()) {
        const std::size_t crlf = text.find("\r\n");
        EXPECT_NE(crlf, std::string_view::npos) << "text does not end in CRLF";
        if (crlf == std::string_view::npos) break;
        lines.push_back(text.substr(0, crlf));
        text.remove_prefix(crlf + 2);
    }
    return lines;
}

// Every size from the smallest up to a few lines, then round sizes: exact, and well formed.
TEST(MessageTemplate, SizeIsExactAndLinesAreWellFormed) {
    std::vector<std::uint64_t> sizes;
    const std::size_t smallest = message_template::minimum_size(from);
    for (std::uint64_t s = smallest; s < smallest + 3 * message_template::line_length + 5; ++s) sizes.push_back(s);
    for (const std::uint64_t s : {1024ull, 2048ull, 100ull * 1024, 1024ull * 1024 + 1}) sizes.push_back(s);
    for (const std::uint64_t size : sizes) {
        const message_template m = make(size);
        const std::string& t = m.text();
        ASSERT_EQ(t.size(), size);
        ASSERT_GE(t.size(), 2u);
        ASSERT_EQ(t.substr(t.size() - 2), "\r\n") << size;
        for (const std::string_view line : lines_of(t)) {
            ASSERT_LE(line.size() + 2, message_template::line_length) << size;  // RFC 5322 §2.1.1: 78
            ASSERT_FALSE(!line.empty() && line.front() == '.') << size;         // nothing to dot-stuff
            for (const char c : line) {
                ASSERT_TRUE(c == '\t' || (c >= 0x20 && c < 0x7f)) << "size " << size << " octet " << int(c);
                ASSERT_NE(c, '\r');
                ASSERT_NE(c, '\n');
            }
        }
    }
}

TEST(MessageTemplate, HasTheRfc5322HeaderFieldsThenAnEmptyLine) {
    const message_template m = make(2048);
    const std::vector<std::string_view> lines = lines_of(m.text());
    std::size_t blank = 0;
    while (blank < lines.size() && !lines[blank].empty()) ++blank;
    ASSERT_LT(blank, lines.size()) << "no empty line ends the header";
    std::set<std::string> names;
    for (std::size_t i = 0; i < blank; ++i) {
        const std::size_t colon = lines[i].find(':');
        ASSERT_NE(colon, std::string_view::npos) << lines[i];
        ASSERT_GT(colon, 0u);
        const std::string name(lines[i].substr(0, colon));
        for (const char c : name) ASSERT_TRUE(c > 0x20 && c < 0x7f && c != ':') << name;  // RFC 5322 §3.6.8
        EXPECT_TRUE(names.insert(name).second) << "duplicate " << name;
    }
    for (const char* required : {"From", "To", "Subject", "Date", "Message-ID", "X-Bench-Seq", "MIME-Version"})
        EXPECT_TRUE(names.count(required)) << required;
    EXPECT_NE(m.text().find("From: ringrelay-bench <bench@ringrelay-bench.test>\r\n"), std::string::npos);
    EXPECT_NE(m.text().find("Date: Wed, 18 Nov 2026 11:06:40 +0000"), std::string::npos) << m.text().substr(0, 300);
}

TEST(MessageTemplate, HeaderSizeMatchesWhatMakeProduces) {
    const message_template m = make(message_template::minimum_size(from));
    EXPECT_EQ(m.text().size(), message_template::header_size(from) + 2);
    EXPECT_EQ(m.text().substr(m.text().size() - 6), "\r\n\r\n\r\n");
}

TEST(MessageTemplate, RefusesSizesBelowTheHeader) {
    const auto m = message_template::make(message_template::minimum_size(from) - 1, from, some_time, 1);
    ASSERT_FALSE(m.has_value());
    EXPECT_NE(m.error().find("--size"), std::string::npos);
}

TEST(MessageTemplate, NullSenderGetsAPlaceholderFrom) {
    const auto m = message_template::make(1024, "", some_time, 1);
    ASSERT_TRUE(m.has_value());
    EXPECT_NE(m->text().find("From: ringrelay-bench <bench@ringrelay-bench.invalid>\r\n"), std::string::npos);
}

TEST(MessageTemplate, StampWritesTheSequenceInBothPlaces) {
    const message_template m = make(4096);
    std::string copy = m.text();
    ASSERT_EQ(read_bench_seq(copy).value(), 0u);
    m.stamp(copy, 42);
    EXPECT_EQ(copy.size(), m.text().size());
    EXPECT_EQ(read_bench_seq(copy).value(), 42u);
    EXPECT_NE(copy.find("X-Bench-Seq: 00000000000000000042\r\n"), std::string::npos);
    EXPECT_NE(copy.find("Message-ID: <00000000000000000042.0123456789abcdef@ringrelay-bench>\r\n"), std::string::npos);
    // Restamping a stamped copy replaces the number; nothing else changes.
    m.stamp(copy, 18'446'744'073'709'551'615ull);
    EXPECT_EQ(read_bench_seq(copy).value(), 18'446'744'073'709'551'615ull);
    m.stamp(copy, 0);
    EXPECT_EQ(copy, m.text());
}

TEST(ReadBenchSeq, RejectsMissingOrMalformedHeader) {
    EXPECT_FALSE(read_bench_seq("From: a@b\r\n\r\nX-Bench-Seq: 5\r\n").has_value());  // in the body
    EXPECT_FALSE(read_bench_seq("X-Bench-Seq: abc\r\n\r\n").has_value());
    EXPECT_FALSE(read_bench_seq("X-Bench-Seq: 12x\r\n\r\n").has_value());
    EXPECT_FALSE(read_bench_seq("Old-X-Bench-Seq: 12\r\n\r\n").has_value());
    EXPECT_EQ(read_bench_seq("Subject: s\r\nX-Bench-Seq: 7\r\n\r\nbody\r\n").value(), 7u);
}

}  // namespace
}  // namespace ringrelay::bench
