// tests/fuzz/fuzz_redis_url.cc: libFuzzer target for the --redis URL (core/redis_url.cc; issue
// 19). Operator input, not network input, but a typo must give an error, never a crash.
// Checks: no sanitizer report; an error has a reason; an accepted URL is in range (port 1..65535,
// database 0..15, a unix path absolute and short enough for sun_path, a TCP host non-empty) and
// its to_string() text parses back to the same address.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "core/redis_url.h"

using namespace ringrelay::core;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view text(reinterpret_cast<const char*>(data), size);
    const auto u = parse_redis_url(text);
    if (!u) {
        if (u.error().empty()) std::abort();
        return 0;
    }
    if (u->transport == redis_url::kind::unix_socket) {
        if (u->path.empty() || u->path.front() != '/' || u->path.size() > 107 || u->db != 0) std::abort();
    } else {
        if (u->host.empty() || u->port == 0 || u->db > max_redis_db || !u->path.empty()) std::abort();
    }
    const auto again = parse_redis_url(to_string(*u));
    if (!again || *again != *u) std::abort();
    return 0;
}
