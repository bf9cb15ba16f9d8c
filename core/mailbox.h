// core/mailbox.h: a cross-shard channel: an spsc_ring plus an io_uring wake-up
// (IORING_OP_MSG_RING, Linux 5.18) so the consumer's reactor learns of new values without
// polling. A cross-shard submit is a mailbox per (sender, receiver) pair.
//
// Threading: send() runs on the producer's shard with the producer's reactor; the
// consumer's reactor delivers the wake-up CQE to on_wake() on the consumer's shard.
// A wake-up is posted only when the consumer may be asleep (`_armed`), so a burst of values
// costs one MSG_RING.
#pragma once
#include <atomic>
#include <cstdint>

#include "core/reactor.h"
#include "core/spsc_ring.h"

namespace ringrelay::core {

template <typename Value>
class mailbox final : public completion {
public:
    // Consumer side: handle(Value&&) is called for each value on the consumer's thread.
    template <typename Handler>
    mailbox(std::size_t capacity, int consumer_ring_fd, Handler* handler)
        : _ring(capacity), _consumer_ring_fd(consumer_ring_fd), _handler(handler),
          _dispatch([](void* h, Value&& v) { static_cast<Handler*>(h)->handle(std::move(v)); }) {}

    // Producer side. False when the ring is full (the caller keeps the value and retries).
    [[nodiscard]] bool send(reactor& producer, Value& value) noexcept {
        if (!_ring.try_push(value)) return false;
        // seq_cst: pairs with the consumer's store + fence in drain() (a store-then-load
        // handshake on both sides; acquire/release alone would allow a lost wake-up).
        if (_armed.value.exchange(false, std::memory_order_seq_cst)) {
            producer.wake(_consumer_ring_fd, this, 0);
        }
        return true;
    }
    [[nodiscard]] bool send(reactor& producer, Value&& value) noexcept { return send(producer, value); }

    // Consumer side: drains everything (called from the MSG_RING CQE).
    void complete(int, std::uint32_t) noexcept override { drain(); }

    void drain() noexcept {
        for (;;) {
            while (auto v = _ring.try_pop()) _dispatch(_handler, std::move(*v));
            _armed.value.store(true, std::memory_order_seq_cst);
            std::atomic_thread_fence(std::memory_order_seq_cst);
            // A value pushed between the last pop and re-arming saw _armed false and sent no
            // wake-up: look once more.
            auto v = _ring.try_pop();
            if (!v) return;
            _armed.value.store(false, std::memory_order_relaxed);
            _dispatch(_handler, std::move(*v));
        }
    }

private:
    spsc_ring<Value> _ring;
    // Fixed after construction.
    const int _consumer_ring_fd;
    void* const _handler;
    void (*const _dispatch)(void*, Value&&);
    // Written by both: the consumer arms, the producer disarms. Own cache line.
    struct alignas(cache_line) armed_flag {
        std::atomic<bool> value{true};
    } _armed;
};

}  // namespace ringrelay::core
