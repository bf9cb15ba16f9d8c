// tests/core/address_counter_test.cc: per-address counts shared across threads
// (--max-connections-per-ip) and the shared total (--max-connections).
#include "core/address_counter.h"

#include <arpa/inet.h>

#include <atomic>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

namespace ringrelay::core {
namespace {

sockaddr_storage v4(const char* text) {
    sockaddr_storage ss{};
    auto* a = reinterpret_cast<sockaddr_in*>(&ss);
    a->sin_family = AF_INET;
    EXPECT_EQ(inet_pton(AF_INET, text, &a->sin_addr), 1);
    return ss;
}

sockaddr_storage v6(const char* text) {
    sockaddr_storage ss{};
    auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
    a->sin6_family = AF_INET6;
    EXPECT_EQ(inet_pton(AF_INET6, text, &a->sin6_addr), 1);
    return ss;
}

const sockaddr* sa(const sockaddr_storage& ss) { return reinterpret_cast<const sockaddr*>(&ss); }

TEST(address_counter, limit_is_per_address) {
    address_counter counter;
    const auto a = v4("192.0.2.1");
    const auto b = v4("192.0.2.2");
    const std::size_t sa_slot = counter.slot_of(sa(a));
    const std::size_t sb_slot = counter.slot_of(sa(b));
    ASSERT_NE(sa_slot, sb_slot) << "two addresses collided; the key is random, so this is 1 in 65536";
    EXPECT_TRUE(counter.acquire(sa_slot, 2));
    EXPECT_TRUE(counter.acquire(sa_slot, 2));
    EXPECT_FALSE(counter.acquire(sa_slot, 2));
    EXPECT_TRUE(counter.acquire(sb_slot, 2));
    EXPECT_EQ(counter.count(sa_slot), 2u);
    counter.release(sa_slot);
    EXPECT_TRUE(counter.acquire(sa_slot, 2));
    EXPECT_FALSE(counter.acquire(sa_slot, 2));
}

TEST(address_counter, zero_means_no_limit) {
    address_counter counter(16);
    for (int i = 0; i < 1000; ++i) EXPECT_TRUE(counter.acquire(3, 0));
    EXPECT_EQ(counter.count(3), 1000u);
}

TEST(address_counter, ipv6_groups_by_64_and_mapped_v4_is_v4) {
    address_counter counter;
    EXPECT_EQ(counter.slot_of(sa(v6("2001:db8:1:2::1"))), counter.slot_of(sa(v6("2001:db8:1:2:ffff::9"))));
    EXPECT_NE(counter.slot_of(sa(v6("2001:db8:1:2::1"))), counter.slot_of(sa(v6("2001:db8:1:3::1"))));
    EXPECT_EQ(counter.slot_of(sa(v6("::ffff:192.0.2.7"))), counter.slot_of(sa(v4("192.0.2.7"))));
}

TEST(address_counter, slots_spread) {
    // 1000 addresses over 65536 slots: a handful of shared slots at most, not a pile-up.
    address_counter counter;
    std::vector<int> used(address_counter::default_slots, 0);
    int shared = 0;
    for (int i = 0; i < 1000; ++i) {
        char text[32];
        std::snprintf(text, sizeof text, "10.0.%d.%d", i / 256, i % 256);
        if (used[counter.slot_of(sa(v4(text)))]++ > 0) ++shared;
    }
    EXPECT_LT(shared, 40);
}

TEST(address_counter, concurrent_acquire_never_exceeds_the_limit) {
    address_counter counter(16);
    shared_limit total;
    constexpr std::uint32_t limit = 50;
    std::atomic<int> granted{0};
    std::atomic<int> max_seen{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
        threads.emplace_back([&] {
            for (int i = 0; i < 20000; ++i) {
                if (!total.acquire(limit)) continue;
                if (counter.acquire(5, limit)) {
                    const int now = granted.fetch_add(1) + 1;
                    int seen = max_seen.load();
                    while (now > seen && !max_seen.compare_exchange_weak(seen, now)) {
                    }
                    granted.fetch_sub(1);
                    counter.release(5);
                }
                total.release();
            }
        });
    }
    for (auto& t : threads) t.join();
    EXPECT_LE(max_seen.load(), static_cast<int>(limit));
    EXPECT_EQ(counter.count(5), 0u);
    EXPECT_EQ(total.count(), 0u);
}

TEST(shared_limit, refuses_above_the_limit) {
    shared_limit total;
    EXPECT_TRUE(total.acquire(1));
    EXPECT_FALSE(total.acquire(1));
    total.release();
    EXPECT_TRUE(total.acquire(1));
}

}  // namespace
}  // namespace ringrelay::core
