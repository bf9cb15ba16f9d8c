// Unit tests of core/listener.h on loopback: connections are accepted and handed over with
// their address slot; over the per-address limit a client gets the refusal line before any
// banner and is closed; released slots admit again; the total limit refuses with its own
// line; stop() closes the socket once the accept is gone and new connections are refused by
// the kernel.
#include "core/listener.h"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "tests/core/stream_harness.h"

namespace ringrelay::core {
namespace {

using testing::stream_harness;

constexpr std::string_view refuse_total = "421 total\r\n";
constexpr std::string_view refuse_address = "421 address\r\n";

struct recording_owner final : listener_owner {
    std::vector<int> fds;
    std::vector<std::size_t> slots;
    std::vector<refusal> refused;
    void on_accepted(listener&, int fd, const sockaddr*, std::size_t slot) noexcept override {
        fds.push_back(fd);
        slots.push_back(slot);
    }
    void on_refused(listener&, const sockaddr*, refusal why) noexcept override { refused.push_back(why); }
    ~recording_owner() {
        for (int fd : fds) ::close(fd);
    }
};

// A blocking client connected to `to`.
int dial(const endpoint& to) {
    const int fd = ::socket(to.family(), SOCK_STREAM | SOCK_CLOEXEC, 0);
    EXPECT_GE(fd, 0);
    EXPECT_EQ(::connect(fd, to.addr(), to.length), 0);
    return fd;
}

std::string read_all(int fd) {
    std::string got;
    char buf[256];
    timeval tv{5, 0};
    (void)::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    for (;;) {
        const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
        if (n <= 0) return got;
        got.append(buf, static_cast<std::size_t>(n));
    }
}

class ListenerTest : public ::testing::Test {
protected:
    void SetUp() override {
        if (!h.init()) GTEST_SKIP() << "no provided buffer rings / multishot receive";
    }
    stream_harness h;
    address_counter per_address{1024};
    shared_limit total;
};

TEST_F(ListenerTest, RefusesOverThePerAddressLimitBeforeAnyBanner) {
    connection_limits limits(&total, 0, per_address, 2, refuse_total, refuse_address);
    recording_owner owner;
    listener l(h.ring, owner, limits, "shard 0", 7);
    ASSERT_TRUE(l.open(*parse_endpoint("127.0.0.1:0"), 16));
    const endpoint at = *l.bound();
    l.start();
    const int a = dial(at);
    const int b = dial(at);
    ASSERT_TRUE(h.run_until([&] { return owner.fds.size() == 2; }));
    EXPECT_EQ(owner.slots[0], owner.slots[1]) << "one address, one count";
    EXPECT_EQ(l.tag(), 7);
    const int c = dial(at);
    ASSERT_TRUE(h.run_until([&] { return owner.refused.size() == 1; }));
    EXPECT_EQ(owner.refused[0], refusal::per_address);
    EXPECT_EQ(read_all(c), refuse_address) << "the refusal line, then the end";
    ::close(c);
    // A connection ends: its slot goes back, and the next one is admitted.
    limits.release(owner.slots[0]);
    const int d = dial(at);
    ASSERT_TRUE(h.run_until([&] { return owner.fds.size() == 3; }));
    EXPECT_EQ(total.count(), 2U) << "three admitted, one released";
    for (int fd : {a, b, d}) ::close(fd);
}

TEST_F(ListenerTest, TotalLimitRefusesWithItsOwnLine) {
    connection_limits limits(&total, 1, per_address, 0, refuse_total, refuse_address);
    recording_owner owner;
    listener l(h.ring, owner, limits, "shard 0");
    ASSERT_TRUE(l.open(*parse_endpoint("127.0.0.1:0"), 16));
    const endpoint at = *l.bound();
    l.start();
    const int a = dial(at);
    ASSERT_TRUE(h.run_until([&] { return owner.fds.size() == 1; }));
    const int b = dial(at);
    ASSERT_TRUE(h.run_until([&] { return owner.refused.size() == 1; }));
    EXPECT_EQ(owner.refused[0], refusal::total);
    EXPECT_EQ(read_all(b), refuse_total);
    EXPECT_EQ(per_address.count(per_address.slot_of(at.addr())), 1U) << "a refused client holds no count";
    ::close(a);
    ::close(b);
}

TEST_F(ListenerTest, StopClosesTheSocketOnceTheAcceptIsGone) {
    connection_limits limits(nullptr, 0, per_address, 0, refuse_total, refuse_address);
    recording_owner owner;
    listener l(h.ring, owner, limits, "shard 0");
    ASSERT_TRUE(l.open(*parse_endpoint("127.0.0.1:0"), 16));
    const endpoint at = *l.bound();
    l.start();
    h.settle();
    l.stop();
    EXPECT_FALSE(l.closed()) << "the cancelled accept still holds it";
    ASSERT_TRUE(h.run_until([&] { return l.closed(); }));
    const int fd = ::socket(at.family(), SOCK_STREAM | SOCK_CLOEXEC, 0);
    EXPECT_NE(::connect(fd, at.addr(), at.length), 0) << "nothing listens any more";
    ::close(fd);
    EXPECT_TRUE(owner.fds.empty());
}

}  // namespace
}  // namespace ringrelay::core
