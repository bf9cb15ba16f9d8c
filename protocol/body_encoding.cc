// protocol/body_encoding.cc: see body_encoding.h.
// SECURITY: every index is below body.size(); memchr never reads past the view.
#include "protocol/body_encoding.h"

#include <cstddef>
#include <cstring>

namespace ringrelay::protocol {
namespace {

// Walks the body as normalized lines, calling sink(const char*, size_t) for every run; the
// final CRLF of an unterminated last line is the caller's. `line_start` is the state before the
// body and after it. Returns true when the body's last octet was a CR (sent as a line end), so
// that a LF right after it, in a next piece, belongs to the same line end.
// Line ends are found with two memchr scans per line (the next LF, remembered, and a CR before
// it): string_view::find_first_of("\r\n") calls memchr once per octet, which was more than
// half of ringrelay-bench's CPU time. Linear even for a body of bare CRs without any LF.
template <typename Sink>
bool walk_body(std::string_view body, dot_stuffing stuffing, bool& line_start, Sink&& sink) {
    std::size_t i = 0;
    const std::size_t n = body.size();
    const char* const data = body.data();
    std::size_t next_lf = 0;  // the first LF at or after i, or n; valid once i <= next_lf
    bool lf_known = false;
    bool ended_on_cr = false;
    while (i < n) {
        if (line_start && stuffing == dot_stuffing::on && body[i] == '.') sink(".", 1);
        if (!lf_known || next_lf < i) {
            const void* lf = std::memchr(data + i, '\n', n - i);
            next_lf = lf != nullptr ? static_cast<std::size_t>(static_cast<const char*>(lf) - data) : n;
            lf_known = true;
        }
        const void* cr = std::memchr(data + i, '\r', next_lf - i);
        const std::size_t j = cr != nullptr ? static_cast<std::size_t>(static_cast<const char*>(cr) - data) : next_lf;
        if (j > i) {
            sink(body.data() + i, j - i);
            line_start = false;
        }
        if (j == n) break;
        ended_on_cr = body[j] == '\r' && j + 1 == n;
        i = (body[j] == '\r' && j + 1 < n && body[j + 1] == '\n') ? j + 2 : j + 1;
        sink("\r\n", 2);  // CRLF, bare CR and bare LF all end a line as CRLF
        line_start = true;
    }
    return ended_on_cr;
}

template <typename Sink>
void walk_whole_body(std::string_view body, dot_stuffing stuffing, Sink&& sink) {
    bool line_start = true;
    walk_body(body, stuffing, line_start, sink);
    if (!line_start) sink("\r\n", 2);
}

}  // namespace

std::uint64_t normalized_body_size(std::string_view body) noexcept {
    std::uint64_t size = 0;
    walk_whole_body(body, dot_stuffing::off, [&](const char*, std::size_t n) { size += n; });
    return size;
}

void append_normalized_body(std::string& out, std::string_view body, dot_stuffing stuffing) {
    walk_whole_body(body, stuffing, [&](const char* p, std::size_t n) { out.append(p, n); });
}

void body_encoder::append(std::string& out, std::string_view piece, body_piece which) {
    if (!piece.empty()) {
        if (_after_cr && piece.front() == '\n') piece.remove_prefix(1);  // the CR's line end, sent already
        _after_cr = walk_body(piece, _stuffing, _line_start, [&](const char* p, std::size_t n) { out.append(p, n); });
    }
    if (which == body_piece::last) {
        if (!_line_start) out.append("\r\n");
        _line_start = true;
        _after_cr = false;
    }
}

std::uint64_t body_encoder::size_of(std::string_view piece, body_piece which) const noexcept {
    std::uint64_t size = 0;
    bool line_start = _line_start;
    if (!piece.empty()) {
        if (_after_cr && piece.front() == '\n') piece.remove_prefix(1);
        walk_body(piece, dot_stuffing::off, line_start, [&](const char*, std::size_t n) { size += n; });
    }
    if (which == body_piece::last && !line_start) size += 2;
    return size;
}

void reference_append_normalized_body(std::string& out, std::string_view body, dot_stuffing stuffing) {
    bool line_start = true;
    bool pending_cr = false;  // a CR seen: a line end, with the next octet if that is LF
    for (const char c : body) {
        if (pending_cr) {
            pending_cr = false;
            out.append("\r\n");
            line_start = true;
            if (c == '\n') continue;
        }
        if (c == '\r') {
            pending_cr = true;
        } else if (c == '\n') {
            out.append("\r\n");
            line_start = true;
        } else {
            if (line_start && c == '.' && stuffing == dot_stuffing::on) out.push_back('.');
            out.push_back(c);
            line_start = false;
        }
    }
    if (pending_cr || !line_start) out.append("\r\n");
}

}  // namespace ringrelay::protocol
