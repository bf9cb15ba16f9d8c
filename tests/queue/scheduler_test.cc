// Unit tests of queue/scheduler.h: ready queues per destination (first in, first out), retry
// plans from the retry schedule, and retry timers popped earliest first. Hermetic: every call
// is given the time, so the tests move the clock by hand.
#include "queue/scheduler.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <vector>

using namespace ringrelay;
using namespace ringrelay::queue;
using namespace std::chrono_literals;

namespace {

constexpr std::uint64_t us(std::chrono::milliseconds ms) { return static_cast<std::uint64_t>(ms.count()) * 1000; }

constexpr std::uint64_t t0 = 1'700'000'000'000'000;  // an arrival time (Unix us)

}  // namespace

TEST(ReadyQueue, JobsComeOutInTheOrderTheyWentIn) {
    const retry_schedule schedule({1min}, 1h, 0);
    scheduler s(schedule, 1);
    ready_queue& q = s.queue_for("mx:example.net");
    delivery_job a, b, c;
    EXPECT_TRUE(q.empty());
    q.push(&a);
    q.push(&b);
    q.push(&c);
    EXPECT_EQ(q.size(), 3u);
    EXPECT_EQ(q.pop(), &a);
    EXPECT_EQ(q.pop(), &b);
    q.push(&a);
    EXPECT_EQ(q.pop(), &c);
    EXPECT_EQ(q.pop(), &a);
    EXPECT_TRUE(q.empty());
}

TEST(ReadyQueue, OneQueuePerDestinationKeyThatStaysPut) {
    const retry_schedule schedule({1min}, 1h, 0);
    scheduler s(schedule, 1);
    ready_queue& q1 = s.queue_for("mx:example.net");
    ready_queue& q2 = s.queue_for("mx:example.net|tls=required");
    EXPECT_NE(&q1, &q2);
    for (int i = 0; i < 1000; ++i) (void)s.queue_for("mx:d" + std::to_string(i) + ".example");
    EXPECT_EQ(&s.queue_for("mx:example.net"), &q1) << "a reference stays valid as queues are added";
    delivery_job j;
    q1.push(&j);
    EXPECT_TRUE(q2.empty());
    EXPECT_EQ(q1.pop(), &j);
}

TEST(ReadyQueue, JobsStillQueuedAreFreedWithTheScheduler) {
    const retry_schedule schedule({1min}, 1h, 0);
    auto s = std::make_unique<scheduler>(schedule, 1);
    s->queue_for("a").push(new delivery_job());
    s->queue_for("b").push(new delivery_job());
    s.reset();  // ASan (build-asan) reports a leak if they are not
    SUCCEED();
}

TEST(Scheduler, RetryPlanFollowsTheIntervalsWithoutJitter) {
    const retry_schedule schedule({1min, 10min, 1h}, 24h, 0);
    scheduler s(schedule, 7);
    const std::uint64_t now = t0 + us(2min);
    retry_plan p = s.plan_retry(1, t0, now);
    EXPECT_FALSE(p.expired);
    EXPECT_EQ(p.at_us, now + us(1min));
    p = s.plan_retry(2, t0, now);
    EXPECT_EQ(p.at_us, now + us(10min));
    p = s.plan_retry(3, t0, now);
    EXPECT_EQ(p.at_us, now + us(1h));
    p = s.plan_retry(50, t0, now);
    EXPECT_EQ(p.at_us, now + us(1h)) << "the last interval repeats";
}

TEST(Scheduler, NoRetryPastTheMaximumAgeAndExpiryAfterIt) {
    const retry_schedule schedule({1h}, 2h, 0);
    scheduler s(schedule, 7);
    // 90 minutes old: the next try is capped at arrival + max age.
    retry_plan p = s.plan_retry(1, t0, t0 + us(90min));
    EXPECT_FALSE(p.expired);
    EXPECT_EQ(p.at_us, t0 + us(2h));
    p = s.plan_retry(2, t0, t0 + us(2h));
    EXPECT_TRUE(p.expired);
}

TEST(Scheduler, JitterStaysWithinItsShareAndDependsOnTheSeed) {
    const retry_schedule schedule({10min}, 24h, 10);
    scheduler a(schedule, 1), b(schedule, 1), c(schedule, 99);
    bool differs = false;
    for (int i = 0; i < 100; ++i) {
        const retry_plan pa = a.plan_retry(1, t0, t0);
        const retry_plan pb = b.plan_retry(1, t0, t0);
        const retry_plan pc = c.plan_retry(1, t0, t0);
        EXPECT_EQ(pa.at_us, pb.at_us) << "same seed, same schedule";
        differs = differs || pa.at_us != pc.at_us;
        EXPECT_GE(pa.at_us, t0 + us(9min));
        EXPECT_LE(pa.at_us, t0 + us(11min));
    }
    EXPECT_TRUE(differs);
}

TEST(Scheduler, TimersPopEarliestFirstAndOnlyOnceDue) {
    const retry_schedule schedule({1min}, 1h, 0);
    scheduler s(schedule, 1);
    s.retry_at(t0 + 300, 3);
    s.retry_at(t0 + 100, 1);
    s.retry_at(t0 + 200, 2);
    s.retry_at(t0 + 200, 4);
    EXPECT_EQ(s.timers(), 4u);
    std::uint64_t id = 0;
    EXPECT_FALSE(s.pop_due(t0 + 99, id));
    ASSERT_TRUE(s.pop_due(t0 + 100, id));
    EXPECT_EQ(id, 1u);
    EXPECT_FALSE(s.pop_due(t0 + 199, id));
    std::vector<std::uint64_t> ids;
    while (s.pop_due(t0 + 1000, id)) ids.push_back(id);
    EXPECT_EQ(ids, (std::vector<std::uint64_t>{2, 4, 3}));
    EXPECT_EQ(s.timers(), 0u);
    EXPECT_FALSE(s.pop_due(UINT64_MAX, id));
}

TEST(Scheduler, TwoTimersOfOneMessageEachPop) {
    const retry_schedule schedule({1min}, 1h, 0);
    scheduler s(schedule, 1);
    s.retry_at(t0 + 10, 42);
    s.retry_at(t0 + 20, 42);
    std::uint64_t id = 0;
    ASSERT_TRUE(s.pop_due(t0 + 30, id));
    EXPECT_EQ(id, 42u);
    ASSERT_TRUE(s.pop_due(t0 + 30, id));
    EXPECT_EQ(id, 42u);
    EXPECT_FALSE(s.pop_due(t0 + 30, id));
}

// Issue 15: retries on a timer wheel, woken by an io_uring timeout at next_retry_us().
TEST(Scheduler, NextRetryNeverPassesTheEarliestTimerAndReachesItExactly) {
    const retry_schedule schedule({1min}, 1h, 0);
    scheduler s(schedule, 1);
    EXPECT_EQ(s.next_retry_us(), scheduler::no_retry);
    const std::uint64_t at = t0 + us(4h) + 250'123;
    s.retry_at(at, 7);
    s.retry_at(at + us(1h), 8);
    // Sleep until next_retry_us(), pop, repeat: as the delivery's alarm does.
    std::uint64_t now = t0;
    std::uint64_t id = 0;
    int wakeups = 0;
    while (!s.pop_due(now, id)) {
        const std::uint64_t next = s.next_retry_us();
        ASSERT_LE(next, at);
        ASSERT_GT(next, now);
        now = next;
        ASSERT_LT(++wakeups, 10) << "a few wake-ups on the way (one per level at most)";
    }
    EXPECT_EQ(id, 7u);
    EXPECT_EQ(now, at) << "popped at its exact microsecond";
    EXPECT_LE(s.next_retry_us(), at + us(1h));
    EXPECT_EQ(s.timers(), 1u);
}

TEST(Scheduler, MillisecondIntervalsGiveRetriesThatPopOnTheirMicrosecond) {
    const retry_schedule schedule({250ms, 1s}, 1h, 10);
    scheduler s(schedule, 3);
    const std::uint64_t now = t0 + 1234;
    const retry_plan first = s.plan_retry(1, t0, now);
    ASSERT_FALSE(first.expired);
    EXPECT_GE(first.at_us, now + us(225ms));
    EXPECT_LE(first.at_us, now + us(275ms));
    const retry_plan second = s.plan_retry(2, t0, now);
    EXPECT_GE(second.at_us, now + us(900ms));
    EXPECT_LE(second.at_us, now + us(1100ms));
    s.retry_at(first.at_us, 1);
    s.retry_at(second.at_us, 2);
    std::uint64_t id = 0;
    EXPECT_FALSE(s.pop_due(first.at_us - 1, id));
    ASSERT_TRUE(s.pop_due(first.at_us, id));
    EXPECT_EQ(id, 1u);
    EXPECT_FALSE(s.pop_due(second.at_us - 1, id));
    ASSERT_TRUE(s.pop_due(second.at_us, id));
    EXPECT_EQ(id, 2u);
}

TEST(Scheduler, ManyMessagesRetriesPopEarliestFirstAsTheClockPasses) {
    const retry_schedule schedule({1min, 10min, 1h, 4h}, 5 * 24h, 10);
    scheduler s(schedule, 5);
    std::vector<std::uint64_t> at_of;  // by queue id
    for (std::uint64_t id = 0; id < 200'000; ++id) {
        const retry_plan p = s.plan_retry(static_cast<std::uint32_t>(1 + id % 4), t0, t0 + id);
        ASSERT_FALSE(p.expired);
        s.retry_at(p.at_us, id);
        at_of.push_back(p.at_us);
    }
    std::uint64_t now = t0, last = 0, id = 0, popped = 0;
    while (s.timers() != 0) {
        now += us(1s);
        while (s.pop_due(now, id)) {
            ASSERT_LE(at_of[id], now) << "never early";
            ASSERT_GT(at_of[id] + us(1s), now) << "due within the last step";
            ASSERT_GE(at_of[id], last) << "earliest first";
            last = at_of[id];
            ++popped;
        }
    }
    EXPECT_EQ(popped, 200'000u);
}
