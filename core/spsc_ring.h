// core/spsc_ring.h: a bounded lock-free single-producer/single-consumer ring, the only
// channel between shards (docs/ARCHITECTURE.md "Threads"). One thread pushes, one thread pops; anything else is
// a bug. Values move through it (ownership passes to the consumer).
#pragma once
#include <atomic>
#include <bit>
#include <cstddef>
#include <memory>
#include <new>
#include <optional>
#include <utility>

#include "core/invariant.h"

namespace ringrelay::core {

inline constexpr std::size_t cache_line = 64;

template <typename Value>
class spsc_ring {
public:
    // capacity is rounded up to a power of two.
    explicit spsc_ring(std::size_t capacity)
        : _mask(std::bit_ceil(capacity < 2 ? std::size_t{2} : capacity) - 1),
          _slots(std::make_unique<std::optional<Value>[]>(_mask + 1)) {}

    spsc_ring(const spsc_ring&) = delete;
    spsc_ring& operator=(const spsc_ring&) = delete;

    // Producer only. False when full (the value is left untouched).
    [[nodiscard]] bool try_push(Value& value) noexcept {
        const std::size_t tail = _tail.value.load(std::memory_order_relaxed);
        if (tail - _head_cache >= _mask + 1) {
            _head_cache = _head.value.load(std::memory_order_acquire);
            if (tail - _head_cache >= _mask + 1) return false;
        }
        _slots[tail & _mask].emplace(std::move(value));
        _tail.value.store(tail + 1, std::memory_order_release);
        return true;
    }
    [[nodiscard]] bool try_push(Value&& value) noexcept { return try_push(value); }

    // Consumer only. Empty optional when there is nothing.
    [[nodiscard]] std::optional<Value> try_pop() noexcept {
        const std::size_t head = _head.value.load(std::memory_order_relaxed);
        if (head == _tail_cache) {
            _tail_cache = _tail.value.load(std::memory_order_acquire);
            if (head == _tail_cache) return std::nullopt;
        }
        std::optional<Value> out(std::move(_slots[head & _mask]));
        _slots[head & _mask].reset();
        _head.value.store(head + 1, std::memory_order_release);
        return out;
    }

    [[nodiscard]] std::size_t capacity() const noexcept { return _mask + 1; }

private:
    // Each index is written by one thread and read by the other: own cache lines, so the
    // producer's stores do not invalidate the consumer's line and vice versa.
    struct alignas(cache_line) padded_index {
        std::atomic<std::size_t> value{0};
    };
    // Fixed after construction.
    const std::size_t _mask;
    std::unique_ptr<std::optional<Value>[]> _slots;
    // Written by the consumer.
    padded_index _head;
    // Written by the producer.
    padded_index _tail;
    // Producer-local cache of _head; consumer-local cache of _tail.
    alignas(cache_line) std::size_t _head_cache = 0;
    alignas(cache_line) std::size_t _tail_cache = 0;
};

}  // namespace ringrelay::core
