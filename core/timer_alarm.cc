// core/timer_alarm.cc: see timer_alarm.h.
#include "core/timer_alarm.h"

#include <cerrno>

#include "core/invariant.h"

namespace ringrelay::core::detail {

unsigned alarm_timeout::clock_flags() const noexcept {
    return _clock == alarm_clock::realtime ? IORING_TIMEOUT_REALTIME : 0;
}

void alarm_timeout::arm_at(std::int64_t at_ns) noexcept {
    if (at_ns < 0) at_ns = 0;
    if (_armed && _at_ns <= at_ns) return;
    const __kernel_timespec ts{at_ns / 1'000'000'000, at_ns % 1'000'000'000};
    if (_armed) {
        // Its CQE is wanted only on failure (-ENOENT: the timeout fired meanwhile and its own
        // CQE wakes the owner), and then ignored (user_data 0).
        _update_ts = ts;
        io_uring_sqe* s = _reactor.sqe_ignored();
        io_uring_prep_timeout_update(s, &_update_ts, reinterpret_cast<std::uint64_t>(static_cast<completion*>(this)),
                                     IORING_TIMEOUT_ABS);
        s->flags |= IOSQE_CQE_SKIP_SUCCESS;
    } else {
        _ts = ts;
        io_uring_prep_timeout(_reactor.sqe(this), &_ts, 0, IORING_TIMEOUT_ABS | clock_flags());
    }
    _armed = true;
    _at_ns = at_ns;
}

bool alarm_timeout::completed(int res) noexcept {
    // -ETIME: the deadline passed. -ECANCELED: someone else's cancel; the owner looks and arms
    // again. Anything else is a kernel without a flag used here (older than the 6.0 the relay
    // refuses to run below) or a bad timespec: a bug.
    RR_ASSERT(res == -ETIME || res == -ECANCELED || res == 0);
    _armed = false;
    return true;
}

}  // namespace ringrelay::core::detail
