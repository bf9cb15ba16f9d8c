// The relay in-process over loopback with the fault storage backend: a disk fault answers
// 452 4.3.1 / 451 4.3.0 (never 250), the same session and shard keep serving, and only the
// messages that got 250 are in the spool afterwards.
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <string>

#include "core/config.h"
#include "queue/bounce_rules.h"
#include "queue/relay.h"
#include "tests/queue/loopback_smtp.h"

using namespace ringrelay;

namespace {

using queue::testing::smtp_client;

std::string send_message(smtp_client& c, int n) {
    c.send("MAIL FROM:<s@example.org>\r\n");
    EXPECT_EQ(c.reply().substr(0, 3), "250");
    c.send("RCPT TO:<r@example.net>\r\n");
    EXPECT_EQ(c.reply().substr(0, 3), "250");
    c.send("DATA\r\n");
    EXPECT_EQ(c.reply().substr(0, 3), "354");
    c.send("Subject: message " + std::to_string(n) + "\r\n\r\nbody\r\n.\r\n");
    return c.reply();
}

}  // namespace

TEST(RelayFaults, DiskFaultsAnswer4xxAndServiceContinues) {
    char tmpl[] = "/tmp/ringrelay-faults-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    const std::string dir = tmpl;
    // --hold: nothing is delivered, so no DSN or journal write takes an injected fault.
    const char* argv[] = {"ringrelay", "--listen", "127.0.0.1:0", "--shards", "1", "--spool", tmpl, "--log", "", "--hold"};
    auto cfg = core::load_config(10, argv);
    ASSERT_TRUE(cfg.has_value()) << cfg.error().message;

    auto rules = queue::load_bounce_rules("");
    ASSERT_TRUE(rules.has_value()) << rules.error();
    std::atomic<queue::fault_storage*> faults{nullptr};
    {
        queue::relay node(*cfg, std::move(rules->table), [&](core::reactor& r) {
            auto s = std::make_unique<queue::fault_storage>(r);
            faults = s.get();
            return s;
        });
        auto started = node.start();
        if (!started && started.error().find("lacks io_uring") != std::string::npos) GTEST_SKIP() << started.error();
        ASSERT_TRUE(started.has_value()) << started.error();
        ASSERT_NE(faults.load(), nullptr);

        smtp_client c(node.endpoints().at(0));
        EXPECT_EQ(c.reply().substr(0, 4), "220 ");
        c.send("EHLO test.example\r\n");
        EXPECT_EQ(c.reply().substr(0, 4), "250-");

        EXPECT_EQ(send_message(c, 1).substr(0, 24), "250 2.0.0 Ok: queued as ");
        faults.load()->fail_next_write(ENOSPC);
        EXPECT_EQ(send_message(c, 2), "452 4.3.1 Insufficient system storage\r\n");
        faults.load()->fail_next_write(EIO);
        EXPECT_EQ(send_message(c, 3), "451 4.3.0 Error: queue file write error\r\n");
        faults.load()->fail_next_sync(EIO);
        EXPECT_EQ(send_message(c, 4), "451 4.3.0 Error: queue file write error\r\n");
        EXPECT_EQ(send_message(c, 5).substr(0, 24), "250 2.0.0 Ok: queued as ");
        c.send("QUIT\r\n");
        EXPECT_EQ(c.reply().substr(0, 3), "221");
        EXPECT_EQ(node.messages_queued(), 2u);
        EXPECT_EQ(node.messages_failed(), 3u);
        node.request_stop();
        node.join();
    }
    auto listing = queue::list_spool(dir);
    ASSERT_TRUE(listing.has_value());
    EXPECT_EQ(listing->messages.size(), 2u) << "only the two messages that got 250 may be spooled";
    std::filesystem::remove_all(dir);
}
