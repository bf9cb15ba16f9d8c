// queue/segment_index_writer.cc: see segment_index_writer.h.
#include "queue/segment_index_writer.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "queue/segment_index.h"

namespace ringrelay::queue {

void segment_index_writer::write(std::uint64_t segment, std::string bytes) noexcept {
    if (bytes.empty()) return;
    _waiting.push_back(job{segment, std::move(bytes)});
    if (_fd < 0) start_next();
}

void segment_index_writer::start_next() noexcept {
    while (_fd < 0 && !_waiting.empty()) {
        _current = std::move(_waiting.front());
        _waiting.pop_front();
        // The open is synchronous but makes nothing durable (no fsync): it costs about what a
        // stat does, once per segment.
        const std::string path = _dir + "/" + index_file_name(_current.segment);
        _fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
        if (_fd < 0) {
            ++_stats.failed;
            std::string().swap(_current.bytes);
            continue;
        }
        _written = 0;
        submit();
    }
}

void segment_index_writer::submit() noexcept {
    const std::size_t left = std::min<std::size_t>(_current.bytes.size() - _written, 1u << 30);
    io_uring_prep_write(_reactor.sqe(&_write_done), _fd, _current.bytes.data() + _written, static_cast<unsigned>(left),
                        _written);
}

void segment_index_writer::on_write(int res, std::uint32_t) noexcept {
    if (res <= 0) {
        finish_current(false);
        return;
    }
    _written += static_cast<std::size_t>(res);
    if (_written < _current.bytes.size()) {
        submit();  // a short write: the rest
        return;
    }
    finish_current(true);
}

void segment_index_writer::finish_current(bool ok) noexcept {
    ::close(_fd);
    _fd = -1;
    if (ok) {
        ++_stats.written;
        _stats.bytes += _written;
    } else {
        // A partial index would be rejected anyway; removing it saves the next start the read.
        remove_segment_index(_dir, _current.segment);
        ++_stats.failed;
    }
    // Freed, not only emptied: assigning an empty string to a std::string keeps its buffer
    // (libstdc++ copies a short string into the existing allocation), and this one is a whole
    // segment's index (megabytes) that would stay allocated until the next segment closes.
    std::string().swap(_current.bytes);
    start_next();
}

bool segment_index_writer::write_now(std::uint64_t segment, std::string_view bytes) noexcept {
    if (bytes.empty()) return false;
    const std::string path = _dir + "/" + index_file_name(segment);
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    if (fd < 0) {
        ++_stats.failed;
        return false;
    }
    std::size_t off = 0;
    while (off < bytes.size()) {
        const ssize_t n = ::pwrite(fd, bytes.data() + off, bytes.size() - off, static_cast<off_t>(off));
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        off += static_cast<std::size_t>(n);
    }
    ::close(fd);
    if (off < bytes.size()) {
        (void)::unlink(path.c_str());
        ++_stats.failed;
        return false;
    }
    ++_stats.written;
    _stats.bytes += off;
    return true;
}

void segment_index_writer::forget(std::uint64_t segment) noexcept {
    // A waiting write was never opened: dropping it is enough. One in flight writes to the
    // file unlinked below, which goes away when it is closed.
    std::erase_if(_waiting, [segment](const job& j) { return j.segment == segment; });
    remove_segment_index(_dir, segment);
}

}  // namespace ringrelay::queue
