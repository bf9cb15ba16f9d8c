// Unit tests of core/stream.h over the socketpair backend (tests/core/stream_harness.h): input
// arrives whole and in order; a buffer ring of one tiny buffer runs dry (-ENOBUFS) and the
// stream recovers at the turn's end without losing a byte; output queued in one turn leaves
// in one send carrying every mark of the turn; marks are reported when their send completes;
// the peer closing ends the stream and it finishes; close() lets queued output leave first;
// close with a send stuck on a full window waits until abort(); pause and resume; the
// deadline; connect over loopback, a refused connect, reuse after finishing; TLS both ways (implicit and STARTTLS, with bytes before the switch discarded), a
// failed handshake, close_notify.
#include "core/stream.h"

#include <gtest/gtest.h>
#include <sys/socket.h>

#include <functional>
#include <string>
#include <vector>

#include "core/net.h"
#include "tests/core/stream_harness.h"

namespace ringrelay::core {
namespace {

using testing::stream_harness;
using testing::test_tls;

// Records what a stream reports; hooks let a test act on an event.
struct recorder final : stream_owner {
    std::string data;
    std::vector<std::pair<stream_end, std::string>> ends;
    std::vector<std::uint8_t> sent;
    std::size_t discarded = 0;
    int finished = 0;
    int connected = 0;
    int tls_ready = 0;
    int timeouts = 0;
    int flushes = 0;
    int sends = 0;     // whole sends completed
    int progress = 0;  // partial sends
    std::function<void(std::string_view)> on_data;
    std::function<void()> on_ready;

    void on_stream_data(std::string_view d) noexcept override {
        data.append(d);
        if (on_data) on_data(d);
    }
    void on_stream_end(stream_end why, std::string_view detail) noexcept override {
        ends.emplace_back(why, std::string(detail));
    }
    void on_stream_finished() noexcept override { ++finished; }
    void on_stream_connected() noexcept override { ++connected; }
    void on_stream_tls_ready() noexcept override {
        ++tls_ready;
        if (on_ready) on_ready();
    }
    void on_stream_sent(std::uint8_t marks) noexcept override {
        ++sends;
        if (marks != 0) sent.push_back(marks);
    }
    void on_stream_progress() noexcept override { ++progress; }
    void on_stream_discarded(std::size_t bytes) noexcept override { discarded += bytes; }
    void on_stream_flush() noexcept override { ++flushes; }
    void on_stream_timeout() noexcept override { ++timeouts; }
};

class StreamTest : public ::testing::Test {
protected:
    void SetUp() override {
        if (!h.init()) GTEST_SKIP() << "no provided buffer rings / multishot receive";
    }
    stream_harness h;
};

std::string pattern(std::size_t n) {
    std::string s(n, '\0');
    for (std::size_t i = 0; i < n; ++i) s[i] = static_cast<char>('a' + (i * 7 + i / 251) % 26);
    return s;
}

TEST_F(StreamTest, ReceivesEveryByteInOrder) {
    recorder owner;
    stream s(h.services(), owner);
    auto [mine, peer] = h.socket_pair();
    s.adopt(mine);
    s.start_receiving();
    const std::string sent = pattern(200'000);
    h.write(peer, sent.substr(0, 1));
    h.write(peer, sent.substr(1, 99'999));
    h.write(peer, sent.substr(100'000));
    ASSERT_TRUE(h.run_until([&] { return owner.data.size() >= sent.size(); }));
    EXPECT_EQ(owner.data, sent);
    EXPECT_TRUE(owner.ends.empty());
}

TEST(StreamRing, RecoversFromEnobufsAtTheTurnsEnd) {
    // One 64-byte buffer: the multishot receive runs the ring dry on the first read of a
    // burst (-ENOBUFS ends it); without the re-arm at the turn's end the rest would never
    // arrive.
    stream_harness h;
    if (!h.init(1, 64)) GTEST_SKIP() << "no provided buffer rings / multishot receive";
    recorder a;
    recorder b;
    stream sa(h.services(), a);
    stream sb(h.services(), b);
    auto [ma, pa] = h.socket_pair();
    auto [mb, pb] = h.socket_pair();
    sa.adopt(ma);
    sb.adopt(mb);
    sa.start_receiving();
    sb.start_receiving();
    const std::string burst = pattern(64 * 1024);
    h.write(pa, burst);
    h.write(pb, burst);
    ASSERT_TRUE(h.run_until([&] { return a.data.size() >= burst.size() && b.data.size() >= burst.size(); }, 10'000))
        << a.data.size() << " and " << b.data.size() << " of " << burst.size();
    EXPECT_EQ(a.data, burst);
    EXPECT_EQ(b.data, burst);
    EXPECT_TRUE(a.ends.empty());
    EXPECT_TRUE(b.ends.empty());
}

TEST_F(StreamTest, OutputOfOneTurnLeavesInOneSendWithEveryMark) {
    recorder owner;
    stream s(h.services(), owner);
    auto [mine, peer] = h.socket_pair();
    s.adopt(mine);
    s.out() += "220 one\r\n";
    s.mark(1);
    s.out() += "250 two\r\n";
    s.mark(2);
    s.want_flush();
    std::string got;
    ASSERT_TRUE(h.read_until(peer, got, "250 two\r\n"));
    EXPECT_EQ(got, "220 one\r\n250 two\r\n");
    ASSERT_TRUE(h.run_until([&] { return !owner.sent.empty(); }));
    ASSERT_EQ(owner.sent.size(), 1U) << "one send carried both";
    EXPECT_EQ(owner.sent[0], 3);
    EXPECT_GE(owner.flushes, 1) << "the owner was asked before the send";
}

TEST_F(StreamTest, MarksAreReportedWhenTheirSendCompletes) {
    recorder owner;
    stream s(h.services(), owner);
    auto [mine, peer] = h.socket_pair();
    s.adopt(mine);
    s.out() += "first\r\n";
    s.mark(4);
    s.want_flush();
    ASSERT_TRUE(h.run_until([&] { return owner.sent.size() == 1; }));
    EXPECT_EQ(owner.sent[0], 4);
    s.out() += "unmarked\r\n";
    s.want_flush();
    ASSERT_TRUE(h.run_until([&] { return owner.sends == 2; }));
    EXPECT_EQ(owner.sent.size(), 1U) << "a send without marks carries none";
    s.out() += "second\r\n";
    s.mark(8);
    s.want_flush();
    ASSERT_TRUE(h.run_until([&] { return owner.sent.size() == 2; }));
    EXPECT_EQ(owner.sent[1], 8);
    std::string got;
    ASSERT_TRUE(h.read_until(peer, got, "second\r\n"));
    EXPECT_EQ(got, "first\r\nunmarked\r\nsecond\r\n");
}

TEST_F(StreamTest, ALongSendReportsProgressThenOneWholeSend) {
    // ringrelay-bench keeps its stall clock off while a large message is still leaving.
    recorder owner;
    stream s(h.services(), owner);
    auto [mine, peer] = h.socket_pair();
    s.adopt(mine);
    const std::string big = pattern(4 * 1024 * 1024);  // many times the pair's buffers
    s.out() = big;
    s.want_flush();
    std::string got;
    ASSERT_TRUE(h.run_until([&] {
        stream_harness::read_available(peer, got);
        return owner.sends == 1 && got.size() == big.size();
    }, 10'000)) << got.size() << " of " << big.size();
    EXPECT_GE(owner.progress, 1) << "the kernel took it in parts";
    EXPECT_EQ(owner.sends, 1) << "one whole send";
    EXPECT_TRUE(owner.sent.empty()) << "no marks";
    EXPECT_EQ(got, big);
}

TEST_F(StreamTest, PeerCloseEndsTheStreamAndItFinishes) {
    recorder owner;
    stream s(h.services(), owner);
    auto [mine, peer] = h.socket_pair();
    s.adopt(mine);
    s.start_receiving();
    h.write(peer, "last words");
    h.close_peer(peer);
    ASSERT_TRUE(h.run_until([&] { return owner.finished == 1; }));
    EXPECT_EQ(owner.data, "last words");
    ASSERT_EQ(owner.ends.size(), 1U);
    EXPECT_EQ(owner.ends[0].first, stream_end::peer_closed);
    EXPECT_TRUE(s.peer_gone());
    EXPECT_TRUE(s.finished());
    EXPECT_EQ(s.fd(), -1) << "the socket is closed once finished";
    h.settle();
    EXPECT_EQ(owner.finished, 1) << "finished is said once";
}

TEST_F(StreamTest, CloseSendsWhatIsQueuedThenClosesTheSocket) {
    recorder owner;
    stream s(h.services(), owner);
    auto [mine, peer] = h.socket_pair();
    s.adopt(mine);
    s.start_receiving();
    s.out() += "221 bye\r\n";
    s.close();
    EXPECT_EQ(owner.finished, 0) << "never from inside the owner's own call";
    std::string got;
    ASSERT_TRUE(h.read_to_end(peer, got));
    EXPECT_EQ(got, "221 bye\r\n");
    ASSERT_TRUE(h.run_until([&] { return owner.finished == 1; }));
    EXPECT_TRUE(owner.ends.empty()) << "the owner's close is not reported back";
}

TEST_F(StreamTest, InputAfterCloseIsNotDelivered) {
    recorder owner;
    stream s(h.services(), owner);
    auto [mine, peer] = h.socket_pair();
    s.adopt(mine);
    s.start_receiving();
    // The owner closes on its first input; more arrives while the receive is still armed.
    owner.on_data = [&](std::string_view) {
        s.close();
        EXPECT_EQ(::send(peer, "more\r\n", 6, MSG_NOSIGNAL), 6);
    };
    h.write(peer, "QUIT\r\n");
    ASSERT_TRUE(h.run_until([&] { return owner.finished == 1; }));
    EXPECT_EQ(owner.data, "QUIT\r\n");
}

TEST_F(StreamTest, CloseWithASendInFlightWaitsUntilAbort) {
    recorder owner;
    stream s(h.services(), owner);
    auto [mine, peer] = h.socket_pair();
    s.adopt(mine);
    s.start_receiving();
    // More than the pair buffers: the send stays in flight while the peer does not read.
    s.out() = pattern(16 * 1024 * 1024);
    s.want_flush();
    h.settle();
    ASSERT_TRUE(s.sending());
    s.close();
    h.settle(20);
    EXPECT_EQ(owner.finished, 0) << "a send and the receive's cancel are in flight";
    EXPECT_FALSE(s.finished());
    s.abort();
    ASSERT_TRUE(h.run_until([&] { return owner.finished == 1; }));
    EXPECT_EQ(s.fd(), -1);
    EXPECT_FALSE(s.sending());
}

TEST_F(StreamTest, PauseHoldsInputBackUntilResume) {
    recorder owner;
    stream s(h.services(), owner);
    auto [mine, peer] = h.socket_pair();
    s.adopt(mine);
    s.start_receiving();
    h.write(peer, "one");
    ASSERT_TRUE(h.run_until([&] { return owner.data == "one"; }));
    s.pause_receive();
    h.settle();
    h.write(peer, "two");
    h.settle(20);
    EXPECT_EQ(owner.data, "one") << "paused: nothing read";
    s.resume_receive();
    ASSERT_TRUE(h.run_until([&] { return owner.data == "onetwo"; }));
}

TEST_F(StreamTest, PauseAndResumeInOneTurnKeepReading) {
    recorder owner;
    stream s(h.services(), owner);
    auto [mine, peer] = h.socket_pair();
    s.adopt(mine);
    s.start_receiving();
    h.settle();
    s.pause_receive();
    s.resume_receive();  // before the cancel's completion: it re-arms then
    h.write(peer, "after");
    ASSERT_TRUE(h.run_until([&] { return owner.data == "after"; }));
}

TEST(StreamDeadline, TellsTheOwnerWhenItPasses) {
    stream_harness h(50);
    if (!h.init()) GTEST_SKIP() << "no provided buffer rings / multishot receive";
    recorder owner;
    stream s(h.services(), owner);
    auto [mine, peer] = h.socket_pair();
    (void)peer;
    s.adopt(mine);
    s.touch_deadline(stream_harness::now_ms());
    EXPECT_TRUE(s.deadline_running());
    ASSERT_TRUE(h.run_until([&] { return owner.timeouts == 1; }));
    EXPECT_FALSE(s.deadline_running());
    s.touch_deadline(stream_harness::now_ms());
    s.stop_deadline();
    h.settle(30);
    EXPECT_EQ(owner.timeouts, 1) << "a stopped deadline does not fire";
}

TEST_F(StreamTest, ConnectsOverLoopbackAndCarriesData) {
    auto listener = core::listen_reuseport(*core::parse_endpoint("127.0.0.1:0"), 4);
    ASSERT_TRUE(listener);
    auto bound = core::local_endpoint(*listener);
    ASSERT_TRUE(bound);
    recorder owner;
    stream s(h.services(), owner);
    ASSERT_TRUE(s.connect(*bound));
    ASSERT_TRUE(h.run_until([&] { return owner.connected == 1; }));
    const int accepted = ::accept4(*listener, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    ASSERT_GE(accepted, 0);
    s.start_receiving();
    h.write(accepted, "220 peer\r\n");
    ASSERT_TRUE(h.run_until([&] { return owner.data == "220 peer\r\n"; }));
    s.out() += "QUIT\r\n";
    s.close();
    std::string got;
    ASSERT_TRUE(h.read_to_end(accepted, got));
    EXPECT_EQ(got, "QUIT\r\n");
    ASSERT_TRUE(h.run_until([&] { return owner.finished == 1; }));
    ::close(accepted);
    ::close(*listener);
}

TEST_F(StreamTest, RefusedConnectEndsAndFinishesThenConnectsAgain) {
    auto listener = core::listen_reuseport(*core::parse_endpoint("127.0.0.1:0"), 4);
    ASSERT_TRUE(listener);
    auto bound = core::local_endpoint(*listener);
    ASSERT_TRUE(bound);
    ::close(*listener);  // nothing listens there now
    recorder owner;
    stream s(h.services(), owner);
    ASSERT_TRUE(s.connect(*bound));
    ASSERT_TRUE(h.run_until([&] { return owner.finished == 1; }));
    ASSERT_EQ(owner.ends.size(), 1U);
    EXPECT_EQ(owner.ends[0].first, stream_end::connect_failed);
    EXPECT_EQ(owner.connected, 0);
    // A finished stream is used again (ringrelay-bench reopens its connections).
    auto again = core::listen_reuseport(*core::parse_endpoint("127.0.0.1:0"), 4);
    ASSERT_TRUE(again);
    ASSERT_TRUE(s.connect(*core::local_endpoint(*again)));
    ASSERT_TRUE(h.run_until([&] { return owner.connected == 1; }));
    EXPECT_FALSE(s.finished());
    s.close();
    ASSERT_TRUE(h.run_until([&] { return owner.finished == 2; }));
    ::close(*again);
}

// An egress source (issue 17): the connection leaves from the address it is given.
TEST_F(StreamTest, ConnectBindsTheSourceAddressGiven) {
    auto listener = core::listen_reuseport(*core::parse_endpoint("127.0.0.1:0"), 4);
    ASSERT_TRUE(listener);
    auto bound = core::local_endpoint(*listener);
    ASSERT_TRUE(bound);
    const core::endpoint from = *core::parse_endpoint("127.0.0.3:0");
    recorder owner;
    stream s(h.services(), owner);
    ASSERT_TRUE(s.connect(*bound, &from));
    ASSERT_TRUE(h.run_until([&] { return owner.connected == 1; }));
    sockaddr_storage peer{};
    socklen_t length = sizeof peer;
    const int accepted = ::accept4(*listener, reinterpret_cast<sockaddr*>(&peer), &length, SOCK_CLOEXEC);
    ASSERT_GE(accepted, 0);
    EXPECT_EQ(core::address_text(reinterpret_cast<const sockaddr*>(&peer)), "127.0.0.3") << "the peer sees the source address";
    s.close();
    ASSERT_TRUE(h.run_until([&] { return owner.finished == 1; }));
    ::close(accepted);
    ::close(*listener);
}

// A source address this host does not have: an error at once (nothing in flight), said to be
// the bind's, and the stream still finishes.
TEST_F(StreamTest, ASourceAddressThatCannotBeBoundFailsTheConnectAtOnce) {
    auto listener = core::listen_reuseport(*core::parse_endpoint("127.0.0.1:0"), 4);
    ASSERT_TRUE(listener);
    auto bound = core::local_endpoint(*listener);
    ASSERT_TRUE(bound);
    const core::endpoint from = *core::parse_endpoint("192.0.2.1:0");  // TEST-NET-1: not ours
    recorder owner;
    stream s(h.services(), owner);
    auto started = s.connect(*bound, &from);
    ASSERT_FALSE(started);
    EXPECT_EQ(started.error().value(), EADDRNOTAVAIL);
    EXPECT_TRUE(s.bind_failed());
    s.close();
    ASSERT_TRUE(h.run_until([&] { return owner.finished == 1; }));
    EXPECT_EQ(owner.connected, 0);
    ::close(*listener);
}

class StreamTlsTest : public StreamTest {
protected:
    void SetUp() override {
        StreamTest::SetUp();
        if (IsSkipped()) return;
        tls = test_tls::make();
        ASSERT_NE(tls, nullptr);
    }
    std::unique_ptr<test_tls> tls;
};

TEST_F(StreamTlsTest, ImplicitTlsCarriesDataBothWaysAndCloseNotifyEnds) {
    recorder server_owner;
    recorder client_owner;
    stream server(h.services(), server_owner);
    stream client(h.services(), client_owner);
    auto [a, b] = h.socket_pair();
    server.adopt(a);
    client.adopt(::dup(b));
    ASSERT_TRUE(server.start_tls_server(*tls->server, tls_start::now, tls_engine::memory));
    ASSERT_TRUE(client.start_tls_client(*tls->client, "stream.test.invalid", nullptr));
    EXPECT_TRUE(server.tls_pending());
    server.start_receiving();
    client.start_receiving();
    server_owner.on_ready = [&] {
        server.out() += "220 hello under TLS\r\n";
        server.want_flush();
    };
    ASSERT_TRUE(h.run_until([&] { return client_owner.data == "220 hello under TLS\r\n"; }));
    EXPECT_EQ(server_owner.tls_ready, 1);
    EXPECT_EQ(client_owner.tls_ready, 1);
    EXPECT_TRUE(server.tls_active());
    EXPECT_FALSE(server.tls_pending());
    EXPECT_EQ(server.tls()->protocol_name(), "TLSv1.3");
    const std::string big = pattern(300'000);
    client.out() += big;
    client.want_flush();
    ASSERT_TRUE(h.run_until([&] { return server_owner.data.size() >= big.size(); }));
    EXPECT_EQ(server_owner.data, big);
    // The client's close sends close_notify: the server hears tls_closed.
    client.close();
    ASSERT_TRUE(h.run_until([&] { return !server_owner.ends.empty() && client_owner.finished == 1; }))
        << server_owner.ends.size() << " end(s) at the server; client finished " << client_owner.finished;
    EXPECT_EQ(server_owner.ends[0].first, stream_end::tls_closed);
    server.abandon();
    ASSERT_TRUE(h.run_until([&] { return server_owner.finished == 1; }));
}

TEST_F(StreamTlsTest, StartTlsSendsThe220InPlaintextAndDiscardsWhatCameBefore) {
    recorder server_owner;
    recorder client_owner;
    stream server(h.services(), server_owner);
    stream client(h.services(), client_owner);
    auto [a, b] = h.socket_pair();
    server.adopt(a);
    client.adopt(::dup(b));
    server.start_receiving();
    // The server accepts STARTTLS: its 220 is queued, then TLS waits for it to leave.
    server.out() += "220 2.0.0 Ready to start TLS\r\n";
    ASSERT_TRUE(server.start_tls_server(*tls->server, tls_start::after_output, tls_engine::memory));
    EXPECT_TRUE(server.tls_pending());
    // A client that does not wait for the 220 (the CVE-2011-0411 injection): written before
    // the server's turn ends, so it arrives before the 220 has left.
    h.write(b, "RSET\r\n");
    client_owner.on_data = [&](std::string_view d) {
        if (d.find("220 2.0.0") != std::string_view::npos) {
            ASSERT_TRUE(client.start_tls_client(*tls->client, "stream.test.invalid", nullptr));
        }
    };
    client.start_receiving();
    server_owner.on_ready = [&] {
        server.out() += "250 under TLS\r\n";
        server.want_flush();
    };
    ASSERT_TRUE(h.run_until([&] { return client_owner.data.find("250 under TLS") != std::string::npos; }));
    EXPECT_EQ(client_owner.data, "220 2.0.0 Ready to start TLS\r\n250 under TLS\r\n");
    EXPECT_EQ(server_owner.discarded, 6U) << "RSET\\r\\n was dropped, never read";
    EXPECT_TRUE(server_owner.data.empty());
    EXPECT_EQ(server_owner.tls_ready, 1);
    client.out() += "EHLO again\r\n";
    client.want_flush();
    ASSERT_TRUE(h.run_until([&] { return server_owner.data == "EHLO again\r\n"; }));
}

TEST_F(StreamTlsTest, PlaintextInsteadOfAClientHelloFailsTheHandshake) {
    recorder owner;
    stream server(h.services(), owner);
    auto [a, peer] = h.socket_pair();
    server.adopt(a);
    ASSERT_TRUE(server.start_tls_server(*tls->server, tls_start::now, tls_engine::memory));
    server.start_receiving();
    h.write(peer, "EHLO plain.example\r\n");
    ASSERT_TRUE(h.run_until([&] { return owner.finished == 1; }));
    ASSERT_EQ(owner.ends.size(), 1U);
    EXPECT_EQ(owner.ends[0].first, stream_end::tls_failed);
    EXPECT_NE(owner.ends[0].second.find("TLS handshake failed"), std::string::npos) << owner.ends[0].second;
    EXPECT_TRUE(owner.data.empty()) << "nothing reaches the owner as plaintext";
    std::string alert;
    EXPECT_TRUE(h.read_to_end(peer, alert)) << "the socket closes (after the alert, if any)";
}

TEST_F(StreamTlsTest, CloseDuringTheHandshakeDropsPlaintextAndFinishes) {
    recorder owner;
    stream server(h.services(), owner);
    auto [a, peer] = h.socket_pair();
    server.adopt(a);
    ASSERT_TRUE(server.start_tls_server(*tls->server, tls_start::now, tls_engine::memory));
    server.start_receiving();
    server.out() += "421 cannot be said before TLS\r\n";
    server.close();
    std::string got;
    ASSERT_TRUE(h.read_to_end(peer, got));
    EXPECT_TRUE(got.empty()) << got;
    ASSERT_TRUE(h.run_until([&] { return owner.finished == 1; }));
}

}  // namespace
}  // namespace ringrelay::core
