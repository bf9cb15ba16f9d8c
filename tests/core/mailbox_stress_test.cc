// Multi-threaded stress test of the cross-shard channel (core/mailbox.h): producers on their
// own threads and io_urings push through SPSC rings and wake the consumer's io_uring with
// MSG_RING; the consumer must see every value exactly once, in order per producer, without
// polling (it blocks in io_uring until woken). Exits 77 (skipped) if the kernel lacks MSG_RING.
#include "core/mailbox.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <future>
#include <memory>
#include <thread>
#include <vector>

#include "core/reactor.h"

using namespace ringrelay::core;

namespace {

constexpr int producers = 3;
constexpr std::uint64_t per_producer = 300000;

struct value {
    int producer;
    std::uint64_t seq;
};

struct consumer_state {
    std::uint64_t next[producers] = {};
    std::uint64_t received = 0;
    bool out_of_order = false;
    void handle(value&& v) {
        if (v.seq != next[v.producer]) out_of_order = true;
        next[v.producer] = v.seq + 1;
        ++received;
    }
};

}  // namespace

TEST(Mailbox, DeliversEveryValueInOrderUnderContention) {
    const kernel_features features = probe_kernel_features();
    if (!features.msg_ring) GTEST_SKIP() << "kernel lacks IORING_OP_MSG_RING";

    consumer_state state;
    std::promise<int> ring_fd_promise;
    std::atomic<bool> ready{false};
    std::vector<std::unique_ptr<mailbox<value>>> boxes;
    std::promise<void> boxes_ready;
    std::atomic<bool> timed_out{false};

    std::thread consumer([&] {
        reactor r;
        ASSERT_FALSE(r.init(256, features));
        ring_fd_promise.set_value(r.ring_fd());
        boxes_ready.get_future().wait();
        const std::uint64_t total = per_producer * producers;
        int idle_turns = 0;
        while (state.received < total) {
            const std::uint64_t before = state.received;
            ASSERT_TRUE(r.run_once(1000));
            // A lost wake-up would leave the consumer asleep with values queued: give up after
            // 30 idle seconds instead of hanging.
            idle_turns = state.received == before ? idle_turns + 1 : 0;
            if (idle_turns > 30) {
                timed_out = true;
                break;
            }
        }
    });
    const int consumer_fd = ring_fd_promise.get_future().get();
    for (int p = 0; p < producers; ++p) boxes.push_back(std::make_unique<mailbox<value>>(1024, consumer_fd, &state));
    boxes_ready.set_value();

    std::vector<std::thread> threads;
    for (int p = 0; p < producers; ++p) {
        threads.emplace_back([&, p] {
            reactor r;
            ASSERT_FALSE(r.init(64, kernel_features{}));
            for (std::uint64_t i = 0; i < per_producer; ++i) {
                value v{p, i};
                while (!boxes[static_cast<std::size_t>(p)]->send(r, v)) {
                    io_uring_submit(&r.ring());
                    std::this_thread::yield();
                }
                if ((i & 63) == 0) io_uring_submit(&r.ring());
                // Reap our own ring's (skipped-on-success) CQEs so it never fills.
                io_uring_cqe* cqe = nullptr;
                while (io_uring_peek_cqe(&r.ring(), &cqe) == 0) io_uring_cqe_seen(&r.ring(), cqe);
            }
            io_uring_submit(&r.ring());
        });
    }
    for (auto& t : threads) t.join();
    consumer.join();
    EXPECT_FALSE(timed_out.load()) << "consumer stalled: a wake-up was lost";
    EXPECT_FALSE(state.out_of_order);
    EXPECT_EQ(state.received, per_producer * producers);
    for (int p = 0; p < producers; ++p) EXPECT_EQ(state.next[p], per_producer);
}
