// queue/spool.cc: see spool.h.
#include "queue/spool.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/random.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include "core/clock.h"
#include "core/invariant.h"
#include "queue/record.h"
#include "queue/segment_index.h"

namespace ringrelay::queue {

namespace {

constexpr unsigned max_iov_per_write = 1024;  // IOV_MAX

std::string segment_name(std::uint64_t n) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%010llu.seg", static_cast<unsigned long long>(n));
    return buf;
}

// Segment number of a "0000000001.seg" name, or 0 if it is not one.
std::uint64_t parse_segment_name(const char* name) {
    const std::size_t len = std::strlen(name);
    if (len != 14 || std::strcmp(name + 10, ".seg") != 0) return 0;
    std::uint64_t n = 0;
    for (int i = 0; i < 10; ++i) {
        if (name[i] < '0' || name[i] > '9') return 0;
        n = n * 10 + static_cast<std::uint64_t>(name[i] - '0');
    }
    return n;
}

protocol::commit_result result_for(int err) noexcept {
    return (err == ENOSPC || err == EDQUOT) ? protocol::commit_result::no_space : protocol::commit_result::io_error;
}

}  // namespace


bool read_whole_file(const std::string& path, std::string& out, std::string& error) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        error = path + ": " + std::strerror(errno);
        return false;
    }
    struct stat st {};
    if (::fstat(fd, &st) < 0) {
        error = path + ": " + std::strerror(errno);
        ::close(fd);
        return false;
    }
    out.resize(static_cast<std::size_t>(st.st_size));
    std::size_t off = 0;
    while (off < out.size()) {
        const ssize_t n = ::pread(fd, out.data() + off, out.size() - off, static_cast<off_t>(off));
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        off += static_cast<std::size_t>(n);
    }
    out.resize(off);
    ::close(fd);
    return true;
}

// mkdir -p, making each new directory's name durable (fsync of its parent), so a spool
// created just before a crash is still found after it.
bool make_directories(const std::string& dir) {
    std::string path;
    std::size_t pos = 0;
    while (pos != std::string::npos) {
        pos = dir.find('/', pos + 1);
        path = dir.substr(0, pos);
        if (path.empty()) continue;
        if (::mkdir(path.c_str(), 0750) == 0) {
            const auto slash = path.find_last_of('/');
            const std::string parent = slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash));
            const int pfd = ::open(parent.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
            if (pfd < 0) return false;
            const int rc = ::fsync(pfd);
            ::close(pfd);
            if (rc < 0) return false;
        } else if (errno != EEXIST) {
            return false;
        }
    }
    return true;
}

namespace {

void add_message(recovery_report& report, recovery_listing listing, const std::string& segment, const decoded_message& rec) {
    report.max_queue_id = std::max(report.max_queue_id, rec.header.queue_id);
    if (listing != recovery_listing::messages) return;
    recovered_message m;
    m.queue_id = rec.header.queue_id;
    m.segment = segment;
    m.offset = rec.offset;
    m.received_us = rec.header.received_us;
    m.mail_from = rec.envelope.mail_from;
    m.recipients = rec.envelope.rcpt_to.size();
    m.size = rec.message_size;
    report.messages.push_back(std::move(m));
}

// Recovers segment `n` from its index, if it has a usable one (segment_index.h): true when
// every record went to the visitor from there; false, with no visitor call made, when the
// segment must be scanned. `scratch` is reused for the index's bytes.
bool recover_from_index(const std::string& dir, std::uint64_t n, record_visitor* visitor, recovery_listing listing,
                        recovery_report& report, std::string& scratch) {
    const std::string index_path = dir + "/" + index_file_name(n);
    if (::access(index_path.c_str(), F_OK) != 0) return false;  // no index: the segment being written at a crash
    // What the segment says of itself: its length now and its salt. Only a segment whose two
    // segment records are intact and agree is taken from its index; anything else is scanned,
    // so that its problems are reported as they always were.
    const std::string name = segment_name(n);
    const int fd = ::open((dir + "/" + name).c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return false;
    struct stat st {};
    char head[segment_records_size];
    ssize_t got = -1;
    if (::fstat(fd, &st) == 0) {
        do {
            got = ::pread(fd, head, sizeof head, 0);
        } while (got < 0 && errno == EINTR);
    }
    ::close(fd);
    if (got != static_cast<ssize_t>(sizeof head)) return false;
    const std::string_view h(head, sizeof head);
    constexpr std::size_t copy = record_header_size + segment_payload_size;
    auto first = decode_record(h, 0);
    auto second = decode_record(h.substr(copy), 0);
    if (!first || !second || first->header.type != record_type::segment || second->header.type != record_type::segment ||
        first->salt != second->salt)
        return false;
    const index_expectation want{n, first->salt, static_cast<std::uint64_t>(st.st_size)};
    // An index is at most about its segment's size (an entry is a record's descriptor plus 32
    // bytes, a record at least 52): a larger file is not one, and is not read into memory.
    struct stat ist {};
    if (::stat(index_path.c_str(), &ist) != 0) return false;
    if (static_cast<std::uint64_t>(ist.st_size) > 2 * want.segment_length + 4096) {
        report.index_problems.push_back(index_file_name(n) + ": larger than its segment could need; segment scanned");
        return false;
    }
    std::string error;
    if (!read_whole_file(index_path, scratch, error)) return false;
    auto entries = parse_segment_index(scratch, want);
    if (!entries) {
        report.index_problems.push_back(index_file_name(n) + ": " + std::string(describe(entries.error())) +
                                        "; segment scanned");
        return false;
    }
    for (const index_entry& e : *entries) {
        auto rec = decode_index_entry(e, want.salt);
        RR_ASSERT(rec.has_value());  // parse_segment_index decoded every entry already
        if (visitor != nullptr) visitor->on_record(n, *rec);
        if (rec->header.type != record_type::outcome) add_message(report, listing, name, *rec);
    }
    ++report.indexed_segments;
    return true;
}

}  // namespace

std::expected<recovery_report, std::string> recover_directory(const std::string& dir, record_visitor* visitor,
                                                              recovery_listing listing, bool build_indexes) {
    recovery_report report;
    DIR* d = ::opendir(dir.c_str());
    if (d == nullptr) {
        if (errno == ENOENT) return report;
        return std::unexpected(dir + ": " + std::strerror(errno));
    }
    std::vector<std::uint64_t> segments;
    std::vector<std::uint64_t> indexes;
    while (dirent* e = ::readdir(d)) {
        const std::uint64_t n = parse_segment_name(e->d_name);
        if (n != 0) segments.push_back(n);
        if (const std::uint64_t i = parse_index_file_name(e->d_name); i != 0) indexes.push_back(i);
        if (const std::uint64_t i = parse_index_part_file_name(e->d_name); i != 0) report.index_parts.push_back(i);
    }
    ::closedir(d);
    std::sort(segments.begin(), segments.end());
    report.segments = segments;
    for (const std::uint64_t i : indexes)
        if (!std::binary_search(segments.begin(), segments.end(), i)) report.stray_indexes.push_back(i);
    std::string bytes;
    segment_index_builder builder;  // of a scanned segment, when build_indexes
    for (const std::uint64_t n : segments) {
        report.max_segment = std::max(report.max_segment, n);
        if (recover_from_index(dir, n, visitor, listing, report, bytes)) continue;
        const std::string name = segment_name(n);
        std::string error;
        if (!read_whole_file(dir + "/" + name, bytes, error)) {
            report.problems.push_back(error);
            continue;
        }
        std::size_t pos = 0;
        const std::string_view all(bytes);
        // The segment record first, twice (record.h): it holds the salt every other
        // record's CRC is seeded with, so one damaged copy must not cost the segment. Without
        // a valid copy (both damaged, or torn before the first commit finished) nothing in the
        // segment can be trusted: no record in it was ever acknowledged unless the segment
        // records were durable, since they are written and synced with the first batch.
        std::uint32_t salt = 0;
        if (!all.empty()) {
            constexpr std::size_t copy = record_header_size + segment_payload_size;
            auto first = decode_record(all, 0);
            auto second = decode_record(all.substr(std::min(copy, all.size())), 0);
            const bool first_ok = first && first->header.type == record_type::segment;
            const bool second_ok = second && second->header.type == record_type::segment;
            if (!first_ok && !second_ok) {
                report.problems.push_back(name + ": no valid segment record at offset 0 or " + std::to_string(copy) +
                                          " (" + std::string(first ? "another record type" : describe(first.error())) +
                                          "); segment skipped");
                continue;
            }
            if (first_ok && second_ok && first->salt != second->salt) {
                report.problems.push_back(name + ": the two segment records disagree; segment skipped");
                continue;
            }
            if (!first_ok || !second_ok)
                report.problems.push_back(name + ": segment record copy at offset " + std::to_string(first_ok ? copy : 0) +
                                          " damaged; using the other");
            salt = first_ok ? first->salt : second->salt;
            pos = 2 * copy;
        }
        // Indexed only if every record after the segment records decodes (a torn tail, a
        // skipped or damaged record: no index, the segment is scanned again next time).
        bool indexable = build_indexes && !all.empty();
        if (indexable) builder.start(n, salt);
        while (pos < all.size()) {
            auto rec = decode_record(all.substr(pos), salt);
            if (rec && rec->header.type == record_type::segment) {
                report.problems.push_back(name + " offset " + std::to_string(pos) + ": a second segment record; skipped");
                indexable = false;
                pos += rec->record_size;
                continue;
            }
            if (rec && rec->header.type == record_type::suppression) {
                // Suppression records live in their own journal (queue/suppression_file.h).
                report.problems.push_back(name + " offset " + std::to_string(pos) + ": a suppression record; skipped");
                indexable = false;
                pos += rec->record_size;
                continue;
            }
            if (rec && rec->header.type == record_type::outcome) {
                if (visitor != nullptr) visitor->on_record(n, *rec);
                if (indexable) builder.add(pos, all.substr(pos, rec->record_size), 0);
                pos += rec->record_size;
                continue;
            }
            if (rec) {
                rec->offset = pos;
                rec->segment_salt = salt;
                if (visitor != nullptr) visitor->on_record(n, *rec);
                add_message(report, listing, name, *rec);
                if (indexable) builder.add(pos, all.substr(pos, rec->record_size), 0);
                pos += rec->record_size;
                continue;
            }
            report.problems.push_back(name + " offset " + std::to_string(pos) + ": " +
                                      std::string(describe(rec.error())) + "; skipped");
            indexable = false;
            // Resynchronise on the next record magic.
            const char magic[4] = {'R', 'R', 'S', '1'};
            const auto next = all.find(std::string_view(magic, 4), pos + 1);
            if (next == std::string_view::npos) break;
            pos = next;
        }
        if (builder.active()) {
            std::string index = builder.finish(all.size());  // resets the builder
            if (indexable && !index.empty()) report.built_indexes.emplace_back(n, std::move(index));
        }
    }
    return report;
}

spool::spool(core::reactor& r, storage& s, std::string dir, std::uint64_t segment_limit)
    : _reactor(r), _storage(s), _dir(std::move(dir)), _segment_limit(segment_limit), _index_writer(r, _dir) {
    // The salt must be unpredictable to a client (record.h); getrandom(2) only fails before
    // the kernel's pool is initialised, and then the clock is still unknown to the client.
    if (::getrandom(&_salt, sizeof _salt, 0) != static_cast<ssize_t>(sizeof _salt))
        _salt = static_cast<std::uint32_t>(core::unix_us() * 0x9e3779b1u);
    encode_segment_record(_segment_record, _salt);
    encode_segment_record(_segment_record, _salt);  // two copies: one bad sector must not cost the segment
    _write_done.owner = this;
    _sync_done.owner = this;
}

spool::~spool() {
    // Closing cleanly: the current segment gets its index now, synchronously (no reactor turn
    // follows), so that the next start need not scan it. Not with a commit in flight: then the
    // file may hold more than what was committed, and the index would be rejected anyway.
    if (_fd >= 0 && _batch.empty() && _index.active() && _index.segment() == _segment_number)
        (void)_index_writer.finish_now(_segment_number, _index.finish(_committed_end));
    if (_fd >= 0) _storage.close_file(_fd);
    for (const auto& [segment, fd] : _read_fds) _storage.close_file(fd);
}

void spool::read_record(const record_location& where, std::string& into, core::completion* done) noexcept {
    auto it = _read_fds.find(where.segment);
    if (it == _read_fds.end()) {
        auto fd = _storage.open_read(_dir, segment_name(where.segment));
        if (!fd) {
            _reactor.post(done, -fd.error().value());
            return;
        }
        it = _read_fds.emplace(where.segment, *fd).first;
    }
    into.resize(where.size);
    _storage.read(it->second, into.data(), into.size(), where.offset, done);
}

std::expected<recovery_report, std::string> spool::open(record_visitor* visitor) {
    if (!make_directories(_dir)) return std::unexpected(_dir + ": cannot create: " + std::strerror(errno));
    // The shard needs the records (through the visitor) and the highest queue id, not a list
    // of every message (a million of them would be a large transient vector).
    auto report = recover_directory(_dir, visitor, recovery_listing::none, true);
    if (!report) return report;
    // Segments scanned for want of an index (the one being written at a crash, one whose index
    // was torn or stale) get one now, so that the next start need not scan them again. Not
    // fsynced, like every index; a failure only means another scan.
    for (const auto& [n, index] : report->built_indexes) {
        if (_index_writer.write_now(n, index)) ++report->written_indexes;
    }
    report->built_indexes.clear();
    report->built_indexes.shrink_to_fit();
    // An index whose segment is gone (a crash between the two unlinks): never used for another
    // segment (its end entry names the segment and the salt), but not worth keeping.
    for (const std::uint64_t n : report->stray_indexes) remove_segment_index(_dir, n);
    // The index that was being written when the last run stopped without closing the spool:
    // its segment has been scanned (and indexed whole, above).
    for (const std::uint64_t n : report->index_parts) (void)::unlink((_dir + "/" + index_part_file_name(n)).c_str());
    // Every existing segment starts with no live message; the owner of the messages (the
    // delivery scheduler) holds the segments of those still unfinished, and
    // collect_segments() then deletes the rest in order.
    for (const std::uint64_t n : report->segments) {
        struct stat st {};
        const std::string path = _dir + "/" + segment_name(n);
        _live[n].size = ::stat(path.c_str(), &st) == 0 ? static_cast<std::uint64_t>(st.st_size) : 0;
    }
    _segment_number = report->max_segment;
    if (!roll_segment()) return std::unexpected(_dir + ": cannot create a segment: " + std::strerror(errno));
    return report;
}

bool spool::roll_segment() noexcept {
    // The segment being left is complete: its index (built as its batches committed) goes out.
    if (_index.active()) _index_writer.append(_index.segment(), _index.finish(_committed_end), index_piece::last);
    if (_fd >= 0) {
        _storage.close_file(_fd);
        _fd = -1;
    }
    // The segment being left: its size is what was committed to it (a recovered one's is its
    // file size, found by open()).
    if (auto it = _live.find(_segment_number); it != _live.end()) {
        it->second.size = std::max(it->second.size, _committed_end);
        it->second.closed_ms = core::monotonic_ms();
    }
    auto fd = _storage.create_file(_dir, segment_name(_segment_number + 1));
    if (!fd) {
        errno = fd.error().value();
        _healthy = false;
        return false;
    }
    ++_segment_number;
    _fd = *fd;
    _index.start(_segment_number, _salt, _index_writer.spare());
    _committed_end = 0;
    _live.emplace(_segment_number, segment_use{});
    return true;
}

void spool::check_space(std::uint64_t reserve) noexcept {
    if (_fd < 0 && _batch.empty()) (void)roll_segment();  // after a failure: try again
    struct statvfs st {};
    if (::statvfs(_dir.c_str(), &st) != 0) return;
    const std::uint64_t available = static_cast<std::uint64_t>(st.f_bavail) * st.f_frsize;
    _available = available;
    _low_space = available < reserve;
}

void spool::release_segment(std::uint64_t segment, std::uint64_t bytes) noexcept {
    auto it = _live.find(segment);
    if (it == _live.end() || it->second.messages == 0) return;
    --it->second.messages;
    it->second.bytes -= std::min(bytes, it->second.bytes);
}

std::optional<std::uint64_t> spool::compaction_candidate(std::uint64_t slack_segments, std::int64_t now_ms) const noexcept {
    if (_live.empty()) return std::nullopt;
    const auto& [oldest, use] = *_live.begin();
    if (oldest == _segment_number || use.messages == 0) return std::nullopt;
    if (use.size > 0 && use.bytes * 4 < use.size && now_ms - use.closed_ms >= quiet_ms) return oldest;  // mostly dead
    std::uint64_t total = 0, live = 0;
    for (const auto& [n, u] : _live) {
        if (n == _segment_number) continue;
        total += u.size;
        live += u.bytes;
    }
    if (total > 2 * live + slack_segments * _segment_limit) return oldest;
    return std::nullopt;
}

std::vector<spool::segment_info> spool::segments() const {
    std::vector<segment_info> out;
    out.reserve(_live.size());
    for (const auto& [n, u] : _live)
        out.push_back(segment_info{n, n == _segment_number ? _committed_end : u.size, u.messages, u.bytes});
    return out;
}

void spool::collect_segments() noexcept {
    // Oldest first; stop at the first segment still needed, and never delete the one being
    // written.
    // Rare (a whole segment finished): a synchronous unlink is cheap next to the segment's
    // worth of fdatasyncs.
    bool unlinked = false;
    while (!_live.empty()) {
        auto it = _live.begin();
        if (it->second.messages != 0 || it->first == _segment_number) break;
        unlinked = true;
        const std::string path = _dir + "/" + segment_name(it->first);
        _index_writer.forget(it->first);  // the index first: a crash between leaves a segment to scan
        ::unlink(path.c_str());
        if (auto fd = _read_fds.find(it->first); fd != _read_fds.end()) {
            _storage.close_file(fd->second);  // a read still in flight keeps its own reference
            _read_fds.erase(fd);
        }
        _live.erase(it);
    }
    if (unlinked) {
        // Make the deletions durable: a segment that came back after a power cut would bring
        // back messages that were finished (delivered again) or compacted away (harmless).
        const int dfd = ::open(_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd >= 0) {
            (void)::fsync(dfd);
            ::close(dfd);
        }
    }
}

void spool::append_outcome(std::uint64_t queue_id, std::uint32_t rcpt_index, recipient_status status,
                           std::uint32_t attempts, std::uint64_t next_attempt_us) {
    const std::size_t offset = _pending_arena.size();
    encode_outcome_record(_pending_arena, queue_id, static_cast<std::uint64_t>(core::unix_us()), rcpt_index, status,
                          attempts, next_attempt_us, _salt);
    _pending.push_back(entry{nullptr, offset, _pending_arena.size() - offset, {}});
}

void spool::append(const protocol::envelope& env, std::string_view client, std::string_view message,
                   std::uint64_t received_us, commit_waiter* waiter) {
    const std::size_t offset = _pending_arena.size();
    encode_message_record(_pending_arena, env, client, received_us, message, _salt);
    _pending.push_back(entry{waiter, offset, _pending_arena.size() - offset, message});
}

void spool::append_copy(const protocol::envelope& env, std::string_view client, std::string_view message,
                        std::uint64_t received_us, std::span<const recipient_state> states, commit_waiter* waiter) {
    // The copy's bytes go into the arena whole: a compaction copies a bounded amount per round.
    const std::size_t offset = _pending_arena.size();
    encode_message_copy_record(_pending_arena, env, client, received_us, message, states, _salt);
    _pending.push_back(entry{waiter, offset, _pending_arena.size() - offset, {}});
}

void spool::on_turn_end() noexcept {
    if (_batch.empty() && !_pending.empty()) start_commit();
    if (_batch.empty()) collect_segments();
}

void spool::start_commit() noexcept {
    _batch.swap(_pending);
    _batch_arena.swap(_pending_arena);
    _pending.clear();
    _pending_arena.clear();
    if (_fd < 0 || _committed_end >= _segment_limit) {
        if (!roll_segment()) {
            finish_batch(result_for(errno));
            return;
        }
    }
    _iov.clear();
    std::uint64_t bytes = 0;
    if (_committed_end == 0) {
        // A fresh segment: its segment record goes out (and is synced) with the first batch.
        _iov.push_back(iovec{_segment_record.data(), _segment_record.size()});
        bytes += _segment_record.size();
    }
    for (entry& e : _batch) {
        e.file_offset = _committed_end + bytes;
        _iov.push_back(iovec{_batch_arena.data() + e.header_offset, e.header_length});
        if (!e.message.empty())
            _iov.push_back(iovec{const_cast<char*>(e.message.data()), e.message.size()});
        bytes += e.header_length + e.message.size();
    }
    _iov_next = 0;
    _write_offset = _committed_end;
    _batch_end = _committed_end + bytes;
    if (_commit_latency != nullptr) _commit_started_ns = core::monotonic_ns();
    submit_write();
}

void spool::submit_write() noexcept {
    const std::size_t left = _iov.size() - _iov_next;
    const auto count = static_cast<unsigned>(std::min<std::size_t>(left, max_iov_per_write));
    _storage.write(_fd, &_iov[_iov_next], count, _write_offset, &_write_done);
}

void spool::on_write(int res) noexcept {
    if (res <= 0) {
        // res == 0 with bytes left would never progress: treat it as an I/O error.
        const int err = res < 0 ? -res : EIO;
        _storage.truncate(_fd, _committed_end);
        _storage.close_file(_fd);
        _fd = -1;  // the next commit starts a new segment
        finish_batch(result_for(err));
        return;
    }
    const auto n = static_cast<std::size_t>(res);
    _write_offset += n;
    _iov_next = skip_written(_iov, _iov_next, n);
    if (_iov_next < _iov.size()) {
        submit_write();
        return;
    }
    RR_ASSERT(_write_offset == _batch_end);
    _storage.fdatasync(_fd, &_sync_done);
}

void spool::on_sync(int res) noexcept {
    if (res < 0) {
        // After a failed fdatasync the kernel may have dropped the dirty pages: nothing in
        // this batch can be trusted, and neither can the rest of this segment's future.
        _storage.truncate(_fd, _committed_end);
        _storage.close_file(_fd);
        _fd = -1;
        finish_batch(result_for(-res));
        return;
    }
    _committed_end = _batch_end;
    ++_stats.commits;
    if (_commit_latency != nullptr)
        _commit_latency->record(static_cast<std::uint64_t>(core::monotonic_ns() - _commit_started_ns) / 1000);
    _healthy = true;
    finish_batch(protocol::commit_result::ok);
}

void spool::finish_batch(protocol::commit_result result) noexcept {
    if (result == protocol::commit_result::ok) {
        _stats.committed_messages += _batch.size();
        for (const entry& e : _batch)
            _index.add(e.file_offset, std::string_view(_batch_arena).substr(e.header_offset, e.header_length),
                       e.message.size());
        // Out to the index's part file, in buffers that pieces written before have used.
        if (_index.size() >= index_piece_size)
            _index_writer.append(_index.segment(), _index.take_piece(_index_writer.spare()), index_piece::more);
    } else {
        _stats.failed_messages += _batch.size();
    }
    // committed() may append new messages: they go to _pending, never into this batch.
    std::vector<entry> done;
    done.swap(_batch);
    for (const entry& e : done) {
        if (e.waiter == nullptr) continue;
        _committed_location = record_location{_segment_number, e.file_offset, e.header_length + e.message.size(), _salt};
        e.waiter->committed(result);
    }
    done.clear();
    if (_batch.empty()) _batch.swap(done);  // keep the capacity
}

}  // namespace ringrelay::queue
