// The relay in-process over loopback with the fault storage backend: a disk fault answers
// 452 4.3.1 / 451 4.3.0 (never 250), the same session and shard keep serving, and only the
// messages that got 250 are in the spool afterwards.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <string>

#include "core/config.h"
#include "queue/relay.h"

using namespace ringrelay;

namespace {

class client {
public:
    explicit client(const core::endpoint& e) {
        _fd = ::socket(e.family(), SOCK_STREAM | SOCK_CLOEXEC, 0);
        timeval tv{10, 0};
        setsockopt(_fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        EXPECT_EQ(::connect(_fd, e.addr(), e.length), 0);
    }
    ~client() { ::close(_fd); }
    void send(const std::string& s) { ASSERT_EQ(::send(_fd, s.data(), s.size(), MSG_NOSIGNAL), static_cast<ssize_t>(s.size())); }
    // Reads one complete reply (possibly multi-line); empty on timeout or EOF.
    std::string reply() {
        for (;;) {
            // A reply is complete at a line whose 4th character is a space.
            std::size_t start = 0;
            while (true) {
                const auto eol = _buf.find("\r\n", start);
                if (eol == std::string::npos) break;
                if (eol - start >= 4 && _buf[start + 3] == ' ') {
                    std::string r = _buf.substr(0, eol + 2);
                    _buf.erase(0, eol + 2);
                    return r;
                }
                start = eol + 2;
            }
            char tmp[4096];
            const ssize_t n = ::recv(_fd, tmp, sizeof tmp, 0);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) return {};
            _buf.append(tmp, static_cast<std::size_t>(n));
        }
    }

private:
    int _fd = -1;
    std::string _buf;
};

std::string send_message(client& c, int n) {
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

    std::atomic<queue::fault_storage*> faults{nullptr};
    {
        queue::relay node(*cfg, [&](core::reactor& r) {
            auto s = std::make_unique<queue::fault_storage>(r);
            faults = s.get();
            return s;
        });
        auto started = node.start();
        if (!started && started.error().find("lacks io_uring") != std::string::npos) GTEST_SKIP() << started.error();
        ASSERT_TRUE(started.has_value()) << started.error();
        ASSERT_NE(faults.load(), nullptr);

        client c(node.endpoints().at(0));
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
