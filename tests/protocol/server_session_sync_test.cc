// tests/protocol/server_session_sync_test.cc: RFC 2920 §3.1 synchronisation points. A command
// after which the client must wait for the reply (EHLO, HELO, DATA, NOOP, VRFY, STARTTLS),
// found with more input behind it in the same read, is not executed: 554 5.5.0 and the session
// ends. Reads are modelled by run_dialogue's cut offsets (one piece = one read).
#include <gtest/gtest.h>

#include "protocol/server_session.h"
#include "session_harness.h"

namespace ringrelay::protocol {
namespace {

using testing::banner;
using testing::ehlo_reply;
using testing::run_dialogue;

const std::string violation = "554 5.5.0 Error: SMTP protocol synchronization\r\n";

server_config enforcing() {
    server_config c = testing::test_config();
    c.sync = pipelining_sync::enforce;
    return c;
}

TEST(PipeliningSync, IsEnforcedByDefault) {
    EXPECT_EQ(server_config{}.sync, pipelining_sync::enforce);
}

TEST(PipeliningSync, CommandAfterEhloInSameReadIsRefusedAndEhloNotExecuted) {
    const std::string in = "EHLO c\r\nMAIL FROM:<a@example.net>\r\n";
    const auto t = run_dialogue(enforcing(), testing::trusted_client(), in, {});
    EXPECT_EQ(t.out, banner + violation);
    EXPECT_TRUE(t.closed);
}

TEST(PipeliningSync, SameBytesInSeparateReadsAreFine) {
    const std::string in = "EHLO c\r\nMAIL FROM:<a@example.net>\r\n";
    const auto t = run_dialogue(enforcing(), testing::trusted_client(), in, {8});
    EXPECT_EQ(t.out, banner + ehlo_reply + "250 2.1.0 Ok\r\n");
    EXPECT_FALSE(t.closed);
}

TEST(PipeliningSync, EnvelopeGroupEndingInDataIsAllowed) {
    const std::string in = "EHLO c\r\nMAIL FROM:<a@example.net>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n"
                           "Subject: s\r\n\r\nbody\r\n.\r\nQUIT\r\n";
    const std::size_t data_end = in.find("DATA\r\n") + 6;
    const auto t = run_dialogue(enforcing(), testing::trusted_client(), in, {8, data_end});
    ASSERT_EQ(t.messages.size(), 1u) << t.out;
    EXPECT_NE(t.out.find("354 "), std::string::npos) << t.out;
    EXPECT_NE(t.out.find("250 2.0.0 Ok: queued as"), std::string::npos) << t.out;
    EXPECT_TRUE(t.out.ends_with("221 2.0.0 Bye\r\n")) << t.out;
    EXPECT_EQ(t.out.find("554 5.5.0"), std::string::npos) << t.out;
}

TEST(PipeliningSync, BodySentWithDataBefore354IsRefusedAndNothingQueued) {
    const std::string in = "EHLO c\r\nMAIL FROM:<a@example.net>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n"
                           "Subject: s\r\n\r\nbody\r\n.\r\n";
    const auto t = run_dialogue(enforcing(), testing::trusted_client(), in, {8});
    EXPECT_TRUE(t.messages.empty());
    EXPECT_EQ(t.out.find("354 "), std::string::npos) << t.out;
    EXPECT_TRUE(t.out.ends_with(violation)) << t.out;
    EXPECT_TRUE(t.closed);
}

TEST(PipeliningSync, EachSynchronisingVerb) {
    for (const char* verb : {"HELO c", "NOOP", "VRFY u", "STARTTLS", "DATA"}) {
        const std::string in = "EHLO c\r\nMAIL FROM:<a@example.net>\r\nRCPT TO:<b@example.org>\r\n" +
                               std::string(verb) + "\r\nRSET\r\n";
        const std::size_t cut = in.find(verb);
        const auto t = run_dialogue(enforcing(), testing::trusted_client(), in, {8, cut});
        EXPECT_TRUE(t.out.ends_with(violation)) << verb << ":\n" << t.out;
        EXPECT_TRUE(t.closed) << verb;
    }
}

TEST(PipeliningSync, NonSynchronisingVerbsMayBeFollowed) {
    const std::string in = "EHLO c\r\nRSET\r\nMAIL FROM:<a@example.net>\r\nRCPT TO:<b@example.org>\r\nRSET\r\n";
    const auto t = run_dialogue(enforcing(), testing::trusted_client(), in, {8});
    EXPECT_EQ(t.out, banner + ehlo_reply + "250 2.0.0 Ok\r\n250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.0.0 Ok\r\n");
    EXPECT_FALSE(t.closed);
}

TEST(PipeliningSync, BytesAfterQuitAreIgnored) {
    const std::string in = "EHLO c\r\nQUIT\r\nMAIL FROM:<a@example.net>\r\n";
    const auto t = run_dialogue(enforcing(), testing::trusted_client(), in, {8});
    EXPECT_EQ(t.out, banner + ehlo_reply + "221 2.0.0 Bye\r\n");
    EXPECT_TRUE(t.closed);
}

TEST(PipeliningSync, OffMeansSplitDoesNotMatter) {
    server_config c = enforcing();
    c.sync = pipelining_sync::off;
    const std::string in = "EHLO c\r\nNOOP\r\nNOOP\r\n";
    const auto t = run_dialogue(c, testing::trusted_client(), in, {});
    EXPECT_EQ(t.out, banner + ehlo_reply + "250 2.0.0 Ok\r\n250 2.0.0 Ok\r\n");
}

}  // namespace
}  // namespace ringrelay::protocol
