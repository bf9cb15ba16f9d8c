// tests/core/stream_harness.h: the socketpair backend for tests of core::stream and of what
// runs on it (the inbound SMTP engine, tests/queue/server_connection_test.cc). A real
// core::reactor with a provided-buffer ring drives streams over AF_UNIX socketpairs
// (io_uring's multishot receive, send and cancel work on them as on TCP), so the tests need
// no network. The test holds the other end of each pair as a plain non-blocking fd and
// reads and writes it directly, running loop turns while it waits; every wait is bounded.
// Also: a self-signed certificate in a temporary directory for TLS tests.
#pragma once
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "core/buffer_ring.h"
#include "core/deadline_list.h"
#include "core/reactor.h"
#include "core/stream.h"
#include "core/tls.h"

namespace ringrelay::core::testing {

// A reactor, its buffer ring, a stream batch run at every turn's end, and a deadline list
// (expired by run_until). Not copyable; one per test.
class stream_harness final : public turn_hook {
public:
    explicit stream_harness(std::int64_t deadline_ms = 60'000) : deadlines(deadline_ms) {}
    stream_harness(const stream_harness&) = delete;
    stream_harness& operator=(const stream_harness&) = delete;
    ~stream_harness() {
        for (int fd : _fds)
            if (fd >= 0) ::close(fd);
    }

    // False (the test should GTEST_SKIP) when the kernel lacks provided buffer rings or
    // multishot receive. count: a power of two.
    [[nodiscard]] bool init(unsigned buffer_count = 64, unsigned buffer_size = 4096) {
        const kernel_features f = probe_kernel_features();
        if (!f.buf_ring || !f.recv_multishot) return false;
        if (ring.init(256, f)) return false;
        if (buffers.init(ring, 1, buffer_count, buffer_size)) return false;
        ring.add_turn_hook(this);
        return true;
    }

    [[nodiscard]] stream_services services() noexcept { return {ring, buffers, batch, &deadlines}; }

    // A connected AF_UNIX stream pair, both ends non-blocking: {for the stream, for the test}.
    // The test's end is closed by the harness unless the test closes it (close_peer).
    [[nodiscard]] std::pair<int, int> socket_pair() {
        int fds[2] = {-1, -1};
        EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds), 0);
        _fds.push_back(fds[1]);
        return {fds[0], fds[1]};
    }
    void close_peer(int fd) {
        for (int& f : _fds)
            if (f == fd) f = -1;
        ::close(fd);
    }

    void on_turn_end() noexcept override { batch.run(); }

    // One loop turn (waits up to `wait_ms` for a completion), then the deadlines.
    void turn(int wait_ms = 5) {
        ASSERT_TRUE(ring.run_once(wait_ms));
        deadlines.expire(now_ms());
    }
    // Runs turns until `done()` or `timeout_ms` passed; returns done().
    template <typename Done>
    bool run_until(Done done, int timeout_ms = 5000) {
        const auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
        while (!done()) {
            if (std::chrono::steady_clock::now() > end) return false;
            if (!ring.run_once(5)) return false;
            deadlines.expire(now_ms());
        }
        return true;
    }
    // Runs `n` turns (what is in flight settles; nothing is expected).
    void settle(int n = 10) {
        for (int i = 0; i < n; ++i) turn(2);
    }

    // The test's end: writes everything (waiting while the pair is full, turning the loop).
    void write(int fd, std::string_view bytes) {
        const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(5);
        while (!bytes.empty()) {
            const ssize_t n = ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
            if (n > 0) {
                bytes.remove_prefix(static_cast<std::size_t>(n));
                continue;
            }
            ASSERT_TRUE(n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) << "write failed";
            ASSERT_LT(std::chrono::steady_clock::now(), end) << "write stalled";
            turn(2);
        }
    }
    // Appends what the test's end can read now to `into`; false at end of stream.
    static bool read_available(int fd, std::string& into) {
        char buf[65536];
        for (;;) {
            const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
            if (n > 0) {
                into.append(buf, static_cast<std::size_t>(n));
                continue;
            }
            return n < 0;  // 0: end of stream; -1 EAGAIN: open
        }
    }
    // Reads until `into` holds `needle` (true), the stream ends, or the time is up.
    bool read_until(int fd, std::string& into, std::string_view needle, int timeout_ms = 5000) {
        bool open = true;
        return run_until(
            [&] {
                if (open) open = read_available(fd, into);
                return into.find(needle) != std::string::npos || !open;
            },
            timeout_ms) &&
               into.find(needle) != std::string::npos;
    }
    // Reads until `needle` arrives (a test failure if it does not) and returns everything in
    // `got`, which is left empty: what was read since the last call (a dialogue test's expect()).
    std::string take_until(int fd, std::string& got, std::string_view needle) {
        const bool found = read_until(fd, got, needle);
        EXPECT_TRUE(found) << "waiting for " << needle << ", got: " << got;
        std::string all;
        all.swap(got);
        return all;
    }
    // Reads until the stream ends (true) or the time is up.
    bool read_to_end(int fd, std::string& into, int timeout_ms = 5000) {
        return run_until([&] { return !read_available(fd, into); }, timeout_ms);
    }

    static std::int64_t now_ms() {
        return std::chrono::duration_cast<std::chrono::milliseconds>(
                   std::chrono::steady_clock::now().time_since_epoch())
            .count();
    }

    reactor ring;
    buffer_ring buffers;
    stream_batch batch;
    deadline_list deadlines;

private:
    std::vector<int> _fds;
};

// A self-signed certificate and key for `name` in a temporary directory (removed with it),
// loaded, with a server context and a client context that accepts any certificate.
struct test_tls {
    std::string dir;
    std::optional<tls_credentials> credentials;
    std::optional<tls_context> server;
    std::optional<tls_context> client;

    static std::unique_ptr<test_tls> make(std::string_view name = "stream.test.invalid") {
        auto t = std::make_unique<test_tls>();
        char tmpl[] = "/tmp/rr-stream-test-XXXXXX";
        const char* made = ::mkdtemp(tmpl);
        if (made == nullptr) return nullptr;
        t->dir = made;
        auto files = ensure_self_signed(t->dir + "/tls", name);
        if (!files) return nullptr;
        auto creds = tls_credentials::load_pem(files->cert_file, files->key_file);
        if (!creds) return nullptr;
        t->credentials.emplace(std::move(*creds));
        auto server = tls_context::server(*t->credentials);
        auto client = tls_context::client();
        if (!server || !client) return nullptr;
        t->server.emplace(std::move(*server));
        t->client.emplace(std::move(*client));
        return t;
    }
    ~test_tls() {
        std::error_code ec;
        if (!dir.empty()) std::filesystem::remove_all(dir, ec);
    }
};

}  // namespace ringrelay::core::testing
