// protocol/dkim_canon.cc: see dkim_canon.h.
// SECURITY: every index is checked against its view's size; output grows only by what the
// input's octets and line ends account for.
#include "protocol/dkim_canon.h"

#include <openssl/evp.h>

#include <cstring>

#include "core/ascii.h"

namespace ringrelay::protocol::dkim {
namespace {

constexpr bool is_wsp(char c) noexcept { return c == ' ' || c == '\t'; }
constexpr bool is_line_end(char c) noexcept { return c == '\r' || c == '\n'; }

// Octets that end a run of plain content: line-end octets always, whitespace in relaxed mode.
struct special_table {
    bool simple[256] = {};
    bool relaxed[256] = {};
    constexpr special_table() {
        simple[static_cast<unsigned char>('\r')] = simple[static_cast<unsigned char>('\n')] = true;
        relaxed[static_cast<unsigned char>('\r')] = relaxed[static_cast<unsigned char>('\n')] = true;
        relaxed[static_cast<unsigned char>(' ')] = relaxed[static_cast<unsigned char>('\t')] = true;
    }
};
constexpr special_table specials{};

}  // namespace

std::optional<canonicalization> parse_canonicalization(std::string_view text) noexcept {
    auto one = [](std::string_view s) -> std::optional<canon> {
        if (s == "simple") return canon::simple;
        if (s == "relaxed") return canon::relaxed;
        return std::nullopt;
    };
    const std::size_t slash = text.find('/');
    if (slash == std::string_view::npos) {
        const auto h = one(text);
        if (!h) return std::nullopt;
        return canonicalization{*h, canon::simple};
    }
    const auto h = one(text.substr(0, slash));
    const auto b = one(text.substr(slash + 1));
    if (!h || !b) return std::nullopt;
    return canonicalization{*h, *b};
}

std::string_view canon_name(canon c) noexcept { return c == canon::simple ? "simple" : "relaxed"; }

std::string canonicalization_text(canonicalization c) {
    std::string out(canon_name(c.header));
    out += '/';
    out += canon_name(c.body);
    return out;
}

// --- body_canonicalizer ---------------------------------------------------------------------

body_canonicalizer::body_canonicalizer(canon mode, sink_fn sink, void* context) noexcept
    : _mode(mode), _sink(sink), _context(context) {}

void body_canonicalizer::flush() noexcept {
    if (_used == 0) return;
    _sink(_context, _buffer, _used);
    _used = 0;
}

void body_canonicalizer::put(const char* data, std::size_t size) noexcept {
    _output_size += size;
    _any_output = true;
    if (size > sizeof _buffer - _used) {
        flush();
        if (size >= sizeof _buffer) {  // a long run goes to the sink as it is
            _sink(_context, data, size);
            return;
        }
    }
    std::memcpy(_buffer + _used, data, size);
    _used += size;
}

void body_canonicalizer::content(const char* data, std::size_t size) noexcept {
    if (!_line_has_content) {
        for (; _empty_lines > 0; --_empty_lines) put("\r\n", 2);  // they were not trailing after all
        _line_has_content = true;
    }
    if (_pending_wsp) {  // relaxed: a run of whitespace inside the line is one SP
        put(" ", 1);
        _pending_wsp = false;
    }
    put(data, size);
}

void body_canonicalizer::line_end() noexcept {
    if (_line_has_content) {
        put("\r\n", 2);
        _line_has_content = false;
    } else {
        ++_empty_lines;  // held back: trailing empty lines are dropped
    }
    _pending_wsp = false;  // relaxed: whitespace at the end of a line is dropped
}

void body_canonicalizer::update(std::string_view piece) noexcept {
    if (_finished) return;
    const bool* special = _mode == canon::simple ? specials.simple : specials.relaxed;
    const char* const data = piece.data();
    const std::size_t n = piece.size();
    std::size_t i = 0;
    if (_pending_cr && n > 0) {
        _pending_cr = false;
        if (data[0] == '\n') i = 1;  // CR LF split between pieces: one line end, already counted
    }
    while (i < n) {
        std::size_t j = i;
        while (j < n && !special[static_cast<unsigned char>(data[j])]) ++j;
        if (j > i) content(data + i, j - i);
        if (j == n) break;
        const char c = data[j];
        if (c == '\r') {
            line_end();
            if (j + 1 < n) {
                i = data[j + 1] == '\n' ? j + 2 : j + 1;
            } else {
                _pending_cr = true;
                i = n;
            }
        } else if (c == '\n') {
            line_end();
            i = j + 1;
        } else {  // relaxed whitespace
            _pending_wsp = true;
            i = j + 1;
        }
    }
}

void body_canonicalizer::finish() noexcept {
    if (_finished) return;
    _finished = true;
    _pending_cr = false;
    if (_line_has_content) put("\r\n", 2);  // a last line without its line end gets one
    _line_has_content = false;
    _pending_wsp = false;
    _empty_lines = 0;
    if (_mode == canon::simple && !_any_output) put("\r\n", 2);  // §3.4.3: an empty body is CRLF
    flush();
}

// --- body_hasher ------------------------------------------------------------------------------

body_hasher::body_hasher(canon mode) noexcept
    : _ctx(EVP_MD_CTX_new()), _canonicalizer(mode, &body_hasher::sink, this) {
    if (_ctx == nullptr || EVP_DigestInit_ex(_ctx, EVP_sha256(), nullptr) != 1) _failed = true;
}

body_hasher::~body_hasher() { EVP_MD_CTX_free(_ctx); }

void body_hasher::sink(void* context, const char* data, std::size_t size) noexcept {
    auto* self = static_cast<body_hasher*>(context);
    if (self->_failed) return;
    if (EVP_DigestUpdate(self->_ctx, data, size) != 1) self->_failed = true;
}

std::optional<sha256_digest> body_hasher::finish() noexcept {
    _canonicalizer.finish();
    if (_failed) return std::nullopt;
    sha256_digest out{};
    unsigned int size = 0;
    if (EVP_DigestFinal_ex(_ctx, out.data(), &size) != 1 || size != out.size()) return std::nullopt;
    _failed = true;  // spent
    return out;
}

// --- body_hash_stream -------------------------------------------------------------------------

void body_hash_stream::update(std::string_view piece) noexcept {
    std::size_t i = 0;
    const std::size_t n = piece.size();
    if (_pending_cr && n > 0) {
        _pending_cr = false;
        if (piece[0] == '\n') i = 1;
    }
    while (!_in_body && i < n) {
        const char c = piece[i++];
        if (!is_line_end(c)) {
            _at_line_start = false;
            continue;
        }
        if (c == '\r') {
            if (i < n) {
                if (piece[i] == '\n') ++i;
            } else {
                _pending_cr = true;
            }
        }
        if (_at_line_start) _in_body = true;  // the empty line that ends the header section
        _at_line_start = true;
    }
    if (_in_body && i < n) _hasher.update(piece.substr(i));
}

// --- reference --------------------------------------------------------------------------------

std::string reference_canonical_body(canon mode, std::string_view body) {
    // Split into lines (CRLF, CR, LF), canonicalize each, then drop trailing empty lines.
    std::vector<std::string> lines;
    std::string line;
    bool open = false;  // a line has begun that has no line end yet
    for (std::size_t i = 0; i < body.size(); ++i) {
        const char c = body[i];
        if (c == '\r' || c == '\n') {
            if (c == '\r' && i + 1 < body.size() && body[i + 1] == '\n') ++i;
            lines.push_back(line);
            line.clear();
            open = false;
        } else {
            line += c;
            open = true;
        }
    }
    if (open) lines.push_back(line);
    if (mode == canon::relaxed) {
        for (std::string& l : lines) {
            std::string r;
            bool space = false;
            for (const char c : l) {
                if (c == ' ' || c == '\t') {
                    space = true;
                    continue;
                }
                if (space) r += ' ';
                space = false;
                r += c;
            }
            l = r;  // trailing whitespace dropped: `space` left pending is never written
        }
    }
    while (!lines.empty() && lines.back().empty()) lines.pop_back();
    std::string out;
    for (const std::string& l : lines) {
        out += l;
        out += "\r\n";
    }
    if (mode == canon::simple && out.empty()) out = "\r\n";
    return out;
}

// --- header fields ----------------------------------------------------------------------------

std::vector<header_field> split_header_fields(std::string_view message, std::size_t* body_offset) {
    std::vector<header_field> fields;
    const std::size_t n = message.size();
    std::size_t i = 0;
    std::size_t field_start = std::string_view::npos;  // the open field's first octet
    std::size_t field_end = 0;                         // end of its last line's content
    auto close_field = [&] {
        if (field_start == std::string_view::npos) return;
        const std::string_view raw = message.substr(field_start, field_end - field_start);
        std::string_view name;
        const std::size_t colon = raw.find(':');
        const std::size_t first_line_end = raw.find_first_of("\r\n");
        if (colon != std::string_view::npos && colon < first_line_end) {
            name = raw.substr(0, colon);
            while (!name.empty() && is_wsp(name.back())) name.remove_suffix(1);
        }
        fields.push_back({name, raw});
        field_start = std::string_view::npos;
    };
    while (i < n) {
        // One line: [i, end) is its content, next is where the following line starts.
        std::size_t end = i;
        while (end < n && !is_line_end(message[end])) ++end;
        std::size_t next = end;
        if (next < n) next += (message[next] == '\r' && next + 1 < n && message[next + 1] == '\n') ? 2 : 1;
        if (end == i) {  // an empty line: the body follows
            if (end < n) {
                close_field();
                if (body_offset != nullptr) *body_offset = next;
                return fields;
            }
            break;
        }
        if (is_wsp(message[i]) && field_start != std::string_view::npos) {
            field_end = end;  // a continuation line
        } else {
            close_field();
            field_start = i;
            field_end = end;
        }
        i = next;
    }
    close_field();
    if (body_offset != nullptr) *body_offset = n;
    return fields;
}

void append_canonical_header(std::string& out, canon mode, std::string_view raw) {
    const std::size_t n = raw.size();
    if (mode == canon::simple) {
        for (std::size_t i = 0; i < n; ++i) {
            const char c = raw[i];
            if (!is_line_end(c)) {
                out += c;
                continue;
            }
            if (c == '\r' && i + 1 < n && raw[i + 1] == '\n') ++i;
            out += "\r\n";
        }
        return;
    }
    // relaxed: the name lower-cased, unfolded, without whitespace before the colon; the value
    // unfolded, whitespace runs as one SP, none at either end.
    const std::size_t colon = raw.find(':');
    const std::size_t name_end = colon == std::string_view::npos ? n : colon;
    bool space = false;
    bool written = false;
    for (std::size_t i = 0; i < name_end; ++i) {
        const char c = raw[i];
        if (is_line_end(c)) continue;
        if (is_wsp(c)) {
            space = true;
            continue;
        }
        if (space && written) out += ' ';
        space = false;
        written = true;
        out += core::ascii_lower(c);
    }
    if (colon == std::string_view::npos) return;
    out += ':';
    space = false;
    written = false;
    for (std::size_t i = colon + 1; i < n; ++i) {
        const char c = raw[i];
        if (is_line_end(c)) continue;  // unfolding removes the line end, keeps the WSP after it
        if (is_wsp(c)) {
            space = true;
            continue;
        }
        if (space && written) out += ' ';
        space = false;
        written = true;
        out += c;
    }
}

std::vector<const header_field*> select_headers(std::span<const header_field> fields,
                                                std::span<const std::string_view> names) {
    std::vector<const header_field*> out;
    out.reserve(names.size());
    for (std::size_t k = 0; k < names.size(); ++k) {
        // This is the (uses+1)-th time the name appears in the list so far.
        std::size_t uses = 0;
        for (std::size_t j = 0; j < k; ++j) uses += core::iequals(names[j], names[k]) ? 1 : 0;
        std::size_t seen = 0;
        for (std::size_t f = fields.size(); f-- > 0;) {
            if (!core::iequals(fields[f].name, names[k])) continue;
            if (seen++ == uses) {
                out.push_back(&fields[f]);
                break;
            }
        }
    }
    return out;
}

}  // namespace ringrelay::protocol::dkim
