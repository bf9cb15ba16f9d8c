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
#include <type_traits>
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

// The old scheduler's heap behind the wheel's calls, so that one template times both.
class heap_timers {
public:
    explicit heap_timers(std::uint64_t) {}
    void add(std::uint64_t at, std::uint64_t id) { _heap.emplace(at, id); }
    bool pop(std::uint64_t now, std::uint64_t& id, std::uint64_t* expiry = nullptr) {
        if (_heap.empty() || _heap.top().first > now) return false;
        id = _heap.top().second;
        if (expiry != nullptr) *expiry = _heap.top().first;
        _heap.pop();
        return true;
    }
    [[nodiscard]] bool empty() const { return _heap.empty(); }
    [[nodiscard]] std::size_t size() const { return _heap.size(); }
    heap& queue() { return _heap; }

private:
    heap _heap;
};

template <typename Timers>
std::unique_ptr<Timers> filled() {
    const auto& at = expiries();
    auto t = std::make_unique<Timers>(t0);
    for (std::uint64_t id = 0; id < timers; ++id) t->add(at[id], id);
    return t;
}

// The reference check before anything is timed: the wheel pops 100,000 timers in the heap's
// order (ties: the heap by id, the wheel by insertion, which is id order here).
void check_against_heap() {
    const auto& at = expiries();
    wheel w(t0);
    heap_timers h(t0);
    for (std::uint64_t id = 0; id < 100'000; ++id) {
        w.add(at[id], id);
        h.add(at[id], id);
    }
    std::uint64_t now = t0, id = 0, want = 0;
    while (!h.empty()) {
        now += step;
        while (h.pop(now, want))
            if (!w.pop(now, id) || id != want) fail("wheel and heap disagree", id, want);
        if (w.pop(now, id)) fail("the wheel popped a timer the heap has not", id, now);
    }
    if (!w.empty()) fail("timers left in the wheel", w.size(), 0);
}

template <typename Timers>
void insert(benchmark::State& state) {
    for (auto _ : state) {
        auto t = filled<Timers>();
        if (t->size() != timers) fail("size", t->size(), timers);
        benchmark::DoNotOptimize(t.get());
        state.PauseTiming();  // freeing it is not inserting
        t.reset();
        state.ResumeTiming();
    }
    state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * timers));
}
void BM_TimerWheel_Insert(benchmark::State& state) { insert<wheel>(state); }
void BM_TimerHeap_Insert(benchmark::State& state) { insert<heap_timers>(state); }
BENCHMARK(BM_TimerWheel_Insert)->Unit(benchmark::kMillisecond);
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
    const std::vector<std::uint64_t> order = shuffled_ids();
    std::vector<bool> cancelled(timers);
    for (auto _ : state) {
        state.PauseTiming();
        auto h = filled<heap_timers>();
        cancelled.assign(timers, false);
        state.ResumeTiming();
        for (const std::uint64_t id : order) cancelled[id] = true;
        // The marked entries stay in the heap until they come to the top.
        for (heap& q = h->queue(); !q.empty(); q.pop())
            if (!cancelled[q.top().second]) fail("a live timer", q.top().second, 0);
        state.PauseTiming();
        h.reset();
        state.ResumeTiming();
    }
    state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * timers));
}
BENCHMARK(BM_TimerHeap_CancelLazy)->Unit(benchmark::kMillisecond);

// Pops every timer as the clock passes in one-second steps, each pop checked. With
// `time_each_pop`, every pop() call is timed and the longest reported (so the total is not
// comparable to the untimed run). The wheel also reports its moves.
template <typename Timers>
void expire(benchmark::State& state, bool time_each_pop) {
    constexpr bool is_wheel = std::is_same_v<Timers, wheel>;
    std::uint64_t cascaded = 0, most_per_pop = 0;
    std::int64_t longest_ns = 0;
    for (auto _ : state) {
        state.PauseTiming();
        auto t = filled<Timers>();
        std::uint64_t moved = 0, moved_before = 0;
        if constexpr (is_wheel) moved = moved_before = t->work().cascaded;
        state.ResumeTiming();
        std::uint64_t now = t0, last = 0, popped = 0, id = 0, expiry = 0;
        while (!t->empty()) {
            now += step;
            while (true) {
                const auto start = time_each_pop ? std::chrono::steady_clock::now() : std::chrono::steady_clock::time_point{};
                const bool got = t->pop(now, id, &expiry);
                if (time_each_pop) {
                    const auto took = std::chrono::steady_clock::now() - start;
                    longest_ns = std::max<std::int64_t>(longest_ns, std::chrono::duration_cast<std::chrono::nanoseconds>(took).count());
                }
                if constexpr (is_wheel) {
                    most_per_pop = std::max(most_per_pop, t->work().cascaded - moved);
                    moved = t->work().cascaded;
                }
                if (!got) break;
                if (expiry > now || expiry < last) fail("order", expiry, last);
                last = expiry;
                ++popped;
            }
        }
        if (popped != timers) fail("popped", popped, timers);
        if constexpr (is_wheel) cascaded = t->work().cascaded - moved_before;
        state.PauseTiming();
        t.reset();
        state.ResumeTiming();
    }
    state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * timers));
    if (time_each_pop) state.counters["longest_pop_us"] = static_cast<double>(longest_ns) / 1000;
    if (is_wheel && !time_each_pop) {
        state.counters["moves_per_timer"] = static_cast<double>(cascaded) / timers;
        state.counters["most_moved_by_one_pop"] = static_cast<double>(most_per_pop);
    }
}
void BM_TimerWheel_Expire(benchmark::State& state) {
    check_against_heap();
    expire<wheel>(state, false);
}
void BM_TimerHeap_Expire(benchmark::State& state) { expire<heap_timers>(state, false); }
// The longest single pop(): a cascade of a whole slot happens inside one.
void BM_TimerWheel_LongestPop(benchmark::State& state) { expire<wheel>(state, true); }
void BM_TimerHeap_LongestPop(benchmark::State& state) { expire<heap_timers>(state, true); }
BENCHMARK(BM_TimerWheel_Expire)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_TimerHeap_Expire)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_TimerWheel_LongestPop)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_TimerHeap_LongestPop)->Unit(benchmark::kMillisecond);

// A million live timers; each popped one is added again one retry interval (1 min to 4 h)
// later: a million pop+add pairs per iteration.
template <typename Timers>
void steady(benchmark::State& state) {
    auto t = filled<Timers>();
    std::mt19937_64 random(5);
    std::uint64_t now = t0;
    for (auto _ : state) {
        std::size_t events = 0;
        std::uint64_t id = 0, expiry = 0;
        while (events < timers) {
            now += step;
            while (events < timers && t->pop(now, id, &expiry)) {
                if (expiry > now) fail("early", expiry, now);
                t->add(now + minute + random() % (240 * minute), id);
                ++events;
            }
        }
        if (t->size() != timers) fail("size", t->size(), timers);
    }
    state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * timers));
}
void BM_TimerWheel_Steady(benchmark::State& state) { steady<wheel>(state); }
void BM_TimerHeap_Steady(benchmark::State& state) { steady<heap_timers>(state); }
BENCHMARK(BM_TimerWheel_Steady)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_TimerHeap_Steady)->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
