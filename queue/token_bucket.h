// queue/token_bucket.h: a token bucket for one shaping rate (issue 17: one per limited rate of
// an (egress source, site): max_message_rate, max_connection_rate). Exact integer arithmetic in
// microseconds: no floating point, no drift over any run length. Time is given by the caller
// (a fake clock in tests, monotonic microseconds in the engine); a time earlier than the last
// one seen counts as no time passing.
//
// Representation: one token is `period_us` units; the bucket gains `count` units per
// microsecond and holds at most `burst * period_us` units. With count <= 1e9 and burst <= 1e6
// (queue/shaping_rate.h) the level stays below 1e6 * 86400e6 < 2^63, and the refill product is
// bounded by the capacity plus one count.
//
// Lifecycle: made full at a time; the engine keeps one per limited rate of a destination on its
// owner shard. Threading: one shard; no synchronisation.
#pragma once
#include <cstdint>

#include "core/invariant.h"
#include "queue/shaping_rate.h"

namespace ringrelay::queue {

enum class bucket_start : std::uint8_t { full, empty };

class token_bucket {
public:
    // Full (burst tokens) or empty at `now_us`. Precondition: r.valid().
    token_bucket(const shaping_rate& r, std::uint64_t now_us, bucket_start start = bucket_start::full) noexcept
        : _rate(r), _last_us(now_us) {
        RR_ASSERT(r.valid());
        _level = start == bucket_start::full ? capacity() : 0;
    }

    [[nodiscard]] const shaping_rate& rate() const noexcept { return _rate; }

    // Takes one token if there is one at `now_us`.
    [[nodiscard]] bool try_take(std::uint64_t now_us) noexcept {
        refill(now_us);
        if (_level < _rate.period_us) return false;
        _level -= _rate.period_us;
        return true;
    }

    // Microseconds from `now_us` until a token is there (0: one is there now). What an engine
    // arms a timer with when a message waits for its rate (it stays in the ready queue).
    [[nodiscard]] std::uint64_t wait_us(std::uint64_t now_us) noexcept {
        refill(now_us);
        if (_level >= _rate.period_us) return 0;
        return (_rate.period_us - _level + _rate.count - 1) / _rate.count;
    }

    // Whole tokens held at `now_us`.
    [[nodiscard]] std::uint64_t tokens(std::uint64_t now_us) noexcept {
        refill(now_us);
        return _level / _rate.period_us;
    }

    // Whether the bucket holds its whole burst at `now_us` (a bucket made now would be the same).
    [[nodiscard]] bool full(std::uint64_t now_us) noexcept {
        refill(now_us);
        return _level >= capacity();
    }

    // A new rate from `now_us` on (the controller changed it, or a reload did): the whole tokens
    // held are kept, up to the new burst; a partly refilled token is lost.
    // Precondition: r.valid().
    void set_rate(const shaping_rate& r, std::uint64_t now_us) noexcept {
        RR_ASSERT(r.valid());
        const std::uint64_t held = tokens(now_us);
        _rate = r;
        _level = (held < r.burst ? held : r.burst) * r.period_us;
    }

private:
    [[nodiscard]] std::uint64_t capacity() const noexcept { return _rate.burst * _rate.period_us; }

    void refill(std::uint64_t now_us) noexcept {
        if (now_us <= _last_us) return;
        const std::uint64_t elapsed = now_us - _last_us;
        _last_us = now_us;
        const std::uint64_t room = capacity() - _level;
        // elapsed * count could overflow for a long idle time: compare by division first.
        if (elapsed >= (room + _rate.count - 1) / _rate.count) {
            _level = capacity();
        } else {
            _level += elapsed * _rate.count;
        }
    }

    shaping_rate _rate;
    std::uint64_t _level = 0;   // units; a token is _rate.period_us units
    std::uint64_t _last_us = 0; // the last time the level was brought up to date
};

}  // namespace ringrelay::queue
