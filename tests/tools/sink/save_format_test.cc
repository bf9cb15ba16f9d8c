// tests/tools/sink/save_format_test.cc: the --save file: golden envelope block, round trip
// through parse_saved() with awkward message bytes, file names, and damaged files refused.
#include "tools/sink/save_format.h"

#include <gtest/gtest.h>

#include <string>

namespace ringrelay::sink {
namespace {

using namespace std::string_literals;

protocol::envelope sample_envelope() {
    protocol::envelope env;
    env.queue_id = 0x0123456789ABCDEFULL;
    env.helo = "client.example";
    env.mail_from = "sender@example.org";
    env.rcpt_to = {"one@example.net", "two@example.com"};
    return env;
}

TEST(SaveFormat, EnvelopeBlockIsGolden) {
    std::string out;
    append_save_header(out, sample_envelope(), "192.0.2.7", 1234);
    EXPECT_EQ(out,
              "X-Sink-Queue-Id: 0123456789ABCDEF\r\n"
              "X-Sink-Client: 192.0.2.7\r\n"
              "X-Sink-Helo: client.example\r\n"
              "X-Sink-Mail-From: <sender@example.org>\r\n"
              "X-Sink-Rcpt-To: <one@example.net>\r\n"
              "X-Sink-Rcpt-To: <two@example.com>\r\n"
              "X-Sink-Size: 1234\r\n");
}

TEST(SaveFormat, RoundTripKeepsEnvelopeAndExactBytes) {
    // Bytes a naive reader would trip over: an X-Sink- line inside, NUL, 8-bit, no final CRLF.
    const std::string message = "Received: from x\r\nX-Sink-Size: 3\r\n\r\nbody\0\xff\r\n.\r\nend"s;
    std::string file;
    append_save_header(file, sample_envelope(), "::1", message.size());
    file += message;
    const auto parsed = parse_saved(file);
    ASSERT_TRUE(parsed.has_value()) << parsed.error();
    EXPECT_EQ(parsed->queue_id, "0123456789ABCDEF");
    EXPECT_EQ(parsed->client, "::1");
    EXPECT_EQ(parsed->helo, "client.example");
    EXPECT_EQ(parsed->mail_from, "sender@example.org");
    EXPECT_EQ(parsed->rcpt_to, (std::vector<std::string>{"one@example.net", "two@example.com"}));
    EXPECT_EQ(parsed->message, message);
}

TEST(SaveFormat, NullSenderRoundTrips) {
    protocol::envelope env = sample_envelope();
    env.mail_from.clear();
    std::string file;
    append_save_header(file, env, "192.0.2.7", 2);
    EXPECT_NE(file.find("X-Sink-Mail-From: <>\r\n"), std::string::npos);
    file += "hi";
    const auto parsed = parse_saved(file);
    ASSERT_TRUE(parsed.has_value()) << parsed.error();
    EXPECT_EQ(parsed->mail_from, "");
    EXPECT_EQ(parsed->message, "hi");
}

TEST(SaveFormat, DamagedFilesAreRefused) {
    std::string good;
    append_save_header(good, sample_envelope(), "192.0.2.7", 5);
    good += "12345";
    ASSERT_TRUE(parse_saved(good).has_value());
    EXPECT_FALSE(parse_saved(good.substr(0, good.size() - 1)).has_value()) << "truncated message";
    EXPECT_FALSE(parse_saved(good + "6").has_value()) << "trailing bytes";
    EXPECT_FALSE(parse_saved(good.substr(0, 40)).has_value()) << "truncated envelope";
    EXPECT_FALSE(parse_saved("Received: x\r\n").has_value());
    std::string no_rcpt = good;
    for (std::size_t p; (p = no_rcpt.find("X-Sink-Rcpt-To:")) != std::string::npos;)
        no_rcpt.erase(p, no_rcpt.find("\r\n", p) + 2 - p);
    EXPECT_FALSE(parse_saved(no_rcpt).has_value());
}

TEST(SaveFormat, NamesCarryTheQueueId) {
    char name[saved_name_size];
    char temp[temp_name_size];
    saved_name(0xABCDEF0123456789ULL, name);
    temp_name(0xABCDEF0123456789ULL, temp);
    EXPECT_STREQ(name, "ABCDEF0123456789.eml");
    EXPECT_STREQ(temp, ".ABCDEF0123456789.tmp");
}

}  // namespace
}  // namespace ringrelay::sink
