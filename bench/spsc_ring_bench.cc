// bench/spsc_ring_bench.cc: the cross-shard SPSC ring (core/spsc_ring.h), the path every job
// and outcome takes between shards. Same thread (the cost of one push + pop), and two
// threads (a producer pushing as fast as it can, the consumer in the timed loop), with the
// sequence checked on every pop: a lost, doubled or reordered value aborts the run.
#include <benchmark/benchmark.h>

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <thread>

#include "core/spsc_ring.h"

namespace {

using ringrelay::core::spsc_ring;

struct job {
    std::uint64_t seq;
    void* payload;  // what a cross-shard message carries: an owning pointer and a little more
};

void BM_SpscRing_SameThread(benchmark::State& state) {
    spsc_ring<job> ring(1024);
    std::uint64_t next = 0;
    std::uint64_t expect = 0;
    for (auto _ : state) {
        if (!ring.try_push(job{next++, nullptr})) std::abort();
        auto v = ring.try_pop();
        if (!v || v->seq != expect++) std::abort();
        benchmark::DoNotOptimize(v);
    }
    state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_SpscRing_SameThread);

void BM_SpscRing_TwoThreads(benchmark::State& state) {
    spsc_ring<job> ring(static_cast<std::size_t>(state.range(0)));
    std::atomic<bool> stop{false};
    std::thread producer([&] {
        std::uint64_t seq = 0;
        while (!stop.load(std::memory_order_relaxed)) {
            job j{seq, nullptr};
            if (ring.try_push(j)) ++seq;
        }
    });
    std::uint64_t expect = 0;
    for (auto _ : state) {
        std::optional<job> v;
        do {
            v = ring.try_pop();
        } while (!v);
        if (v->seq != expect++) {
            std::fprintf(stderr, "spsc_ring: expected %llu, got %llu\n", static_cast<unsigned long long>(expect - 1),
                         static_cast<unsigned long long>(v->seq));
            std::abort();
        }
    }
    stop.store(true);
    producer.join();
    state.SetItemsProcessed(state.iterations());
}
// On this 2-core machine the two threads share the cores with everything else: treat the
// figure as a lower bound.
BENCHMARK(BM_SpscRing_TwoThreads)->Arg(256)->Arg(4096)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
