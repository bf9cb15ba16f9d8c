// queue/scheduler.cc: see scheduler.h.
#include "queue/scheduler.h"

#include <chrono>

#include "core/invariant.h"

namespace ringrelay::queue {

delivery_job* ready_queue::pop() noexcept {
    RR_ASSERT(!_jobs.empty());
    delivery_job* job = _jobs.front();
    _jobs.pop_front();
    return job;
}

scheduler::~scheduler() {
    for (auto& [key, q] : _queues)
        for (delivery_job* j : q->_jobs) delete j;
}

ready_queue& scheduler::queue_for(const std::string& key) {
    auto& slot = _queues[key];
    if (!slot) slot = std::make_unique<ready_queue>();
    return *slot;
}

void scheduler::drop(const std::string& key) noexcept {
    const auto it = _queues.find(key);
    if (it == _queues.end()) return;
    RR_ASSERT(it->second->empty());
    _queues.erase(it);
}

retry_plan scheduler::plan_retry(std::uint32_t attempts, std::uint64_t arrival_us, std::uint64_t now_us) noexcept {
    auto as_time = [](std::uint64_t us) {
        return retry_clock_time(std::chrono::milliseconds(static_cast<std::int64_t>(us / 1000)));
    };
    const retry_decision decision = _schedule.next_attempt(attempts, as_time(arrival_us), as_time(now_us), _jitter);
    if (decision.verdict == retry_verdict::expired) return retry_plan{true, 0};
    return retry_plan{false, static_cast<std::uint64_t>(decision.at.time_since_epoch().count()) * 1000};
}

void scheduler::retry_at(std::uint64_t at_us, std::uint64_t queue_id) { _retries.add(at_us, queue_id); }

bool scheduler::pop_due(std::uint64_t now_us, std::uint64_t& queue_id) noexcept {
    return _retries.pop(now_us, queue_id);
}

}  // namespace ringrelay::queue
