// queue/compactor.h: a shard's spool compaction (docs/ARCHITECTURE.md "The spool"). Segments
// are deleted oldest first (queue/spool.h: an outcome record may sit in a newer segment than
// its message), so one message deferred for days would keep every segment written after it.
// The compactor rewrites the oldest segment's live messages into the current segment (record
// type 5: the message with each recipient's state, queue/record.h) under a group commit, and
// only once a copy is durable does its message move there (message_store::relocate); when the
// last one has moved, the old segment has no live message and the spool deletes it and every
// finished segment behind it. spool::compaction_candidate() says when (disk use above twice
// the live data plus a few segments, or a mostly dead oldest segment).
//
// One round at a time, at most round_bytes of records: read back (queue/storage.h reads),
// checked (record CRC), appended as copies; the round is over when each copy's commit is heard
// of. A crash at any point loses nothing: before a copy is durable the original is still held;
// after, recovery finds both and the copy wins (it comes later). A failed read leaves that
// message where it is; a failed commit (ENOSPC, EIO) abandons the round and keeps the old
// segment; either way the next round waits retry_after_ms. A round says on stderr when it starts
// ("compaction of segment N in DIR: copying K live message(s), B bytes") and when its copies are
// durable ("...: copies durable in segment M; ...").
//
// Threading: shard-local (the delivery owns it and ticks it).
#pragma once
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "core/reactor.h"
#include "queue/message_store.h"
#include "queue/spool.h"

namespace ringrelay::queue {

struct compaction_counters {
    std::uint64_t rounds = 0;
    std::uint64_t copied_messages = 0;
    std::uint64_t copied_bytes = 0;
    std::uint64_t failed_rounds = 0;  // a commit failed (the old segment is kept)
    std::uint64_t read_errors = 0;    // a live record could not be read back (it stays)
};

class compactor final : public commit_waiter {
public:
    static constexpr std::uint64_t round_bytes = 8u << 20;
    static constexpr std::int64_t retry_after_ms = 10'000;

    compactor(spool& s, message_store& store) noexcept : _spool(s), _store(store) {}
    compactor(const compactor&) = delete;
    compactor& operator=(const compactor&) = delete;
    ~compactor();

    // Starts a round if none is running and the spool has a candidate.
    void tick(std::int64_t now_ms) noexcept;
    // Nothing read or committed is outstanding.
    [[nodiscard]] bool idle() const noexcept { return _reads_out == 0 && _commits.empty(); }
    void stop() noexcept { _stopped = true; }
    [[nodiscard]] const compaction_counters& counters() const noexcept { return _counters; }

    // commit_waiter: one of this round's copies (in append order).
    void committed(protocol::commit_result result) noexcept override;

private:
    struct read_op final : core::completion {
        compactor* owner = nullptr;
        std::uint64_t queue_id = 0;
        record_location where;
        std::string bytes;
        int result = 0;
        bool done = false;
        void complete(int res, std::uint32_t) noexcept override {
            result = res;
            done = true;
            owner->on_read();
        }
    };
    void on_read() noexcept;
    void append_copies() noexcept;

    spool& _spool;
    message_store& _store;
    bool _stopped = false;
    std::uint64_t _segment = 0;          // the round's segment
    std::int64_t _not_before_ms = 0;     // after a failed round
    std::int64_t _now_ms = 0;            // of the last tick
    bool _round_failed = false;
    std::uint64_t _round_bytes = 0;      // of the records the round reads
    std::uint64_t _copy_segment = 0;     // where the round's last copy went
    std::vector<std::unique_ptr<read_op>> _reads;
    std::size_t _reads_out = 0;
    std::deque<std::uint64_t> _commits;  // queue ids of copies appended, in order
    compaction_counters _counters;
};

}  // namespace ringrelay::queue
