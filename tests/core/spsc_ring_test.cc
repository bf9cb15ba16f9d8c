// Unit tests of core/spsc_ring.h (single-threaded behaviour; the threaded stress test is
// mailbox_stress_test.cc).
#include "core/spsc_ring.h"

#include <gtest/gtest.h>

#include <memory>

using ringrelay::core::spsc_ring;

TEST(SpscRing, KeepsFifoOrderAcrossWrapAround) {
    spsc_ring<int> ring(4);
    int next_in = 0;
    int next_out = 0;
    for (int round = 0; round < 100; ++round) {
        while (ring.try_push(next_in)) ++next_in;
        for (int k = 0; k < 3; ++k) {
            auto v = ring.try_pop();
            ASSERT_TRUE(v.has_value());
            EXPECT_EQ(*v, next_out++);
        }
    }
}

TEST(SpscRing, RefusesPushWhenFullAndPopWhenEmpty) {
    spsc_ring<int> ring(3);  // rounds up to 4
    EXPECT_EQ(ring.capacity(), 4u);
    EXPECT_FALSE(ring.try_pop().has_value());
    for (int i = 0; i < 4; ++i) EXPECT_TRUE(ring.try_push(i));
    int extra = 99;
    EXPECT_FALSE(ring.try_push(extra));
    EXPECT_EQ(extra, 99);  // untouched on failure
}

TEST(SpscRing, MovesOwnershipOfValues) {
    spsc_ring<std::unique_ptr<int>> ring(2);
    auto p = std::make_unique<int>(7);
    ASSERT_TRUE(ring.try_push(p));
    EXPECT_EQ(p, nullptr);
    auto out = ring.try_pop();
    ASSERT_TRUE(out.has_value());
    EXPECT_EQ(**out, 7);
}
