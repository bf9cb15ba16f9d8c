// core/log.h: the delivery log (JSON lines, one object per event) and the operator's
// diagnostic messages (stderr).
//
// log_writer is shard-local: each shard appends records to its own buffer and writes it once
// per loop turn through its io_uring to a file opened with O_APPEND, so shards never share a
// buffer and each write lands whole. The buffer being written is not touched until its
// completion (double buffering).
#pragma once
#include <cstdint>
#include <string>
#include <string_view>

#include "core/reactor.h"

namespace ringrelay::core {

// Appends `s` to `out` as the body of a JSON string (quotes not included), escaping
// quotes, backslashes and control characters; bytes >= 0x80 pass through unchanged
// (invalid UTF-8 is written as \u00XX per byte so the line stays valid JSON).
void append_json_escaped(std::string& out, std::string_view s);

// Writes "ringrelay: <message>\n" to stderr with a timestamp, in one write.
void diag(std::string_view message) noexcept;

// Opens the log target: "-" is stdout (not closed), "" is none (-1), otherwise a file
// opened O_WRONLY|O_APPEND|O_CREAT. Returns the fd or -errno.
[[nodiscard]] int open_log(const std::string& path) noexcept;

class log_writer final : public completion, public turn_hook {
public:
    log_writer(reactor& r, int fd) noexcept : _reactor(r), _fd(fd) {}
    log_writer(const log_writer&) = delete;
    log_writer& operator=(const log_writer&) = delete;

    [[nodiscard]] bool enabled() const noexcept { return _fd >= 0; }
    // The buffer to append one complete line to (ending in '\n').
    [[nodiscard]] std::string& line_buffer() noexcept { return _pending; }
    [[nodiscard]] bool idle() const noexcept { return !_in_flight && _pending.empty(); }

    void on_turn_end() noexcept override;
    void complete(int res, std::uint32_t flags) noexcept override;

private:
    // A written buffer larger than this is freed, not reused (log.cc, complete()).
    static constexpr std::size_t retained_buffer_bytes = 1u << 20;
    void start_write() noexcept;
    reactor& _reactor;
    const int _fd;
    std::string _pending;
    std::string _writing;
    std::size_t _written = 0;
    bool _in_flight = false;
    bool _reported_error = false;
};

}  // namespace ringrelay::core
