// core/snapshot_slot.h: one writer thread publishes a value (a shard's per-site figures for
// /metrics, queue/shard_snapshot.h) that any number of other threads read, with neither side
// ever waiting for the other: two buffers, the published one named by an atomic index, a
// reader count per buffer.
//
// The writer fills the buffer not published and then publishes it; it skips a publication
// (returns false, the readers keep the older value) while a reader still holds that buffer,
// so it never blocks and never writes under a reader. A reader takes the published buffer,
// counts itself in, and checks the index again: if the writer switched meanwhile it leaves and
// tries again, a bounded number of times (tries), then goes without (nullptr): it never
// blocks either. The counters and the index are sequentially consistent, so a writer that saw
// no reader on a buffer cannot be seen publishing it by a reader that then counted itself in
// before the check (Dekker's pattern).
//
// Memory: both buffers belong to the slot and are only ever modified by the writer; a reader
// copies nothing out of them it keeps past release(). The writer reuses their allocations.
//
// Threading: publish() from the one writer thread; read() from any thread. Each atomic member
// has its own cache line: readers count in on the buffer's line, the writer reads it once per
// publication.
#pragma once
#include <atomic>
#include <cstdint>

namespace ringrelay::core {

template <typename T>
class snapshot_slot {
public:
    // A held buffer; releases it when destroyed. get() is null if no buffer could be taken.
    class reader {
    public:
        reader(const reader&) = delete;
        reader& operator=(const reader&) = delete;
        reader(reader&& o) noexcept : _slot(o._slot), _index(o._index) { o._slot = nullptr; }
        ~reader() {
            if (_slot != nullptr) _slot->_readers[_index].count.fetch_sub(1, std::memory_order_release);
        }
        [[nodiscard]] const T* get() const noexcept { return _slot != nullptr ? &_slot->_buffers[_index] : nullptr; }

    private:
        friend class snapshot_slot;
        reader(const snapshot_slot* slot, unsigned index) noexcept : _slot(slot), _index(index) {}
        const snapshot_slot* _slot;
        unsigned _index;
    };

    // Writer only: `fill(T&)` writes the unpublished buffer (whatever it held two publications
    // ago: fill must set every part), which is then published. False (nothing called, nothing
    // published) while a reader still holds that buffer.
    template <typename Fill>
    bool publish(Fill fill) {
        const unsigned next = 1 - _published.load(std::memory_order_relaxed);
        if (_readers[next].count.load(std::memory_order_seq_cst) != 0) return false;
        fill(_buffers[next]);
        _published.store(next, std::memory_order_seq_cst);
        return true;
    }

    // Any thread: the published buffer, held until the reader is destroyed; get() is null
    // after `tries` switches under it (a writer publishing faster than the reader counts in).
    [[nodiscard]] reader read(unsigned tries = 4) const noexcept {
        for (unsigned t = 0; t < tries; ++t) {
            const unsigned i = _published.load(std::memory_order_seq_cst);
            _readers[i].count.fetch_add(1, std::memory_order_seq_cst);
            if (_published.load(std::memory_order_seq_cst) == i) return reader(this, i);
            _readers[i].count.fetch_sub(1, std::memory_order_release);
        }
        return reader(nullptr, 0);
    }

private:
    struct alignas(64) reader_count {
        mutable std::atomic<std::uint32_t> count{0};
    };
    T _buffers[2]{};
    // Written by the writer, read by readers: own cache line.
    alignas(64) std::atomic<unsigned> _published{0};
    // Written by readers, read by the writer: a line each.
    reader_count _readers[2];
};

}  // namespace ringrelay::core
