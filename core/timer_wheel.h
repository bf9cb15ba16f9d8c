// core/timer_wheel.h: a hierarchical timing wheel (Varghese & Lauck, "Hashed and Hierarchical
// Timing Wheels", SOSP 1987) holding many timers for one shard: the delivery's retry times
// (queue/scheduler.h, ticks of Unix microseconds) and the destination pool's back-off ends
// (queue/destination_pool.h, ticks of monotonic milliseconds). The owner sleeps until
// next_expiry() on one io_uring timeout (core/timer_alarm.h) instead of polling.
//
// Pure: no clock. Every call that needs the time is given it, in ticks of whatever unit the
// owner counts in; a timer pops at exactly its tick or later, never earlier and never rounded
// to a coarser slot, whatever its distance.
//
// Shape: `levels` (11) levels of 64 slots; a slot of level L spans 64^L ticks, so 11 levels
// cover every 64-bit tick and there is no overflow list. A timer is put on the level of the
// highest base-64 digit in which its expiry differs from the wheel's time (expiry XOR time, as
// tokio's wheel does), in the slot named by that digit: a level-0 slot holds the timers of one
// exact tick. When the wheel's time reaches the start of an occupied slot of level L >= 1, the
// slot's timers are moved down to lower levels (cascading). One 64-bit occupancy mask per level
// finds the next occupied slot with one count-trailing-zeros, so time passing over empty slots
// costs nothing.
//
// A slot is an array of entries (expiry, value, handle), appended to in order: cascading a slot
// reads it front to back and appends to others, without chasing pointers through memory (with
// intrusive lists, a million timers made every move a cache miss: bench/timer_wheel_bench.cc).
// Cancellation is therefore lazy: cancel() ends the handle's generation at once, and the
// entry, now dead, is dropped when its slot comes due or at a compaction, which runs once the
// dead outnumber the live (and 1024): memory stays within twice the live timers' and the
// compaction's cost is paid for by the cancels that made it due.
//
// Costs: add() O(1) amortised (a count-leading-zeros and an append); cancel() O(1) amortised;
// popping an expired timer O(1) amortised: an entry is moved at most once per level between the
// one it was added on and level 0 (a retry 4 h ahead in microseconds: at most 5 moves), but a
// slot is cascaded all at once when the wheel's time reaches it, so one pop() may move every
// entry of that slot (the benchmark reports the largest such burst).
// Others: the Linux kernel's wheel (kernel/time/timer.c since 4.8) no longer cascades and lets a
// timer on level L fire up to an eighth of its timeout late; a retry must fire within 10 ms of
// its time, so this one cascades, like the pre-4.8 kernel's, Kafka's and tokio's. seastar's
// timer_set buckets by the highest differing bit only and re-sorts a bucket on every expire();
// 64-way slots bound how often a timer is touched. Netty's HashedWheelTimer also cancels
// lazily.
//
// next_expiry() is a lower bound: exact when the earliest timer is on level 0 (the same 64-tick
// block as the wheel's time), otherwise the start of the earliest occupied slot, where pop()
// must run to cascade it (or a slot whose timers were all cancelled). An owner that sleeps
// until next_expiry() wakes at most once per level on the way to a far timer, and those
// wake-ups are shared by every timer of the slot.
//
// Timers of the same tick pop in the order they were added. A timer added for a tick the wheel
// has already passed (its time is that of the last pop() that found nothing left) pops at the
// next pop(), before the others, whatever the time given; several such pop in the order they
// were added.
//
// Memory: 24 bytes per entry (T of 8 bytes) in its slot's array, and 4 bytes per handle; an
// array that held more than 1024 entries is freed once emptied, smaller ones are kept for reuse.
//
// Threading: one owner thread (a shard); no locks.
#pragma once
#include <array>
#include <bit>
#include <cstdint>
#include <type_traits>
#include <utility>
#include <vector>

#include "core/invariant.h"

namespace ringrelay::core {

// Names one timer of a timer_wheel. Default-constructed: no timer.
struct timer_handle {
    std::uint32_t index = UINT32_MAX;
    std::uint32_t generation = 0;
    [[nodiscard]] bool empty() const noexcept { return index == UINT32_MAX; }
};

// T: what a timer carries back when it pops (a queue id, a pointer); copied, never destroyed.
template <typename T>
class timer_wheel {
    static_assert(std::is_trivially_copyable_v<T> && std::is_default_constructible_v<T>);

public:
    using tick = std::uint64_t;
    static constexpr tick never = UINT64_MAX;  // next_expiry() of an empty wheel
    static constexpr unsigned slot_bits = 6;
    static constexpr unsigned slots = 1U << slot_bits;
    static constexpr unsigned levels = (64 + slot_bits - 1) / slot_bits;  // 11

    // Work done since construction, for tests and benchmarks: entries moved down a level,
    // slots emptied by the wheel's time reaching them, compactions.
    struct work_counters {
        std::uint64_t cascaded = 0;
        std::uint64_t slots_processed = 0;
        std::uint64_t compactions = 0;
    };

    // The wheel's time starts at `now` (0: any first expiry is placed exactly).
    explicit timer_wheel(tick now = 0) noexcept : _time(now) {}
    timer_wheel(const timer_wheel&) = delete;
    timer_wheel& operator=(const timer_wheel&) = delete;

    // A timer that pops at `expiry` (or at once, if the wheel has already passed it). O(1)
    // amortised; allocates when its slot's array grows.
    timer_handle add(tick expiry, T value);

    // Ends the timer if it has neither popped nor been cancelled: true; else false. O(1)
    // amortised (see the file comment: the entry is dropped later).
    bool cancel(timer_handle h) noexcept;

    // The earliest timer due at `now`, removed: true, with its value (and expiry); false if
    // none is due. Times given to successive calls should not decrease; a smaller one pops only
    // what an earlier call already found due.
    [[nodiscard]] bool pop(tick now, T& value, tick* expiry = nullptr) noexcept;

    // No timer pops before this tick (never: no timer). See the file comment: a lower bound.
    [[nodiscard]] tick next_expiry() const noexcept;

    // Timers that have neither popped nor been cancelled.
    [[nodiscard]] std::size_t size() const noexcept { return _size; }
    [[nodiscard]] bool empty() const noexcept { return _size == 0; }
    // The wheel's time: every timer at or before it has been found due.
    [[nodiscard]] tick time() const noexcept { return _time; }
    [[nodiscard]] const work_counters& work() const noexcept { return _work; }

private:
    struct entry {
        tick expiry;
        T value;
        std::uint32_t index;       // into _generations
        std::uint32_t generation;  // live while _generations[index] is still this
    };
    using entries = std::vector<entry>;
    static constexpr std::size_t kept_capacity = 1024;  // larger arrays are freed once empty
    static constexpr std::size_t compaction_floor = 1024;

    [[nodiscard]] bool live(const entry& e) const noexcept { return _generations[e.index] == e.generation; }
    // Ends the entry's handle and frees its index for reuse.
    void release(const entry& e) noexcept;
    // Puts an entry with expiry > _time in its slot relative to _time.
    void place(const entry& e);
    void mark_empty(unsigned level, unsigned slot) noexcept {
        _occupied[level] &= ~(std::uint64_t{1} << slot);
    }
    // The lowest occupied level, or `levels` if none.
    [[nodiscard]] unsigned lowest_level() const noexcept;
    // The first tick of the first occupied slot of `level` (occupied).
    [[nodiscard]] tick slot_start(unsigned level) const noexcept;
    // Moves the wheel's time to slot_start(level) and empties that slot: its entries become due
    // or go down to lower levels.
    void process_slot(unsigned level);
    // Pops the first live entry of a due array (late or due), dropping dead ones on the way.
    [[nodiscard]] bool take(entries& list, std::size_t& next, T& value, tick* expiry) noexcept;
    // Drops every dead entry (see the file comment).
    void compact() noexcept;
    static void recycle(entries& list) noexcept;

    std::array<entries, levels * slots> _slots;
    std::array<std::uint64_t, levels> _occupied{};  // a bit per slot holding entries
    entries _late;  // added for a tick already passed, from _late_next on
    std::size_t _late_next = 0;
    entries _due;   // found due by pop(), from _due_next on
    std::size_t _due_next = 0;
    std::vector<std::uint32_t> _generations;  // per handle index
    std::vector<std::uint32_t> _free;         // handle indexes to reuse
    std::size_t _size = 0;  // live timers
    std::size_t _dead = 0;  // cancelled entries still stored
    tick _time;
    work_counters _work;
};

// ---- implementation ----------------------------------------------------------------------

template <typename T>
timer_handle timer_wheel<T>::add(tick expiry, T value) {
    std::uint32_t index;
    if (!_free.empty()) {
        index = _free.back();
        _free.pop_back();
    } else {
        RR_ASSERT(_generations.size() < UINT32_MAX);
        index = static_cast<std::uint32_t>(_generations.size());
        _generations.push_back(0);
    }
    const entry e{expiry, value, index, _generations[index]};
    ++_size;
    if (expiry <= _time) {
        _late.push_back(e);
    } else {
        place(e);
    }
    return {index, e.generation};
}

template <typename T>
bool timer_wheel<T>::cancel(timer_handle h) noexcept {
    if (h.index >= _generations.size() || _generations[h.index] != h.generation) return false;
    ++_generations[h.index];
    _free.push_back(h.index);
    --_size;
    ++_dead;
    if (_dead > compaction_floor && _dead > _size) compact();
    return true;
}

template <typename T>
bool timer_wheel<T>::pop(tick now, T& value, tick* expiry) noexcept {
    if (take(_late, _late_next, value, expiry)) return true;
    while (!take(_due, _due_next, value, expiry)) {
        if (now <= _time) return false;
        const unsigned level = lowest_level();
        if (level == levels || slot_start(level) > now) {
            // Nothing on the wheel is due by `now`, so every entry still lies in a slot after
            // `now` that shares the digits above its level with `now`: placed as if relative
            // to `now`. Later adds are placed relative to it.
            _time = now;
            return false;
        }
        process_slot(level);
    }
    return true;
}

template <typename T>
typename timer_wheel<T>::tick timer_wheel<T>::next_expiry() const noexcept {
    if (_size == 0) return never;
    if (_late_next < _late.size()) return _late[_late_next].expiry;
    if (_due_next < _due.size()) return _time;
    const unsigned level = lowest_level();
    return level == levels ? never : slot_start(level);
}

template <typename T>
void timer_wheel<T>::release(const entry& e) noexcept {
    ++_generations[e.index];  // its handle goes stale
    _free.push_back(e.index);
    --_size;
}

template <typename T>
void timer_wheel<T>::place(const entry& e) {
    RR_DEBUG_ASSERT(e.expiry > _time);
    const auto high_bit = static_cast<unsigned>(63 - std::countl_zero(e.expiry ^ _time));
    const unsigned level = high_bit / slot_bits;
    const auto slot = static_cast<unsigned>((e.expiry >> (level * slot_bits)) & (slots - 1));
    _slots[level * slots + slot].push_back(e);
    _occupied[level] |= std::uint64_t{1} << slot;
}

template <typename T>
unsigned timer_wheel<T>::lowest_level() const noexcept {
    for (unsigned level = 0; level < levels; ++level)
        if (_occupied[level] != 0) return level;
    return levels;
}

template <typename T>
typename timer_wheel<T>::tick timer_wheel<T>::slot_start(unsigned level) const noexcept {
    const auto slot = static_cast<unsigned>(std::countr_zero(_occupied[level]));
    // Every occupied slot of a level lies after the wheel's time's digit there (the digits
    // above are the time's own), so the lowest one is the next to be reached.
    RR_DEBUG_ASSERT(slot > ((_time >> (level * slot_bits)) & (slots - 1)));
    const unsigned above = (level + 1) * slot_bits;
    const tick high = above >= 64 ? 0 : _time & ~((tick{1} << above) - 1);
    return high | (tick{slot} << (level * slot_bits));
}

template <typename T>
void timer_wheel<T>::process_slot(unsigned level) {
    _time = slot_start(level);
    const auto slot = static_cast<unsigned>(std::countr_zero(_occupied[level]));
    entries& from = _slots[level * slots + slot];
    mark_empty(level, slot);
    ++_work.slots_processed;
    RR_DEBUG_ASSERT(_due_next == _due.size());  // only called once the due ones are popped
    _due.clear();
    _due_next = 0;
    if (level == 0) {
        // One exact tick: the slot's array becomes the due array as it is.
        std::swap(_due, from);
        recycle(from);
        return;
    }
    for (const entry& e : from) {
        if (e.expiry == _time) {
            _due.push_back(e);  // at the slot's first tick
        } else {
            place(e);  // shares every digit from `level` up with the time now: a lower level
            ++_work.cascaded;
        }
    }
    from.clear();
    recycle(from);
}

template <typename T>
bool timer_wheel<T>::take(entries& list, std::size_t& next, T& value, tick* expiry) noexcept {
    while (next < list.size()) {
        const entry e = list[next++];
        if (next == list.size()) {
            list.clear();
            next = 0;
        }
        if (!live(e)) {
            --_dead;
            continue;
        }
        value = e.value;
        if (expiry != nullptr) *expiry = e.expiry;
        release(e);
        return true;
    }
    return false;
}

template <typename T>
void timer_wheel<T>::compact() noexcept {
    ++_work.compactions;
    const auto drop_dead = [this](entries& list, std::size_t from) {
        std::size_t out = 0;
        for (std::size_t i = from; i < list.size(); ++i)
            if (live(list[i])) list[out++] = list[i];
        list.resize(out);
    };
    drop_dead(_late, _late_next);
    _late_next = 0;
    drop_dead(_due, _due_next);
    _due_next = 0;
    for (unsigned level = 0; level < levels; ++level) {
        for (std::uint64_t bits = _occupied[level]; bits != 0; bits &= bits - 1) {
            const auto slot = static_cast<unsigned>(std::countr_zero(bits));
            entries& list = _slots[level * slots + slot];
            drop_dead(list, 0);
            if (list.empty()) {
                mark_empty(level, slot);
                recycle(list);
            }
        }
    }
    _dead = 0;
}

template <typename T>
void timer_wheel<T>::recycle(entries& list) noexcept {
    if (list.capacity() > kept_capacity) entries().swap(list);
}

}  // namespace ringrelay::core
