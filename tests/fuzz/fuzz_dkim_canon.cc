// tests/fuzz/fuzz_dkim_canon.cc: libFuzzer target for DKIM canonicalization
// (protocol/dkim_canon.h).
// Invariants, for any octets:
// - body_canonicalizer, fed the body in pieces cut where the input says, gives exactly
//   reference_canonical_body() of the whole body (simple and relaxed), and output_size() is its
//   length; the relaxed output has no WSP before a CRLF, no WSP run, no bare CR or LF; both end
//   in CRLF unless empty, and never in an empty line.
// - body_hash_stream over the whole message in pieces equals body_hasher over the body that
//   split_header_fields() finds.
// - split_header_fields(): every raw view lies inside the message, in order, before the body;
//   relaxed canonical fields contain no CR, LF, tab, or double space and no space around the
//   first colon; simple canonical fields have only CRLF line ends.
// - select_headers() selects only fields whose name equals the listed one.
// - author_domain() (protocol/dkim_sign.h) gives nothing or lower-case valid_tag_text found in
//   a From field.
// Input layout: [cut seed byte] [name count byte] message...
// SECURITY: every octet stands for client input.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "core/ascii.h"
#include "protocol/dkim_canon.h"
#include "protocol/dkim_sign.h"

using namespace ringrelay::protocol::dkim;

namespace {

void check(bool ok) {
    if (!ok) std::abort();
}

void append_sink(void* ctx, const char* p, std::size_t n) noexcept { static_cast<std::string*>(ctx)->append(p, n); }

bool only_crlf_line_ends(std::string_view s) {
    for (std::size_t i = 0; i < s.size(); ++i) {
        if (s[i] == '\r' && (i + 1 >= s.size() || s[i + 1] != '\n')) return false;
        if (s[i] == '\n' && (i == 0 || s[i - 1] != '\r')) return false;
    }
    return true;
}

// Cuts `s` into pieces whose lengths come from a small generator seeded by `seed`.
std::vector<std::string_view> cut(std::string_view s, std::uint8_t seed) {
    std::vector<std::string_view> pieces;
    std::uint32_t x = seed * 2654435761u + 1;
    std::size_t at = 0;
    while (at < s.size()) {
        x = x * 1103515245u + 12345u;
        const std::size_t n = std::min<std::size_t>((x >> 16) % 17, s.size() - at);
        pieces.push_back(s.substr(at, n));  // empty pieces too
        at += n;
    }
    return pieces;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size < 2) return 0;
    const std::uint8_t seed = data[0];
    const std::size_t name_count = data[1] % 8;
    const std::string_view message(reinterpret_cast<const char*>(data + 2), size - 2);
    const auto pieces = cut(message, seed);

    for (const canon mode : {canon::simple, canon::relaxed}) {
        const std::string whole = reference_canonical_body(mode, message);
        std::string out;
        body_canonicalizer c(mode, &append_sink, &out);
        for (const std::string_view p : pieces) c.update(p);
        c.finish();
        check(out == whole);
        check(c.output_size() == out.size());
        check(only_crlf_line_ends(out));
        if (!out.empty()) check(out.size() >= 2 && out.ends_with("\r\n"));
        if (mode == canon::simple) check(!out.empty());
        check(!out.ends_with("\r\n\r\n"));
        if (mode == canon::relaxed) {
            check(out.find('\t') == std::string::npos);
            check(out.find("  ") == std::string::npos);
            check(out.find(" \r\n") == std::string::npos);
            check(out != "\r\n");
        }
    }

    std::size_t body_at = 0;
    const auto fields = split_header_fields(message, &body_at);
    check(body_at <= message.size());
    const char* previous_end = message.data();
    for (const header_field& f : fields) {
        check(f.raw.data() >= previous_end && f.raw.data() + f.raw.size() <= message.data() + body_at);
        check(!f.raw.empty());
        previous_end = f.raw.data() + f.raw.size();
        std::string relaxed;
        append_canonical_header(relaxed, canon::relaxed, f.raw);
        check(relaxed.find_first_of("\r\n\t") == std::string::npos);
        check(relaxed.find("  ") == std::string::npos);
        const std::size_t colon = relaxed.find(':');
        if (colon != std::string::npos) {
            check(colon == 0 || relaxed[colon - 1] != ' ');
            check(colon + 1 == relaxed.size() || relaxed[colon + 1] != ' ');
        }
        check(relaxed.empty() || relaxed.back() != ' ');
        std::string simple;
        append_canonical_header(simple, canon::simple, f.raw);
        check(only_crlf_line_ends(simple));
        if (!f.name.empty() && f.name.find_first_of(" \t") == std::string_view::npos)
            check(ringrelay::core::iequals(std::string_view(relaxed).substr(0, f.name.size()), f.name));
    }

    // The author's domain, when there is one, is plain lower-case labels written in a From field.
    if (const auto author = author_domain(fields)) {
        check(valid_tag_text(*author));
        bool in_from = false;
        for (const header_field& f : fields) {
            if (!ringrelay::core::iequals(f.name, "from")) continue;
            std::string lowered(f.raw);
            for (char& c : lowered) c = ringrelay::core::ascii_lower(c);
            in_from = in_from || lowered.find(*author) != std::string::npos;
        }
        check(in_from);
        for (const char c : *author) check(c == ringrelay::core::ascii_lower(c));
    }

    // The streamed body hash is the hash of the body split_header_fields found.
    for (const canon mode : {canon::simple, canon::relaxed}) {
        body_hash_stream stream(mode);
        for (const std::string_view p : pieces) stream.update(p);
        body_hasher direct(mode);
        direct.update(message.substr(body_at));
        const auto a = stream.finish();
        const auto b = direct.finish();
        check(a.has_value() && b.has_value() && *a == *b);
    }

    // Selection: names taken from the fields themselves (and one absent name).
    std::vector<std::string_view> names;
    for (std::size_t i = 0; i < name_count && i < fields.size(); ++i) names.push_back(fields[(i * 7) % fields.size()].name);
    names.push_back("x-not-present-anywhere");
    const auto selected = select_headers(fields, names);
    check(selected.size() <= names.size());
    for (const header_field* f : selected) {
        bool listed = false;
        for (const std::string_view n : names) listed = listed || ringrelay::core::iequals(n, f->name);
        check(listed);
    }
    return 0;
}
