// tests/fuzz/fuzz_address.cc: libFuzzer target for parse_path() (RFC 5321 §4.1.2, RFC 6531).
// Checks views stay inside the input, accepted mailboxes hold no control octets, and that a
// mailbox re-parses (in brackets, without its route) to itself.
// SECURITY: MAIL/RCPT arguments come from the network and end up in replies and headers.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "protocol/address.h"

using namespace ringrelay::protocol;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view text(reinterpret_cast<const char*>(data), size);
    for (const path_kind kind : {path_kind::reverse_path, path_kind::forward_path}) {
        const auto p = parse_path(text, kind);
        if (!p) continue;
        for (const std::string_view v : {p->mailbox, p->local_part, p->domain}) {
            if (v.empty()) continue;
            if (v.data() < text.data() || v.data() + v.size() > text.data() + text.size()) std::abort();
            for (const char c : v) {
                const auto u = static_cast<unsigned char>(c);
                if (u < 0x20 || u == 0x7f) std::abort();
            }
        }
        if (p->null_path && kind != path_kind::reverse_path) std::abort();
        if (p->null_path || p->postmaster_only) continue;
        const std::string again = "<" + std::string(p->mailbox) + ">";
        const auto q = parse_path(again, kind);
        if (!q || q->mailbox != p->mailbox || q->domain != p->domain || q->quoted_local != p->quoted_local ||
            q->routing_chars != p->routing_chars || q->source_route) {
            std::abort();
        }
    }
    return 0;
}
