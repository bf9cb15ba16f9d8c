// queue/storage.cc: see storage.h.
#include "queue/storage.h"

#include <fcntl.h>
#include <unistd.h>

namespace ringrelay::queue {

std::expected<int, std::error_code> disk_storage::create_file(const std::string& dir, const std::string& name) {
    const std::string path = dir + "/" + name;
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
    if (fd < 0) return std::unexpected(std::error_code(errno, std::system_category()));
    const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (::fsync(fd) < 0 || dfd < 0 || ::fsync(dfd) < 0) {
        const int err = errno;
        if (dfd >= 0) ::close(dfd);
        ::close(fd);
        ::unlink(path.c_str());
        return std::unexpected(std::error_code(err, std::system_category()));
    }
    ::close(dfd);
    return fd;
}

void disk_storage::truncate(int fd, std::uint64_t size) noexcept {
    // Error path only (synchronous): make the cut durable, so records the client was told
    // 451/452 about do not come back after a crash as duplicates.
    if (::ftruncate(fd, static_cast<off_t>(size)) == 0) (void)::fdatasync(fd);
}

void disk_storage::close_file(int fd) noexcept { ::close(fd); }

void disk_storage::write(int fd, const iovec* iov, unsigned count, std::uint64_t offset,
                         core::completion* done) noexcept {
    io_uring_prep_writev(_reactor.sqe(done), fd, iov, count, offset);
}

void disk_storage::fdatasync(int fd, core::completion* done) noexcept {
    io_uring_prep_fsync(_reactor.sqe(done), fd, IORING_FSYNC_DATASYNC);
}

std::expected<int, std::error_code> fault_storage::create_file(const std::string& dir, const std::string& name) {
    if (const int err = _create_error.exchange(0); err != 0) {
        return std::unexpected(std::error_code(err, std::system_category()));
    }
    return _disk.create_file(dir, name);
}

void fault_storage::write(int fd, const iovec* iov, unsigned count, std::uint64_t offset,
                          core::completion* done) noexcept {
    ++_writes;
    if (const int err = _write_error.exchange(0); err != 0) {
        _reactor.post(done, -err);
        return;
    }
    if (const std::size_t short_len = _short_write.exchange(0); short_len != 0 && count > 0) {
        // Really write only a prefix: the spool must notice and write the rest.
        _short_iov.iov_base = iov[0].iov_base;
        _short_iov.iov_len = short_len < iov[0].iov_len ? short_len : iov[0].iov_len;
        _disk.write(fd, &_short_iov, 1, offset, done);
        return;
    }
    _disk.write(fd, iov, count, offset, done);
}

void fault_storage::fdatasync(int fd, core::completion* done) noexcept {
    ++_syncs;
    if (const int err = _sync_error.exchange(0); err != 0) {
        _reactor.post(done, -err);
        return;
    }
    _disk.fdatasync(fd, done);
}

}  // namespace ringrelay::queue
