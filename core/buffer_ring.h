// core/buffer_ring.h: a provided-buffer ring (IORING_REGISTER_PBUF_RING, Linux 5.19) from
// which multishot receives take a buffer only when data arrives, so an idle connection holds
// no receive buffer. The kernel picks a buffer per completion and names it in cqe->flags.
//
// Ownership: the shard's reactor thread only. A buffer belongs to the kernel until a CQE
// names it, then to the consumer until recycle() gives it back.
#pragma once
#include <cstdint>
#include <span>
#include <system_error>

#include <liburing.h>

#include "core/reactor.h"

namespace ringrelay::core {

class buffer_ring {
public:
    buffer_ring() = default;
    buffer_ring(const buffer_ring&) = delete;
    buffer_ring& operator=(const buffer_ring&) = delete;
    ~buffer_ring();

    // count must be a power of two (<= 32768); size is each buffer's size in bytes.
    [[nodiscard]] std::error_code init(reactor& r, std::uint16_t group_id, unsigned count,
                                       unsigned size) noexcept;

    [[nodiscard]] std::uint16_t group_id() const noexcept { return _group; }
    // The bytes of buffer `id` (from cqe flags >> IORING_CQE_BUFFER_SHIFT), `len` long.
    [[nodiscard]] std::span<const char> data(std::uint16_t id, std::size_t len) const noexcept {
        return {_memory + static_cast<std::size_t>(id) * _size, len};
    }
    // Gives buffer `id` back to the kernel.
    void recycle(std::uint16_t id) noexcept;
    [[nodiscard]] unsigned buffer_size() const noexcept { return _size; }

private:
    reactor* _reactor = nullptr;
    io_uring_buf_ring* _ring = nullptr;
    char* _memory = nullptr;
    unsigned _count = 0;
    unsigned _size = 0;
    std::uint16_t _group = 0;
};

}  // namespace ringrelay::core
