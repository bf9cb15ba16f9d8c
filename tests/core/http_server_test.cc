// tests/core/http_server_test.cc: core::http_server's connections over socketpairs on a real
// reactor (tests/core/stream_harness.h), with a test service: a client that never reads its
// answers is cut off (by the deadline, and at the end of the shutdown grace period); HTTPS
// (--http-tls: a TLS client made of core::tls_session; a failed, absent or impossible handshake
// closes and is told to the service); error answers close, lingering (FIN, then the client's bytes read until it closes); strangers' connections are capped per address; a slow reader with whole
// requests waiting gets its answers, not a 408.
#include "core/http_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cerrno>
#include <chrono>
#include <string>
#include <optional>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "tests/core/stream_harness.h"

using namespace ringrelay::core;
using ringrelay::core::testing::stream_harness;

namespace {

constexpr std::size_t big_body = 64 * 1024;

// GET /big: 64 KiB; GET /forbidden: 403; GET /later/NAME: answered later, when the test
// completes `later` (the handle kept with NAME); anything else: 200 "ok". Strangers (outside
// 127.0.0.0/8) are capped.
class test_service final : public http_service {
public:
    void handle(const http_request& request, const sockaddr*, http_answer& answer) noexcept override {
        http_response& response = answer.response;
        transports.push_back(request.transport);
        if (request.path().starts_with("/later/")) {
            later.emplace_back(std::string(request.path().substr(7)), answer.defer());
        } else if (request.path() == "/big") {
            response.status = 200;
            response.body.assign(big_body, 'x');
        } else if (request.path() == "/forbidden") {
            response = http_json_error(403, "forbidden");
        } else {
            response.status = 200;
            response.body = "ok\n";
        }
    }
    [[nodiscard]] bool capped(const sockaddr* peer) const noexcept override {
        const auto* in = reinterpret_cast<const sockaddr_in*>(peer);
        return (ntohl(in->sin_addr.s_addr) >> 24) != 127;
    }
    void tls_handshake(http_tls_outcome outcome) noexcept override {
        ++(outcome == http_tls_outcome::completed ? handshakes : tls_failures);
    }
    int handshakes = 0;
    int tls_failures = 0;
    // Completes the answer owed to GET /later/NAME with 200 and body NAME.
    void complete(std::string_view name) {
        for (auto& [n, d] : later)
            if (n == name) {
                http_response r;
                r.body = n + "\n";
                d.complete(std::move(r));
            }
    }
    std::vector<std::pair<std::string, http_deferred>> later;
    std::vector<http_transport> transports;  // of every request handled
};

// The shard's side of --http-tls: a context, or none (TLS unavailable).
struct test_tls_source final : http_tls_source {
    const tls_context* http_tls_context() noexcept override { return context; }
    tls_engine http_tls_engine() const noexcept override { return tls_engine::memory; }
    const tls_context* context = nullptr;
};

sockaddr_in address(const char* text) {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    EXPECT_EQ(::inet_pton(AF_INET, text, &a.sin_addr), 1);
    return a;
}

class HttpServerTest : public ::testing::Test {
protected:
    void start(std::int64_t deadline_ms, unsigned buffers = 64) {
        h.emplace(deadline_ms);
        if (!h->init(buffers)) GTEST_SKIP() << "no provided buffer rings / multishot receive";
        server.emplace(h->services(), service, "test", &tls_source);
    }
    void TearDown() override {
        if (!server) return;
        server->abort_connections();
        (void)run_until([&] { return server->connections() == 0; });
        server.reset();
    }
    // A connection from `from`; returns the test's end.
    // `send_buffer` (0: the default): SO_SNDBUF of the server's end, which on AF_UNIX is all
    // the pair holds in that direction.
    int connect(const char* from = "127.0.0.1", int send_buffer = 0) {
        const auto [ours, theirs] = h->socket_pair();
        if (send_buffer != 0) {
            EXPECT_EQ(::setsockopt(ours, SOL_SOCKET, SO_SNDBUF, &send_buffer, sizeof send_buffer), 0);
        }
        const sockaddr_in peer = address(from);
        EXPECT_TRUE(server->adopt(ours, reinterpret_cast<const sockaddr*>(&peer)));
        return theirs;
    }
    // Turns (with the server's end of turn) until done() or 10 s.
    template <typename Done>
    bool run_until(Done done, int timeout_ms = 10000) {
        return h->run_until(
            [&] {
                server->end_turn();
                return done();
            },
            timeout_ms);
    }
    static std::size_t count(const std::string& text, std::string_view needle) {
        std::size_t n = 0;
        for (std::size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) ++n;
        return n;
    }
    // Requests whose answers (40 x 64 KiB) are well over the 1 MiB after which the server
    // stops reading, and over what the socketpair holds.
    static std::string many_big() {
        std::string out;
        for (int i = 0; i < 40; ++i) out += "GET /big HTTP/1.1\r\nHost: a\r\n\r\n";
        return out;
    }

    // A TLS client (core::tls_session over the test's end) sends `request` and reads until the
    // server closes; the plaintext it got, or nullopt if TLS failed on the client's side.
    std::optional<std::string> tls_exchange(int fd, std::string_view request) {
        auto session = tls_session::create(*tls->client);
        if (!session) return std::nullopt;
        std::string wire;
        session->take_output(wire);
        std::string plain;
        bool sent = false;
        const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(10);
        while (std::chrono::steady_clock::now() < end) {
            if (session->is_established() && !sent) {
                if (!session->encrypt(request, wire)) return std::nullopt;
                sent = true;
            }
            session->take_output(wire);
            if (!wire.empty()) {
                const ssize_t n = ::send(fd, wire.data(), wire.size(), MSG_NOSIGNAL);
                if (n > 0) wire.erase(0, static_cast<std::size_t>(n));
            }
            char buf[16384];
            const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
            if (n == 0) return plain;
            if (n > 0 && !session->feed_ciphertext(std::string_view(buf, static_cast<std::size_t>(n)), plain))
                return std::nullopt;
            if (session->state() == tls_state::closed) return plain;
            h->turn(1);
            server->end_turn();
        }
        return plain;
    }
    int connect_tls(const char* from = "127.0.0.1") {
        const auto [ours, theirs] = h->socket_pair();
        const sockaddr_in peer = address(from);
        EXPECT_TRUE(server->adopt(ours, reinterpret_cast<const sockaddr*>(&peer), http_transport::tls));
        return theirs;
    }

    test_service service;
    test_tls_source tls_source;
    std::unique_ptr<ringrelay::core::testing::test_tls> tls = ringrelay::core::testing::test_tls::make();
    std::optional<stream_harness> h;
    std::optional<http_server> server;
};

// Review finding 1: the connection used to wait for its answers to leave for ever.
TEST_F(HttpServerTest, AClientThatNeverReadsIsCutOffAfterTheDeadline) {
    start(300);
    if (!server) return;
    const int client = connect();
    h->write(client, many_big());
    EXPECT_TRUE(run_until([&] { return server->connections() == 0; }))
        << "a client that reads nothing keeps its connection";
}

// Review finding 1: at the end of the shutdown grace period the shard cuts HTTP connections
// off, as it does SMTP ones; a send stuck on a full window must not hold it.
TEST_F(HttpServerTest, AbortConnectionsEndsAConnectionStuckOnItsAnswers) {
    start(60'000);
    if (!server) return;
    const int client = connect();
    h->write(client, many_big());
    h->settle(20);
    server->stop();
    h->settle(20);
    server->end_turn();
    EXPECT_FALSE(server->drained()) << "the answers cannot leave: the connection waits";
    server->abort_connections();
    EXPECT_TRUE(run_until([&] { return server->drained(); }));
}

// Review finding 3: a 403 used to keep the connection (and its slot) for the next request.
TEST_F(HttpServerTest, AnErrorAnswerSaysCloseAndCloses) {
    start(60'000);
    if (!server) return;
    const int client = connect("192.0.2.7");
    h->write(client, "GET /forbidden HTTP/1.1\r\nHost: a\r\n\r\nGET /x HTTP/1.1\r\nHost: a\r\n\r\n");
    std::string got;
    ASSERT_TRUE(h->read_to_end(client, got)) << "the connection stays open: " << got;
    EXPECT_EQ(got.rfind("HTTP/1.1 403 ", 0), 0u) << got;
    EXPECT_NE(got.find("\r\nConnection: close\r\n"), std::string::npos) << got;
    EXPECT_EQ(count(got, "HTTP/1.1 "), 1u) << "nothing after the error is answered: " << got;
}

// Review finding 5: closing at once after an error with the client's bytes unread resets the
// connection (ECONNRESET on AF_UNIX as on TCP), and the client may lose the answer. Four
// receive buffers: most of the body waits in the socket, unread, when the 413 is decided.
TEST_F(HttpServerTest, AnErrorAnswerIsFollowedByEndOfStreamNotAReset) {
    start(60'000, 4);
    if (!server) return;
    const int client = connect();
    std::string request = "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5000000\r\n\r\n";
    request.append(128 * 1024, 'z');
    std::string_view rest = request;
    std::string got;
    bool eof = false;
    bool reset = false;
    const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (!eof && !reset && std::chrono::steady_clock::now() < end) {
        if (!rest.empty()) {
            const ssize_t n = ::send(client, rest.data(), rest.size(), MSG_NOSIGNAL);
            if (n > 0) rest.remove_prefix(static_cast<std::size_t>(n));
            if (n < 0 && errno != EAGAIN) rest = {};  // the server closed: nothing more to send
        }
        char buf[4096];
        const ssize_t n = ::recv(client, buf, sizeof buf, 0);
        if (n > 0) got.append(buf, static_cast<std::size_t>(n));
        if (n == 0) eof = true;
        if (n < 0 && errno == ECONNRESET) reset = true;
        h->turn(1);
    }
    EXPECT_EQ(got.rfind("HTTP/1.1 413 ", 0), 0u) << got;
    EXPECT_FALSE(reset) << "the answer was followed by a reset";
    EXPECT_TRUE(eof);
    h->close_peer(client);
    EXPECT_TRUE(run_until([&] { return server->connections() == 0; })) << "the client's close ends the linger";
}

TEST_F(HttpServerTest, KeepsTheConnectionAfterASuccess) {
    start(60'000);
    if (!server) return;
    const int client = connect();
    h->write(client, "GET /x HTTP/1.1\r\nHost: a\r\n\r\nGET /y HTTP/1.1\r\nHost: a\r\n\r\n");
    std::string got;
    ASSERT_TRUE(h->read_until(client, got, "ok\nHTTP/1.1 200 OK"));
    h->settle(5);
    EXPECT_TRUE(stream_harness::read_available(client, got)) << "still open";
    EXPECT_EQ(count(got, "Connection: keep-alive"), 2u) << got;
}

// Issue 18: an answer given later keeps its place; the answers pipelined behind it wait for it.
TEST_F(HttpServerTest, AnswersGivenLaterLeaveInRequestOrder) {
    start(60'000);
    if (!server) return;
    const int client = connect();
    h->write(client,
             "GET /later/first HTTP/1.1\r\nHost: a\r\n\r\nGET /x HTTP/1.1\r\nHost: a\r\n\r\n"
             "GET /later/third HTTP/1.1\r\nHost: a\r\n\r\n");
    ASSERT_TRUE(run_until([&] { return service.later.size() == 2; }));
    h->settle(5);
    std::string got;
    EXPECT_FALSE(stream_harness::read_available(client, got) && !got.empty()) << "sent before the first: " << got;
    service.complete("third");
    h->settle(5);
    got.clear();
    EXPECT_FALSE(stream_harness::read_available(client, got) && !got.empty()) << "sent before the first: " << got;
    service.complete("first");
    ASSERT_TRUE(h->read_until(client, got, "third\n"));
    const auto first = got.find("first\n");
    const auto ok = got.find("ok\n");
    ASSERT_NE(first, std::string::npos) << got;
    ASSERT_NE(ok, std::string::npos) << got;
    EXPECT_LT(first, ok) << got;
    EXPECT_LT(ok, got.find("third\n")) << got;
    EXPECT_EQ(count(got, "Connection: keep-alive"), 3u) << got;
}

// Issue 18: the client goes before its answer is there; completing it later does nothing.
TEST_F(HttpServerTest, AnAnswerGivenAfterTheClientWentIsDropped) {
    start(60'000);
    if (!server) return;
    const int client = connect();
    h->write(client, "GET /later/gone HTTP/1.1\r\nHost: a\r\n\r\n");
    ASSERT_TRUE(run_until([&] { return service.later.size() == 1; }));
    ::close(client);
    ASSERT_TRUE(run_until([&] { return server->connections() == 0; }));
    EXPECT_TRUE(service.later[0].second.abandoned());
    service.complete("gone");  // the connection is freed: this must touch nothing
    h->settle(5);
    EXPECT_EQ(server->connections(), 0u);
}

// Review finding 3: one stranger's address could take every slot of the shard.
TEST_F(HttpServerTest, CapsAStrangersConnectionsPerAddress) {
    start(60'000);
    if (!server) return;
    for (std::uint32_t i = 0; i < max_http_connections_per_address; ++i) (void)connect("192.0.2.7");
    const int over = connect("192.0.2.7");
    std::string got;
    ASSERT_TRUE(h->read_to_end(over, got)) << "the connection over the cap stays open";
    EXPECT_EQ(got.rfind("HTTP/1.1 503 ", 0), 0u) << got;
    h->settle(5);
    server->end_turn();
    EXPECT_EQ(server->connections(), max_http_connections_per_address);
    // Another stranger, and a client in the networks, still get in.
    const int other = connect("192.0.2.8");
    const int trusted = connect();
    for (int fd : {other, trusted}) h->write(fd, "GET /x HTTP/1.1\r\nHost: a\r\n\r\n");
    std::string a, b;
    EXPECT_TRUE(h->read_until(other, a, "ok\n"));
    EXPECT_TRUE(h->read_until(trusted, b, "ok\n"));
}

TEST_F(HttpServerTest, DoesNotCapClientsInTheNetworks) {
    start(60'000);
    if (!server) return;
    std::vector<int> clients;
    for (std::uint32_t i = 0; i < 2 * max_http_connections_per_address; ++i) clients.push_back(connect());
    for (int fd : clients) h->write(fd, "GET /x HTTP/1.1\r\nHost: a\r\n\r\n");
    for (int fd : clients) {
        std::string got;
        EXPECT_TRUE(h->read_until(fd, got, "ok\n")) << got;
    }
}

// Review finding 4: paused behind 1 MiB of answers, a client reading them steadily (with whole
// requests waiting unread) used to get 408 once the deadline passed since the last request
// read. Read 8 KiB every 20 ms through a 16 KiB send buffer: 1 MiB of answers takes over two
// deadlines to leave, while the answers move every few reads (a small part of one).
TEST_F(HttpServerTest, ASlowReaderWithWholeRequestsWaitingGetsEveryAnswer) {
    start(1000);
    if (!server) return;
    const int client = connect("127.0.0.1", 16 * 1024);
    h->write(client, many_big());
    std::string got;
    const auto begin = std::chrono::steady_clock::now();
    const auto end = begin + std::chrono::seconds(30);
    bool open = true;
    while (open && count(got, "HTTP/1.1 ") < 40 && std::chrono::steady_clock::now() < end) {
        char buf[8 * 1024];
        const ssize_t n = ::recv(client, buf, sizeof buf, 0);
        if (n > 0) got.append(buf, static_cast<std::size_t>(n));
        if (n == 0) open = false;
        h->turn(1);
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - begin);
    EXPECT_EQ(count(got, "HTTP/1.1 200 OK"), 40u) << "open " << open << ", 408s: " << count(got, " 408 ");
    EXPECT_EQ(count(got, " 408 "), 0u);
    EXPECT_TRUE(open);
    RecordProperty("read_ms", static_cast<int>(took.count()));
}

// A request trickled in past the deadline still gets its 408 (the pause rule does not
// cover it).
TEST_F(HttpServerTest, ARequestNotWholeInTimeGets408AndClose) {
    start(300);
    if (!server) return;
    const int client = connect();
    h->write(client, "GET /x HTTP/1.1\r\nHo");
    std::string got;
    ASSERT_TRUE(h->read_to_end(client, got));
    EXPECT_EQ(got.rfind("HTTP/1.1 408 ", 0), 0u) << got;
}

}  // namespace

// Issue 18 (--http-tls): the requests of a TLS connection are served like plain ones (two
// pipelined, the second closing), and say they came over TLS; the handshake is told once.
TEST_F(HttpServerTest, ServesRequestsOverTls) {
    start(60'000);
    if (!server) return;
    ASSERT_TRUE(tls);
    tls_source.context = &*tls->server;
    const int client = connect_tls();
    const auto got = tls_exchange(client, "GET /x HTTP/1.1\r\nHost: a\r\n\r\nGET /y HTTP/1.1\r\nHost: a\r\n"
                                          "Connection: close\r\n\r\n");
    ASSERT_TRUE(got.has_value()) << "the client's TLS failed";
    EXPECT_EQ(count(*got, "HTTP/1.1 200 OK"), 2u) << *got;
    ASSERT_EQ(service.transports.size(), 2u);
    EXPECT_EQ(service.transports[0], http_transport::tls);
    EXPECT_EQ(service.handshakes, 1);
    EXPECT_EQ(service.tls_failures, 0);
}

TEST_F(HttpServerTest, PlainRequestsSayTheyAreNotTls) {
    start(60'000);
    if (!server) return;
    const int client = connect();
    h->write(client, "GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    std::string got;
    ASSERT_TRUE(h->read_to_end(client, got));
    ASSERT_EQ(service.transports.size(), 1u);
    EXPECT_EQ(service.transports[0], http_transport::plain);
    EXPECT_EQ(service.handshakes + service.tls_failures, 0);
}

// Plaintext HTTP to the TLS port: the handshake fails, the connection closes, nothing is served.
TEST_F(HttpServerTest, AFailedHandshakeClosesAndIsCounted) {
    start(60'000);
    if (!server) return;
    ASSERT_TRUE(tls);
    tls_source.context = &*tls->server;
    const int client = connect_tls();
    h->write(client, "GET /x HTTP/1.1\r\nHost: a\r\n\r\n");
    std::string got;
    EXPECT_TRUE(h->read_to_end(client, got)) << "the connection stays open";
    EXPECT_EQ(got.find("HTTP/1.1"), std::string::npos) << "a plaintext answer: " << got;
    EXPECT_TRUE(service.transports.empty());
    EXPECT_EQ(service.tls_failures, 1);
    EXPECT_EQ(service.handshakes, 0);
}

// A client that never sends its ClientHello is cut off at the request deadline (no 408: it
// could not read one), and that counts as a failure.
TEST_F(HttpServerTest, NoHandshakeWithinTheDeadlineClosesAndIsCounted) {
    start(200);
    if (!server) return;
    ASSERT_TRUE(tls);
    tls_source.context = &*tls->server;
    const int client = connect_tls();
    std::string got;
    EXPECT_TRUE(h->read_to_end(client, got)) << "the connection stays open";
    EXPECT_TRUE(got.empty()) << got;
    EXPECT_EQ(service.tls_failures, 1);
}

// No context (TLS unavailable on the shard): the connection closes at once, counted.
TEST_F(HttpServerTest, WithoutATlsContextTheConnectionCloses) {
    start(60'000);
    if (!server) return;
    const int client = connect_tls();
    std::string got;
    EXPECT_TRUE(h->read_to_end(client, got)) << "the connection stays open";
    EXPECT_EQ(service.tls_failures, 1);
    EXPECT_TRUE(run_until([&] { return server->connections() == 0; }));
}
