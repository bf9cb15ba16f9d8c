// bench/timer_wheel_bench.cc: the retry timers at a million (issue 15): core::timer_wheel (what
// queue/scheduler.h uses now) beside std::priority_queue of (time, queue id) (what it used
// before), in the same run, with the same times: Unix microseconds from a minute to five days
// ahead, as --retry-intervals and --max-age give.
//   Insert  1,000,000 timers into an empty structure.
//   Cancel  1,000,000 timers in random order. A binary heap cannot remove an entry: the heap
//           case marks each id cancelled and then pops everything, skipping the marks (lazy
//           deletion, what a heap-based scheduler has to do); the wheel unlinks each at once.
//   Expire  pop all 1,000,000 as the clock passes in one-second steps (a shard's wake-ups).
//   Steady  1,000,000 live: each popped timer is added again one retry interval later; a
//           million pop+add pairs per iteration.
//   LongestPop  the slowest single pop while expiring all (the wheel's cascading burst).
// Every pop is checked: never early, never before the previous one (a wrong order aborts),
// and the count. The wheel's counters (timers moved down a level, the most moved by one pop:
// the cascading burst) are reported beside its times. Run e.g.
//   build/bench/timer_wheel_bench --benchmark_min_time=1
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <memory>
#include <queue>
#include <random>
#include <utility>
#include <vector>

#include "core/timer_wheel.h"

namespace {

using ringrelay::core::timer_handle;
using wheel = ringrelay::core::timer_wheel<std::uint64_t>;
using entry = std::pair<std::uint64_t, std::uint64_t>;  // (time us, queue id), as the old scheduler
using heap = std::priority_queue<entry, std::vector<entry>, std::greater<>>;

constexpr std::size_t timers = 1'000'000;
constexpr std::uint64_t t0 = 1'700'000'000'000'000;
constexpr std::uint64_t minute = 60'000'000;
constexpr std::uint64_t five_days = 5 * 24 * 60 * minute;
constexpr std::uint64_t step = 1'000'000;  // one second

const std::vector<std::uint64_t>& expiries() {
    static const std::vector<std::uint64_t> times = [] {
        std::mt19937_64 random(15);
        std::vector<std::uint64_t> v(timers);
        for (auto& t : v) t = t0 + minute + random() % five_days;
        return v;
    }();
    return times;
}

[[noreturn]] void fail(const char* what, std::uint64_t a, std::uint64_t b) {
    std::fprintf(stderr, "timer_wheel_bench: %s (%llu, %llu)\n", what, static_cast<unsigned long long>(a),
                 static_cast<unsigned long long>(b));
    std::abort();
}

// The reference check before anything is timed: the wheel pops 100,000 timers in the heap's
// order (ties: the heap by id, the wheel by insertion, which is id order here).
void check_against_heap() {
    const auto& at = expiries();
    wheel w(t0);
    heap h;
    for (std::uint64_t id = 0; id < 100'000; ++id) {
        w.add(at[id], id);
        h.emplace(at[id], id);
    }
    std::uint64_t now = t0, id = 0;
    while (!h.empty()) {
        now += step;
        while (!h.empty() && h.top().first <= now) {
            if (!w.pop(now, id) || id != h.top().second) fail("wheel and heap disagree", id, h.top().second);
            h.pop();
        }
        if (w.pop(now, id)) fail("the wheel popped a timer the heap has not", id, now);
    }
    if (!w.empty()) fail("timers left in the wheel", w.size(), 0);
}

void BM_TimerWheel_Insert(benchmark::State& state) {
    const auto& at = expiries();
    for (auto _ : state) {
        auto w = std::make_unique<wheel>(t0);
        for (std::uint64_t id = 0; id < timers; ++id) w->add(at[id], id);
        if (w->size() != timers) fail("size", w->size(), timers);
        benchmark::DoNotOptimize(w.get());
        state.PauseTiming();  // freeing it is not inserting
        w.reset();
        state.ResumeTiming();
    }
    state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * timers));
}
BENCHMARK(BM_TimerWheel_Insert)->Unit(benchmark::kMillisecond);

void BM_TimerHeap_Insert(benchmark::State& state) {
    const auto& at = expiries();
    for (auto _ : state) {
        auto h = std::make_unique<heap>();
        for (std::uint64_t id = 0; id < timers; ++id) h->emplace(at[id], id);
        if (h->size() != timers) fail("size", h->size(), timers);
        benchmark::DoNotOptimize(h.get());
        state.PauseTiming();
        h.reset();
        state.ResumeTiming();
    }
    state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * timers));
}
BENCHMARK(BM_TimerHeap_Insert)->Unit(benchmark::kMillisecond);

std::vector<std::uint64_t> shuffled_ids() {
    std::vector<std::uint64_t> ids(timers);
    for (std::uint64_t i = 0; i < timers; ++i) ids[i] = i;
    std::shuffle(ids.begin(), ids.end(), std::mt19937_64(3));
    return ids;
}

void BM_TimerWheel_Cancel(benchmark::State& state) {
    const auto& at = expiries();
    const std::vector<std::uint64_t> order = shuffled_ids();
    std::vector<timer_handle> handles(timers);
    for (auto _ : state) {
        state.PauseTiming();
        auto w = std::make_unique<wheel>(t0);
        for (std::uint64_t id = 0; id < timers; ++id) handles[id] = w->add(at[id], id);
        state.ResumeTiming();
        for (const std::uint64_t id : order)
            if (!w->cancel(handles[id])) fail("cancel", id, 0);
        if (!w->empty() || w->next_expiry() != wheel::never) fail("not empty after cancelling all", w->size(), 0);
        state.PauseTiming();
        w.reset();
        state.ResumeTiming();
    }
    state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * timers));
}
BENCHMARK(BM_TimerWheel_Cancel)->Unit(benchmark::kMillisecond);

void BM_TimerHeap_CancelLazy(benchmark::State& state) {
    const auto& at = expiries();
    const std::vector<std::uint64_t> order = shuffled_ids();
    std::vector<bool> cancelled(timers);
    for (auto _ : state) {
        state.PauseTiming();
        auto h = std::make_unique<heap>();
        for (std::uint64_t id = 0; id < timers; ++id) h->emplace(at[id], id);
        cancelled.assign(timers, false);
        state.ResumeTiming();
        for (const std::uint64_t id : order) cancelled[id] = true;
        // The marked entries stay in the heap until they come to the top.
        while (!h->empty()) {
            if (!cancelled[h->top().second]) fail("a live timer", h->top().second, 0);
            h->pop();
        }
        state.PauseTiming();
        h.reset();
        state.ResumeTiming();
    }
    state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * timers));
}
BENCHMARK(BM_TimerHeap_CancelLazy)->Unit(benchmark::kMillisecond);

void BM_TimerWheel_Expire(benchmark::State& state) {
    check_against_heap();
    const auto& at = expiries();
    std::uint64_t cascaded = 0, most_per_pop = 0;
    for (auto _ : state) {
        state.PauseTiming();
        auto w = std::make_unique<wheel>(t0);
        for (std::uint64_t id = 0; id < timers; ++id) w->add(at[id], id);
        const std::uint64_t moved_before = w->work().cascaded;
        state.ResumeTiming();
        std::uint64_t now = t0, last = 0, popped = 0, id = 0, expiry = 0;
        std::uint64_t moved = w->work().cascaded;
        while (!w->empty()) {
            now += step;
            while (w->pop(now, id, &expiry)) {
                if (expiry > now || expiry < last) fail("order", expiry, last);
                last = expiry;
                ++popped;
                most_per_pop = std::max(most_per_pop, w->work().cascaded - moved);
                moved = w->work().cascaded;
            }
            most_per_pop = std::max(most_per_pop, w->work().cascaded - moved);  // a pop that found none due
            moved = w->work().cascaded;
        }
        if (popped != timers) fail("popped", popped, timers);
        cascaded = w->work().cascaded - moved_before;
        state.PauseTiming();
        w.reset();
        state.ResumeTiming();
    }
    state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * timers));
    state.counters["moves_per_timer"] = static_cast<double>(cascaded) / timers;
    state.counters["most_moved_by_one_pop"] = static_cast<double>(most_per_pop);
}
BENCHMARK(BM_TimerWheel_Expire)->Unit(benchmark::kMillisecond);

void BM_TimerHeap_Expire(benchmark::State& state) {
    const auto& at = expiries();
    for (auto _ : state) {
        state.PauseTiming();
        auto h = std::make_unique<heap>();
        for (std::uint64_t id = 0; id < timers; ++id) h->emplace(at[id], id);
        state.ResumeTiming();
        std::uint64_t now = t0, last = 0, popped = 0;
        while (!h->empty()) {
            now += step;
            while (!h->empty() && h->top().first <= now) {
                const std::uint64_t expiry = h->top().first;
                if (expiry < last) fail("order", expiry, last);
                last = expiry;
                benchmark::DoNotOptimize(h->top().second);
                h->pop();
                ++popped;
            }
        }
        if (popped != timers) fail("popped", popped, timers);
        state.PauseTiming();
        h.reset();
        state.ResumeTiming();
    }
    state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * timers));
}
BENCHMARK(BM_TimerHeap_Expire)->Unit(benchmark::kMillisecond);

// The longest single pop() (a cascade of a whole slot happens inside one), beside the heap's
// longest pop: every call timed with steady_clock, so the totals are not comparable to Expire.
void BM_TimerWheel_LongestPop(benchmark::State& state) {
    const auto& at = expiries();
    std::int64_t longest = 0;
    for (auto _ : state) {
        state.PauseTiming();
        auto w = std::make_unique<wheel>(t0);
        for (std::uint64_t id = 0; id < timers; ++id) w->add(at[id], id);
        state.ResumeTiming();
        std::uint64_t now = t0, id = 0, popped = 0;
        while (!w->empty()) {
            now += step;
            while (true) {
                const auto start = std::chrono::steady_clock::now();
                const bool got = w->pop(now, id);
                const auto took = std::chrono::steady_clock::now() - start;
                longest = std::max<std::int64_t>(longest, std::chrono::duration_cast<std::chrono::nanoseconds>(took).count());
                if (!got) break;
                ++popped;
            }
        }
        if (popped != timers) fail("popped", popped, timers);
        state.PauseTiming();
        w.reset();
        state.ResumeTiming();
    }
    state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * timers));
    state.counters["longest_pop_us"] = static_cast<double>(longest) / 1000;
}
BENCHMARK(BM_TimerWheel_LongestPop)->Unit(benchmark::kMillisecond);

void BM_TimerHeap_LongestPop(benchmark::State& state) {
    const auto& at = expiries();
    std::int64_t longest = 0;
    for (auto _ : state) {
        state.PauseTiming();
        auto h = std::make_unique<heap>();
        for (std::uint64_t id = 0; id < timers; ++id) h->emplace(at[id], id);
        state.ResumeTiming();
        std::uint64_t now = t0, popped = 0;
        while (!h->empty()) {
            now += step;
            while (true) {
                const auto start = std::chrono::steady_clock::now();
                const bool got = !h->empty() && h->top().first <= now;
                if (got) h->pop();
                const auto took = std::chrono::steady_clock::now() - start;
                longest = std::max<std::int64_t>(longest, std::chrono::duration_cast<std::chrono::nanoseconds>(took).count());
                if (!got) break;
                ++popped;
            }
        }
        if (popped != timers) fail("popped", popped, timers);
        state.PauseTiming();
        h.reset();
        state.ResumeTiming();
    }
    state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * timers));
    state.counters["longest_pop_us"] = static_cast<double>(longest) / 1000;
}
BENCHMARK(BM_TimerHeap_LongestPop)->Unit(benchmark::kMillisecond);

// The retry interval a popped timer is added again with: 1 min to 4 h, like the defaults.
std::uint64_t next_interval(std::mt19937_64& random) { return minute + random() % (240 * minute); }

void BM_TimerWheel_Steady(benchmark::State& state) {
    const auto& at = expiries();
    wheel w(t0);
    for (std::uint64_t id = 0; id < timers; ++id) w.add(at[id], id);
    std::mt19937_64 random(5);
    std::uint64_t now = t0;
    for (auto _ : state) {
        std::size_t events = 0;
        std::uint64_t id = 0, expiry = 0;
        while (events < timers) {
            now += step;
            while (events < timers && w.pop(now, id, &expiry)) {
                if (expiry > now) fail("early", expiry, now);
                w.add(now + next_interval(random), id);
                ++events;
            }
        }
        if (w.size() != timers) fail("size", w.size(), timers);
    }
    state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * timers));
}
BENCHMARK(BM_TimerWheel_Steady)->Unit(benchmark::kMillisecond);

void BM_TimerHeap_Steady(benchmark::State& state) {
    const auto& at = expiries();
    heap h;
    for (std::uint64_t id = 0; id < timers; ++id) h.emplace(at[id], id);
    std::mt19937_64 random(5);
    std::uint64_t now = t0;
    for (auto _ : state) {
        std::size_t events = 0;
        while (events < timers) {
            now += step;
            while (events < timers && !h.empty() && h.top().first <= now) {
                const std::uint64_t id = h.top().second;
                h.pop();
                h.emplace(now + next_interval(random), id);
                ++events;
            }
        }
        if (h.size() != timers) fail("size", h.size(), timers);
    }
    state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * timers));
}
BENCHMARK(BM_TimerHeap_Steady)->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
