// queue/spool.h: a shard's spool: append-only segment files of checksummed records
// (queue/record.h), written through the storage seam with group commit: every message that
// finished during one loop turn is written together and covered by one fdatasync, and its
// waiter hears "committed" only after that fdatasync completed (RFC 5321 §6.1: 250 means we
// are responsible for the message).
//
// Lifecycle: construct -> open() (recovers what earlier runs left, starts a new segment)
// -> append()* / on_turn_end() each turn -> close(). One in-flight commit at a time; while it
// runs, new messages gather for the next (which is what makes the batches grow under load).
//
// Threading: shard-local. The bytes given to append() must stay unchanged until the
// waiter's committed() is called; the waiter must outlive that call.
#pragma once
#include <sys/uio.h>

#include <cstdint>
#include <expected>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/clock.h"
#include "core/reactor.h"
#include "protocol/server_session.h"
#include "queue/record.h"
#include "queue/shard_counters.h"
#include "queue/segment_index.h"
#include "queue/segment_index_writer.h"
#include "queue/storage.h"

namespace ringrelay::queue {

class commit_waiter {
public:
    virtual void committed(protocol::commit_result result) noexcept = 0;

protected:
    ~commit_waiter() = default;
};

struct recovered_message {
    std::uint64_t queue_id = 0;
    std::string segment;  // file name
    std::uint64_t offset = 0;
    std::uint64_t received_us = 0;
    std::string mail_from;
    std::size_t recipients = 0;
    std::size_t size = 0;
};

// Sees every intact record at recovery, in file order (segments oldest first).
class record_visitor {
public:
    virtual void on_record(std::uint64_t segment, const decoded_message& record) = 0;

protected:
    ~record_visitor() = default;
};

struct recovery_report {
    std::vector<recovered_message> messages;
    std::vector<std::string> problems;  // "0000000003.seg offset 4096: checksum mismatch"
    std::uint64_t max_queue_id = 0;
    std::uint64_t max_segment = 0;
    std::vector<std::uint64_t> segments;  // every segment number found, ascending
    // Segments recovered from their index (queue/segment_index.h) rather than scanned.
    std::uint64_t indexed_segments = 0;
    // Indexes found unusable ("0000000003.idx: index checksum mismatch; segment scanned"): no
    // mail is affected, the segment was scanned instead.
    std::vector<std::string> index_problems;
    std::vector<std::uint64_t> stray_indexes;  // index files without their segment
    std::vector<std::uint64_t> index_parts;    // unfinished index files (".idx.part": the spool was not closed)
    // recover_directory(build_indexes): the indexes of segments that were scanned whole and
    // clean (segment number, the index file's bytes); spool::open writes them
    // (written_indexes counts those written).
    std::vector<std::pair<std::uint64_t, std::string>> built_indexes;
    std::uint64_t written_indexes = 0;
};

// Whether recover_directory lists every message in recovery_report::messages (--list-spool)
// or only finds the highest queue id (a shard's start: the records go to its visitor).
enum class recovery_listing : std::uint8_t { none, messages };
// segment_file_name(): "0000000003.seg", the file name of segment 3 (queue/segment_index.h).

// File helpers shared with the suppression journal (queue/suppression_file.h); synchronous.
// The whole file into `out` (an error names the path).
[[nodiscard]] bool read_whole_file(const std::string& path, std::string& out, std::string& error);
// mkdir -p, making each new directory's name durable (fsync of its parent); errno on failure.
[[nodiscard]] bool make_directories(const std::string& dir);

// Reads every segment in `dir` (a shard's spool directory). Corrupt or torn records are
// reported and skipped; a missing directory is an empty spool. A segment with a usable index
// (queue/segment_index.h) is read from it instead, without its message bodies: the visitor
// then sees the same records, in the same order, with the same fields, except that
// decoded_message::message is empty (message_size, offset, segment_salt and record_size are
// set as a scan sets them).
// With `build_indexes`, a segment scanned clean also gets its index built (report.built_indexes;
// nothing is written here: --list-spool reads a spool without changing it).
[[nodiscard]] std::expected<recovery_report, std::string> recover_directory(
    const std::string& dir, record_visitor* visitor = nullptr, recovery_listing listing = recovery_listing::messages,
    bool build_indexes = false);

struct spool_stats {
    std::uint64_t committed_messages = 0;
    std::uint64_t commits = 0;  // fdatasyncs that completed
    std::uint64_t failed_messages = 0;
};

class spool final : public core::turn_hook {
public:
    // dir: this shard's spool directory (created if missing). segment_limit: a segment is
    // closed once it holds this much (--spool-segment-size, core/config.h).
    spool(core::reactor& r, storage& s, std::string dir, std::uint64_t segment_limit = 64u << 20);
    spool(const spool&) = delete;
    spool& operator=(const spool&) = delete;
    ~spool();

    // Recovers existing segments (each intact record goes to `visitor`) and opens a fresh
    // one for new records.
    [[nodiscard]] std::expected<recovery_report, std::string> open(record_visitor* visitor = nullptr);

    // Adds a message to the next group commit.
    void append(const protocol::envelope& env, std::string_view client, std::string_view message,
                std::uint64_t received_us, commit_waiter* waiter);

    // Journals a recipient's outcome with the next group commit. Nobody waits for it: a crash
    // before it is synced means the recipient is tried again (at-least-once delivery).
    void append_outcome(std::uint64_t queue_id, std::uint32_t rcpt_index, recipient_status status,
                        std::uint32_t attempts, std::uint64_t next_attempt_us);

    // During commit_waiter::committed(ok): the segment the record went to, and where in it.
    [[nodiscard]] std::uint64_t committed_segment() const noexcept { return _segment_number; }
    [[nodiscard]] record_location committed_location() const noexcept { return _committed_location; }

    // Reads the record at `where` into `into` (resized to where.size) and reports to `done`:
    // the byte count read (less than where.size if the segment is shorter) or -errno
    // (-ENOENT: the segment is gone). The caller checks the bytes (decode_record with
    // where.salt). `into` and `done` must stay until then. A segment is opened for reading
    // once and closed when it is deleted.
    void read_record(const record_location& where, std::string& into, core::completion* done) noexcept;
    // Segment lifetime: a segment is deleted once no live message is in it and every older
    // segment is gone (outcome records of a segment's messages may sit in later segments, so
    // deleting a newer segment first could bring a finished recipient back at a restart).
    // `bytes`: the size of the live record, for compaction's accounting.
    void hold_segment(std::uint64_t segment, std::uint64_t bytes = 0) {
        segment_use& u = _live[segment];
        ++u.messages;
        u.bytes += bytes;
    }
    void release_segment(std::uint64_t segment, std::uint64_t bytes = 0) noexcept;

    // Compaction (queue/compactor.h): the oldest segment, if it should be rewritten now. Only
    // the oldest can be: a segment is deleted only after every older one (above). It is due
    // when the segments before the current one take more than twice their live bytes plus
    // `slack_segments` segments' worth, or when its own live records are less than a quarter
    // of it and it was closed at least quiet_ms ago (its live messages are then waiting for
    // retries, not still on their first attempt: a draining queue is not copied); never the
    // current segment, nor one without live messages (that one is simply deleted).
    static constexpr std::int64_t quiet_ms = 30'000;
    [[nodiscard]] std::optional<std::uint64_t> compaction_candidate(std::uint64_t slack_segments = 2,
                                                                    std::int64_t now_ms = core::monotonic_ms()) const noexcept;
    // Appends a compaction's copy of a message (record type 5, with its recipients' states) to
    // the next group commit; `waiter` hears of it like an append's, committed_location() then
    // naming the copy. The bytes stay the caller's until then.
    void append_copy(const protocol::envelope& env, std::string_view client, std::string_view message,
                     std::uint64_t received_us, std::span<const recipient_state> states, commit_waiter* waiter);
    [[nodiscard]] std::uint64_t current_segment() const noexcept { return _segment_number; }
    struct segment_info {
        std::uint64_t segment = 0;
        std::uint64_t size = 0;          // bytes on disk (known to be durable for the current one)
        std::uint64_t live_messages = 0;
        std::uint64_t live_bytes = 0;
    };
    // Every segment the spool has, oldest first.
    [[nodiscard]] std::vector<segment_info> segments() const;

    void on_turn_end() noexcept override;

    // Nothing waiting and nothing in flight, an index write included.
    [[nodiscard]] bool idle() const noexcept { return _pending.empty() && _batch.empty() && _index_writer.idle(); }
    // Set after a failed commit when no new segment could be made; cleared by a commit that works.
    [[nodiscard]] bool healthy() const noexcept { return _healthy; }
    // Once a second: is there room for another message? `reserve` bytes must stay free on the
    // spool's file system (Postfix refuses MAIL below 1.5 x message_size_limit). Also retries
    // making a segment after a failure.
    void check_space(std::uint64_t reserve) noexcept;
    // New mail may be accepted: the disk has room and the spool has a segment to write to.
    [[nodiscard]] bool accepting() const noexcept { return !_low_space && (_healthy || _fd >= 0); }
    [[nodiscard]] const spool_stats& stats() const noexcept { return _stats; }
    // Each group commit that completes (write and fdatasync) records its time here (/metrics;
    // null: none). `h` outlives the spool.
    void measure_commits(latency_histogram* h) noexcept { _commit_latency = h; }
    // Bytes available to us on the spool's file system at the last check_space().
    [[nodiscard]] std::uint64_t available_bytes() const noexcept { return _available; }
    [[nodiscard]] const index_writer_stats& index_stats() const noexcept { return _index_writer.stats(); }
    [[nodiscard]] const std::string& directory() const noexcept { return _dir; }

private:
    struct entry {
        commit_waiter* waiter;
        std::size_t header_offset;  // into the batch arena
        std::size_t header_length;
        std::string_view message;
        std::uint64_t file_offset = 0;  // set when the batch is written
    };
    struct write_done final : core::completion {
        spool* owner;
        void complete(int res, std::uint32_t) noexcept override { owner->on_write(res); }
    };
    struct sync_done final : core::completion {
        spool* owner;
        void complete(int res, std::uint32_t) noexcept override { owner->on_sync(res); }
    };

    void start_commit() noexcept;
    void submit_write() noexcept;
    void on_write(int res) noexcept;
    void on_sync(int res) noexcept;
    void finish_batch(protocol::commit_result result) noexcept;
    [[nodiscard]] bool roll_segment() noexcept;

    core::reactor& _reactor;
    storage& _storage;
    const std::string _dir;
    std::uint32_t _salt = 0;       // random per spool instance (record.h); fixed after construction
    std::string _segment_record;   // the segment record that starts each segment this spool writes
    const std::uint64_t _segment_limit;

    int _fd = -1;
    std::uint64_t _segment_number = 0;
    std::uint64_t _committed_end = 0;  // bytes of the current segment known durable
    bool _healthy = true;
    bool _low_space = false;
    std::uint64_t _available = 0;              // check_space()'s last reading
    latency_histogram* _commit_latency = nullptr;
    std::int64_t _commit_started_ns = 0;       // monotonic: the commit in flight's write

    // Gathering for the next commit.
    std::vector<entry> _pending;
    std::string _pending_arena;
    // The commit in flight.
    std::vector<entry> _batch;
    std::string _batch_arena;
    std::vector<iovec> _iov;
    std::size_t _iov_next = 0;        // first iovec not yet fully written
    std::uint64_t _write_offset = 0;  // file offset of _iov[_iov_next]'s current start
    std::uint64_t _batch_end = 0;
    write_done _write_done;
    sync_done _sync_done;
    spool_stats _stats;
    struct segment_use {
        std::uint64_t messages = 0;
        std::uint64_t bytes = 0;
        std::uint64_t size = 0;  // of the file, once it is no longer the current segment
        std::int64_t closed_ms = 0;  // monotonic, when it stopped being the current one (0: before this start)
    };
    std::map<std::uint64_t, segment_use> _live;  // every segment, oldest first
    std::map<std::uint64_t, int> _read_fds;        // segment -> fd open for read_record
    record_location _committed_location;           // of the entry whose waiter is being told
    // The current segment's index, built as its batches commit and written out in pieces
    // (index_piece_size) to its part file; complete when the segment is closed.
    segment_index_builder _index;
    segment_index_writer _index_writer;
    void collect_segments() noexcept;
};

}  // namespace ringrelay::queue
