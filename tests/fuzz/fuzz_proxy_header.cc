// tests/fuzz/fuzz_proxy_header.cc: libFuzzer target for the PROXY protocol header parser
// (protocol/proxy_header.h; issue 19). Any bytes as a connection's first bytes from a load
// balancer: no crash or sanitizer report, and the answers agree with one another:
//   - done: the header is within the input; the header alone is done with the same length and
//     addresses; one byte less needs more;
//   - need more or done: a shorter prefix is never an error (the parser decides from a prefix);
//   - error: a reason is given, and more bytes never make it valid.
// SECURITY: every byte comes from the network, before any SMTP.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>

#include "protocol/proxy_header.h"

using namespace ringrelay::protocol;

namespace {

bool same_endpoint(const ringrelay::core::endpoint& a, const ringrelay::core::endpoint& b) {
    return a.length == b.length && std::memcmp(&a.storage, &b.storage, a.length) == 0;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view in(reinterpret_cast<const char*>(data), size);
    const proxy_header h = parse_proxy_header(in);
    switch (h.status) {
        case proxy_status::done: {
            if (h.consumed == 0 || h.consumed > size) std::abort();
            if (h.version == 1 && h.consumed > proxy_v1_max_length) std::abort();
            if (h.version == 2 && (h.consumed < proxy_v2_prefix_length || h.consumed > proxy_v2_max_length)) std::abort();
            if (h.local && h.has_addresses) std::abort();
            const proxy_header alone = parse_proxy_header(in.substr(0, h.consumed));
            if (alone.status != proxy_status::done || alone.consumed != h.consumed || alone.local != h.local ||
                alone.has_addresses != h.has_addresses)
                std::abort();
            if (h.has_addresses && (!same_endpoint(alone.source, h.source) ||
                                    !same_endpoint(alone.destination, h.destination)))
                std::abort();
            if (parse_proxy_header(in.substr(0, h.consumed - 1)).status != proxy_status::need_more) std::abort();
            break;
        }
        case proxy_status::need_more:
            if (size >= proxy_v2_max_length) std::abort();  // no header is that long
            break;
        case proxy_status::error: {
            if (h.error.empty()) std::abort();
            std::string more(in);
            more.append("\r\n\r\nPROXY UNKNOWN\r\n");
            if (parse_proxy_header(more).status != proxy_status::error) std::abort();
            return 0;
        }
    }
    if (size > 0 && parse_proxy_header(in.substr(0, size / 2)).status == proxy_status::error) std::abort();
    return 0;
}
