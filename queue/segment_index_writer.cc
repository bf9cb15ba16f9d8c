// queue/segment_index_writer.cc: see segment_index_writer.h.
#include "queue/segment_index_writer.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>

#include "queue/segment_index.h"

namespace ringrelay::queue {

namespace {

bool write_all(int fd, std::string_view bytes, std::uint64_t offset) noexcept {
    std::size_t off = 0;
    while (off < bytes.size()) {
        const ssize_t n = ::pwrite(fd, bytes.data() + off, bytes.size() - off, static_cast<off_t>(offset + off));
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return false;
        off += static_cast<std::size_t>(n);
    }
    return true;
}

}  // namespace

segment_index_writer::~segment_index_writer() {
    if (_fd >= 0) close_file(false);
}

void segment_index_writer::append(std::uint64_t segment, std::string bytes, index_piece kind) noexcept {
    _waiting.push_back(piece{segment, std::move(bytes), kind});
    if (!_in_flight) start_next();
}

void segment_index_writer::start_next() noexcept {
    while (!_in_flight && !_waiting.empty()) {
        _current = std::move(_waiting.front());
        _waiting.pop_front();
        const bool unusable = _current.bytes.empty() && _current.kind == index_piece::last;
        if (_current.segment != _file_segment) {
            if (unusable) continue;  // an index with nothing in it: no file at all
            open_file(_current.segment);
        }
        if (unusable && !_file_failed) {
            // segment_index_builder::finish() gave nothing: the part file goes, uncounted.
            _file_failed = true;
            if (_fd >= 0) close_file(false);
        }
        if (!_file_failed && !_current.bytes.empty()) {
            _written = 0;
            _in_flight = true;
            submit();
            return;
        }
        piece_done(!_file_failed);  // nothing to write: an empty piece, or one of a failed index
    }
}

void segment_index_writer::open_file(std::uint64_t segment) noexcept {
    // The part file of an index that never got its last piece (its segment was forgotten
    // while a piece was in flight).
    if (_fd >= 0) close_file(false);
    _file_segment = segment;
    _file_length = 0;
    _file_failed = false;
    // The open is synchronous but makes nothing durable (no fsync): it costs about what a stat
    // does, once per segment.
    const std::string path = _dir + "/" + index_part_file_name(segment);
    _fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    if (_fd < 0) {
        _file_failed = true;
        ++_stats.failed;
    }
}

void segment_index_writer::submit() noexcept {
    const std::size_t left = std::min<std::size_t>(_current.bytes.size() - _written, 1u << 30);
    io_uring_prep_write(_reactor.sqe(&_write_done), _fd, _current.bytes.data() + _written, static_cast<unsigned>(left),
                        _file_length + _written);
}

void segment_index_writer::on_write(int res, std::uint32_t) noexcept {
    if (res > 0) {
        _written += static_cast<std::size_t>(res);
        if (_written < _current.bytes.size() && !_file_failed) {
            submit();  // a short write: the rest
            return;
        }
    }
    _in_flight = false;
    piece_done(res > 0 && !_file_failed);
    start_next();
}

void segment_index_writer::piece_done(bool ok) noexcept {
    if (ok) {
        _file_length += _current.bytes.size();
    } else if (!_file_failed) {
        _file_failed = true;  // a write failed
        ++_stats.failed;
    }
    // A partial index would be rejected anyway; removing it saves the next start the read.
    if (_file_failed && _fd >= 0) close_file(false);
    if (_current.kind == index_piece::last) {
        if (_fd >= 0) (void)close_file(true);
        _file_segment = 0;
        _file_failed = false;
    }
    _current.bytes.clear();
    if (_current.bytes.capacity() > _spare.capacity()) _spare.swap(_current.bytes);
    // Freed, not only emptied: assigning an empty std::string keeps the allocation (libstdc++
    // copies a short string into the existing buffer), and only one spare is kept.
    std::string().swap(_current.bytes);
}

bool segment_index_writer::close_file(bool complete) noexcept {
    ::close(_fd);
    _fd = -1;
    const std::string part = _dir + "/" + index_part_file_name(_file_segment);
    if (!complete) {
        (void)::unlink(part.c_str());
        return false;
    }
    const std::string path = _dir + "/" + index_file_name(_file_segment);
    if (::rename(part.c_str(), path.c_str()) != 0) {
        (void)::unlink(part.c_str());
        ++_stats.failed;
        return false;
    }
    ++_stats.written;
    _stats.bytes += _file_length;
    return true;
}

bool segment_index_writer::finish_now(std::uint64_t segment, std::string_view last) noexcept {
    if (!idle()) return false;
    if (_file_segment != segment) return write_now(segment, last);  // no piece of it written yet
    bool ok = false;
    if (_fd >= 0 && !_file_failed) {
        if (last.empty()) {
            close_file(false);  // the builder found the index unusable
        } else if (!write_all(_fd, last, _file_length)) {
            ++_stats.failed;
            close_file(false);
        } else {
            _file_length += last.size();
            ok = close_file(true);
        }
    }
    _file_segment = 0;
    _file_failed = false;
    return ok;
}

bool segment_index_writer::write_now(std::uint64_t segment, std::string_view bytes) noexcept {
    if (bytes.empty()) return false;
    const std::string path = _dir + "/" + index_file_name(segment);
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    if (fd < 0) {
        ++_stats.failed;
        return false;
    }
    const bool ok = write_all(fd, bytes, 0);
    ::close(fd);
    if (!ok) {
        (void)::unlink(path.c_str());
        ++_stats.failed;
        return false;
    }
    ++_stats.written;
    _stats.bytes += bytes.size();
    return true;
}

void segment_index_writer::forget(std::uint64_t segment) noexcept {
    // A waiting piece was never written: dropping it is enough. One in flight writes to the
    // part file unlinked here, which goes away when it is closed.
    std::erase_if(_waiting, [segment](const piece& p) { return p.segment == segment; });
    if (_file_segment == segment) {
        _file_failed = true;  // not counted: nothing went wrong
        if (_in_flight) {
            (void)::unlink((_dir + "/" + index_part_file_name(segment)).c_str());
        } else {
            if (_fd >= 0) close_file(false);
            _file_segment = 0;
        }
    }
    remove_segment_index(_dir, segment);
}

}  // namespace ringrelay::queue
