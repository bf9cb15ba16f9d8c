// protocol/address.cc: RFC 5321 §4.1.2 / §4.1.3 path grammar with the RFC 6531 §3.3 UTF-8
// extension. A recursive-descent parser over a string_view: no allocation.
// SECURITY: network input; every read is bounds-checked against the view.
#include "protocol/address.h"

#include "core/ascii.h"

namespace ringrelay::protocol {
namespace {

constexpr bool is_alpha(char c) noexcept { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
constexpr bool is_digit(char c) noexcept { return c >= '0' && c <= '9'; }
constexpr bool is_hex(char c) noexcept {
    return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}
constexpr bool is_high(char c) noexcept { return static_cast<unsigned char>(c) >= 0x80; }

// RFC 5322 §3.2.3 atext.
constexpr bool is_atext(char c) noexcept {
    if (is_alpha(c) || is_digit(c)) return true;
    switch (c) {
    case '!': case '#': case '$': case '%': case '&': case '\'': case '*': case '+': case '-':
    case '/': case '=': case '?': case '^': case '_': case '`': case '{': case '|': case '}':
    case '~':
        return true;
    default:
        return false;
    }
}

class path_parser {
public:
    explicit path_parser(std::string_view s) noexcept : _s(s) {}

    [[nodiscard]] bool at_end() const noexcept { return _i >= _s.size(); }
    [[nodiscard]] char peek() const noexcept { return at_end() ? '\0' : _s[_i]; }
    [[nodiscard]] std::size_t pos() const noexcept { return _i; }
    [[nodiscard]] bool non_ascii() const noexcept { return _non_ascii; }
    [[nodiscard]] bool too_long() const noexcept { return _too_long; }
    bool take(char c) noexcept {
        if (peek() != c || at_end()) return false;
        ++_i;
        return true;
    }

    // One UTF-8 sequence at _i (octet >= 0x80); false if malformed.
    bool take_utf8() noexcept {
        const std::size_t n = utf8_sequence_length(_s, _i);
        if (n == 0) return false;
        _i += n;
        _non_ascii = true;
        return true;
    }

    // RFC 5321 Domain: sub-domain *("." sub-domain); sub-domain = Let-dig [Ldh-str],
    // U-labels allowed (RFC 6531).
    bool domain() noexcept {
        const std::size_t start = _i;
        for (;;) {
            const std::size_t label_start = _i;
            bool last_was_hyphen = false;
            while (!at_end()) {
                const char c = _s[_i];
                if (is_alpha(c) || is_digit(c)) {
                    ++_i;
                    last_was_hyphen = false;
                } else if (c == '-' && _i != label_start) {
                    ++_i;
                    last_was_hyphen = true;
                } else if (is_high(c)) {
                    if (!take_utf8()) return false;
                    last_was_hyphen = false;
                } else {
                    break;
                }
            }
            if (_i == label_start || last_was_hyphen) return false;
            if (_i - label_start > max_label_length) _too_long = true;
            if (!take('.')) break;
        }
        if (_i - start > max_domain_length) _too_long = true;
        return true;
    }

    // RFC 5321 Snum: 1*3DIGIT, value 0..255.
    bool snum() noexcept {
        unsigned value = 0;
        std::size_t digits = 0;
        while (!at_end() && is_digit(_s[_i]) && digits < 3) {
            value = value * 10 + static_cast<unsigned>(_s[_i] - '0');
            ++_i;
            ++digits;
        }
        return digits > 0 && value <= 255 && !(!at_end() && is_digit(_s[_i]));
    }

    bool ipv4() noexcept {
        for (int k = 0; k < 4; ++k) {
            if (k > 0 && !take('.')) return false;
            if (!snum()) return false;
        }
        return true;
    }

    // RFC 5321 §4.1.3 IPv6-addr: full, compressed ("::" stands for at least one group, at most
    // 6 groups written besides it), or either with a trailing IPv4 (two groups). Ends at ']'.
    bool ipv6() noexcept {
        std::size_t groups = 0;
        bool compressed = false;
        if (take(':')) {
            if (!take(':')) return false;
            compressed = true;
        }
        while (peek() != ']' && !at_end()) {
            // A trailing IPv4 part: digits followed by '.' before any ':'.
            std::size_t j = _i;
            while (j < _s.size() && is_hex(_s[j])) ++j;
            if (j < _s.size() && _s[j] == '.') {
                if (!ipv4()) return false;
                groups += 2;
                break;
            }
            const std::size_t n = j - _i;
            if (n == 0 || n > 4) return false;
            _i = j;
            ++groups;
            if (peek() == ']') break;
            if (!take(':')) return false;
            if (take(':')) {
                if (compressed) return false;
                compressed = true;
            } else if (peek() == ']') {
                return false;  // a single trailing ':'
            }
        }
        return compressed ? groups <= 6 : groups == 8;
    }

    // "[" ( IPv4-address-literal / IPv6-address-literal ) "]". General-address-literal
    // (RFC 5321 §4.1.3) is refused: nothing could route it.
    bool address_literal(domain_form& form) noexcept {
        if (!take('[')) return false;
        if (core::istarts_with(_s.substr(_i), "IPv6:")) {
            _i += 5;
            if (!ipv6()) return false;
            form = domain_form::ipv6_literal;
        } else {
            if (!ipv4()) return false;
            form = domain_form::ipv4_literal;
        }
        return take(']');
    }

    // Local-part = Dot-string / Quoted-string. Sets quoted and routing_chars.
    bool local_part(bool& quoted, bool& routing) noexcept {
        if (take('"')) {
            quoted = true;
            for (;;) {
                if (at_end()) return false;
                const char c = _s[_i];
                if (c == '"') {
                    ++_i;
                    return true;
                }
                if (c == '\\') {  // quoted-pairSMTP = %d92 %d32-126
                    ++_i;
                    if (at_end()) return false;
                    const char e = _s[_i];
                    if (e < 32 || e > 126) return false;
                    routing = routing || e == '%' || e == '!' || e == '@';
                    ++_i;
                } else if (is_high(c)) {
                    if (!take_utf8()) return false;
                } else if (c >= 32 && c <= 126) {  // qtextSMTP: 32-33, 35-91, 93-126
                    routing = routing || c == '%' || c == '!' || c == '@';
                    ++_i;
                } else {
                    return false;
                }
            }
        }
        // Dot-string = Atom *("." Atom)
        for (;;) {
            const std::size_t atom_start = _i;
            while (!at_end()) {
                const char c = _s[_i];
                if (is_atext(c)) {
                    routing = routing || c == '%' || c == '!';
                    ++_i;
                } else if (is_high(c)) {
                    if (!take_utf8()) return false;
                } else {
                    break;
                }
            }
            if (_i == atom_start) return false;
            if (!take('.')) return true;
        }
    }

private:
    std::string_view _s;
    std::size_t _i = 0;
    bool _non_ascii = false;
    bool _too_long = false;
};

}  // namespace

std::size_t utf8_sequence_length(std::string_view s, std::size_t i) noexcept {
    if (i >= s.size()) return 0;
    const auto b0 = static_cast<unsigned char>(s[i]);
    std::size_t n = 0;
    unsigned char lo = 0x80;
    unsigned char hi = 0xbf;
    if (b0 >= 0xc2 && b0 <= 0xdf) {
        n = 2;
    } else if (b0 >= 0xe0 && b0 <= 0xef) {
        n = 3;
        if (b0 == 0xe0) lo = 0xa0;         // no overlong
        if (b0 == 0xed) hi = 0x9f;         // no surrogates
    } else if (b0 >= 0xf0 && b0 <= 0xf4) {
        n = 4;
        if (b0 == 0xf0) lo = 0x90;         // no overlong
        if (b0 == 0xf4) hi = 0x8f;         // <= U+10FFFF
    } else {
        return 0;
    }
    if (s.size() - i < n) return 0;
    const auto b1 = static_cast<unsigned char>(s[i + 1]);
    if (b1 < lo || b1 > hi) return 0;
    for (std::size_t k = 2; k < n; ++k) {
        const auto b = static_cast<unsigned char>(s[i + k]);
        if (b < 0x80 || b > 0xbf) return 0;
    }
    return n;
}

std::expected<mailbox_path, address_error> parse_path(std::string_view text, path_kind kind) noexcept {
    if (text.size() < 2 || text.front() != '<' || text.back() != '>') {
        return std::unexpected(address_error::syntax);
    }
    if (text.size() > max_path_length) return std::unexpected(address_error::too_long);
    const std::string_view inner = text.substr(1, text.size() - 2);
    mailbox_path out;
    if (inner.empty()) {
        if (kind != path_kind::reverse_path) return std::unexpected(address_error::syntax);
        out.null_path = true;
        return out;
    }
    path_parser p(inner);
    // A-d-l = At-domain *( "," At-domain ) ":"  (RFC 5321 §4.1.2; ignored per §3.6.1 / C)
    if (p.take('@')) {
        out.source_route = true;
        for (;;) {
            if (!p.domain()) return std::unexpected(address_error::syntax);
            if (!p.take(',')) break;
            if (!p.take('@')) return std::unexpected(address_error::syntax);
        }
        if (!p.take(':')) return std::unexpected(address_error::syntax);
    }
    const std::size_t mailbox_start = p.pos();
    if (!p.local_part(out.quoted_local, out.routing_chars)) return std::unexpected(address_error::syntax);
    out.local_part = inner.substr(mailbox_start, p.pos() - mailbox_start);
    if (p.at_end()) {
        // "<postmaster>": RFC 5321 §4.1.1.3, forward path only, no source route.
        if (kind == path_kind::forward_path && !out.source_route && !out.quoted_local &&
            core::iequals(out.local_part, "postmaster")) {
            out.postmaster_only = true;
            out.mailbox = out.local_part;
            return out;
        }
        return std::unexpected(address_error::syntax);
    }
    if (!p.take('@')) return std::unexpected(address_error::syntax);
    const std::size_t domain_start = p.pos();
    if (p.peek() == '[') {
        if (!p.address_literal(out.form)) return std::unexpected(address_error::syntax);
    } else {
        if (!p.domain()) return std::unexpected(address_error::syntax);
        out.form = domain_form::name;
    }
    if (!p.at_end()) return std::unexpected(address_error::syntax);
    if (p.too_long()) return std::unexpected(address_error::too_long);
    out.domain = inner.substr(domain_start);
    out.mailbox = inner.substr(mailbox_start);
    out.non_ascii = p.non_ascii() && [&] {
        // Octets >= 0x80 only in the stripped route do not make the mailbox non-ASCII.
        for (const char c : out.mailbox) {
            if (static_cast<unsigned char>(c) >= 0x80) return true;
        }
        return false;
    }();
    return out;
}

bool names_postmaster(const mailbox_path& path, std::string_view hostname) noexcept {
    if (path.postmaster_only) return true;
    return !path.quoted_local && path.form == domain_form::name && core::iequals(path.local_part, "postmaster") &&
           !hostname.empty() && core::iequals(path.domain, hostname);
}

}  // namespace ringrelay::protocol
