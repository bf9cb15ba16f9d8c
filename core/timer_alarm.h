// core/timer_alarm.h: one io_uring timeout that wakes its owner at an absolute time, for a unit that
// sleeps until its next timer (core/timer_wheel.h's next_expiry()) instead of polling: the
// delivery's retries (CLOCK_REALTIME, as retry times are Unix time) and the destination pool's
// back-off ends (CLOCK_MONOTONIC). IORING_OP_TIMEOUT with IORING_TIMEOUT_ABS (5.4) and, for
// the wall clock, IORING_TIMEOUT_REALTIME (5.15), so a deadline stays right across a clock
// step; moving an armed alarm earlier updates the same timeout in place
// (IORING_TIMEOUT_UPDATE, 5.11). The relay requires 6.0 (core/reactor.h), so nothing is probed.
//
// Usage, inside class T:
//     core::timer_alarm<&T::on_alarm> _alarm{*this, reactor, core::alarm_clock::realtime};
//     _alarm.arm_at(deadline_ns);  // at the end of every turn that may have added a timer
// The handler (void on_alarm() noexcept) runs in the loop turn in which the kernel's timer
// fired; the alarm is then disarmed until armed again. It may run early for the owner's
// purpose (the owner armed a lower bound, or its deadline moved later): the owner looks at
// what is due and arms again.
//
// Lifecycle: at most one timeout in flight. There is no cancel: an owner that no longer needs
// the wake-up ignores it. The owner, like any completion's, must outlive the reactor's loop
// (a shard destroys its parts after its last turn).
// Threading: the reactor's thread.
#pragma once
#include <cstdint>

#include <liburing.h>

#include "core/reactor.h"

namespace ringrelay::core {

enum class alarm_clock : std::uint8_t {
    monotonic,  // CLOCK_MONOTONIC (core::monotonic_ns(); core::monotonic_ms() * 1'000'000)
    realtime,   // CLOCK_REALTIME (core::unix_us() * 1000)
};

namespace detail {

// The part of timer_alarm<> that is not about the owner's type.
class alarm_timeout : public completion {
public:
    alarm_timeout(reactor& r, alarm_clock clock) noexcept : _reactor(r), _clock(clock) {}
    alarm_timeout(const alarm_timeout&) = delete;
    alarm_timeout& operator=(const alarm_timeout&) = delete;

    // Wake the owner at `at_ns` (nanoseconds on the alarm's clock; a time already passed wakes
    // it in the next turn). Armed for that time or earlier already: nothing. Armed for later:
    // moved to `at_ns`. At most one SQE, no allocation.
    void arm_at(std::int64_t at_ns) noexcept;
    [[nodiscard]] bool armed() const noexcept { return _armed; }
    // The deadline it is armed for (meaningless when not armed).
    [[nodiscard]] std::int64_t deadline_ns() const noexcept { return _at_ns; }

protected:
    ~alarm_timeout() = default;
    // The timeout's CQE: true if the owner is to be woken.
    [[nodiscard]] bool completed(int res) noexcept;

private:
    [[nodiscard]] unsigned clock_flags() const noexcept;

    // Fixed after construction.
    reactor& _reactor;
    const alarm_clock _clock;
    // Shard-local. The kernel reads a timespec when it takes the SQE (at the next submit), so
    // the one of a pending update is kept apart from the one of the timeout itself.
    bool _armed = false;
    std::int64_t _at_ns = 0;
    __kernel_timespec _ts{};
    __kernel_timespec _update_ts{};
};

}  // namespace detail

template <auto Handler>
class timer_alarm;

template <typename T, void (T::*Handler)() noexcept>
class timer_alarm<Handler> final : public detail::alarm_timeout {
public:
    timer_alarm(T& owner, reactor& r, alarm_clock clock) noexcept : alarm_timeout(r, clock), _owner(&owner) {}
    void complete(int res, std::uint32_t) noexcept override {
        if (completed(res)) (_owner->*Handler)();
    }

private:
    T* _owner;
};

}  // namespace ringrelay::core
