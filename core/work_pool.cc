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

void work_return::push(work_item* item) noexcept {
    std::lock_guard lock(_mutex);
    const bool wake = _done.empty();
    _done.push_back(item);
    ++_returned;
    // One wake-up per batch: items already waiting mean a write is pending whose complete()
    // has not taken the list yet (it takes it under this mutex), and will take this one too.
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

work_pool::work_pool(unsigned threads, std::size_t max_queued) : _max_queued(max_queued) {
    if (threads == 0) threads = 1;
    for (unsigned i = 0; i < threads; ++i) _threads.emplace_back([this] { worker(); });
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

void work_pool::worker() noexcept {
    for (;;) {
        work_item* item = nullptr;
        {
            std::unique_lock lock(_mutex);
            _wake.wait(lock, [this] { return _stopping || !_queue.empty(); });
            if (_queue.empty()) return;  // stopping, and nothing left
            item = _queue.front();
            _queue.pop_front();
        }
        item->run();
        item->_return->push(item);
    }
}

}  // namespace ringrelay::core
