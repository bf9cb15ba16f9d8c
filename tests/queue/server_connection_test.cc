// Unit tests of queue/server_connection.h, the inbound SMTP engine, over the socketpair
// backend (tests/core/stream_harness.h) with an in-memory commit: the banner comes first;
// an early talker gets 521 5.5.1 and nothing it sent runs; pipelined commands are answered in
// order; input pipelined behind a pending commit is held and resumed once the commit is
// answered; commits answered at once carry on in the same pass; a client gone while its
// commit is pending is retired only after the answer; the command deadline; shutdown;
// STARTTLS with the bytes behind it discarded, then SMTP under TLS.
#include "queue/server_connection.h"

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "protocol/proxy_header.h"
#include "tests/core/stream_harness.h"

namespace ringrelay::queue {
namespace {

using core::testing::stream_harness;
using core::testing::test_tls;

class fake_host final : public server_host, public protocol::session_host {
public:
    explicit fake_host(stream_harness& h) : _h(h) {
        config.hostname = "engine.test.invalid";
        // Whole dialogues in one write: replies depend on the bytes only (RFC 2920
        // synchronisation is the session's, tested in tests/protocol/).
        config.sync = protocol::pipelining_sync::off;
        settings_.min_data_rate = 0;
    }

    core::stream_services stream_services() noexcept override { return _h.services(); }
    const protocol::server_config& server_config() const noexcept override { return config; }
    const server_settings& settings() const noexcept override { return settings_; }
    core::tls_context* tls_context() noexcept override { return tls; }
    bool kernel_tls() const noexcept override { return false; }
    bool stopping() const noexcept override { return stop; }
    void count(server_event event, std::uint64_t n) noexcept override {
        counts[static_cast<std::size_t>(event)] += n;
    }
    bool may_report(server_report) noexcept override { return true; }
    void write_report(server_report, std::string_view text) noexcept override { reports.emplace_back(text); }
    void retire(server_connection&) noexcept override { ++retired; }

    std::uint64_t next_queue_id() noexcept override { return ++_id << 8; }
    std::string_view rfc5322_date() noexcept override { return "Thu, 1 Jan 2026 00:00:00 +0000"; }

    [[nodiscard]] std::uint64_t counted(server_event e) const { return counts[static_cast<std::size_t>(e)]; }

    protocol::server_config config;
    server_settings settings_;
    core::tls_context* tls = nullptr;
    bool stop = false;
    std::uint64_t counts[8]{};
    std::vector<std::string> reports;
    int retired = 0;

private:
    stream_harness& _h;
    std::uint64_t _id = 0;
};

// The engine with an in-memory commit: answered at once (like the sink without --save) or
// left pending until the test answers.
class test_connection final : public server_connection {
public:
    enum class mode : std::uint8_t { pending, at_once };
    test_connection(fake_host& host, int fd, mode m)
        : server_connection(host, fd, protocol::client_info{"192.0.2.7", protocol::relay_trust::trusted},
                            listener_kind::plain, host),
          _mode(m) {}

    void answer(protocol::commit_result r) { commit_done(r); }
    using server_connection::awaiting_commit;
    using server_connection::closing;

    std::vector<std::string> messages;  // as committed
    std::vector<std::string> senders;

private:
    void begin_commit() noexcept override {
        messages.emplace_back(session().message());
        senders.push_back(session().message_envelope().mail_from);
        if (_mode == mode::at_once) commit_done(protocol::commit_result::ok);
    }
    const mode _mode;
};

class ServerConnectionTest : public ::testing::Test {
protected:
    void SetUp() override {
        if (!h.init()) GTEST_SKIP() << "no provided buffer rings / multishot receive";
        host = std::make_unique<fake_host>(h);
    }
    // A started connection over a fresh pair; `peer` is the client's end.
    std::unique_ptr<test_connection> open(test_connection::mode m = test_connection::mode::pending) {
        auto [mine, theirs] = h.socket_pair();
        peer = theirs;
        auto c = std::make_unique<test_connection>(*host, mine, m);
        c->start();
        return c;
    }
    // A started connection whose client writes `bytes` before the first loop turn (so they
    // arrive before the banner's send completed): everything it reads until the close.
    std::string talk_early(std::string_view bytes) {
        auto c = open();
        h.write(peer, bytes);
        std::string all;
        EXPECT_TRUE(h.read_to_end(peer, all));
        EXPECT_TRUE(h.run_until([&] { return host->retired == 1; }));
        return all;
    }
    // Reads until `needle` arrives; returns everything read since the last call.
    std::string expect(std::string_view needle) { return h.take_until(peer, _got, needle); }
    stream_harness h;
    std::unique_ptr<fake_host> host;
    int peer = -1;

private:
    std::string _got;
};

constexpr std::string_view envelope = "MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\nDATA\r\n";

TEST_F(ServerConnectionTest, BannerFirstThenTheDialogue) {
    auto c = open();
    EXPECT_EQ(expect("\r\n").rfind("220 engine.test.invalid", 0), 0U);
    h.write(peer, "EHLO client.example\r\n");
    EXPECT_NE(expect("250 ").find("PIPELINING"), std::string::npos);
    h.write(peer, "QUIT\r\n");
    EXPECT_EQ(expect("\r\n").rfind("221 ", 0), 0U);
    std::string rest;
    EXPECT_TRUE(h.read_to_end(peer, rest));
    ASSERT_TRUE(h.run_until([&] { return host->retired == 1; }));
    EXPECT_EQ(host->counted(server_event::early_talker), 0U);
}

TEST_F(ServerConnectionTest, EarlyTalkerGets521AndNothingItSentRuns) {
    const std::string all = talk_early("EHLO bot\r\nMAIL FROM:<spam@example.org>\r\n");
    EXPECT_EQ(all.rfind("220 ", 0), 0U) << all;
    EXPECT_NE(all.find("\r\n521 5.5.1 "), std::string::npos) << all;
    EXPECT_EQ(all.find("250"), std::string::npos) << "nothing it sent was executed: " << all;
    EXPECT_EQ(host->counted(server_event::early_talker), 1U);
    ASSERT_EQ(host->reports.size(), 1U);
    EXPECT_NE(host->reports[0].find("early talker 192.0.2.7"), std::string::npos);
}

// Issue 19: a PROXY header on a connection not read as one (its address is not in
// --proxy-protocol-from) is refused with 421, whether it comes before the greeting (as a
// balancer sends it) or after it (the session's answer).
TEST_F(ServerConnectionTest, ProxyHeaderBeforeTheGreetingGets421) {
    const std::string all = talk_early("PROXY TCP4 203.0.113.9 192.0.2.1 40000 25\r\nEHLO forged\r\n");
    EXPECT_EQ(all.rfind("220 ", 0), 0U) << all;
    EXPECT_NE(all.find("\r\n421 4.7.0 engine.test.invalid Error: PROXY protocol header not accepted"),
              std::string::npos)
        << all;
    EXPECT_EQ(all.find("250"), std::string::npos) << all;
}

TEST_F(ServerConnectionTest, ProxyV2SignatureBeforeTheGreetingGets421) {
    const std::string all = talk_early(std::string(protocol::proxy_v2_signature) +
                                       std::string("\x21\x11\x00\x0c", 4) + std::string(12, '\x01'));
    EXPECT_NE(all.find("\r\n421 4.7.0 "), std::string::npos) << all;
}

TEST_F(ServerConnectionTest, ProxyLineAfterTheGreetingGets421AndCloses) {
    auto c = open();
    EXPECT_EQ(expect("\r\n").rfind("220 ", 0), 0U);
    h.write(peer, "PROXY TCP4 203.0.113.9 192.0.2.1 40000 25\r\n");
    std::string all;
    ASSERT_TRUE(h.read_to_end(peer, all));
    EXPECT_EQ(all.rfind("421 4.7.0 engine.test.invalid Error: PROXY protocol header not accepted", 0), 0U) << all;
    EXPECT_EQ(host->counted(server_event::early_talker), 0U);
}

TEST_F(ServerConnectionTest, PipelinedCommandsAreAnsweredInOrder) {
    auto c = open();
    expect("220 ");
    h.write(peer, "EHLO client.example\r\n");
    expect("250 ");
    h.write(peer, std::string(envelope));
    const std::string replies = expect("354 ");
    const auto mail = replies.find("250 2.1.0");
    const auto rcpt = replies.find("250 2.1.5");
    const auto data = replies.find("354 ");
    ASSERT_NE(mail, std::string::npos) << replies;
    EXPECT_LT(mail, rcpt);
    EXPECT_LT(rcpt, data);
}

TEST_F(ServerConnectionTest, InputBehindAPendingCommitIsHeldThenResumed) {
    auto c = open(test_connection::mode::pending);
    expect("220 ");
    h.write(peer, "EHLO client.example\r\n");
    expect("250 ");
    // The message and, in the same write, the next transaction's commands.
    h.write(peer, std::string(envelope) + "Subject: one\r\n\r\nbody\r\n.\r\nMAIL FROM:<c@example.org>\r\nNOOP\r\n");
    expect("354 ");
    ASSERT_TRUE(h.run_until([&] { return c->messages.size() == 1; }));
    EXPECT_NE(c->messages[0].find("Subject: one\r\n\r\nbody\r\n"), std::string::npos);
    h.settle(20);
    std::string early;
    stream_harness::read_available(peer, early);
    EXPECT_TRUE(early.empty()) << "nothing is answered while the commit is pending: " << early;
    EXPECT_TRUE(c->awaiting_commit());
    c->answer(protocol::commit_result::ok);
    const std::string after = expect("250 2.0.0 Ok\r\n");
    const auto queued = after.find("250 2.0.0 Ok: queued as ");
    const auto mail = after.find("250 2.1.0");
    ASSERT_NE(queued, std::string::npos) << after;
    ASSERT_NE(mail, std::string::npos) << after;
    EXPECT_LT(queued, mail) << "the held MAIL is answered after the message";
    EXPECT_EQ(c->senders, std::vector<std::string>{"a@example.org"});
}

TEST_F(ServerConnectionTest, CommitsAnsweredAtOnceCarryOnInTheSamePass) {
    auto c = open(test_connection::mode::at_once);
    expect("220 ");
    h.write(peer, "EHLO client.example\r\n");
    expect("250 ");
    std::string two = std::string(envelope) + "Subject: one\r\n\r\n1\r\n.\r\n";
    two += "MAIL FROM:<second@example.org>\r\nRCPT TO:<b@example.net>\r\nDATA\r\nSubject: two\r\n\r\n2\r\n.\r\nNOOP\r\n";
    h.write(peer, two);
    const std::string replies = expect("250 2.0.0 Ok\r\n");
    EXPECT_EQ(c->messages.size(), 2U);
    const auto first = replies.find("queued as");
    ASSERT_NE(first, std::string::npos) << replies;
    EXPECT_NE(replies.find("queued as", first + 1), std::string::npos) << replies;
    EXPECT_EQ(c->senders, (std::vector<std::string>{"a@example.org", "second@example.org"}));
}

TEST_F(ServerConnectionTest, ClientGoneDuringTheCommitIsRetiredAfterTheAnswer) {
    auto c = open(test_connection::mode::pending);
    expect("220 ");
    h.write(peer, "EHLO client.example\r\n");
    expect("250 ");
    h.write(peer, std::string(envelope) + "\r\nbody\r\n.\r\n");
    ASSERT_TRUE(h.run_until([&] { return c->messages.size() == 1; }));
    h.close_peer(peer);
    h.settle(20);
    EXPECT_EQ(host->retired, 0) << "the commit holds the connection";
    c->answer(protocol::commit_result::ok);
    ASSERT_TRUE(h.run_until([&] { return host->retired == 1; }));
}

TEST(ServerConnectionDeadline, IdleClientGets421AndIsClosed) {
    stream_harness h(100);
    if (!h.init()) GTEST_SKIP() << "no provided buffer rings / multishot receive";
    fake_host host(h);
    auto [mine, peer] = h.socket_pair();
    test_connection c(host, mine, test_connection::mode::pending);
    c.start();
    std::string all;
    ASSERT_TRUE(h.read_to_end(peer, all));
    EXPECT_NE(all.find("\r\n421 4.4.2 "), std::string::npos) << all;
    ASSERT_TRUE(h.run_until([&] { return host.retired == 1; }));
}

TEST_F(ServerConnectionTest, StopSays421ToAnIdleSessionAndWaitsForATransaction) {
    auto idle = open();
    const int idle_peer = peer;
    auto busy = open();
    const int busy_peer = peer;
    std::string got;
    ASSERT_TRUE(h.read_until(idle_peer, got, "220 "));
    got.clear();
    ASSERT_TRUE(h.read_until(busy_peer, got, "220 "));
    h.write(busy_peer, "EHLO client.example\r\nMAIL FROM:<a@example.org>\r\n");
    ASSERT_TRUE(h.read_until(busy_peer, got, "250 2.1.0"));
    host->stop = true;
    idle->on_stop(false);
    busy->on_stop(false);
    std::string idle_got;
    ASSERT_TRUE(h.read_to_end(idle_peer, idle_got));
    EXPECT_NE(idle_got.find("421 4.3.2"), std::string::npos) << idle_got;
    h.settle(10);
    EXPECT_FALSE(busy->closing()) << "a transaction may finish";
    busy->on_stop(true);
    got.clear();
    ASSERT_TRUE(h.read_to_end(busy_peer, got));
    EXPECT_NE(got.find("421 4.3.2"), std::string::npos) << got;
}

TEST_F(ServerConnectionTest, StartTlsDiscardsWhatFollowsItThenSpeaksSmtpUnderTls) {
    auto tls = test_tls::make();
    ASSERT_NE(tls, nullptr);
    host->tls = &*tls->server;
    host->config.tls = protocol::tls_offer::starttls;
    auto c = open();
    expect("220 ");
    h.write(peer, "EHLO client.example\r\n");
    EXPECT_NE(expect("250 ").find("STARTTLS"), std::string::npos);
    // STARTTLS with a command behind it in the same write (CVE-2011-0411): dropped, never run.
    h.write(peer, "STARTTLS\r\nNOOP\r\n");
    EXPECT_EQ(expect("\r\n").rfind("220 2.0.0", 0), 0U);
    ASSERT_TRUE(h.run_until([&] { return host->counted(server_event::tls_discarded_bytes) == 6; }));
    // The client's TLS on a stream of its own in the same loop.
    struct client_owner final : core::stream_owner {
        std::string data;
        bool ready = false;
        void on_stream_data(std::string_view d) noexcept override { data.append(d); }
        void on_stream_end(core::stream_end, std::string_view) noexcept override {}
        void on_stream_finished() noexcept override {}
        void on_stream_tls_ready() noexcept override { ready = true; }
    } owner;
    core::stream client(h.services(), owner);
    client.adopt(::dup(peer));
    ASSERT_TRUE(client.start_tls_client(*tls->client, "engine.test.invalid", nullptr));
    client.start_receiving();
    ASSERT_TRUE(h.run_until([&] { return owner.ready; }));
    client.out() += "EHLO client.example\r\n";
    client.want_flush();
    ASSERT_TRUE(h.run_until([&] { return owner.data.find("250 ") != std::string::npos; }));
    EXPECT_EQ(owner.data.find("STARTTLS"), std::string::npos) << "not offered again under TLS";
    EXPECT_EQ(owner.data.find("250 2.0.0"), std::string::npos) << "the NOOP was never read";
    EXPECT_EQ(host->counted(server_event::tls_handshake), 1U);
    client.out() += "QUIT\r\n";
    client.close();
    ASSERT_TRUE(h.run_until([&] { return host->retired == 1; }));
}

}  // namespace
}  // namespace ringrelay::queue
