// core/timer_wheel.h: a hierarchical timing wheel (Varghese & Lauck, "Hashed and Hierarchical
// Timing Wheels", SOSP 1987) holding many timers for one shard: the delivery's retry times
// (queue/scheduler.h, ticks of Unix microseconds) and the destination pool's back-off ends
// (queue/destination_pool.h, ticks of monotonic milliseconds). The owner sleeps until
// next_expiry() on one io_uring timeout (core/alarm.h) instead of polling.
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
// Costs: add() O(1) (a count-leading-zeros and a list append); cancel() O(1) (an unlink);
// popping an expired timer O(1) amortised: a timer is moved at most once per level between the
// one it was added on and level 0 (a retry 4 h ahead in microseconds: at most 5 moves), but a
// slot is cascaded all at once when the wheel's time reaches it, so one pop() may move every
// timer of that slot (bench/timer_wheel_bench.cc measures it beside std::priority_queue).
// Others: the Linux kernel's wheel (kernel/time/timer.c since 4.8) no longer cascades and lets a
// timer on level L fire up to an eighth of its timeout late; a retry must fire within 10 ms of
// its time, so this one cascades, like the pre-4.8 kernel's, Kafka's and tokio's. seastar's
// timer_set buckets by the highest differing bit only and re-sorts a bucket on every expire();
// 64-way slots bound how often a timer is touched.
//
// next_expiry() is a lower bound: exact when the earliest timer is on level 0 (the same 64-tick
// block as the wheel's time), otherwise the start of the earliest occupied slot, where pop()
// must run to cascade it. An owner that sleeps until next_expiry() wakes at most once per level
// on the way to a far timer, and those wake-ups are shared by every timer of the slot.
//
// Timers of the same tick pop in the order they were added. A timer added for a tick the wheel
// has already passed (its time is that of the last pop() that found nothing left) pops at the
// next pop(), before the others, whatever the time given; several such pop in the order they
// were added.
//
// Cancellation by handle: add() returns a timer_handle (node index and generation); cancel()
// of a handle whose timer popped or was cancelled does nothing and says so, even after the
// node has been reused by another timer.
//
// Memory: 32 bytes per timer (T of 8 bytes), in chunks of 4096 nodes: no reallocation and copy
// of the whole storage while a million timers are live. Freed nodes are reused; chunks stay
// until the wheel goes.
//
// Threading: one owner thread (a shard); no locks.
#pragma once
#include <array>
#include <bit>
#include <cstdint>
#include <memory>
#include <type_traits>
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

    // Work done since construction, for tests and benchmarks: how many timers were moved down
    // a level, and how many slots were emptied by the wheel's time reaching them.
    struct work_counters {
        std::uint64_t cascaded = 0;
        std::uint64_t slots_processed = 0;
    };

    // The wheel's time starts at `now` (0: any first expiry is placed exactly).
    explicit timer_wheel(tick now = 0) noexcept : _time(now) {}
    timer_wheel(const timer_wheel&) = delete;
    timer_wheel& operator=(const timer_wheel&) = delete;

    // A timer that pops at `expiry` (or at once, if the wheel has already passed it). O(1);
    // allocates a chunk of nodes once every 4096 timers beyond the most ever live.
    timer_handle add(tick expiry, T value);

    // Removes the timer if it has neither popped nor been cancelled: true; else false. O(1).
    bool cancel(timer_handle h) noexcept;

    // The earliest timer due at `now`, removed: true, with its value (and expiry); false if
    // none is due. Times given to successive calls should not decrease; a smaller one pops only
    // what an earlier call already found due.
    [[nodiscard]] bool pop(tick now, T& value, tick* expiry = nullptr) noexcept;

    // No timer pops before this tick (never: no timer). See the file comment: a lower bound.
    [[nodiscard]] tick next_expiry() const noexcept;

    [[nodiscard]] std::size_t size() const noexcept { return _size; }
    [[nodiscard]] bool empty() const noexcept { return _size == 0; }
    // The wheel's time: every timer at or before it has been found due.
    [[nodiscard]] tick time() const noexcept { return _time; }
    [[nodiscard]] const work_counters& work() const noexcept { return _work; }

private:
    static constexpr std::uint32_t nil = UINT32_MAX;
    static constexpr std::uint32_t chunk_bits = 12;
    static constexpr std::uint32_t chunk_size = 1U << chunk_bits;
    // Lists: levels * slots wheel slots, then the two lists of due timers, then "free".
    static constexpr std::uint16_t late_list = levels * slots;  // added for a tick already passed
    static constexpr std::uint16_t due_list = late_list + 1;    // found due by pop(), not yet popped
    static constexpr std::uint16_t free_list = due_list + 1;    // not a list: the node is unused

    struct node {
        tick expiry;
        T value;
        std::uint32_t prev;
        std::uint32_t next;
        std::uint32_t generation;
        std::uint16_t list;
    };
    struct list_head {
        std::uint32_t head = nil;
        std::uint32_t tail = nil;
    };

    [[nodiscard]] node& at(std::uint32_t i) noexcept { return _chunks[i >> chunk_bits][i & (chunk_size - 1)]; }
    [[nodiscard]] const node& at(std::uint32_t i) const noexcept {
        return _chunks[i >> chunk_bits][i & (chunk_size - 1)];
    }
    void append(std::uint16_t list, std::uint32_t i) noexcept;
    void unlink(std::uint32_t i) noexcept;
    // Puts node i (expiry > _time) in its slot relative to _time.
    void place(std::uint32_t i) noexcept;
    // The lowest occupied level, or `levels` if none.
    [[nodiscard]] unsigned lowest_level() const noexcept;
    // The first tick of the first occupied slot of `level` (occupied).
    [[nodiscard]] tick slot_start(unsigned level) const noexcept;
    // Moves the wheel's time to slot_start(level) and empties that slot: its timers become due
    // or go down to lower levels.
    void process_slot(unsigned level) noexcept;
    // Pops the first timer of a due list.
    [[nodiscard]] bool take(std::uint16_t list, T& value, tick* expiry) noexcept;
    // Node i (unlinked) becomes unused.
    void release(std::uint32_t i) noexcept;

    std::array<list_head, free_list> _lists{};
    std::array<std::uint64_t, levels> _occupied{};
    std::vector<std::unique_ptr<node[]>> _chunks;
    std::uint32_t _free = nil;   // unused nodes, linked through `next`
    std::uint32_t _nodes = 0;    // nodes ever made
    std::size_t _size = 0;
    tick _time;
    work_counters _work;
};

// ---- implementation ----------------------------------------------------------------------

template <typename T>
timer_handle timer_wheel<T>::add(tick expiry, T value) {
    std::uint32_t i = _free;
    if (i != nil) {
        _free = at(i).next;
    } else {
        RR_ASSERT(_nodes != nil);
        if ((_nodes & (chunk_size - 1)) == 0) _chunks.push_back(std::make_unique<node[]>(chunk_size));
        i = _nodes++;
        at(i).generation = 0;
    }
    node& n = at(i);
    n.expiry = expiry;
    n.value = value;
    ++_size;
    if (expiry <= _time) {
        append(late_list, i);
    } else {
        place(i);
    }
    return {i, n.generation};
}

template <typename T>
bool timer_wheel<T>::cancel(timer_handle h) noexcept {
    if (h.index >= _nodes) return false;
    node& n = at(h.index);
    if (n.list == free_list || n.generation != h.generation) return false;
    unlink(h.index);
    release(h.index);
    return true;
}

template <typename T>
bool timer_wheel<T>::pop(tick now, T& value, tick* expiry) noexcept {
    if (take(late_list, value, expiry)) return true;
    while (_lists[due_list].head == nil) {
        if (now <= _time) return false;
        const unsigned level = lowest_level();
        if (level == levels || slot_start(level) > now) {
            // Nothing on the wheel is due by `now`, so every timer still lies in a slot after
            // `now` that shares the digits above its level with `now`: placed as if relative
            // to `now`. Later adds are placed relative to it.
            _time = now;
            return false;
        }
        process_slot(level);
    }
    return take(due_list, value, expiry);
}

template <typename T>
typename timer_wheel<T>::tick timer_wheel<T>::next_expiry() const noexcept {
    if (_lists[late_list].head != nil) return at(_lists[late_list].head).expiry;
    if (_lists[due_list].head != nil) return _time;
    const unsigned level = lowest_level();
    return level == levels ? never : slot_start(level);
}

template <typename T>
void timer_wheel<T>::append(std::uint16_t list, std::uint32_t i) noexcept {
    list_head& l = _lists[list];
    node& n = at(i);
    n.list = list;
    n.next = nil;
    n.prev = l.tail;
    if (l.tail != nil) {
        at(l.tail).next = i;
    } else {
        l.head = i;
    }
    l.tail = i;
}

template <typename T>
void timer_wheel<T>::unlink(std::uint32_t i) noexcept {
    node& n = at(i);
    list_head& l = _lists[n.list];
    if (n.prev != nil) {
        at(n.prev).next = n.next;
    } else {
        l.head = n.next;
    }
    if (n.next != nil) {
        at(n.next).prev = n.prev;
    } else {
        l.tail = n.prev;
    }
    if (l.head == nil && n.list < late_list) _occupied[n.list / slots] &= ~(std::uint64_t{1} << (n.list % slots));
}

template <typename T>
void timer_wheel<T>::place(std::uint32_t i) noexcept {
    const tick expiry = at(i).expiry;
    RR_DEBUG_ASSERT(expiry > _time);
    const auto high_bit = static_cast<unsigned>(63 - std::countl_zero(expiry ^ _time));
    const unsigned level = high_bit / slot_bits;
    const auto slot = static_cast<unsigned>((expiry >> (level * slot_bits)) & (slots - 1));
    append(static_cast<std::uint16_t>(level * slots + slot), i);
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
void timer_wheel<T>::process_slot(unsigned level) noexcept {
    _time = slot_start(level);
    const auto slot = static_cast<unsigned>(std::countr_zero(_occupied[level]));
    list_head& l = _lists[level * slots + slot];
    std::uint32_t i = l.head;
    l = list_head{};
    _occupied[level] &= ~(std::uint64_t{1} << slot);
    ++_work.slots_processed;
    while (i != nil) {
        const std::uint32_t next = at(i).next;
        if (at(i).expiry == _time) {
            RR_DEBUG_ASSERT(level == 0 || (_time & (slots - 1)) == 0);
            append(due_list, i);  // every timer of a level-0 slot, and those at a slot's first tick
        } else {
            RR_DEBUG_ASSERT(level > 0);
            place(i);  // shares every digit from `level` up with the time now: a lower level
            ++_work.cascaded;
        }
        i = next;
    }
}

template <typename T>
bool timer_wheel<T>::take(std::uint16_t list, T& value, tick* expiry) noexcept {
    const std::uint32_t i = _lists[list].head;
    if (i == nil) return false;
    node& n = at(i);
    value = n.value;
    if (expiry != nullptr) *expiry = n.expiry;
    unlink(i);
    release(i);
    return true;
}

template <typename T>
void timer_wheel<T>::release(std::uint32_t i) noexcept {
    node& n = at(i);
    ++n.generation;  // handles to it go stale
    n.list = free_list;
    n.next = _free;
    _free = i;
    --_size;
}

}  // namespace ringrelay::core
