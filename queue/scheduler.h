// queue/scheduler.h: when and in which order a shard's delivery work runs (docs/ARCHITECTURE.md
// "Delivery"), as Postfix's qmgr keeps per-destination queues and a deferred queue:
//
//  - ready queues, one per destination this shard owns (queue/destination_pool.h takes jobs
//    from them in order, first in first out, as its connections have room);
//  - retry timers for this shard's messages: after a failed attempt a recipient waits for the
//    time queue/retry_schedule.h gives (the n-th interval of --retry-intervals ±10 % jitter,
//    never past arrival + --max-age) or expires; a message's timer makes the delivery look at
//    its unfinished recipients again. Timers pop earliest first, at their exact microsecond;
//    two timers of one message each pop (the message is looked at twice; the second finds
//    nothing to do).
//
// The timers are a core::timer_wheel in ticks of Unix microseconds, the unit retry times have
// in the journal: adding one, and popping one that is due, are O(1) (amortised) with millions
// queued, and next_retry_us() tells the delivery when to wake up (its io_uring timeout,
// queue/delivery.h); nothing polls.
//
// Pure as far as time goes: every call takes the clock reading. The jitter source is seeded
// by the caller, so tests get repeatable schedules.
//
// Threading: shard-local. Jobs in a ready queue are not owned by it: they go back to their
// origin shard with an outcome; those still queued when the scheduler is destroyed (the shard
// stopping) are freed with it, their recipients staying in the spool for the next start.
#pragma once
#include <cstdint>
#include <deque>
#include <vector>
#include <memory>
#include <string>
#include <unordered_map>

#include "core/timer_wheel.h"
#include "queue/delivery_job.h"
#include "queue/retry_schedule.h"

namespace ringrelay::queue {

// One destination's jobs waiting for a connection, oldest first.
class ready_queue {
public:
    void push(delivery_job* job) { _jobs.push_back(job); }
    // Back in front: a job with transactions still to send (max_recipients_per_transaction).
    void push_front(delivery_job* job) { _jobs.push_front(job); }
    // The oldest job, left in place; the queue must not be empty.
    [[nodiscard]] delivery_job* front() const noexcept { return _jobs.front(); }
    // The i-th oldest job; i < size().
    [[nodiscard]] const delivery_job& at(std::size_t i) const noexcept { return *_jobs[i]; }
    // The oldest job, removed; the queue must not be empty.
    [[nodiscard]] delivery_job* pop() noexcept;
    [[nodiscard]] bool empty() const noexcept { return _jobs.empty(); }
    [[nodiscard]] std::size_t size() const noexcept { return _jobs.size(); }
    // Calls f(job) for every waiting job, oldest first; f must not add or remove jobs.
    template <typename F>
    void for_each(F f) {
        for (delivery_job* job : _jobs) f(*job);
    }
    // Moves every job for which pred(job) holds to `out` (in queue order); the others keep
    // their order. O(size).
    template <typename Pred>
    void take_if(Pred pred, std::vector<delivery_job*>& out) {
        std::size_t kept = 0;
        for (delivery_job* job : _jobs) {
            if (pred(*job)) {
                out.push_back(job);
            } else {
                _jobs[kept++] = job;
            }
        }
        _jobs.resize(kept);
    }

private:
    friend class scheduler;
    std::deque<delivery_job*> _jobs;
};

// What follows a failed attempt.
struct retry_plan {
    bool expired = false;      // give up: the recipient expires (DSN status 4.4.7)
    std::uint64_t at_us = 0;   // otherwise: the next attempt (Unix microseconds)
};

class scheduler {
public:
    scheduler(const retry_schedule& schedule, std::uint64_t jitter_seed) noexcept
        : _schedule(schedule), _jitter(jitter_seed) {}
    scheduler(const scheduler&) = delete;
    scheduler& operator=(const scheduler&) = delete;
    ~scheduler();

    // The ready queue of the destination `key` (queue/delivery_job.h route_key::key), made on
    // first use; the reference stays valid as long as the scheduler.
    [[nodiscard]] ready_queue& queue_for(const std::string& key);
    // Frees the ready queue of `key` (none: nothing happens); it must be empty. References to it
    // end here: queue_for(key) makes a new one.
    void drop(const std::string& key) noexcept;
    // Ready queues that exist.
    [[nodiscard]] std::size_t queues() const noexcept { return _queues.size(); }

    // After failed attempt number `attempts` of a recipient of a message that arrived at
    // arrival_us, made at now_us (wall clock).
    [[nodiscard]] retry_plan plan_retry(std::uint32_t attempts, std::uint64_t arrival_us,
                                        std::uint64_t now_us) noexcept;
    // Look at message `queue_id` again at at_us. O(1).
    void retry_at(std::uint64_t at_us, std::uint64_t queue_id);
    // The earliest timer due at now_us, removed: true and its message in `queue_id`; false if
    // none is due. O(1) amortised (core/timer_wheel.h).
    [[nodiscard]] bool pop_due(std::uint64_t now_us, std::uint64_t& queue_id) noexcept;
    // No timer is due before this time (Unix microseconds); no_retry if there is none. A lower
    // bound, exact within 64 us of the earliest timer: popping at it may only move timers
    // closer, and then this moves on towards the earliest.
    [[nodiscard]] std::uint64_t next_retry_us() const noexcept { return _retries.next_expiry(); }
    static constexpr std::uint64_t no_retry = core::timer_wheel<std::uint64_t>::never;
    [[nodiscard]] std::size_t timers() const noexcept { return _retries.size(); }

private:
    // Fixed after construction.
    const retry_schedule& _schedule;
    // Shard-local.
    jitter_source _jitter;
    std::unordered_map<std::string, std::unique_ptr<ready_queue>> _queues;
    core::timer_wheel<std::uint64_t> _retries;  // Unix microseconds -> queue id
};

}  // namespace ringrelay::queue
