// Unit tests of queue::auth_failures (queue/auth.h): the per-address AUTH limit shared by
// every shard. Failures count within a window that starts with the first one; checks in
// flight count against what is left (at most two at once), so parallel connections cannot
// all reach the password check; IPv6 addresses count per /64 and IPv4-mapped ones as IPv4;
// a window that has passed starts afresh.
#include <gtest/gtest.h>

#include <thread>
#include <vector>

#include "core/password_hash.h"
#include "queue/auth.h"

using ringrelay::queue::auth_failures;
using admission = auth_failures::admission;

TEST(AuthFailures, BlocksAtTheLimitUntilTheWindowHasPassed) {
    auth_failures f(3, 60'000);
    const std::size_t a = f.slot_of("192.0.2.1");
    const std::int64_t t0 = 1'000'000;
    for (int i = 0; i < 2; ++i) {
        ASSERT_EQ(f.begin(a, t0), admission::ok);
        EXPECT_FALSE(f.end(a, true, t0));
    }
    EXPECT_FALSE(f.blocked(a, t0));
    ASSERT_EQ(f.begin(a, t0), admission::ok);
    EXPECT_TRUE(f.end(a, true, t0)) << "the third failure reaches the limit";
    EXPECT_TRUE(f.blocked(a, t0 + 59'000));
    EXPECT_EQ(f.begin(a, t0 + 59'000), admission::blocked);
    EXPECT_FALSE(f.blocked(a, t0 + 60'000)) << "the window has passed";
    ASSERT_EQ(f.begin(a, t0 + 60'000), admission::ok);
    EXPECT_FALSE(f.end(a, true, t0 + 60'000)) << "a new window starts with one failure";
}

TEST(AuthFailures, SuccessesDoNotCount) {
    auth_failures f(2, 60'000);
    const std::size_t a = f.slot_of("192.0.2.2");
    for (int i = 0; i < 10; ++i) {
        ASSERT_EQ(f.begin(a, 0), admission::ok);
        EXPECT_FALSE(f.end(a, false, 0));
    }
    EXPECT_FALSE(f.blocked(a, 0));
}

TEST(AuthFailures, ChecksInFlightUseUpWhatIsLeft) {
    auth_failures f(10, 60'000);
    const std::size_t a = f.slot_of("192.0.2.3");
    EXPECT_EQ(f.begin(a, 0), admission::ok);
    EXPECT_EQ(f.begin(a, 0), admission::ok);
    EXPECT_EQ(f.begin(a, 0), admission::busy) << "at most two checks at once per address";
    f.end(a, true, 0);
    EXPECT_EQ(f.begin(a, 0), admission::ok);
    f.end(a, true, 0);
    f.end(a, true, 0);
    // 3 failures; 7 left. With 9 failures only one check may be in flight.
    for (int i = 0; i < 6; ++i) {
        ASSERT_EQ(f.begin(a, 0), admission::ok);
        f.end(a, true, 0);
    }
    EXPECT_EQ(f.begin(a, 0), admission::ok);
    EXPECT_EQ(f.begin(a, 0), admission::busy) << "one failure left: one check";
    EXPECT_TRUE(f.end(a, true, 0));
    EXPECT_EQ(f.begin(a, 0), admission::blocked);
}

TEST(AuthFailures, AddressesAndPrefixes) {
    auth_failures f(1, 60'000);
    const std::size_t v6 = f.slot_of("2001:db8:1:2::1");
    EXPECT_EQ(f.slot_of("2001:db8:1:2:ffff::9"), v6) << "same /64";
    EXPECT_EQ(f.slot_of("::ffff:192.0.2.9"), f.slot_of("192.0.2.9")) << "IPv4-mapped counts as IPv4";
    ASSERT_EQ(f.begin(v6, 0), admission::ok);
    EXPECT_TRUE(f.end(v6, true, 0));
    EXPECT_TRUE(f.blocked(f.slot_of("2001:db8:1:2::abcd"), 0));
    // Another /64 and another IPv4 address are not blocked (unless they share a slot: 1 in
    // 2^18 with the random key; check a few so that one collision cannot fail the test).
    int free_others = 0;
    for (const char* other : {"2001:db8:1:3::1", "192.0.2.10", "192.0.2.11", "198.51.100.1"})
        free_others += f.blocked(f.slot_of(other), 0) ? 0 : 1;
    EXPECT_GE(free_others, 3);
}

TEST(AuthFailures, ConcurrentFailuresAreAllCounted) {
    auth_failures f(1'000'000, 600'000);
    const std::size_t a = f.slot_of("203.0.113.7");
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
        threads.emplace_back([&] {
            for (int i = 0; i < 10'000;) {
                if (f.begin(a, 1000) != admission::ok) continue;
                f.end(a, true, 1000);
                ++i;
            }
        });
    }
    for (auto& t : threads) t.join();
    // 40,000 failures recorded: 999,999 more would block; 960,000 more would not.
    auth_failures::admission last = admission::ok;
    for (int i = 0; i < 959'999; ++i) {
        last = f.begin(a, 1000);
        if (last != admission::ok) break;
        f.end(a, true, 1000);
    }
    EXPECT_EQ(last, admission::ok);
    EXPECT_FALSE(f.blocked(a, 1000));
    ASSERT_EQ(f.begin(a, 1000), admission::ok);
    EXPECT_TRUE(f.end(a, true, 1000)) << "exactly the millionth failure blocks";
}

// The hash an unknown user is checked against has the cost most users have, so that an
// unknown name takes as long as most known ones; the number of distinct costs is reported.
TEST(UserTable, DummyHashHasTheMostCommonCost) {
    using ringrelay::core::scrypt_params;
    auto h10a = ringrelay::core::hash_password("a", scrypt_params{10, 8, 1});
    auto h10b = ringrelay::core::hash_password("b", scrypt_params{10, 8, 1});
    auto h11 = ringrelay::core::hash_password("c", scrypt_params{11, 8, 1});
    ASSERT_TRUE(h10a && h10b && h11);
    auto users = ringrelay::core::auth_users::parse("ann:" + *h11 + "\nbob:" + *h10a + "\ncid:" + *h10b + "\n", "t");
    ASSERT_TRUE(users.has_value()) << users.error();
    auto table = ringrelay::queue::user_table::make(std::move(*users));
    ASSERT_TRUE(table.has_value()) << table.error();
    auto p = ringrelay::core::hash_parameters((*table)->dummy_hash);
    ASSERT_TRUE(p.has_value());
    EXPECT_EQ(p->log2_n, 10);
    EXPECT_EQ((*table)->costs, 2u);
    EXPECT_EQ((*table)->users.size(), 3u);
    // The dummy's password is random: none of the users' passwords matches it.
    for (const char* pw : {"a", "b", "c", ""})
        EXPECT_EQ(ringrelay::core::verify_password(pw, (*table)->dummy_hash).value(),
                  ringrelay::core::password_match::no);
}
