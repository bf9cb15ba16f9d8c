// The relay in-process over loopback (issue 16): a bounce is classified by the relay's one rule
// table whether the delivery log is on or not, and only a bounce of class invalid-recipient or
// inactive-mailbox puts its recipient on the sender's tenant's suppression list. A scripted next
// hop refuses recipients with real replies (etc/bounce-classes.json's examples, Postfix's texts);
// the tenant's next RCPTs show what was suppressed (550 5.1.1) and what was not (250).
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <map>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "core/config.h"
#include "queue/bounce_rules.h"
#include "queue/relay.h"
#include "tests/queue/loopback_smtp.h"

using namespace ringrelay;
using queue::testing::scripted_next_hop;
using queue::testing::smtp_client;

namespace {

struct refusal {
    const char* local;  // the recipient's local part at bad.test
    const char* reply;  // what the next hop answers its RCPT with
    bool suppressed;    // whether the tenant's next RCPT to it is refused
};

// Their classes (tests/queue/suppression_test.cc checks each one's verdict).
const refusal refusals[] = {
    {"gone", "550 5.1.1 <gone@bad.test>: Recipient address rejected: User unknown", true},  // invalid-recipient
    // invalid-recipient by its text alone (no enhanced code)
    {"nobody", "554 delivery error: dd This user doesn't have a yahoo.com account (nobody@bad.test) [-5] - "
               "mta123.mail.mud.yahoo.com", true},
    {"dead", "550 5.2.1 The email account that you tried to reach is inactive.", true},  // inactive-mailbox
    {"full", "552 5.2.2 The recipient's inbox is out of storage space and inactive.", false},  // mailbox-full
    {"policy", "550 5.7.1 The user or domain that you are sending to (or from) has a policy that prohibits the "
               "email that you sent.", false},
    {"busy", "550 5.2.1 The user you are trying to contact is receiving email at a rate that prevents additional "
             "messages from being delivered.", false},  // rate-limited
    // A 4xx defers, whatever its class (this one reads as invalid-recipient): never suppressed.
    {"later", "450 4.1.1 <later@bad.test>: Recipient address rejected: User unknown in local recipient table", false},
};

std::string expect_reply(smtp_client& c, const std::string& command, const char* code) {
    c.send(command + "\r\n");
    std::string r = c.reply();
    EXPECT_EQ(r.substr(0, 3), code) << command << " -> " << r;
    return r;
}

}  // namespace

TEST(RelaySuppression, BouncesAreClassifiedAndSuppressedWithTheLogOff) {
    std::map<std::string, std::string> replies;
    for (const refusal& r : refusals) replies.emplace(r.local, r.reply);
    scripted_next_hop next_hop(std::move(replies));

    char tmpl[] = "/tmp/ringrelay-suppression-relay-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    const std::string dir = tmpl;
    const std::string smarthost = "127.0.0.1:" + std::to_string(next_hop.port());
    // --log '': no delivery log at all. Everything goes to the next hop, the DSNs to the sender too.
    const char* argv[] = {"ringrelay", "--listen", "127.0.0.1:0", "--shards", "2", "--spool", tmpl, "--log", "",
                          "--smarthost", smarthost.c_str(), "--retry-intervals", "1h"};
    auto cfg = core::load_config(static_cast<int>(std::size(argv)), argv);
    ASSERT_TRUE(cfg.has_value()) << cfg.error().message;
    auto rules = queue::load_bounce_rules("");
    ASSERT_TRUE(rules.has_value()) << rules.error();
    {
        queue::relay node(*cfg, std::move(rules->table));
        auto started = node.start();
        if (!started && started.error().find("lacks io_uring") != std::string::npos) GTEST_SKIP() << started.error();
        ASSERT_TRUE(started.has_value()) << started.error();

        smtp_client c(node.endpoints().at(0));
        EXPECT_EQ(c.reply().substr(0, 4), "220 ");
        expect_reply(c, "EHLO client.test", "250");
        expect_reply(c, "MAIL FROM:<news@a.example>", "250");
        for (const refusal& r : refusals) expect_reply(c, std::string("RCPT TO:<") + r.local + "@bad.test>", "250");
        expect_reply(c, "RCPT TO:<ok@bad.test>", "250");
        expect_reply(c, "DATA", "354");
        expect_reply(c, "Subject: bounces\r\n\r\nclassified\r\n.", "250");

        // One job carries every recipient, and its outcomes are applied together: once ok@ is
        // counted delivered, every refusal above has been classified (and suppressed or not).
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
        while (node.recipients_delivered() == 0 && std::chrono::steady_clock::now() < deadline)
            std::this_thread::sleep_for(std::chrono::milliseconds(50));
        ASSERT_GE(node.recipients_delivered(), 1u) << "the message never reached the next hop";

        // The tenant (the sender's domain), another of its senders.
        expect_reply(c, "RSET", "250");
        expect_reply(c, "MAIL FROM:<billing@a.example>", "250");
        for (const refusal& r : refusals) {
            const std::string rcpt = std::string(r.local) + "@bad.test";
            const std::string got = expect_reply(c, "RCPT TO:<" + rcpt + ">", r.suppressed ? "550" : "250");
            if (r.suppressed) {
                EXPECT_EQ(got.rfind("550 5.1.1 <" + rcpt + ">: recipient suppressed after a hard bounce on ", 0), 0u)
                    << r.reply << " -> " << got;
            }
        }
        expect_reply(c, "RCPT TO:<ok@bad.test>", "250");
        // Another tenant's list is its own.
        expect_reply(c, "RSET", "250");
        expect_reply(c, "MAIL FROM:<news@b.example>", "250");
        expect_reply(c, "RCPT TO:<gone@bad.test>", "250");
        expect_reply(c, "QUIT", "221");
        node.request_stop();
        node.join();
    }
    std::filesystem::remove_all(dir);
}
