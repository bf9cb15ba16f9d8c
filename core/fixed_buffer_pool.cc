// core/fixed_buffer_pool.cc: see fixed_buffer_pool.h.
#include "core/fixed_buffer_pool.h"

#include <sys/mman.h>
#include <sys/uio.h>

#include <cerrno>

#include "core/invariant.h"
#include "core/reactor.h"

namespace ringrelay::core {

fixed_buffer_pool::~fixed_buffer_pool() {
    if (_memory != nullptr) ::munmap(_memory, _mapped);
}

std::error_code fixed_buffer_pool::init(io_uring& ring, unsigned count, std::size_t size) noexcept {
    RR_ASSERT(_memory == nullptr && _count == 0);
    RR_ASSERT(count > 0 && count <= 16384 && size > 0 && size % 4096 == 0);
    _size = size;
    _mapped = static_cast<std::size_t>(count) * size;
    void* mem = ::mmap(nullptr, _mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) {
        _mapped = 0;
        return {errno, std::system_category()};
    }
    _memory = static_cast<char*>(mem);
    std::vector<iovec> iov(count);
    for (unsigned i = 0; i < count; ++i) iov[i] = iovec{_memory + static_cast<std::size_t>(i) * size, size};
    std::error_code first;
    unsigned n = count;
    for (;;) {
        const int rc = io_uring_register_buffers(&ring, iov.data(), n);
        if (rc == 0) break;
        if (!first) first = cqe_error(rc);
        // Only a memory refusal (the lock limit) may pass with fewer; anything else will not.
        if (rc != -ENOMEM || n == 1) {
            n = 0;
            break;
        }
        n /= 2;
    }
    _count = n;
    // What was not registered goes back (the buffers are whole pages: size % 4096 == 0).
    const std::size_t kept = static_cast<std::size_t>(n) * size;
    if (kept < _mapped) {
        ::munmap(_memory + kept, _mapped - kept);
        _mapped = kept;
        if (kept == 0) _memory = nullptr;
    }
    _free.reserve(n);
    _out.assign(n, 0);
    for (unsigned i = n; i > 0; --i) _free.push_back(static_cast<std::uint16_t>(i - 1));  // 0 on top
    return first;
}

fixed_buffer fixed_buffer_pool::acquire() noexcept {
    if (_free.empty()) {
        ++_counters.exhausted;
        return {};
    }
    const std::uint16_t i = _free.back();
    _free.pop_back();
    _out[i] = 1;
    ++_counters.acquired;
    return {_memory + static_cast<std::size_t>(i) * _size, i};
}

void fixed_buffer_pool::release(fixed_buffer b) noexcept {
    RR_ASSERT(b.data != nullptr && b.index < _count && b.data == _memory + static_cast<std::size_t>(b.index) * _size);
    RR_ASSERT(_out[b.index] != 0);  // acquired, not released twice
    _out[b.index] = 0;
    _free.push_back(b.index);
}

}  // namespace ringrelay::core
