// queue/storage.h: the spool's one narrow door to the disk (docs/ARCHITECTURE.md "The spool"),
// with a disk backend (io_uring) and a fault backend that fails chosen operations, so every
// disk error path can be tested.
//
// Threading: shard-local, like the spool that owns it. Asynchronous operations report to a
// core::completion on the shard's reactor: bytes written / 0, or -errno.
#pragma once
#include <sys/uio.h>

#include <atomic>
#include <cstdint>
#include <expected>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <system_error>
#include <vector>

#include "core/reactor.h"

namespace ringrelay::queue {

class storage {
public:
    virtual ~storage() = default;
    // Creates `dir/name` (must not exist) for appending and makes the new name durable
    // (fsync of the file and of the directory) before returning. Synchronous: used at
    // start-up and when a segment fills (once per tens of MiB).
    [[nodiscard]] virtual std::expected<int, std::error_code> create_file(const std::string& dir,
                                                                          const std::string& name) = 0;
    // Best-effort: shrinks a file back to `size` after a failed write.
    virtual void truncate(int fd, std::uint64_t size) noexcept = 0;
    virtual void close_file(int fd) noexcept = 0;
    // Writes iov[0..count) at `offset`; the iovecs and their bytes stay untouched until `done`
    // receives the byte count (possibly short) or -errno.
    virtual void write(int fd, const iovec* iov, unsigned count, std::uint64_t offset,
                       core::completion* done) noexcept = 0;
    // fdatasync(fd); `done` receives 0 or -errno.
    virtual void fdatasync(int fd, core::completion* done) noexcept = 0;
    // Opens `dir/name` for reading (a segment whose records are read back). Synchronous: once
    // per segment.
    [[nodiscard]] virtual std::expected<int, std::error_code> open_read(const std::string& dir,
                                                                        const std::string& name) = 0;
    // Reads `length` bytes at `offset` into `into`, which stays untouched by anyone else until
    // `done` receives the byte count (short at the end of the file) or -errno.
    virtual void read(int fd, char* into, std::size_t length, std::uint64_t offset,
                      core::completion* done) noexcept = 0;
};

// A write from iov[next..] reported `written` bytes: returns the first iovec not fully written
// (iov.size() when all were), with that one's base and length moved past its written bytes,
// for the writer to submit the rest of a short write from.
[[nodiscard]] std::size_t skip_written(std::span<iovec> iov, std::size_t next, std::size_t written) noexcept;

class disk_storage final : public storage {
public:
    explicit disk_storage(core::reactor& r) noexcept : _reactor(r) {}
    [[nodiscard]] std::expected<int, std::error_code> create_file(const std::string& dir,
                                                                  const std::string& name) override;
    void truncate(int fd, std::uint64_t size) noexcept override;
    void close_file(int fd) noexcept override;
    void write(int fd, const iovec* iov, unsigned count, std::uint64_t offset,
               core::completion* done) noexcept override;
    void fdatasync(int fd, core::completion* done) noexcept override;
    [[nodiscard]] std::expected<int, std::error_code> open_read(const std::string& dir,
                                                                const std::string& name) override;
    void read(int fd, char* into, std::size_t length, std::uint64_t offset, core::completion* done) noexcept override;

private:
    core::reactor& _reactor;
};

// Passes everything to a disk_storage, except the operations it was told to fail. Used by
// tests only. The fail_* calls may come from another thread than the shard's.
class fault_storage final : public storage {
public:
    explicit fault_storage(core::reactor& r) noexcept : _reactor(r), _disk(r) {}

    // The next write (or fdatasync, or create_file) fails with `err` (e.g. ENOSPC, EIO).
    void fail_next_write(int err) noexcept { _write_error = err; }
    void fail_next_sync(int err) noexcept { _sync_error = err; }
    void fail_next_create(int err) noexcept { _create_error = err; }
    // The next read fails with `err` (e.g. EIO); the next `count` reads each flip a byte of
    // what they read (a checksum mismatch).
    void fail_next_read(int err) noexcept { _read_error = err; }
    void corrupt_next_reads(unsigned count) noexcept { _corrupt_reads = count; }
    [[nodiscard]] unsigned reads() const noexcept { return _reads; }
    // The next write writes only its first `bytes` bytes (a short write).
    void short_next_write(std::size_t bytes) noexcept { _short_write = bytes; }
    [[nodiscard]] unsigned writes() const noexcept { return _writes; }
    [[nodiscard]] unsigned syncs() const noexcept { return _syncs; }

    [[nodiscard]] std::expected<int, std::error_code> create_file(const std::string& dir,
                                                                  const std::string& name) override;
    void truncate(int fd, std::uint64_t size) noexcept override { _disk.truncate(fd, size); }
    void close_file(int fd) noexcept override { _disk.close_file(fd); }
    void write(int fd, const iovec* iov, unsigned count, std::uint64_t offset,
               core::completion* done) noexcept override;
    void fdatasync(int fd, core::completion* done) noexcept override;
    [[nodiscard]] std::expected<int, std::error_code> open_read(const std::string& dir,
                                                                const std::string& name) override {
        return _disk.open_read(dir, name);
    }
    void read(int fd, char* into, std::size_t length, std::uint64_t offset, core::completion* done) noexcept override;

private:
    // Flips a byte of a finished read before passing its result on.
    struct corrupting_read final : core::completion {
        core::completion* done = nullptr;
        char* into = nullptr;
        void complete(int res, std::uint32_t flags) noexcept override {
            if (res > 0) into[res / 2] = static_cast<char>(into[res / 2] ^ 0x20);
            done->complete(res, flags);
        }
    };
    core::reactor& _reactor;
    disk_storage _disk;
    std::atomic<int> _read_error{0};
    std::atomic<unsigned> _corrupt_reads{0};
    std::atomic<unsigned> _reads{0};
    std::vector<std::unique_ptr<corrupting_read>> _corrupting;  // shard-local; kept until destruction
    // Armed by a test thread, consumed by the shard thread: atomics (test-only backend).
    std::atomic<int> _write_error{0};
    std::atomic<int> _sync_error{0};
    std::atomic<int> _create_error{0};
    std::atomic<std::size_t> _short_write{0};
    std::atomic<unsigned> _writes{0};
    std::atomic<unsigned> _syncs{0};
    iovec _short_iov{};  // shard-local
};

// Simulates a power loss for crash tests (test builds only: ringrelay-powerloss). Writes are
// kept in memory and reach the file only when an fdatasync that covers them *completes*, so a
// SIGKILL loses exactly what a power cut would: everything not yet synced, including a batch
// whose fdatasync was issued but had not finished. With sync_mode::skipped, fdatasync
// reports success at once and the batch reaches the file only when the next fdatasync is
// called: a relay that acknowledges before its data is durable, by one batch, which the
// crash test must catch. Not modelled: the durability of file creation, directory entries
// and unlink (create_file and the spool's deletions go to the disk as usual).
class power_loss_storage final : public storage {
public:
    enum class sync_mode : std::uint8_t { durable, skipped };
    power_loss_storage(core::reactor& r, sync_mode mode) noexcept : _reactor(r), _disk(r), _mode(mode) {}

    [[nodiscard]] std::expected<int, std::error_code> create_file(const std::string& dir,
                                                                  const std::string& name) override {
        return _disk.create_file(dir, name);
    }
    void truncate(int fd, std::uint64_t size) noexcept override;
    void close_file(int fd) noexcept override;
    void write(int fd, const iovec* iov, unsigned count, std::uint64_t offset,
               core::completion* done) noexcept override;
    void fdatasync(int fd, core::completion* done) noexcept override;
    [[nodiscard]] std::expected<int, std::error_code> open_read(const std::string& dir,
                                                                const std::string& name) override {
        return _disk.open_read(dir, name);
    }
    // Reads what is in the file: only synced writes are there (a record is read back only
    // after its commit).
    void read(int fd, char* into, std::size_t length, std::uint64_t offset, core::completion* done) noexcept override {
        _disk.read(fd, into, length, offset, done);
    }

private:
    struct pending_write {
        std::uint64_t offset;
        std::string bytes;
    };
    using batch = std::vector<pending_write>;
    // One fdatasync in flight: the writes it covers reach the file when it completes.
    struct sync_op final : core::completion {
        power_loss_storage* owner = nullptr;
        int fd = -1;
        core::completion* done = nullptr;
        batch writes;
        void complete(int res, std::uint32_t flags) noexcept override;
    };
    static int apply(int fd, const batch& writes) noexcept;  // pwrite each; 0 or -errno
    static void cut(batch& writes, std::uint64_t size) noexcept;

    core::reactor& _reactor;
    disk_storage _disk;
    const sync_mode _mode;
    // Shard-local.
    std::map<int, batch> _unsynced;  // written, no fdatasync called yet
    std::map<int, batch> _late;      // skipped mode: "synced" but not yet in the file
    std::vector<std::unique_ptr<sync_op>> _ops;  // in flight or free (fd == -1)
};

}  // namespace ringrelay::queue
