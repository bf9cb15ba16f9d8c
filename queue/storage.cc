// queue/storage.cc: see storage.h.
#include "queue/storage.h"

#include <fcntl.h>
#include <cerrno>
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

std::expected<int, std::error_code> disk_storage::open_read(const std::string& dir, const std::string& name) {
    const std::string path = dir + "/" + name;
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return std::unexpected(std::error_code(errno, std::system_category()));
    return fd;
}

void disk_storage::read(int fd, char* into, std::size_t length, std::uint64_t offset,
                        core::completion* done) noexcept {
    io_uring_prep_read(_reactor.sqe(done), fd, into, static_cast<unsigned>(length), offset);
}

void fault_storage::read(int fd, char* into, std::size_t length, std::uint64_t offset,
                         core::completion* done) noexcept {
    ++_reads;
    if (const int err = _read_error.exchange(0); err != 0) {
        _reactor.post(done, -err);
        return;
    }
    unsigned corrupt = _corrupt_reads.load();
    if (corrupt > 0 && _corrupt_reads.compare_exchange_strong(corrupt, corrupt - 1)) {
        auto op = std::make_unique<corrupting_read>();
        op->done = done;
        op->into = into;
        _disk.read(fd, into, length, offset, op.get());
        _corrupting.push_back(std::move(op));
        return;
    }
    _disk.read(fd, into, length, offset, done);
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

void power_loss_storage::write(int fd, const iovec* iov, unsigned count, std::uint64_t offset,
                               core::completion* done) noexcept {
    pending_write w{offset, {}};
    for (unsigned i = 0; i < count; ++i) w.bytes.append(static_cast<const char*>(iov[i].iov_base), iov[i].iov_len);
    const auto n = static_cast<int>(w.bytes.size());
    _unsynced[fd].push_back(std::move(w));
    _reactor.post(done, n);
}

int power_loss_storage::apply(int fd, const batch& writes) noexcept {
    // Synchronous pwrite: a test backend, not a shard's hot path.
    for (const pending_write& w : writes) {
        std::size_t off = 0;
        while (off < w.bytes.size()) {
            const ssize_t n = ::pwrite(fd, w.bytes.data() + off, w.bytes.size() - off,
                                       static_cast<off_t>(w.offset + off));
            if (n <= 0) return n < 0 ? -errno : -EIO;
            off += static_cast<std::size_t>(n);
        }
    }
    return 0;
}

void power_loss_storage::fdatasync(int fd, core::completion* done) noexcept {
    batch writes;
    if (auto it = _unsynced.find(fd); it != _unsynced.end()) {
        writes = std::move(it->second);
        _unsynced.erase(it);
    }
    if (_mode == sync_mode::skipped) {
        // The previous batch lands now; this one only at the next call, yet 250 goes out now.
        batch& late = _late[fd];
        const int res = apply(fd, late);
        late = std::move(writes);
        _reactor.post(done, res);
        return;
    }
    sync_op* op = nullptr;
    for (auto& o : _ops)
        if (o->fd == -1) op = o.get();
    if (op == nullptr) {
        _ops.push_back(std::make_unique<sync_op>());
        op = _ops.back().get();
        op->owner = this;
    }
    op->fd = fd;
    op->done = done;
    op->writes = std::move(writes);
    _disk.fdatasync(fd, op);
}

void power_loss_storage::sync_op::complete(int res, std::uint32_t) noexcept {
    // The moment of durability: before it, a kill loses these writes.
    if (res >= 0) res = apply(fd, writes);
    writes.clear();
    fd = -1;
    done->complete(res, 0);
}

void power_loss_storage::cut(batch& writes, std::uint64_t size) noexcept {
    std::erase_if(writes, [size](const pending_write& w) { return w.offset >= size; });
    for (pending_write& w : writes)
        if (w.offset + w.bytes.size() > size) w.bytes.resize(size - w.offset);
}

void power_loss_storage::truncate(int fd, std::uint64_t size) noexcept {
    if (auto it = _unsynced.find(fd); it != _unsynced.end()) cut(it->second, size);
    if (auto it = _late.find(fd); it != _late.end()) cut(it->second, size);
    _disk.truncate(fd, size);
}

void power_loss_storage::close_file(int fd) noexcept {
    _unsynced.erase(fd);  // never synced: lost, as in a power cut
    _late.erase(fd);
    _disk.close_file(fd);
}

std::size_t skip_written(std::span<iovec> iov, std::size_t next, std::size_t written) noexcept {
    while (written > 0 && next < iov.size()) {
        iovec& v = iov[next];
        if (written >= v.iov_len) {
            written -= v.iov_len;
            ++next;
        } else {
            v.iov_base = static_cast<char*>(v.iov_base) + written;
            v.iov_len -= written;
            written = 0;
        }
    }
    return next;
}

}  // namespace ringrelay::queue
