// Unit tests of queue/record.h: records round-trip, and every kind of damage is detected.
#include "queue/record.h"

#include <gtest/gtest.h>

#include <string>

using namespace ringrelay;
using namespace ringrelay::queue;

namespace {

protocol::envelope sample_envelope() {
    protocol::envelope env;
    env.queue_id = 0x0123456789ABCDEFull;
    env.helo = "client.example";
    env.mail_from = "sender@example.org";
    env.rcpt_to = {"a@example.net", "b@example.com"};
    env.body = protocol::body_type::eight_bit_mime;
    env.smtputf8 = true;
    return env;
}

std::string encode(const std::string& message) {
    std::string out;
    encode_message_record(out, sample_envelope(), "127.0.0.1", 1234567, message);
    out += message;
    return out;
}

}  // namespace

TEST(Record, RoundTripsEnvelopeAndMessage) {
    const std::string message = "Received: x\r\n\r\nbody \xff\r\n";
    const std::string bytes = encode(message);
    auto d = decode_record(bytes);
    ASSERT_TRUE(d.has_value());
    EXPECT_EQ(d->header.queue_id, 0x0123456789ABCDEFull);
    EXPECT_EQ(d->header.received_us, 1234567u);
    EXPECT_EQ(d->envelope.helo, "client.example");
    EXPECT_EQ(d->envelope.mail_from, "sender@example.org");
    EXPECT_EQ(d->envelope.rcpt_to, (std::vector<std::string>{"a@example.net", "b@example.com"}));
    EXPECT_EQ(d->envelope.body, protocol::body_type::eight_bit_mime);
    EXPECT_TRUE(d->envelope.smtputf8);
    EXPECT_EQ(d->client, "127.0.0.1");
    EXPECT_EQ(d->message, message);
    EXPECT_EQ(d->record_size, bytes.size());
}

TEST(Record, NullSenderRoundTrips) {
    protocol::envelope env = sample_envelope();
    env.mail_from.clear();
    std::string out;
    encode_message_record(out, env, "::1", 1, "m");
    out += "m";
    auto d = decode_record(out);
    ASSERT_TRUE(d.has_value());
    EXPECT_EQ(d->envelope.mail_from, "");
}

TEST(Record, EveryTruncationIsReportedAsTorn) {
    const std::string bytes = encode("Subject: t\r\n\r\nhello\r\n");
    for (std::size_t len = 0; len < bytes.size(); ++len) {
        auto d = decode_record(std::string_view(bytes).substr(0, len));
        ASSERT_FALSE(d.has_value()) << len;
        EXPECT_EQ(d.error(), decode_error::truncated) << len;
    }
}

TEST(Record, EveryFlippedByteIsDetected) {
    const std::string bytes = encode("Subject: t\r\n\r\nhello\r\n");
    for (std::size_t i = 0; i < bytes.size(); ++i) {
        std::string damaged = bytes;
        damaged[i] = static_cast<char>(damaged[i] ^ 0x20);
        auto d = decode_record(damaged);
        EXPECT_FALSE(d.has_value()) << "flip at " << i;
    }
}

TEST(Record, ImpossibleLengthIsRejectedWithoutReadingPastTheBuffer) {
    std::string bytes = encode("x");
    bytes[8] = bytes[9] = bytes[10] = bytes[11] = '\xff';  // payload length 4 GiB - 1
    auto d = decode_record(bytes);
    ASSERT_FALSE(d.has_value());
    EXPECT_EQ(d.error(), decode_error::bad_length);
}
