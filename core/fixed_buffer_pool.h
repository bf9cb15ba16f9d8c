// core/fixed_buffer_pool.h: a pool of buffers registered with one io_uring
// (IORING_REGISTER_BUFFERS, Linux 5.1), read into with IORING_OP_READ_FIXED
// (io_uring_prep_read_fixed, naming the buffer by its index). The kernel maps a registered
// buffer's pages once, at registration, instead of importing and checking the user address at
// every read (and, for O_DIRECT, pinning its pages). For a buffered read from the page cache
// the copy into user memory dominates, and the two measure the same here
// (bench/fixed_buffer_pool_bench: 256 KiB pieces of a cached 30 MiB file, 27.0 GB/s fixed
// against 27.4 GB/s plain, medians of 5; bench/results/history.md). The pool is what the reactor (core/reactor.h) offers for large sequential reads
// (the outbound side's streamed bodies, queue/outbound.h).
//
// Registered memory is pinned for the life of the ring, resident whether used or not, and
// counts against RLIMIT_MEMLOCK of a user without CAP_IPC_LOCK (io_uring/rsrc.c,
// io_account_mem; the default limit is 8 MiB per user since Linux 5.16, 64 KiB before, shared
// by every process of the user; recent kernels charge the rings' own memory to it too, as
// seen on 6.18). So a pool is small and bounded, and the kernel may refuse
// it: init() then tries with half as many buffers, down to one, and an empty pool is a
// working pool whose acquire() always fails, the caller using plain memory and plain reads.
//
// Lifecycle: owned by a reactor (reactor::fixed_buffers()), empty until init() (once, on the
// reactor's thread, after reactor::init). The registration ends with the ring
// (io_uring_queue_exit unregisters the buffers); the memory is freed with the pool, after
// the ring, since the reactor destroys its ring first.
// Threading: the reactor's (its shard's) thread only.
// Buffer ownership: a buffer acquired belongs to the caller until release(); while a read
// into it is in flight it belongs to the kernel, and the caller must not release it before
// that read's completion.
#pragma once
#include <cstddef>
#include <cstdint>
#include <system_error>
#include <vector>

#include <liburing.h>

namespace ringrelay::core {

// One acquired buffer: `data` (buffer_size() bytes) and the index io_uring_prep_read_fixed
// takes. data == nullptr: none (the pool was empty or not registered).
struct fixed_buffer {
    char* data = nullptr;
    std::uint16_t index = 0;
    [[nodiscard]] explicit operator bool() const noexcept { return data != nullptr; }
};

// What the pool's users report, for the shard's counters and tests.
enum class read_memory : std::uint8_t {
    fixed,  // read with READ_FIXED into a buffer of the pool
    plain,  // read with READ into plain memory: the pool had no buffer free, or none registered
};

struct fixed_buffer_counters {
    std::uint64_t fixed_reads = 0;  // reads into a registered buffer (note_read(fixed))
    std::uint64_t plain_reads = 0;  // reads that fell back to plain memory (note_read(plain))
    std::uint64_t acquired = 0;     // acquire() calls that got a buffer
    std::uint64_t exhausted = 0;    // acquire() calls that found none free (the caller fell back)
};

class fixed_buffer_pool {
public:
    fixed_buffer_pool() = default;
    fixed_buffer_pool(const fixed_buffer_pool&) = delete;
    fixed_buffer_pool& operator=(const fixed_buffer_pool&) = delete;
    ~fixed_buffer_pool();  // frees the memory; the ring's registration ends with the ring

    // Allocates `count` buffers of `size` bytes (size a multiple of 4096, count at most
    // 16384, both non-zero) and registers them with `ring`, which must have no buffers
    // registered. A refusal for memory (ENOMEM: RLIMIT_MEMLOCK) is retried with half as many
    // buffers, down to one. Returns the first refusal, or {} if `count` were registered: the
    // pool may then hold fewer buffers (capacity()) or none (every acquire() fails). Once.
    [[nodiscard]] std::error_code init(io_uring& ring, unsigned count, std::size_t size) noexcept;

    // A free buffer, O(1); none (data == nullptr, counted as exhausted) when every buffer is
    // out or none is registered.
    [[nodiscard]] fixed_buffer acquire() noexcept;
    // Gives `b` (from acquire(), not released since, no read into it in flight) back, O(1).
    void release(fixed_buffer b) noexcept;

    void note_read(read_memory kind) noexcept {
        ++(kind == read_memory::fixed ? _counters.fixed_reads : _counters.plain_reads);
    }

    [[nodiscard]] unsigned capacity() const noexcept { return _count; }  // registered buffers
    [[nodiscard]] unsigned available() const noexcept { return static_cast<unsigned>(_free.size()); }
    [[nodiscard]] std::size_t buffer_size() const noexcept { return _size; }
    [[nodiscard]] const fixed_buffer_counters& counters() const noexcept { return _counters; }

private:
    // Fixed after init().
    char* _memory = nullptr;  // _mapped bytes (mmap), the first _count * _size registered
    std::size_t _mapped = 0;
    std::size_t _size = 0;
    unsigned _count = 0;
    // Shard-local.
    std::vector<std::uint16_t> _free;  // indexes of the free buffers (a stack)
    std::vector<std::uint8_t> _out;    // per buffer: 1 while acquired (catches a double release)
    fixed_buffer_counters _counters;
};

}  // namespace ringrelay::core
