// queue/segment_index_writer.h: writes segment indexes (queue/segment_index.h) off the
// shard's hot path, as they are built: the index of the segment being written grows in
// SEGMENT.idx.part, one piece at a time (one io_uring write each, in order, one at a time),
// and the last piece (the end entry, once the segment is closed) renames it SEGMENT.idx. So a
// shard holds a piece of an index in memory, not a whole segment's (about 6% of a segment of
// 2 KiB messages: 4 MiB of a 64 MiB one), and, reusing the buffers of written pieces
// (spare()), touches no new memory for it after the first few: every fresh page costs a
// fault, and building whole indexes in memory had made accepting mail cost about 20% more CPU
// on the shard threads (ringrelay --hold, 2 KiB messages: a fault per 4 KiB of index, about
// one per 30 messages, plus the copies of a doubling buffer).
//
// An index is derived data and is not fsynced: after a crash or power cut it may be missing,
// short or hold garbage, and recovery then scans its segment (segment_index.h); a part file
// left by a crash is removed by the next start (spool::open). For the same reason it does not
// go through the storage seam (queue/storage.h), whose fault and power-loss backends model the
// spool's durable writes: an index write failing only costs a scan, and is counted.
//
// Lifecycle: constructed with the spool; like the spool's own commit, a write in flight must
// complete (idle()) before the writer is destroyed, since its completion is a member: the
// shard's drained() waits for it through spool::idle(). Destroyed with an index unfinished,
// it removes the part file. Threading: the spool's shard. The bytes of a piece being written
// are owned here until their completion.
#pragma once
#include <cstdint>
#include <deque>
#include <string>
#include <string_view>

#include "core/reactor.h"

namespace ringrelay::queue {

// The spool hands the index built so far to the writer whenever this much is waiting.
inline constexpr std::size_t index_piece_size = 64 * 1024;

enum class index_piece : std::uint8_t {
    more,  // more pieces of this index follow
    last,  // the index is complete once this one is written (empty: the index is unusable,
           // segment_index_builder::finish() gave nothing, and the part file goes)
};

struct index_writer_stats {
    std::uint64_t written = 0;  // indexes completely written
    std::uint64_t failed = 0;   // open, write or rename failures (the segment will be scanned)
    std::uint64_t bytes = 0;    // of the indexes completely written
};

class segment_index_writer {
public:
    segment_index_writer(core::reactor& r, std::string dir) : _reactor(r), _dir(std::move(dir)) {}
    ~segment_index_writer();
    segment_index_writer(const segment_index_writer&) = delete;
    segment_index_writer& operator=(const segment_index_writer&) = delete;

    // Appends `bytes` to the index of `segment` (asynchronously; queued behind the pieces
    // before it). The first piece of a segment's index creates its part file; the pieces of
    // one index come before the first of the next.
    void append(std::uint64_t segment, std::string bytes, index_piece kind) noexcept;
    // The buffer of a piece already written, emptied with its capacity kept (an empty string
    // if there is none), for the builder to build the next piece in.
    [[nodiscard]] std::string spare() noexcept {
        std::string out;
        out.swap(_spare);
        return out;
    }
    // Synchronously (the spool closing: no reactor turn follows), with nothing in flight: the
    // last piece of `segment`'s index after the pieces already appended, then the rename.
    // False on any failure (an empty `last` included), which leaves no index file behind.
    [[nodiscard]] bool finish_now(std::uint64_t segment, std::string_view last) noexcept;
    // Synchronously, a whole index (spool::open: segments recovery had to scan).
    [[nodiscard]] bool write_now(std::uint64_t segment, std::string_view bytes) noexcept;
    // `segment` is being deleted: queued pieces of its index are dropped and its index and
    // part file unlinked (a write in flight goes to the unlinked file).
    void forget(std::uint64_t segment) noexcept;

    [[nodiscard]] bool idle() const noexcept { return !_in_flight && _waiting.empty(); }
    [[nodiscard]] const index_writer_stats& stats() const noexcept { return _stats; }

private:
    struct piece {
        std::uint64_t segment = 0;
        std::string bytes;
        index_piece kind = index_piece::more;
    };
    void start_next() noexcept;
    void open_file(std::uint64_t segment) noexcept;
    void submit() noexcept;
    void on_write(int res, std::uint32_t flags) noexcept;
    void piece_done(bool ok) noexcept;
    // Closes the part file; `complete`: renames it to the index (true if it could), else
    // unlinks it.
    bool close_file(bool complete) noexcept;

    core::reactor& _reactor;
    const std::string _dir;
    // Shard-local. _current is in flight while _in_flight; its bytes stay put until then.
    std::deque<piece> _waiting;
    piece _current;
    bool _in_flight = false;
    std::size_t _written = 0;  // of _current.bytes
    // The index file being written: its segment (0: none), its part file (-1 when none is
    // open), whether it failed (the rest of its pieces are dropped), its length so far.
    std::uint64_t _file_segment = 0;
    int _fd = -1;
    bool _file_failed = false;
    std::uint64_t _file_length = 0;
    std::string _spare;
    index_writer_stats _stats;
    core::operation<&segment_index_writer::on_write> _write_done{*this};
};

}  // namespace ringrelay::queue
