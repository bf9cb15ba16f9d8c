// tests/core/snapshot_slot_test.cc: core::snapshot_slot, one writer publishing and readers
// taking the last value without either waiting: a publication over a held buffer is skipped,
// and under concurrent publication every read is of one whole publication.
#include "core/snapshot_slot.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cstdint>
#include <thread>
#include <vector>

using ringrelay::core::snapshot_slot;

namespace {
struct pair_value {
    std::uint64_t a = 0;
    std::uint64_t b = 0;
};
// Wide enough that a read under a write would see two values.
struct wide_value {
    std::uint64_t v[32] = {};
};
}  // namespace

TEST(SnapshotSlot, ReaderSeesTheLastPublication) {
    snapshot_slot<pair_value> slot;
    ASSERT_TRUE(slot.publish([](pair_value& v) { v = {1, 1}; }));
    ASSERT_TRUE(slot.publish([](pair_value& v) { v = {2, 2}; }));
    const auto r = slot.read();
    ASSERT_NE(r.get(), nullptr);
    EXPECT_EQ(r.get()->a, 2u);
}

TEST(SnapshotSlot, SkipsPublishingOverABufferAReaderHolds) {
    snapshot_slot<pair_value> slot;
    ASSERT_TRUE(slot.publish([](pair_value& v) { v = {1, 1}; }));
    {
        const auto held = slot.read();
        // The other buffer is free: published.
        EXPECT_TRUE(slot.publish([](pair_value& v) { v = {2, 2}; }));
        // The next would overwrite the held one: skipped, fill not called, the reader's value intact.
        bool called = false;
        EXPECT_FALSE(slot.publish([&](pair_value& v) {
            called = true;
            v = {3, 3};
        }));
        EXPECT_FALSE(called);
        EXPECT_EQ(held.get()->a, 1u);
        EXPECT_EQ(slot.read().get()->a, 2u);
    }
    EXPECT_TRUE(slot.publish([](pair_value& v) { v = {3, 3}; }));
    EXPECT_EQ(slot.read().get()->a, 3u);
}

TEST(SnapshotSlot, ConcurrentReadsSeeWholePublications) {
    snapshot_slot<wide_value> slot;
    // Bounded by counts, not time: the writer publishes until the readers have read this often.
    constexpr std::uint64_t wanted_reads = 200'000;
    constexpr std::uint64_t wanted_publications = 200'000;
    constexpr std::uint64_t max_publications = 50'000'000;
    std::atomic<bool> done{false};
    std::atomic<int> started{0};
    std::atomic<std::uint64_t> torn{0};
    std::atomic<std::uint64_t> reads{0};
    std::vector<std::thread> readers;
    for (int t = 0; t < 2; ++t)
        readers.emplace_back([&] {
            started.fetch_add(1);
            while (!done.load(std::memory_order_acquire)) {
                const auto r = slot.read();
                if (r.get() == nullptr) continue;
                const wide_value v = *r.get();
                for (const std::uint64_t x : v.v)
                    if (x != v.v[0]) {
                        torn.fetch_add(1);
                        break;
                    }
                reads.fetch_add(1, std::memory_order_relaxed);
            }
        });
    while (started.load() < 2) std::this_thread::yield();
    std::uint64_t published = 0;
    for (std::uint64_t n = 1; n <= max_publications &&
                               (published < wanted_publications || reads.load(std::memory_order_relaxed) < wanted_reads);
         ++n) {
        const bool ok = slot.publish([n](wide_value& v) {
            for (std::uint64_t& x : v.v) {
                x = n;
                std::atomic_signal_fence(std::memory_order_seq_cst);
            }
        });
        if (ok) {
            ++published;
        } else {
            std::this_thread::yield();  // a reader holding the buffer may be off the CPU (2 cores, 3 threads)
        }
    }
    done.store(true, std::memory_order_release);
    for (std::thread& t : readers) t.join();
    EXPECT_EQ(torn.load(), 0u);
    EXPECT_GE(published, wanted_publications);
    EXPECT_GE(reads.load(), wanted_reads);
}
