// tests/tools/sink/ip_limits_test.cc: ringrelay-sink's per-IP limits: address keys, slots
// claimed concurrently, the connection counter under concurrent shards, and the GCRA rate
// limit against an injected clock.
#include "tools/sink/ip_limits.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>

#include <atomic>
#include <set>
#include <thread>
#include <vector>

namespace ringrelay::sink {
namespace {

constexpr std::int64_t second = 1'000'000'000;
constexpr std::int64_t start = 1000 * second;  // an arbitrary monotonic time

sockaddr_storage v4(const char* text) {
    sockaddr_storage s{};
    auto* a = reinterpret_cast<sockaddr_in*>(&s);
    a->sin_family = AF_INET;
    EXPECT_EQ(inet_pton(AF_INET, text, &a->sin_addr), 1);
    return s;
}

sockaddr_storage v6(const char* text) {
    sockaddr_storage s{};
    auto* a = reinterpret_cast<sockaddr_in6*>(&s);
    a->sin6_family = AF_INET6;
    EXPECT_EQ(inet_pton(AF_INET6, text, &a->sin6_addr), 1);
    return s;
}

std::uint64_t key(const sockaddr_storage& s) { return address_key(reinterpret_cast<const sockaddr*>(&s)); }

TEST(AddressKey, SeparatesAddressesAndMatchesMappedIpv4) {
    EXPECT_EQ(key(v4("127.0.0.1")), key(v4("127.0.0.1")));
    EXPECT_NE(key(v4("127.0.0.1")), key(v4("127.0.0.2")));
    EXPECT_EQ(key(v6("::ffff:127.0.0.1")), key(v4("127.0.0.1")));
    EXPECT_NE(key(v6("::1")), key(v4("0.0.0.1")));
    EXPECT_NE(key(v6("2001:db8::1")), key(v6("2001:db8::2")));
    EXPECT_NE(key(v6("2001:db8::1")), key(v6("2001:db9::1")));
    for (const auto& s : {v4("0.0.0.0"), v6("::")}) EXPECT_NE(key(s), 0U);
}

TEST(PerIpLimits, WithoutLimitsIsDisabledAndAdmitsEverything) {
    per_ip_limits limits(0, 0, 64);
    EXPECT_FALSE(limits.enabled());
    ip_slot& s = limits.slot(key(v4("192.0.2.1")));
    for (int i = 0; i < 1000; ++i) {
        EXPECT_TRUE(limits.acquire_connection(s));
        EXPECT_TRUE(limits.acquire_message(s, start));
    }
}

TEST(PerIpLimits, SameAddressSameSlotOtherAddressOtherSlot) {
    per_ip_limits limits(2, 0, 64);
    EXPECT_TRUE(limits.enabled());
    ip_slot& a = limits.slot(key(v4("192.0.2.1")));
    EXPECT_EQ(&limits.slot(key(v4("192.0.2.1"))), &a);
    EXPECT_NE(&limits.slot(key(v4("192.0.2.2"))), &a);
    EXPECT_FALSE(limits.overflowed());
}

TEST(PerIpLimits, ConnectionAboveLimitIsRefusedUntilOneCloses) {
    per_ip_limits limits(2, 0, 64);
    ip_slot& a = limits.slot(key(v4("192.0.2.1")));
    ip_slot& b = limits.slot(key(v4("192.0.2.2")));
    EXPECT_TRUE(limits.acquire_connection(a));
    EXPECT_TRUE(limits.acquire_connection(a));
    EXPECT_FALSE(limits.acquire_connection(a));
    EXPECT_TRUE(limits.acquire_connection(b)) << "another address has its own count";
    limits.release_connection(a);
    EXPECT_TRUE(limits.acquire_connection(a));
    EXPECT_FALSE(limits.acquire_connection(a));
}

TEST(PerIpLimits, FullTableSharesAnOverflowSlot) {
    per_ip_limits limits(1, 0, 4);
    std::set<ip_slot*> slots;
    for (int i = 1; i <= 4; ++i) slots.insert(&limits.slot(0x100 + static_cast<std::uint64_t>(i)));
    EXPECT_EQ(slots.size(), 4U);
    EXPECT_FALSE(limits.overflowed());
    ip_slot& x = limits.slot(0x200);
    ip_slot& y = limits.slot(0x201);
    EXPECT_TRUE(limits.overflowed());
    EXPECT_EQ(&x, &y);
    EXPECT_EQ(slots.count(&x), 0U);
}

TEST(PerIpLimits, ConcurrentClaimsOfOneAddressGetOneSlot) {
    per_ip_limits limits(1, 0, 1024);
    constexpr int threads = 8;
    std::vector<ip_slot*> got(threads * 100);
    std::atomic<bool> go{false};
    std::vector<std::thread> ts;
    for (int t = 0; t < threads; ++t) {
        ts.emplace_back([&, t] {
            while (!go.load()) {}
            for (int k = 0; k < 100; ++k) got[static_cast<std::size_t>(t * 100 + k)] = &limits.slot(0x1000 + k);
        });
    }
    go = true;
    for (auto& t : ts) t.join();
    for (int k = 0; k < 100; ++k)
        for (int t = 1; t < threads; ++t)
            EXPECT_EQ(got[static_cast<std::size_t>(t * 100 + k)], got[static_cast<std::size_t>(k)]) << k;
}

TEST(PerIpLimits, ConcurrentConnectionsNeverExceedTheLimit) {
    constexpr std::uint32_t limit = 3;
    per_ip_limits limits(limit, 0, 64);
    ip_slot& s = limits.slot(key(v4("192.0.2.9")));
    std::atomic<int> holding{0};
    std::atomic<int> most{0};
    std::atomic<long> admitted{0};
    std::atomic<bool> go{false};
    std::vector<std::thread> ts;
    for (int t = 0; t < 8; ++t) {
        ts.emplace_back([&] {
            while (!go.load()) {}
            for (int i = 0; i < 20000; ++i) {
                if (!limits.acquire_connection(s)) continue;
                admitted.fetch_add(1);
                const int now = holding.fetch_add(1) + 1;
                int seen = most.load();
                while (now > seen && !most.compare_exchange_weak(seen, now)) {}
                holding.fetch_sub(1);
                limits.release_connection(s);
            }
        });
    }
    go = true;
    for (auto& t : ts) t.join();
    EXPECT_LE(most.load(), static_cast<int>(limit));
    EXPECT_GT(admitted.load(), 0);
    EXPECT_EQ(s.connections.load(), 0U) << "every acquire was released";
    // And without releases, exactly `limit` of many concurrent attempts get in.
    std::atomic<int> in{0};
    ts.clear();
    for (int t = 0; t < 8; ++t) {
        ts.emplace_back([&] {
            for (int i = 0; i < 100; ++i)
                if (limits.acquire_connection(s)) in.fetch_add(1);
        });
    }
    for (auto& t : ts) t.join();
    EXPECT_EQ(in.load(), static_cast<int>(limit));
}

TEST(RateLimit, BucketHoldsOneSecondOfMessages) {
    const rate_limit five(5);
    EXPECT_EQ(five.burst(), 5);
    EXPECT_EQ(five.interval_ns(), second / 5);
    const rate_limit half(0.5);
    EXPECT_EQ(half.burst(), 1);
    EXPECT_EQ(half.interval_ns(), 2 * second);
}

TEST(RateLimit, BurstPassesThenOneMessagePerInterval) {
    const rate_limit five(5);
    std::atomic<std::int64_t> tat{0};
    int passed = 0;
    for (int i = 0; i < 20; ++i) passed += five.try_acquire(tat, start) ? 1 : 0;
    EXPECT_EQ(passed, 5) << "a burst of 20 at once: the bucket's 5 pass";
    EXPECT_FALSE(five.try_acquire(tat, start + second / 5 - 1));
    EXPECT_TRUE(five.try_acquire(tat, start + second / 5));
    EXPECT_FALSE(five.try_acquire(tat, start + second / 5));
    // After a quiet second the bucket is full again, and no fuller.
    passed = 0;
    for (int i = 0; i < 20; ++i) passed += five.try_acquire(tat, start + 3 * second) ? 1 : 0;
    EXPECT_EQ(passed, 5);
}

TEST(RateLimit, SustainedLoadPassesTheConfiguredRate) {
    // 100 attempts a second for 10 simulated seconds against 7/s: 7 at once, then 7 a second.
    const rate_limit seven(7);
    std::atomic<std::int64_t> tat{0};
    int passed = 0;
    for (int i = 0; i < 1000; ++i) passed += seven.try_acquire(tat, start + i * (second / 100)) ? 1 : 0;
    EXPECT_GE(passed, 7 + 69);
    EXPECT_LE(passed, 7 + 70);
}

TEST(RateLimit, FractionalRateSpacesMessages) {
    const rate_limit half(0.5);
    std::atomic<std::int64_t> tat{0};
    EXPECT_TRUE(half.try_acquire(tat, start));
    EXPECT_FALSE(half.try_acquire(tat, start + second));
    EXPECT_TRUE(half.try_acquire(tat, start + 2 * second));
}

TEST(RateLimit, ConcurrentShardsShareOneBucketExactly) {
    const rate_limit fifty(50);
    std::atomic<std::int64_t> tat{0};
    std::atomic<int> passed{0};
    std::atomic<bool> go{false};
    std::vector<std::thread> ts;
    for (int t = 0; t < 8; ++t) {
        ts.emplace_back([&] {
            while (!go.load()) {}
            for (int i = 0; i < 1000; ++i)
                if (fifty.try_acquire(tat, start)) passed.fetch_add(1);
        });
    }
    go = true;
    for (auto& t : ts) t.join();
    EXPECT_EQ(passed.load(), 50);
}

TEST(PerIpLimits, MessageRateIsPerAddress) {
    per_ip_limits limits(0, 2, 64);
    EXPECT_TRUE(limits.enabled());
    ip_slot& a = limits.slot(key(v4("192.0.2.1")));
    ip_slot& b = limits.slot(key(v4("192.0.2.2")));
    EXPECT_TRUE(limits.acquire_message(a, start));
    EXPECT_TRUE(limits.acquire_message(a, start));
    EXPECT_FALSE(limits.acquire_message(a, start));
    EXPECT_TRUE(limits.acquire_message(b, start));
    EXPECT_TRUE(limits.acquire_message(a, start + second / 2));
    EXPECT_TRUE(limits.acquire_connection(a)) << "no connection limit set";
}

}  // namespace
}  // namespace ringrelay::sink
