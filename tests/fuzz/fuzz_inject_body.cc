// tests/fuzz/fuzz_inject_body.cc: libFuzzer target for POST /api/v1/inject's body
// (queue/inject_body.h parse_inject_body; issue 18) and the messages made from it
// (build_mime_message, prepare_raw_message). Any bytes as the body. Checks: no sanitizer report;
// the same body gives the same verdict twice; a refusal has a message; an accepted request has
// recipients and a content (whole or parts with a From:); the message made from it has every line
// ended by CRLF (no lone CR or LF) and at most 998 octets long (RFC 5322 §2.1.1), and a message
// built from parts starts with its Date: field (none given in the headers here).
// SECURITY: the body is the HTTP client's (a client in --http-networks).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "queue/inject_body.h"

using namespace ringrelay::queue;

namespace {

const message_stamp stamp{.date = "Tue, 08 Dec 2026 01:30:00 +0000",
                          .message_id = "<0000000000000100@relay.example>",
                          .boundary = "=_rr_0000000000000100"};

// Every line ends in CRLF and has at most 998 octets before it.
void check_lines(std::string_view m) {
    if (m.empty() || !m.ends_with("\r\n")) std::abort();
    std::size_t start = 0;
    while (start < m.size()) {
        const std::size_t end = m.find("\r\n", start);
        if (end == std::string_view::npos) std::abort();
        const std::string_view line = m.substr(start, end - start);
        if (line.size() > max_line_octets || line.find_first_of("\r\n") != std::string_view::npos) std::abort();
        start = end + 2;
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view in(reinterpret_cast<const char*>(data), size);
    const auto a = parse_inject_body(in);
    const auto b = parse_inject_body(in);
    if (a.has_value() != b.has_value()) std::abort();
    if (!a) {
        if (a.error().empty() || a.error() != b.error()) std::abort();
        return 0;
    }
    if (a->recipients.empty() || a->recipients != b->recipients || a->envelope_sender != b->envelope_sender) std::abort();
    for (const std::string& r : a->recipients)
        if (r.empty()) std::abort();
    if (a->parts) {
        if (a->parts->from.empty() || !a->raw.empty()) std::abort();
        const std::string m = build_mime_message(*a->parts, stamp);
        check_lines(m);
        bool own_date = false;
        for (const auto& [name, value] : a->parts->headers)
            if (name.size() == 4 && (name[0] | 0x20) == 'd' && (name[1] | 0x20) == 'a' && (name[2] | 0x20) == 't' &&
                (name[3] | 0x20) == 'e')
                own_date = true;
        if (!own_date && !m.starts_with("Date: Tue, 08 Dec 2026 01:30:00 +0000\r\n")) std::abort();
        if (m != build_mime_message(*b->parts, stamp)) std::abort();
    } else {
        if (a->raw.empty()) std::abort();
        const auto m = prepare_raw_message(a->raw, stamp);
        if (m) {
            check_lines(*m);
        } else if (m.error().empty()) {
            std::abort();
        }
    }
    return 0;
}
