// tests/queue/connection_leases_test.cc: queue/connection_leases.h (issue 19): two "nodes" (each
// a redis_client and a connection_leases, on one reactor) share a connection_limit through a real
// redis-server the test starts (tests/core/redis_harness.h; skipped without redis-server): the
// limit holds across them, a connection's end gives its lease to the other node, a node that dies
// gives its leases back once they expire, with Redis killed each keeps limit / cluster size, and
// when Redis returns (empty) the node registers its connections and finds its old leases gone.
// Waits are "until it happened" loops with a bound, never timing assertions.
#include "queue/connection_leases.h"

#include <gtest/gtest.h>

#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "core/clock.h"
#include "tests/core/redis_harness.h"

using namespace ringrelay;
using namespace ringrelay::queue;

namespace {

struct answers final : lease_listener {
    std::optional<lease_verdict> last;
    void lease_answer(const std::string&, lease_verdict v) noexcept override { last = v; }
};

struct node {
    std::unique_ptr<core::redis_client> redis;
    std::unique_ptr<connection_leases> leases;
    answers heard;
};

class ConnectionLeases : public ::testing::Test {
protected:
    void SetUp() override {
        if (_reactor.init(64, core::probe_kernel_features())) GTEST_SKIP() << "io_uring unavailable";
        if (!_server.start()) GTEST_SKIP() << "redis-server not installed (apt install redis-server)";
    }
    void TearDown() override {
        for (auto& n : _nodes) {
            if (!n) continue;
            n->leases.reset();
            n->redis->shutdown();
        }
        for (int i = 0; i < 20; ++i) _reactor.run_once(10);
    }

    node& add_node(std::int64_t ttl_ms = 30'000) {
        auto n = std::make_unique<node>();
        n->redis = std::make_unique<core::redis_client>(
            _reactor, core::redis_url{.host = "127.0.0.1", .port = _server.port()},
            core::redis_client_config{.request_timeout_ms = 1000, .backoff_min_ms = 20, .backoff_max_ms = 200});
        n->leases = std::make_unique<connection_leases>(*n->redis, 2, "node" + std::to_string(_nodes.size()), ttl_ms, 0);
        n->leases->set_listener(&n->heard);
        n->redis->start(core::monotonic_ms());
        _nodes.push_back(std::move(n));
        return *_nodes.back();
    }

    bool run_until(const std::function<bool()>& done) {
        const std::int64_t end = core::monotonic_ms() + 15'000;
        while (!done()) {
            if (core::monotonic_ms() > end) return false;
            _reactor.run_once(10);
            const std::int64_t now = core::monotonic_ms();
            for (auto& n : _nodes) {
                if (!n || !n->leases) continue;
                n->redis->tick(now);
                n->leases->tick(now);
            }
        }
        return true;
    }

    // Asks until a verdict other than "asked" comes (directly or by lease_answer).
    lease_verdict ask(node& n, std::uint32_t open, std::uint32_t limit) {
        n.heard.last.reset();
        const lease_verdict v = n.leases->may_open("site", open, limit, core::monotonic_ms());
        if (v != lease_verdict::asked) return v;
        EXPECT_TRUE(run_until([&] { return n.heard.last.has_value(); }));
        if (n.heard.last != lease_verdict::open) return lease_verdict::retry_later;
        // Granted: the site asks again and now opens.
        return n.leases->may_open("site", open, limit, core::monotonic_ms());
    }

    core::reactor _reactor;
    redis_test::redis_server _server;
    std::vector<std::unique_ptr<node>> _nodes;
};

TEST_F(ConnectionLeases, LimitHoldsAcrossNodesAndAnEndedConnectionFreesItsLease) {
    node& a = add_node();
    node& b = add_node();
    ASSERT_TRUE(run_until([&] {
        return a.leases->leasing(core::monotonic_ms()) && b.leases->leasing(core::monotonic_ms());
    }));
    EXPECT_EQ(ask(a, 0, 2), lease_verdict::open);
    EXPECT_EQ(ask(a, 1, 2), lease_verdict::open);
    EXPECT_EQ(a.leases->held("site"), 2u);
    EXPECT_EQ(ask(b, 0, 2), lease_verdict::retry_later);  // the fleet's 2 are node a's
    EXPECT_EQ(b.leases->stats().refused, 1u);
    a.leases->connection_ended("site", 1);
    EXPECT_EQ(a.leases->held("site"), 1u);
    ASSERT_TRUE(run_until([&] { return ask(b, 0, 2) == lease_verdict::open; }));
    EXPECT_EQ(ask(a, 1, 2), lease_verdict::retry_later);
    EXPECT_FALSE(a.leases->over_share("site", 1, 2));
    EXPECT_TRUE(a.leases->over_share("site", 2, 2));  // a connection without a lease ends
}

TEST_F(ConnectionLeases, DeadNodesLeasesExpire) {
    node& a = add_node(500);
    node& b = add_node(500);
    ASSERT_TRUE(run_until([&] {
        return a.leases->leasing(core::monotonic_ms()) && b.leases->leasing(core::monotonic_ms());
    }));
    EXPECT_EQ(ask(a, 0, 1), lease_verdict::open);
    EXPECT_EQ(ask(b, 0, 1), lease_verdict::retry_later);
    // Node a dies: nothing given back, nothing renewed.
    _nodes[0]->leases.reset();
    _nodes[0]->redis->shutdown();
    ASSERT_TRUE(run_until([&] { return ask(b, 0, 1) == lease_verdict::open; }));
    EXPECT_EQ(b.leases->held("site"), 1u);
}

TEST_F(ConnectionLeases, RedisDownKeepsTheShareAndRedisBackCountsAgain) {
    node& a = add_node();
    ASSERT_TRUE(run_until([&] { return a.leases->leasing(core::monotonic_ms()); }));
    EXPECT_EQ(ask(a, 0, 4), lease_verdict::open);
    _server.stop();
    ASSERT_TRUE(run_until([&] { return !a.leases->shared(); }));
    // After the fallback hold: limit 4 / cluster size 2 = 2 connections of this node.
    ASSERT_TRUE(run_until([&] { return a.leases->may_open("site", 1, 4, core::monotonic_ms()) == lease_verdict::open; }));
    EXPECT_EQ(a.leases->may_open("site", 2, 4, core::monotonic_ms()), lease_verdict::retry_later);
    EXPECT_TRUE(a.leases->over_share("site", 3, 4));
    EXPECT_FALSE(a.leases->over_share("site", 2, 4));
    ASSERT_TRUE(_server.start());
    ASSERT_TRUE(run_until([&] { return a.leases->leasing(core::monotonic_ms()); }));
    // Redis came back empty (no persistence): the lease held from before is found gone, the
    // fallback's connection beyond it was registered; the node now has one connection too many.
    EXPECT_TRUE(run_until([&] { return a.leases->held("site") == 1u; })) << a.leases->held("site");
    EXPECT_TRUE(a.leases->over_share("site", 2, 4));
}

}  // namespace

// A site refused while nothing of it is open leaves no entry (no connection_ended() comes for
// it; such sites would pile up on a relay sending to many domains). Redis is never reached here
// (a client not started): the fallback's opening hold refuses every site at first.
TEST(ConnectionLeasesAlone, ARefusedSiteWithNothingOpenLeavesNoEntry) {
    core::reactor reactor;
    if (reactor.init(64, core::probe_kernel_features())) GTEST_SKIP() << "io_uring unavailable";
    core::redis_client redis(reactor, core::redis_url{.host = "127.0.0.1", .port = 1}, core::redis_client_config{});
    connection_leases leases(redis, 2, "node0", 30'000, 0);
    const std::int64_t now = core::monotonic_ms();
    for (int i = 0; i < 100; ++i)
        EXPECT_EQ(leases.may_open("site-" + std::to_string(i), 0, 4, now), lease_verdict::retry_later);
    EXPECT_EQ(leases.sites(), 0u);
    // Past the hold, the fallback share (4 / 2) opens: that site keeps its entry until its
    // connection ends.
    const std::int64_t later = now + 60'000;
    EXPECT_EQ(leases.may_open("site-a", 0, 4, later), lease_verdict::open);
    EXPECT_EQ(leases.sites(), 1u);
    leases.connection_ended("site-a", 0);
    EXPECT_EQ(leases.sites(), 0u);
}
