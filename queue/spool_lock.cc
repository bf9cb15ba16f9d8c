// queue/spool_lock.cc: see spool_lock.h.
#include "queue/spool_lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "queue/spool.h"

namespace ringrelay::queue {

std::expected<spool_lock, spool_lock_error> spool_lock::acquire(const std::string& spool) {
    if (!make_directories(spool))
        return std::unexpected(spool_lock_error{false, 0, spool + ": cannot create: " + std::strerror(errno)});
    const std::string path = spool + "/lock";
    const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0640);
    if (fd < 0) return std::unexpected(spool_lock_error{false, 0, path + ": " + std::strerror(errno)});
    if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
        const int err = errno;
        spool_lock_error e;
        if (err == EWOULDBLOCK) {
            char buf[32] = {};
            const ssize_t n = ::pread(fd, buf, sizeof buf - 1, 0);
            e.busy = true;
            e.pid = n > 0 ? std::strtol(buf, nullptr, 10) : 0;
            e.text = "the relay is running on " + spool +
                     (e.pid > 0 ? " (pid " + std::to_string(e.pid) + ")" : std::string(" (it holds ") + path + ")");
        } else {
            e.text = path + ": flock: " + std::strerror(err);
        }
        ::close(fd);
        return std::unexpected(std::move(e));
    }
    // Ours now: say who holds it. Not synced: the lock lives only as long as this process.
    const std::string pid = std::to_string(static_cast<long>(::getpid())) + "\n";
    if (::ftruncate(fd, 0) != 0 || ::pwrite(fd, pid.data(), pid.size(), 0) != static_cast<ssize_t>(pid.size())) {
        const std::string text = path + ": " + std::strerror(errno);
        ::close(fd);
        return std::unexpected(spool_lock_error{false, 0, text});
    }
    return spool_lock(fd);
}

spool_lock& spool_lock::operator=(spool_lock&& other) noexcept {
    if (this != &other) {
        if (_fd >= 0) ::close(_fd);
        _fd = other._fd;
        other._fd = -1;
    }
    return *this;
}

spool_lock::~spool_lock() {
    if (_fd >= 0) ::close(_fd);
}

}  // namespace ringrelay::queue
