// Unit tests of core/timer_wheel.h with a clock the tests move by hand: timers pop at their
// exact tick and earliest first (against a sorted reference, near and far), same-tick timers in
// the order they were added, cancellation (also of stale handles), timers far ahead cascading
// down level by level, next_expiry() as a lower bound that never passes a timer, timers added
// in the past, and a million timers popped with a bounded amount of work per timer.
#include "core/timer_wheel.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <random>
#include <utility>
#include <vector>

using ringrelay::core::timer_handle;
using wheel = ringrelay::core::timer_wheel<std::uint64_t>;

namespace {

constexpr std::uint64_t t0 = 1'700'000'000'000'000;  // Unix microseconds, as the scheduler's

// Pops everything due at `now`, in order.
std::vector<std::uint64_t> pop_all(wheel& w, std::uint64_t now) {
    std::vector<std::uint64_t> out;
    std::uint64_t v = 0;
    while (w.pop(now, v)) out.push_back(v);
    return out;
}

}  // namespace

TEST(TimerWheel, PopsEachTimerAtItsExactTickAndNotBefore) {
    wheel w;
    // One timer per level distance: 1 tick, 63, 64, 4095, 4096, ... up to 2^62 ticks ahead.
    std::vector<std::uint64_t> offsets{1, 2, 63, 64, 65};
    for (unsigned shift = 12; shift <= 62; shift += 6) {
        offsets.push_back((std::uint64_t{1} << shift) - 1);
        offsets.push_back(std::uint64_t{1} << shift);
        offsets.push_back((std::uint64_t{1} << shift) + 12345);
    }
    for (const std::uint64_t off : offsets) {
        wheel one(t0);
        one.add(t0 + off, off);
        std::uint64_t v = 0, expiry = 0;
        EXPECT_FALSE(one.pop(t0 + off - 1, v)) << "not due one tick early: +" << off;
        ASSERT_TRUE(one.pop(t0 + off, v, &expiry)) << "due at its tick: +" << off;
        EXPECT_EQ(v, off);
        EXPECT_EQ(expiry, t0 + off);
        EXPECT_TRUE(one.empty());
    }
}

TEST(TimerWheel, PopsEarliestFirstAcrossLevels) {
    std::mt19937_64 random(7);
    wheel w(t0);
    std::vector<std::pair<std::uint64_t, std::uint64_t>> reference;  // (expiry, value)
    for (std::uint64_t i = 0; i < 20000; ++i) {
        // Microseconds up to about five days ahead, and a few beyond a year.
        const std::uint64_t span = i % 100 == 0 ? (std::uint64_t{1} << 45) : 5ULL * 86'400'000'000ULL;
        const std::uint64_t at = t0 + 1 + random() % span;
        w.add(at, i);
        reference.emplace_back(at, i);
    }
    std::stable_sort(reference.begin(), reference.end(),
                     [](const auto& a, const auto& b) { return a.first < b.first; });
    // The clock moves in uneven steps, as a shard's does.
    std::vector<std::uint64_t> popped;
    std::uint64_t now = t0;
    std::uint64_t last_expiry = 0;
    while (!w.empty()) {
        now += 1 + random() % 50'000'000'000ULL;
        std::uint64_t v = 0, expiry = 0;
        while (w.pop(now, v, &expiry)) {
            EXPECT_LE(expiry, now);
            EXPECT_GE(expiry, last_expiry);
            last_expiry = expiry;
            popped.push_back(v);
        }
    }
    ASSERT_EQ(popped.size(), reference.size());
    for (std::size_t i = 0; i < popped.size(); ++i) ASSERT_EQ(popped[i], reference[i].second) << "at " << i;
}

TEST(TimerWheel, TimersOfTheSameTickPopInTheOrderTheyWereAdded) {
    wheel w(t0);
    const std::uint64_t at = t0 + 5'000'000;  // two levels up at first
    for (std::uint64_t i = 0; i < 100; ++i) w.add(at, i);
    // More for the same tick added as the wheel's time gets closer (straight to lower levels).
    EXPECT_TRUE(pop_all(w, at - 4000).empty());
    for (std::uint64_t i = 100; i < 150; ++i) w.add(at, i);
    EXPECT_TRUE(pop_all(w, at - 1).empty());
    for (std::uint64_t i = 150; i < 200; ++i) w.add(at, i);
    const std::vector<std::uint64_t> got = pop_all(w, at);
    ASSERT_EQ(got.size(), 200u);
    for (std::uint64_t i = 0; i < 200; ++i) EXPECT_EQ(got[i], i);
}

TEST(TimerWheel, CancelledTimersNeverPopAndOthersInTheirSlotStay) {
    wheel w(t0);
    std::vector<timer_handle> h;
    for (std::uint64_t i = 0; i < 10; ++i) h.push_back(w.add(t0 + 1000, i));  // one slot
    const timer_handle far = w.add(t0 + 86'400'000'000ULL, 99);
    EXPECT_TRUE(w.cancel(h[0]));  // the head of the slot's list
    EXPECT_TRUE(w.cancel(h[5]));  // the middle
    EXPECT_TRUE(w.cancel(h[9]));  // the tail
    EXPECT_TRUE(w.cancel(far));
    EXPECT_EQ(w.size(), 7u);
    EXPECT_EQ(pop_all(w, t0 + 1000), (std::vector<std::uint64_t>{1, 2, 3, 4, 6, 7, 8}));
    EXPECT_TRUE(w.empty());
    EXPECT_EQ(w.next_expiry(), wheel::never) << "the cancelled far timer left nothing behind";
    EXPECT_TRUE(pop_all(w, UINT64_MAX - 1).empty());
}

TEST(TimerWheel, CancellingAPoppedOrCancelledTimerDoesNothingEvenAfterItsNodeIsReused) {
    wheel w(t0);
    const timer_handle a = w.add(t0 + 10, 1);
    EXPECT_EQ(pop_all(w, t0 + 10), (std::vector<std::uint64_t>{1}));
    EXPECT_FALSE(w.cancel(a)) << "popped already";
    const timer_handle b = w.add(t0 + 20, 2);  // reuses a's node
    EXPECT_EQ(b.index, a.index);
    EXPECT_FALSE(w.cancel(a)) << "a stale handle does not cancel the node's new timer";
    EXPECT_EQ(w.size(), 1u);
    EXPECT_TRUE(w.cancel(b));
    EXPECT_FALSE(w.cancel(b)) << "twice";
    const timer_handle c = w.add(t0 + 20, 3);  // the node again, the same tick as b's dead entry
    EXPECT_EQ(c.index, a.index);
    EXPECT_EQ(pop_all(w, t0 + 20), (std::vector<std::uint64_t>{3})) << "b stays cancelled";
    EXPECT_FALSE(w.cancel(timer_handle{})) << "no timer";
    EXPECT_FALSE(w.cancel(timer_handle{12345, 0})) << "a node never made";
    EXPECT_TRUE(w.empty());
}

TEST(TimerWheel, AFarTimerCascadesDownOneLevelAtATimeAndNextExpiryNeverPassesIt) {
    wheel w(t0);
    const std::uint64_t at = t0 + 3 * 86'400'000'000ULL + 7;  // three days ahead, in microseconds
    w.add(at, 42);
    // Follow next_expiry() as a shard's alarm would: each wake-up is a slot start at or
    // before the timer, until the exact tick.
    std::uint64_t now = t0;
    std::vector<std::uint64_t> wakeups;
    std::uint64_t v = 0;
    while (true) {
        const std::uint64_t next = w.next_expiry();
        ASSERT_NE(next, wheel::never);
        ASSERT_LE(next, at) << "a lower bound";
        ASSERT_GT(next, now) << "progress";
        now = next;
        wakeups.push_back(now);
        if (w.pop(now, v)) break;
    }
    EXPECT_EQ(v, 42u);
    EXPECT_EQ(wakeups.back(), at);
    // 3 days = 2^37.9 us: added on level 6, then once on each level below.
    EXPECT_LE(wakeups.size(), 7u);
    EXPECT_EQ(w.work().cascaded, wakeups.size() - 1);
}

TEST(TimerWheel, NextExpiryIsExactOnTheLowestLevelAndNeverWhenEmpty) {
    wheel w(t0);
    EXPECT_EQ(w.next_expiry(), wheel::never);
    w.add(t0 + 40, 1);  // t0 is a multiple of 64: the same 64-tick block
    w.add(t0 + 30, 2);
    EXPECT_EQ(w.next_expiry(), t0 + 30);
    EXPECT_EQ(pop_all(w, t0 + 30), (std::vector<std::uint64_t>{2}));
    EXPECT_EQ(w.next_expiry(), t0 + 40);
    const timer_handle h = w.add(t0 + 35, 3);
    EXPECT_EQ(w.next_expiry(), t0 + 35) << "an earlier timer added";
    EXPECT_TRUE(w.cancel(h));
    // Cancelled lazily: its tick may still be named, and popping there finds nothing.
    EXPECT_LE(w.next_expiry(), t0 + 40);
    EXPECT_TRUE(pop_all(w, t0 + 35).empty());
    EXPECT_EQ(w.next_expiry(), t0 + 40) << "and cancelled";
}

TEST(TimerWheel, TimersAddedForATimeAlreadyPassedPopAtTheNextPopFirst) {
    wheel w(t0);
    w.add(t0 + 100, 1);
    w.add(t0 + 200, 2);
    EXPECT_EQ(pop_all(w, t0 + 150), (std::vector<std::uint64_t>{1}));
    EXPECT_EQ(w.time(), t0 + 150);
    w.add(t0 + 120, 3);  // already passed
    w.add(t0 + 150, 4);  // the wheel's time itself
    w.add(t0 + 10, 5);
    EXPECT_EQ(w.next_expiry(), t0 + 120);
    // Due whatever the time given, in the order they were added, before anything else.
    EXPECT_EQ(pop_all(w, t0), (std::vector<std::uint64_t>{3, 4, 5}));
    EXPECT_EQ(pop_all(w, t0 + 1000), (std::vector<std::uint64_t>{2}));
}

TEST(TimerWheel, ATimeEarlierThanTheWheelsPopsNothingNew) {
    wheel w(t0);
    w.add(t0 + 500, 1);
    EXPECT_TRUE(pop_all(w, t0 + 400).empty());
    EXPECT_TRUE(pop_all(w, t0 + 100).empty()) << "a clock that went back";
    EXPECT_EQ(pop_all(w, t0 + 500), (std::vector<std::uint64_t>{1}));
}

TEST(TimerWheel, AddsBetweenPopsOfOneCallerTimeKeepTheOrder) {
    // The scheduler pops one timer at a time and may add new ones in between (a retry planned
    // while handling the last): the wheel's time may then lag the caller's.
    wheel w(t0);
    for (std::uint64_t i = 0; i < 64; ++i) w.add(t0 + 1 + i * 1000, i);
    const std::uint64_t now = t0 + 100'000;
    std::uint64_t v = 0, expiry = 0, last = 0;
    std::vector<std::uint64_t> got;
    while (w.pop(now, v, &expiry)) {
        EXPECT_GE(expiry, last);
        last = expiry;
        got.push_back(v);
        if (v < 64 && v % 8 == 0) w.add(now + 50'000 + v, 1000 + v);  // later than `now`
        if (v == 10) w.add(t0 + 1 + 10'500, 500);  // between the next two, still due
    }
    EXPECT_EQ(got.size(), 65u);
    EXPECT_EQ(got[11], 500u);
    EXPECT_EQ(pop_all(w, now + 50'000 + 56).size(), 8u);
}

TEST(TimerWheel, AMillionTimersCostABoundedAmountOfWorkEach) {
    // A million retries in microseconds, from a minute to five days ahead (the default
    // --retry-intervals and --max-age), popped as a shard's clock passes; plus a tenth of
    // them cancelled. No timer is moved down more often than there are levels below its
    // first, and no more slots are processed than there are cascades plus pops.
    constexpr std::size_t n = 1'000'000;
    std::mt19937_64 random(11);
    wheel w(t0);
    std::vector<timer_handle> handles;
    handles.reserve(n);
    std::uint64_t max_levels_moved = 0;
    for (std::size_t i = 0; i < n; ++i) {
        const std::uint64_t ahead = 60'000'000ULL + random() % (5ULL * 86'400'000'000ULL);
        handles.push_back(w.add(t0 + ahead, i));
        const auto level = static_cast<std::uint64_t>((63 - std::countl_zero((t0 + ahead) ^ t0)) / 6);
        max_levels_moved += level;
    }
    std::size_t cancelled = 0;
    for (std::size_t i = 0; i < n; i += 10) cancelled += w.cancel(handles[i]) ? 1 : 0;
    EXPECT_EQ(cancelled, n / 10);
    std::size_t popped = 0;
    std::uint64_t now = t0;
    std::uint64_t last = 0;
    std::uint64_t v = 0, expiry = 0;
    while (!w.empty()) {
        now += 1'000'000 + random() % 60'000'000;  // wake-ups a second to a minute apart
        while (w.pop(now, v, &expiry)) {
            ASSERT_NE(v % 10, 0u) << "a cancelled timer popped";
            ASSERT_GE(expiry, last);
            last = expiry;
            ++popped;
        }
    }
    EXPECT_EQ(popped, n - n / 10);
    EXPECT_LE(w.work().cascaded, max_levels_moved) << "at most one move per level below the first";
    EXPECT_LE(w.work().cascaded, std::uint64_t{6} * n) << "5 days = 2^38.6 us: at most 6 levels";
    EXPECT_LE(w.work().slots_processed, w.work().cascaded + popped);
}

TEST(TimerWheel, CancellingMostTimersCompactsAndTheRestStillPopInOrder) {
    // The pool cancels a back-off's timer on every success: cancelled entries must not pile
    // up. Once the dead outnumber the live, they are dropped.
    wheel w(t0);
    std::vector<timer_handle> h;
    for (std::uint64_t i = 0; i < 100'000; ++i) h.push_back(w.add(t0 + 1'000'000 + (i * 7919) % 3'600'000'000ULL, i));
    for (std::uint64_t i = 0; i < 100'000; ++i) {
        if (i % 100 != 0) {
            EXPECT_TRUE(w.cancel(h[i]));
        }
    }
    EXPECT_GE(w.work().compactions, 1u);
    EXPECT_EQ(w.size(), 1000u);
    std::uint64_t v = 0, expiry = 0, last = 0, n = 0;
    while (w.pop(t0 + 4'000'000'000ULL, v, &expiry)) {
        EXPECT_EQ(v % 100, 0u);
        EXPECT_GE(expiry, last);
        last = expiry;
        ++n;
    }
    EXPECT_EQ(n, 1000u);
    EXPECT_TRUE(w.empty());
    EXPECT_EQ(w.next_expiry(), wheel::never);
}
