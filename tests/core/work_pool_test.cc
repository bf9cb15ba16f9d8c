// Unit tests of core/work_pool.h: items run on pool threads and come back to the submitting
// reactor's thread (finish()), every one exactly once, while that thread sleeps in io_uring
// (no polling); a full queue refuses; the destructor runs what was queued.
#include "core/work_pool.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <thread>
#include <vector>

using namespace ringrelay::core;

namespace {

struct counting_item final : work_item {
    std::thread::id ran_on;
    std::thread::id finished_on;
    int runs = 0;
    int finishes = 0;
    int* finished_total = nullptr;
    void run() noexcept override {
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
    void run() noexcept override {
        started->fetch_add(1);
        while (!release->load()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    void finish() noexcept override {}
};

}  // namespace

TEST(WorkPool, ItemsRunOffThreadAndFinishOnTheSubmitter) {
    reactor r;
    ASSERT_FALSE(r.init(64, kernel_features{}));
    work_return back;
    ASSERT_FALSE(back.start(r));
    work_pool pool(2, 1000);
    constexpr int n = 500;
    std::vector<std::unique_ptr<counting_item>> items;
    int finished = 0;
    for (int i = 0; i < n; ++i) {
        items.push_back(std::make_unique<counting_item>());
        items.back()->finished_total = &finished;
        ASSERT_TRUE(pool.submit(*items.back(), back));
    }
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (finished < n && std::chrono::steady_clock::now() < deadline) ASSERT_TRUE(r.run_once(1000));
    ASSERT_EQ(finished, n);
    back.wait_idle();  // everything came back: returns at once
    for (const auto& item : items) {
        EXPECT_EQ(item->runs, 1);
        EXPECT_EQ(item->finishes, 1);
        EXPECT_NE(item->ran_on, std::this_thread::get_id());
        EXPECT_EQ(item->finished_on, std::this_thread::get_id());
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
