// core/work_pool.cc: see work_pool.h.
#include "core/work_pool.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>

namespace ringrelay::core {

work_return::~work_return() {
    // A pool thread may be inside push(): it writes the eventfd under the mutex.
    std::lock_guard lock(_mutex);
    if (_fd >= 0) ::close(_fd);
    _fd = -1;
}

std::error_code work_return::start(reactor& r) noexcept {
    _reactor = &r;
    _fd = ::eventfd(0, EFD_CLOEXEC);
    if (_fd < 0) return {errno, std::system_category()};
    arm();
    return {};
}

void work_return::arm() noexcept {
    io_uring_prep_read(_reactor->sqe(this), _fd, &_value, sizeof _value, 0);
}

void work_return::push(std::span<work_item* const> items) noexcept {
    std::lock_guard lock(_mutex);
    const bool wake = _done.empty();
    _done.insert(_done.end(), items.begin(), items.end());
    _returned += items.size();
    // One wake-up per batch: items already waiting mean a write is pending whose complete()
    // has not taken the list yet (it takes it under this mutex), and will take these too.
    if (!wake) return;
    const std::uint64_t one = 1;
    // Cannot fail short of a counter overflow (2^64 - 2 wake-ups without a read).
    (void)!::write(_fd, &one, sizeof one);
}

void work_return::complete(int res, std::uint32_t) noexcept {
    if (res == -ECANCELED || _fd < 0) return;
    {
        std::lock_guard lock(_mutex);
        _finishing.swap(_done);
    }
    for (work_item* item : _finishing) item->finish();
    _finishing.clear();
    arm();
}

void work_return::wait_idle() noexcept {
    for (;;) {
        {
            std::lock_guard lock(_mutex);
            if (_returned == _submitted) return;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
}

work_pool::work_pool(unsigned threads, std::size_t max_queued, std::size_t gather)
    : _max_queued(max_queued), _gather(gather == 0 ? 1 : gather) {
    if (threads == 0) threads = 1;
    for (unsigned i = 0; i < threads; ++i) _threads.emplace_back([this, i] { worker(i); });
}

work_pool::~work_pool() {
    {
        std::lock_guard lock(_mutex);
        _stopping = true;
    }
    _wake.notify_all();
    for (std::thread& t : _threads) t.join();
}

bool work_pool::submit(work_item& item, work_return& back) noexcept {
    item._return = &back;
    {
        std::lock_guard lock(_mutex);
        if (_queue.size() >= _max_queued || _stopping) return false;
        _queue.push_back(&item);
    }
    ++back._submitted;  // the submitting shard's thread owns this counter
    _wake.notify_one();
    return true;
}

// An item is not touched once pushed (its shard may finish and reuse it at once).
void work_pool::hand_back(std::vector<work_item*>& held) noexcept {
    std::size_t i = 0;
    while (i < held.size()) {
        work_return* back = held[i]->_return;
        std::size_t j = i + 1;
        while (j < held.size() && held[j]->_return == back) ++j;
        back->push(std::span<work_item* const>(held).subspan(i, j - i));
        i = j;
    }
    held.clear();
}

void work_pool::worker(unsigned index) noexcept {
    std::vector<work_item*> held;  // run, not yet handed back (at most _gather)
    held.reserve(_gather);
    for (;;) {
        work_item* item = nullptr;
        {
            std::unique_lock lock(_mutex);
            if (!held.empty() && _queue.empty()) {
                // Nothing more to gather with: hand back before waiting.
                lock.unlock();
                hand_back(held);
                lock.lock();
            }
            _wake.wait(lock, [this] { return _stopping || !_queue.empty(); });
            if (_queue.empty()) return;  // stopping, and nothing left (nothing held either)
            item = _queue.front();
            _queue.pop_front();
        }
        item->run(index);
        held.push_back(item);
        if (held.size() >= _gather) hand_back(held);
    }
}

}  // namespace ringrelay::core
