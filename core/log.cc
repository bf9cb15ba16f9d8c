// core/log.cc: see log.h.
#include "core/log.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "core/clock.h"

namespace ringrelay::core {

namespace {

// Length of the valid UTF-8 sequence at s[i], or 0 if it is not valid.
std::size_t utf8_length(std::string_view s, std::size_t i) noexcept {
    const auto b = static_cast<unsigned char>(s[i]);
    std::size_t n = 0;
    if (b >= 0xC2 && b <= 0xDF) n = 2;
    else if (b >= 0xE0 && b <= 0xEF) n = 3;
    else if (b >= 0xF0 && b <= 0xF4) n = 4;
    else return 0;
    if (i + n > s.size()) return 0;
    for (std::size_t k = 1; k < n; ++k)
        if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return 0;
    return n;
}

}  // namespace

void append_json_escaped(std::string& out, std::string_view s) {
    static constexpr char hex[] = "0123456789abcdef";
    std::size_t i = 0;
    while (i < s.size()) {
        const auto c = static_cast<unsigned char>(s[i]);
        if (c >= 0x20 && c < 0x80 && c != '"' && c != '\\') {
            std::size_t j = i + 1;
            while (j < s.size()) {
                const auto d = static_cast<unsigned char>(s[j]);
                if (d < 0x20 || d >= 0x80 || d == '"' || d == '\\') break;
                ++j;
            }
            out.append(s.substr(i, j - i));
            i = j;
            continue;
        }
        if (c == '"') { out += "\\\""; ++i; continue; }
        if (c == '\\') { out += "\\\\"; ++i; continue; }
        if (c >= 0x80) {
            const std::size_t n = utf8_length(s, i);
            if (n != 0) { out.append(s.substr(i, n)); i += n; continue; }
        }
        out += "\\u00";
        out += hex[c >> 4];
        out += hex[c & 15];
        ++i;
    }
}

void diag(std::string_view message) noexcept {
    std::string line = iso8601_us(unix_us());
    line += " ringrelay: ";
    line.append(message);
    line += '\n';
    std::size_t off = 0;
    while (off < line.size()) {
        const ssize_t n = ::write(2, line.data() + off, line.size() - off);
        if (n <= 0) {
            if (n < 0 && errno == EINTR) continue;
            break;
        }
        off += static_cast<std::size_t>(n);
    }
}

int open_log(const std::string& path) noexcept {
    if (path.empty()) return -1;
    if (path == "-") return 1;
    const int fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
    return fd < 0 ? -errno : fd;
}

void log_writer::on_turn_end() noexcept {
    if (!_in_flight && !_pending.empty()) start_write();
}

void log_writer::start_write() noexcept {
    _writing.swap(_pending);
    _pending.clear();
    _written = 0;
    _in_flight = true;
    io_uring_sqe* s = _reactor.sqe(this);
    // Offset -1: the file position, which O_APPEND makes the end of file.
    io_uring_prep_write(s, _fd, _writing.data(), static_cast<unsigned>(_writing.size()),
                        static_cast<std::uint64_t>(-1));
}

void log_writer::complete(int res, std::uint32_t) noexcept {
    if (res < 0) {
        if (!_reported_error) {
            diag(std::string("delivery log write failed: ") + std::strerror(-res) + "; records are being dropped");
            _reported_error = true;
        }
        _in_flight = false;
        return;
    }
    _written += static_cast<std::size_t>(res);
    if (_written < _writing.size() && res > 0) {
        io_uring_sqe* s = _reactor.sqe(this);
        io_uring_prep_write(s, _fd, _writing.data() + _written,
                            static_cast<unsigned>(_writing.size() - _written), static_cast<std::uint64_t>(-1));
        return;
    }
    _in_flight = false;
    // A buffer that grew in a burst (the lines of every turn while one write was slow: 60 MiB
    // seen with 200,000 deferrals, tests/integration/queue_scale_test.py) is freed rather than
    // kept for the next swap, so a quiet relay's RSS is not its worst burst's.
    if (_writing.capacity() > retained_buffer_bytes) std::string().swap(_writing);
    if (!_pending.empty()) start_write();
}

}  // namespace ringrelay::core
