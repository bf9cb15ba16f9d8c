// core/invariant.h: invariant checks. A broken invariant aborts with file:line; it is never
// an error value. RR_ASSERT is always on (cheap checks only); RR_DEBUG_ASSERT only without NDEBUG.
#pragma once
#include <cstdio>
#include <cstdlib>

namespace ringrelay::core::detail {
[[noreturn]] inline void assert_fail(const char* expr, const char* file, int line) noexcept {
    std::fprintf(stderr, "ringrelay: assertion failed: %s at %s:%d\n", expr, file, line);
    std::abort();
}
}  // namespace ringrelay::core::detail

#define RR_ASSERT(expr) \
    ((expr) ? static_cast<void>(0) : ::ringrelay::core::detail::assert_fail(#expr, __FILE__, __LINE__))
#ifdef NDEBUG
#define RR_DEBUG_ASSERT(expr) static_cast<void>(0)
#else
#define RR_DEBUG_ASSERT(expr) RR_ASSERT(expr)
#endif
