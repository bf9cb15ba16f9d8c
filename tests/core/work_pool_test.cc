// Unit tests of core/work_pool.h: items run on pool threads and come back to the submitting
// reactor's thread (finish()), every one exactly once, while that thread sleeps in io_uring
// (no polling); a full queue refuses; the destructor runs what was queued; a gathering pool
// hands items back together, and each pool thread has its own worker number.
#include "core/work_pool.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <memory>
#include <optional>
#include <thread>
#include <vector>

using namespace ringrelay::core;

namespace {

struct counting_item final : work_item {
    std::thread::id ran_on;
    unsigned worker = ~0u;
    std::thread::id finished_on;
    int runs = 0;
    int finishes = 0;
    int* finished_total = nullptr;
    void run(unsigned w) noexcept override {
        worker = w;
        ran_on = std::this_thread::get_id();
        ++runs;
    }
    void finish() noexcept override {
        finished_on = std::this_thread::get_id();
        ++finishes;
        ++*finished_total;
    }
};

struct blocking_item final : work_item {
    std::atomic<bool>* release = nullptr;
    std::atomic<int>* started = nullptr;
    void run(unsigned) noexcept override {
        started->fetch_add(1);
        while (!release->load()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    void finish() noexcept override {}
};

}  // namespace

// Submits n counting items to a pool of `threads` (gathering `gather`) and turns the reactor
// until every one finished; returns them.
std::vector<std::unique_ptr<counting_item>> run_counting_items(unsigned threads, std::size_t gather, int n) {
    reactor r;
    EXPECT_FALSE(r.init(64, kernel_features{}));
    work_return back;
    EXPECT_FALSE(back.start(r));
    work_pool pool(threads, 1000, gather);
    EXPECT_EQ(pool.threads(), threads);
    std::vector<std::unique_ptr<counting_item>> items;
    int finished = 0;
    for (int i = 0; i < n; ++i) {
        items.push_back(std::make_unique<counting_item>());
        items.back()->finished_total = &finished;
        EXPECT_TRUE(pool.submit(*items.back(), back));
    }
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (finished < n && std::chrono::steady_clock::now() < deadline) EXPECT_TRUE(r.run_once(1000));
    EXPECT_EQ(finished, n);
    back.wait_idle();  // everything came back: returns at once
    return items;
}

TEST(WorkPool, ItemsRunOffThreadAndFinishOnTheSubmitter) {
    for (const std::size_t gather : {1, 4}) {
        for (const auto& item : run_counting_items(2, gather, 500)) {
            EXPECT_EQ(item->runs, 1) << "gather " << gather;
            EXPECT_EQ(item->finishes, 1) << "gather " << gather;
            EXPECT_NE(item->ran_on, std::this_thread::get_id());
            EXPECT_EQ(item->finished_on, std::this_thread::get_id());
        }
    }
}

TEST(WorkPool, FullQueueRefuses) {
    reactor r;
    ASSERT_FALSE(r.init(64, kernel_features{}));
    work_return back;
    ASSERT_FALSE(back.start(r));
    std::atomic<bool> release{false};
    std::atomic<int> started{0};
    blocking_item busy;
    busy.release = &release;
    busy.started = &started;
    blocking_item queued = busy;
    blocking_item refused = busy;
    {
        work_pool pool(1, 1);
        ASSERT_TRUE(pool.submit(busy, back));
        while (started.load() == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
        EXPECT_TRUE(pool.submit(queued, back));    // waits for the one thread
        EXPECT_FALSE(pool.submit(refused, back));  // over max_queued
        release = true;
    }  // the destructor runs the queued item before joining
    EXPECT_EQ(started.load(), 2);
    // Both came back to the reactor (finish() is a no-op here: just drain it).
    (void)r.run_once(100);
}

// A shard whose loop ended (say io_uring failed) waits for items still in the pool before
// their owners are destroyed; their finish() is never run.
TEST(WorkPool, WaitIdleWaitsForItemsStillInThePool) {
    reactor r;
    ASSERT_FALSE(r.init(64, kernel_features{}));
    work_return back;
    ASSERT_FALSE(back.start(r));
    work_pool pool(1, 10);
    std::atomic<bool> release{false};
    std::atomic<int> started{0};
    blocking_item a;
    a.release = &release;
    a.started = &started;
    blocking_item b = a;
    ASSERT_TRUE(pool.submit(a, back));
    ASSERT_TRUE(pool.submit(b, back));
    std::thread releaser([&] {
        while (started.load() == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
        release = true;
    });
    back.wait_idle();  // no reactor turn runs: only the pool's pushes end the wait
    EXPECT_EQ(started.load(), 2) << "both items ran before wait_idle returned";
    releaser.join();
}

// Every pool thread has its own worker number, below threads(), and one number is one thread.
TEST(WorkPool, EachThreadHasItsOwnWorkerNumber) {
    std::vector<std::thread::id> thread_of(3);
    for (const auto& item : run_counting_items(3, 1, 300)) {
        ASSERT_LT(item->worker, 3U);
        if (thread_of[item->worker] == std::thread::id()) thread_of[item->worker] = item->ran_on;
        EXPECT_EQ(thread_of[item->worker], item->ran_on) << "worker " << item->worker;
    }
}

namespace {
// Records the reactor turn its finish() ran in; run() waits for `release` when it is set.
struct turn_item final : work_item {
    std::atomic<bool> release{true};
    std::atomic<bool> started{false};
    const int* turn = nullptr;
    int finished_in = -1;
    void run(unsigned) noexcept override {
        started = true;
        while (!release.load()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    void finish() noexcept override { finished_in = *turn; }
};

// One pool thread gathering `gather`; item 0 holds it while the others are queued behind it,
// so that when it is released every other item is already waiting (deterministic: nothing
// depends on how fast the thread runs). `held` items are made to wait for their release too.
struct burst {
    reactor r;
    work_return back;
    std::vector<turn_item> items;
    int turn = 0;
    std::optional<work_pool> pool;

    burst(std::size_t gather, std::size_t count, std::initializer_list<std::size_t> held) : items(count) {
        EXPECT_FALSE(r.init(64, kernel_features{}));
        EXPECT_FALSE(back.start(r));
        pool.emplace(1, 100, gather);
        for (turn_item& i : items) i.turn = &turn;
        items[0].release = false;
        for (const std::size_t h : held) items[h].release = false;
        EXPECT_TRUE(pool->submit(items[0], back));
        while (!items[0].started.load()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
        for (std::size_t i = 1; i < items.size(); ++i) EXPECT_TRUE(pool->submit(items[i], back));
        items[0].release = true;
    }
    ~burst() { pool.reset(); }  // joins the thread before the items go
    // Turns the reactor until item i finished.
    void turn_until_finished(std::size_t i) {
        while (items[i].finished_in < 0 && turn < 1000) {
            ++turn;
            EXPECT_TRUE(r.run_once(1000));
        }
    }
};
}  // namespace

// Gathering: the items of a burst come back in one reactor turn (one wake-up): 1 + 3 items,
// gather 4, the last held until the others have run. While it is held nothing comes back (the
// thread holds what it finished while the queue is not empty); a pool that handed each item
// back at once would have had item 0 back before item 3 started. Then all four in one turn.
TEST(WorkPool, GatheringHandsBackABurstInOneTurn) {
    burst b(4, 4, {3});
    while (!b.items[3].started.load()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    ++b.turn;
    ASSERT_TRUE(b.r.run_once(200));  // a turn that would see items already handed back
    for (const turn_item& i : b.items) EXPECT_EQ(i.finished_in, -1) << "nothing back while item 3 runs";
    b.items[3].release = true;
    for (std::size_t i = 0; i < 4; ++i) b.turn_until_finished(i);
    for (const turn_item& i : b.items) EXPECT_EQ(i.finished_in, b.items[0].finished_in);
}

// With more than `gather` queued, the first `gather` come back together and the rest after:
// no item waits for more than gather - 1 others. Item 4 holds the thread until the test has
// seen the first four come back, so it cannot have joined them.
TEST(WorkPool, GatheringHandsBackAtMostGatherAtOnce) {
    burst b(4, 5, {4});
    b.turn_until_finished(0);
    for (std::size_t i = 0; i < 4; ++i) EXPECT_EQ(b.items[i].finished_in, b.turn) << "item " << i;
    EXPECT_EQ(b.items[4].finished_in, -1) << "the fifth is not held back with the first four";
    b.items[4].release = true;
    b.turn_until_finished(4);
    EXPECT_GT(b.items[4].finished_in, b.items[0].finished_in);
}
