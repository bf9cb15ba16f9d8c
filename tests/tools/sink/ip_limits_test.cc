// tests/tools/sink/ip_limits_test.cc: ringrelay-sink's per-IP message rate: the GCRA rate
// limit against an injected clock, per address group in the slots of the shared
// core::address_counter (IPv6 by /64, mapped IPv4 as IPv4), shared by concurrent shards. (The
// per-IP connection count is core::address_counter's, enforced by core::listener: see
// tests/core/address_counter_test.cc and tests/core/listener_test.cc.)
#include "tools/sink/ip_limits.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>

#include <atomic>
#include <cstdio>
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

std::size_t slot_of(const core::address_counter& counter, const sockaddr_storage& s) {
    return counter.slot_of(reinterpret_cast<const sockaddr*>(&s));
}

// The slot of the first of `candidates` (printf patterns with one %d) whose slot is not
// `taken`: the counter's hash key is random per process, so two groups may share a slot.
std::size_t other_slot(const core::address_counter& counter, std::size_t taken, const char* pattern, bool six) {
    for (int i = 1; i < 100; ++i) {
        char text[64];
        std::snprintf(text, sizeof text, pattern, i);
        const std::size_t slot = slot_of(counter, six ? v6(text) : v4(text));
        if (slot != taken) return slot;
    }
    ADD_FAILURE() << "no group outside slot " << taken;
    return taken;
}

TEST(PerIpRate, WithoutALimitIsDisabledAndAdmitsEverything) {
    per_ip_rate rate(0, 64);
    EXPECT_FALSE(rate.enabled());
    for (int i = 0; i < 1000; ++i) EXPECT_TRUE(rate.acquire(7, start));
}

TEST(PerIpRate, AddressesInOneGroupShareABucketOthersDoNot) {
    const core::address_counter counter(1024);
    EXPECT_EQ(slot_of(counter, v6("::ffff:192.0.2.1")), slot_of(counter, v4("192.0.2.1")));
    // The relay's grouping: one customer network behind a v6 /64 is one client.
    EXPECT_EQ(slot_of(counter, v6("2001:db8::1")), slot_of(counter, v6("2001:db8::2")));
    per_ip_rate rate(1, 1024);
    EXPECT_TRUE(rate.acquire(slot_of(counter, v6("2001:db8::1")), start));
    EXPECT_FALSE(rate.acquire(slot_of(counter, v6("2001:db8::ffff")), start)) << "same /64, same bucket";
    const std::size_t other = other_slot(counter, slot_of(counter, v6("2001:db8::1")), "2001:db8:0:%d::1", true);
    EXPECT_TRUE(rate.acquire(other, start)) << "another /64, another bucket";
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

TEST(PerIpRate, MessageRateIsPerAddress) {
    const core::address_counter counter(1024);
    per_ip_rate rate(2, 1024);
    EXPECT_TRUE(rate.enabled());
    const std::size_t a = slot_of(counter, v4("192.0.2.1"));
    const std::size_t b = other_slot(counter, a, "192.0.2.%d", false);
    EXPECT_TRUE(rate.acquire(a, start));
    EXPECT_TRUE(rate.acquire(a, start));
    EXPECT_FALSE(rate.acquire(a, start));
    EXPECT_TRUE(rate.acquire(b, start));
    EXPECT_TRUE(rate.acquire(a, start + second / 2));
}

TEST(PerIpRate, ConcurrentShardsShareOneAddressesBucketExactly) {
    per_ip_rate rate(50, 64);
    std::atomic<int> passed{0};
    std::atomic<bool> go{false};
    std::vector<std::thread> ts;
    for (int t = 0; t < 8; ++t) {
        ts.emplace_back([&] {
            while (!go.load()) {}
            for (int i = 0; i < 1000; ++i)
                if (rate.acquire(5, start)) passed.fetch_add(1);
        });
    }
    go = true;
    for (auto& t : ts) t.join();
    EXPECT_EQ(passed.load(), 50);
}

}  // namespace
}  // namespace ringrelay::sink
