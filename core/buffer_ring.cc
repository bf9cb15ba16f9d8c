// core/buffer_ring.cc: see buffer_ring.h.
#include "core/buffer_ring.h"

#include <sys/mman.h>

#include <cstdlib>

namespace ringrelay::core {

buffer_ring::~buffer_ring() {
    if (_ring != nullptr) {
        (void)io_uring_unregister_buf_ring(&_reactor->ring(), _group);
        munmap(_ring, _count * sizeof(io_uring_buf));
    }
    std::free(_memory);
}

std::error_code buffer_ring::init(reactor& r, std::uint16_t group_id, unsigned count,
                                  unsigned size) noexcept {
    _reactor = &r;
    _group = group_id;
    _count = count;
    _size = size;
    const std::size_t ring_bytes = count * sizeof(io_uring_buf);
    void* ring_mem = mmap(nullptr, ring_bytes, PROT_READ | PROT_WRITE,
                          MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
    if (ring_mem == MAP_FAILED) return {errno, std::system_category()};
    _ring = static_cast<io_uring_buf_ring*>(ring_mem);
    io_uring_buf_ring_init(_ring);
    io_uring_buf_reg reg{};
    reg.ring_addr = reinterpret_cast<std::uint64_t>(_ring);
    reg.ring_entries = count;
    reg.bgid = group_id;
    const int rc = io_uring_register_buf_ring(&r.ring(), &reg, 0);
    if (rc < 0) {
        munmap(_ring, ring_bytes);
        _ring = nullptr;
        return cqe_error(rc);
    }
    // aligned_alloc wants a size that is a multiple of the alignment (a tiny test ring is not).
    const std::size_t bytes = (static_cast<std::size_t>(count) * size + 4095) & ~std::size_t{4095};
    _memory = static_cast<char*>(std::aligned_alloc(4096, bytes));
    if (_memory == nullptr) return std::make_error_code(std::errc::not_enough_memory);
    const int mask = io_uring_buf_ring_mask(count);
    for (unsigned i = 0; i < count; ++i) {
        io_uring_buf_ring_add(_ring, _memory + static_cast<std::size_t>(i) * size, size,
                              static_cast<unsigned short>(i), mask, static_cast<int>(i));
    }
    io_uring_buf_ring_advance(_ring, static_cast<int>(count));
    return {};
}

void buffer_ring::recycle(std::uint16_t id) noexcept {
    io_uring_buf_ring_add(_ring, _memory + static_cast<std::size_t>(id) * _size, _size, id,
                          io_uring_buf_ring_mask(_count), 0);
    io_uring_buf_ring_advance(_ring, 1);
}

}  // namespace ringrelay::core
