// tests/queue/loopback_smtp.h: blocking SMTP ends over loopback for tests that run the relay
// in-process (queue::relay on its own shard threads): the client a test speaks to the relay
// with, and a scripted next hop the relay delivers to (a thread per connection, RCPT replies
// chosen by local part). Every read is bounded by a 10 s receive timeout.
#pragma once
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <strings.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "core/net.h"

namespace ringrelay::queue::testing {

// Reads CRLF-terminated lines from a blocking socket (with a receive timeout).
class line_reader {
public:
    explicit line_reader(int fd) : _fd(fd) {}
    // One line without its CRLF; false on timeout or EOF.
    bool line(std::string& out) {
        for (;;) {
            if (const auto eol = _buf.find("\r\n"); eol != std::string::npos) {
                out = _buf.substr(0, eol);
                _buf.erase(0, eol + 2);
                return true;
            }
            if (!fill()) return false;
        }
    }
    // One complete reply (possibly multi-line), CRLFs kept; empty on timeout or EOF.
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
            if (!fill()) return {};
        }
    }

private:
    bool fill() {
        char tmp[4096];
        for (;;) {
            const ssize_t n = ::recv(_fd, tmp, sizeof tmp, 0);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) return false;
            _buf.append(tmp, static_cast<std::size_t>(n));
            return true;
        }
    }
    int _fd;
    std::string _buf;
};

inline void set_receive_timeout(int fd) {
    timeval tv{10, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
}

// The test's SMTP client: connect, send text, read replies.
class smtp_client {
public:
    explicit smtp_client(const core::endpoint& e) : _fd(::socket(e.family(), SOCK_STREAM | SOCK_CLOEXEC, 0)), _in(_fd) {
        set_receive_timeout(_fd);
        EXPECT_EQ(::connect(_fd, e.addr(), e.length), 0);
    }
    ~smtp_client() { ::close(_fd); }
    smtp_client(const smtp_client&) = delete;
    smtp_client& operator=(const smtp_client&) = delete;
    void send(const std::string& s) {
        ASSERT_EQ(::send(_fd, s.data(), s.size(), MSG_NOSIGNAL), static_cast<ssize_t>(s.size()));
    }
    // Reads one complete reply (possibly multi-line); empty on timeout or EOF.
    std::string reply() { return _in.reply(); }

private:
    int _fd;
    line_reader _in;
};

// A next hop on a loopback port of its own: every connection is served on a thread of its own
// (the relay may hold one idle while it opens another). It offers no ESMTP extension, so the
// relay sends one command at a time; RCPT is answered by the recipient's local part from
// `rcpt_replies` ("550 5.1.1 ..."), else 250; every message is accepted. Stops (connections
// shut, threads joined) when destroyed.
class scripted_next_hop {
public:
    explicit scripted_next_hop(std::map<std::string, std::string> rcpt_replies) : _rcpt_replies(std::move(rcpt_replies)) {
        _listener = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        socklen_t len = sizeof a;
        EXPECT_EQ(::bind(_listener, reinterpret_cast<sockaddr*>(&a), len), 0);
        EXPECT_EQ(::listen(_listener, 16), 0);
        EXPECT_EQ(::getsockname(_listener, reinterpret_cast<sockaddr*>(&a), &len), 0);
        _port = ntohs(a.sin_port);
        _acceptor = std::thread([this] { accept_loop(); });
    }
    ~scripted_next_hop() {
        _stop = true;
        _acceptor.join();
        {
            const std::lock_guard lock(_mutex);
            for (const int fd : _connections) ::shutdown(fd, SHUT_RDWR);
        }
        for (std::thread& t : _threads) t.join();
        ::close(_listener);
    }
    scripted_next_hop(const scripted_next_hop&) = delete;
    scripted_next_hop& operator=(const scripted_next_hop&) = delete;

    [[nodiscard]] std::uint16_t port() const noexcept { return _port; }
    // Messages taken at the end of DATA.
    [[nodiscard]] int messages() const noexcept { return _messages.load(); }

private:
    void accept_loop() {
        while (!_stop) {
            pollfd p{_listener, POLLIN, 0};
            if (::poll(&p, 1, 50) <= 0) continue;
            const int fd = ::accept4(_listener, nullptr, nullptr, SOCK_CLOEXEC);
            if (fd < 0) continue;
            set_receive_timeout(fd);
            const std::lock_guard lock(_mutex);
            _connections.push_back(fd);
            _threads.emplace_back([this, fd] { serve(fd); });
        }
    }
    static void say(int fd, const std::string& text) { (void)::send(fd, text.data(), text.size(), MSG_NOSIGNAL); }
    static bool is(const std::string& line, const char* verb) { return ::strncasecmp(line.c_str(), verb, std::strlen(verb)) == 0; }
    void serve(int fd) {
        line_reader in(fd);
        say(fd, "220 next-hop.test ESMTP\r\n");
        for (std::string line; in.line(line);) {
            if (is(line, "EHLO") || is(line, "HELO")) {
                say(fd, "250 next-hop.test\r\n");
            } else if (is(line, "RCPT")) {
                const auto lt = line.find('<');
                const auto at = line.find('@');
                const std::string local = lt != std::string::npos && at != std::string::npos && at > lt
                                              ? line.substr(lt + 1, at - lt - 1)
                                              : std::string();
                const auto it = _rcpt_replies.find(local);
                say(fd, it != _rcpt_replies.end() ? it->second + "\r\n" : std::string("250 2.1.5 Ok\r\n"));
            } else if (is(line, "DATA")) {
                say(fd, "354 End data with <CR><LF>.<CR><LF>\r\n");
                while (in.line(line) && line != ".") {
                }
                ++_messages;
                say(fd, "250 2.0.0 Ok: queued\r\n");
            } else if (is(line, "QUIT")) {
                say(fd, "221 2.0.0 Bye\r\n");
                break;
            } else {
                say(fd, "250 2.0.0 Ok\r\n");  // MAIL, RSET, NOOP
            }
        }
        const std::lock_guard lock(_mutex);
        std::erase(_connections, fd);
        ::close(fd);
    }

    // Fixed after construction.
    const std::map<std::string, std::string> _rcpt_replies;
    int _listener = -1;
    std::uint16_t _port = 0;
    // Shared with the serving threads.
    std::atomic<bool> _stop{false};
    std::atomic<int> _messages{0};
    std::mutex _mutex;  // _connections, _threads
    std::vector<int> _connections;
    std::vector<std::thread> _threads;
    std::thread _acceptor;
};

}  // namespace ringrelay::queue::testing
