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

constexpr std::uint32_t salt = 0x5a17c0deu;

std::string encode(const std::string& message, std::uint32_t with_salt = salt) {
    std::string out;
    encode_message_record(out, sample_envelope(), "127.0.0.1", 1234567, message, with_salt);
    out += message;
    return out;
}

}  // namespace

TEST(Record, RoundTripsEnvelopeAndMessage) {
    const std::string message = "Received: x\r\n\r\nbody \xff\r\n";
    const std::string bytes = encode(message);
    auto d = decode_record(bytes, salt);
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
    encode_message_record(out, env, "::1", 1, "m", salt);
    out += "m";
    auto d = decode_record(out, salt);
    ASSERT_TRUE(d.has_value());
    EXPECT_EQ(d->envelope.mail_from, "");
}

TEST(Record, EveryTruncationIsReportedAsTorn) {
    const std::string bytes = encode("Subject: t\r\n\r\nhello\r\n");
    for (std::size_t len = 0; len < bytes.size(); ++len) {
        auto d = decode_record(std::string_view(bytes).substr(0, len), salt);
        ASSERT_FALSE(d.has_value()) << len;
        EXPECT_EQ(d.error(), decode_error::truncated) << len;
    }
}

TEST(Record, EveryFlippedByteIsDetected) {
    const std::string bytes = encode("Subject: t\r\n\r\nhello\r\n");
    for (std::size_t i = 0; i < bytes.size(); ++i) {
        std::string damaged = bytes;
        damaged[i] = static_cast<char>(damaged[i] ^ 0x20);
        auto d = decode_record(damaged, salt);
        EXPECT_FALSE(d.has_value()) << "flip at " << i;
    }
}

TEST(Record, ImpossibleLengthIsRejectedWithoutReadingPastTheBuffer) {
    std::string bytes = encode("x");
    bytes[8] = bytes[9] = bytes[10] = bytes[11] = '\xff';  // payload length 4 GiB - 1
    auto d = decode_record(bytes, salt);
    ASSERT_FALSE(d.has_value());
    EXPECT_EQ(d.error(), decode_error::bad_length);
}

TEST(Record, ChecksumDependsOnTheSegmentSalt) {
    // A record forged inside a message body, say, but written without knowing the segment's
    // salt, does not verify.
    const std::string bytes = encode("Subject: t\r\n\r\nhello\r\n", 0);
    EXPECT_TRUE(decode_record(bytes, 0).has_value());
    auto d = decode_record(bytes, salt);
    ASSERT_FALSE(d.has_value());
    EXPECT_EQ(d.error(), decode_error::bad_checksum);
}

TEST(Record, SegmentRecordRoundTripsAndIsUnsalted) {
    std::string out;
    encode_segment_record(out, salt);
    EXPECT_EQ(out.size(), record_header_size + segment_payload_size);
    auto d = decode_record(out, 0);
    ASSERT_TRUE(d.has_value());
    EXPECT_EQ(d->header.type, record_type::segment);
    EXPECT_EQ(d->salt, salt);
    EXPECT_EQ(d->record_size, out.size());
    EXPECT_TRUE(decode_record(out, 12345).has_value());  // its own CRC ignores the salt
    for (std::size_t i = 0; i < out.size(); ++i) {
        std::string damaged = out;
        damaged[i] = static_cast<char>(damaged[i] ^ 0x01);
        EXPECT_FALSE(decode_record(damaged, 0).has_value()) << "flip at " << i;
    }
}

TEST(Record, OutcomeRecordUsesTheSalt) {
    std::string out;
    encode_outcome_record(out, 7, 8, 1, recipient_status::delivered, 2, 0, salt);
    auto d = decode_record(out, salt);
    ASSERT_TRUE(d.has_value());
    EXPECT_EQ(d->status, recipient_status::delivered);
    EXPECT_FALSE(decode_record(out, salt + 1).has_value());
}
