// core/work_pool.h: a few threads for work that must not run on a shard thread because it is
// slow on purpose (a password check: scrypt takes tens of milliseconds and 32 MiB, by design)
// and so would stall every other session of the shard. Like seastar's thread pool for
// blocking syscalls: the shard hands an item over, a pool thread runs it, and the result comes
// back to the shard's io_uring through an eventfd read (work_return), so the shard never
// blocks and never polls.
//
// Threading: submit() runs on a shard thread; run() on a pool thread; finish() on the thread
// of the work_return it was submitted with. An item belongs to its submitter, which must keep
// it alive until finish() has been called.
// Gathering (work_pool's `gather`): a pool thread that finishes an item while more wait in the
// queue may keep it and hand it back together with the next ones it runs, up to `gather`
// items: one lock and at most one wake-up of the shard for the lot instead of one each. A
// thread hands back what it holds before it waits for work, so nothing is held while the
// queue is empty. For short items under load (a DKIM signature: hundreds of microseconds);
// not for long ones (a password check: its answer would wait for the next checks).
// Lifetime: the pool outlives every work_return it serves (the relay owns it, the shards own
// their work_return); a work_return outlives every item submitted with it (its shard only
// exits once no item is in flight).
#pragma once
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <mutex>
#include <span>
#include <system_error>
#include <thread>
#include <vector>

#include "core/reactor.h"

namespace ringrelay::core {

class work_return;

class work_item {
public:
    virtual ~work_item() = default;
    // On pool thread number `worker` (0 .. work_pool::threads() - 1): state kept per pool
    // thread (a signer's OpenSSL contexts) is indexed by it, and no other thread runs an item
    // with the same number meanwhile.
    virtual void run(unsigned worker) noexcept = 0;
    virtual void finish() noexcept = 0;  // back on the submitting shard's thread

private:
    friend class work_pool;
    friend class work_return;
    work_return* _return = nullptr;
};

// A shard's end of the pool: finished items arrive here and finish() runs on the shard thread.
class work_return final : public completion {
public:
    work_return() = default;
    work_return(const work_return&) = delete;
    work_return& operator=(const work_return&) = delete;
    ~work_return();

    // Creates the eventfd and arms its read on `r` (the shard's reactor, on the shard thread).
    [[nodiscard]] std::error_code start(reactor& r) noexcept;
    // Any thread: queues finished items (all submitted with this return) and wakes the shard,
    // once for all of them.
    void push(std::span<work_item* const> items) noexcept;
    // The eventfd read completed: runs finish() of every item that came back, re-arms.
    void complete(int res, std::uint32_t flags) noexcept override;
    // Shard thread, when its loop has ended (normally or because io_uring failed): blocks
    // until every item submitted with this return has come back from the pool (their
    // finish() is not run), so that none is still being run while its owner is destroyed.
    void wait_idle() noexcept;

private:
    friend class work_pool;  // counts submissions (_submitted)
    void arm() noexcept;

    reactor* _reactor = nullptr;
    int _fd = -1;
    std::uint64_t _value = 0;  // the eventfd read's buffer
    std::mutex _mutex;
    std::vector<work_item*> _done;      // guarded by _mutex
    std::uint64_t _returned = 0;        // guarded by _mutex: items pushed back
    std::uint64_t _submitted = 0;       // shard thread: items handed to the pool
    std::vector<work_item*> _finishing; // shard thread only
};

class work_pool {
public:
    // `threads` >= 1; `max_queued`: items waiting for a thread beyond which submit() refuses;
    // `gather`: at most this many finished items handed back together (1: each at once).
    work_pool(unsigned threads, std::size_t max_queued, std::size_t gather = 1);
    work_pool(const work_pool&) = delete;
    work_pool& operator=(const work_pool&) = delete;
    ~work_pool();  // runs what is queued, then joins

    // False when the queue is full (the caller answers "try again later" itself).
    [[nodiscard]] bool submit(work_item& item, work_return& back) noexcept;
    [[nodiscard]] unsigned threads() const noexcept { return static_cast<unsigned>(_threads.size()); }

private:
    void worker(unsigned index) noexcept;
    // Hands `held` back to their returns (one push per run of items with the same return).
    static void hand_back(std::vector<work_item*>& held) noexcept;

    const std::size_t _max_queued;
    const std::size_t _gather;
    std::mutex _mutex;
    std::condition_variable _wake;
    std::deque<work_item*> _queue;  // guarded by _mutex
    bool _stopping = false;         // guarded by _mutex
    std::vector<std::thread> _threads;
};

}  // namespace ringrelay::core
