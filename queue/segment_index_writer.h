// queue/segment_index_writer.h: writes closed segments' indexes (queue/segment_index.h) off
// the shard's hot path: one io_uring write per index, one index at a time.
//
// An index is derived data and is not fsynced: after a crash or power cut it may be missing,
// short or hold garbage, and recovery then scans its segment (segment_index.h). For the same
// reason it does not go through the storage seam (queue/storage.h), whose fault and
// power-loss backends model the spool's durable writes: an index write failing only costs a
// scan, and is counted.
//
// Lifecycle: constructed with the spool; like the spool's own commit, a write in flight must
// complete (idle()) before the writer is destroyed, since its completion is a member: the
// shard's drained() waits for it through spool::idle(). Threading: the spool's shard. The bytes of
// the index being written are owned here until their completion.
#pragma once
#include <cstdint>
#include <deque>
#include <string>

#include "core/reactor.h"

namespace ringrelay::queue {

struct index_writer_stats {
    std::uint64_t written = 0;  // indexes completely written
    std::uint64_t failed = 0;   // open or write failures (the segment will be scanned)
    std::uint64_t bytes = 0;
};

class segment_index_writer {
public:
    segment_index_writer(core::reactor& r, std::string dir) : _reactor(r), _dir(std::move(dir)) {}
    segment_index_writer(const segment_index_writer&) = delete;
    segment_index_writer& operator=(const segment_index_writer&) = delete;

    // Writes `bytes` as the index of `segment` (asynchronously; queued behind a write in
    // flight). Empty bytes: nothing to write.
    void write(std::uint64_t segment, std::string bytes) noexcept;
    // Synchronously (the spool closing: no reactor turn follows); false on any failure, which
    // leaves no index file behind.
    [[nodiscard]] bool write_now(std::uint64_t segment, std::string_view bytes) noexcept;
    // `segment` is being deleted: a queued write of its index is dropped and its index file
    // unlinked (a write in flight goes to the unlinked file).
    void forget(std::uint64_t segment) noexcept;

    [[nodiscard]] bool idle() const noexcept { return _fd < 0 && _waiting.empty(); }
    [[nodiscard]] const index_writer_stats& stats() const noexcept { return _stats; }

private:
    struct job {
        std::uint64_t segment;
        std::string bytes;
    };
    void start_next() noexcept;
    void submit() noexcept;
    void on_write(int res, std::uint32_t flags) noexcept;
    void finish_current(bool ok) noexcept;

    core::reactor& _reactor;
    const std::string _dir;
    // Shard-local. _current is in flight while _fd >= 0; its bytes stay put until then.
    job _current{0, {}};
    std::deque<job> _waiting;
    int _fd = -1;
    std::size_t _written = 0;
    index_writer_stats _stats;
    core::operation<&segment_index_writer::on_write> _write_done{*this};
};

}  // namespace ringrelay::queue
