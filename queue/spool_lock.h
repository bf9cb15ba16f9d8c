// queue/spool_lock.h: the spool's lock, SPOOL/lock: a running relay holds an exclusive
// flock(2) on it (and has written its pid in it) from start-up to exit, so that a second relay
// on the same spool refuses to start, and the offline commands that rewrite what a running
// relay owns (--list-suppressed, --suppress, --unsuppress) refuse to run. The kernel drops the
// lock when the process ends, however it ends (SIGKILL included): there is no stale lock to
// clean up, and the file itself stays.
//
// Threading: none; the relay's main thread or a command-line tool.
#pragma once
#include <expected>
#include <string>

namespace ringrelay::queue {

struct spool_lock_error {
    bool busy = false;  // another process holds the lock: `pid` (0 if it could not be read)
    long pid = 0;
    std::string text;   // what failed, naming the file; for busy: "the relay is running on SPOOL (pid N)"
};

class spool_lock {
public:
    // Takes the lock without waiting, creating the spool directory (durably) if it is missing.
    [[nodiscard]] static std::expected<spool_lock, spool_lock_error> acquire(const std::string& spool);
    spool_lock(spool_lock&& other) noexcept : _fd(other._fd) { other._fd = -1; }
    spool_lock& operator=(spool_lock&& other) noexcept;
    spool_lock(const spool_lock&) = delete;
    spool_lock& operator=(const spool_lock&) = delete;
    ~spool_lock();  // releases the lock

private:
    explicit spool_lock(int fd) noexcept : _fd(fd) {}
    int _fd = -1;
};

}  // namespace ringrelay::queue
