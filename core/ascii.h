// core/ascii.h: ASCII text helpers shared by protocol/, queue/ and the tools: case-insensitive
// equality, prefix and suffix tests, and a decimal append. SMTP keywords, verbs, domain names
// and header field names compare case-insensitively in ASCII only (RFC 5321 §2.4, RFC 5322
// §1.2.2): octets outside 'A'..'Z' / 'a'..'z' (digits, punctuation, UTF-8) compare exactly,
// whatever the C locale says (std::tolower would consult it). Header-only, allocation-free
// except append_decimal's growth of `out`: protocol/ uses it as vocabulary (core_headers_dep).
// Threading: pure functions, any thread.
#pragma once
#include <charconv>
#include <cstdint>
#include <string>
#include <string_view>

namespace ringrelay::core {

[[nodiscard]] constexpr char ascii_lower(char c) noexcept {
    return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
}

[[nodiscard]] constexpr char ascii_upper(char c) noexcept {
    return (c >= 'a' && c <= 'z') ? static_cast<char>(c - 'a' + 'A') : c;
}

// a == b ignoring ASCII case ("Received" == "RECEIVED"; "ü" != "Ü").
[[nodiscard]] constexpr bool iequals(std::string_view a, std::string_view b) noexcept {
    if (a.size() != b.size()) return false;
    for (std::size_t i = 0; i < a.size(); ++i) {
        if (ascii_lower(a[i]) != ascii_lower(b[i])) return false;
    }
    return true;
}

// A copy of s with ASCII letters lower-cased ("Alice@Example.ORG" -> "alice@example.org").
[[nodiscard]] inline std::string ascii_lowered(std::string_view s) {
    std::string out(s);
    for (char& c : out) c = ascii_lower(c);
    return out;
}

// s starts with prefix, ignoring ASCII case.
[[nodiscard]] constexpr bool istarts_with(std::string_view s, std::string_view prefix) noexcept {
    return s.size() >= prefix.size() && iequals(s.substr(0, prefix.size()), prefix);
}

// s ends with suffix, ignoring ASCII case.
[[nodiscard]] constexpr bool iends_with(std::string_view s, std::string_view suffix) noexcept {
    return s.size() >= suffix.size() && iequals(s.substr(s.size() - suffix.size()), suffix);
}

// Appends n in decimal, without sign or leading zeros ("0" for zero).
inline void append_decimal(std::string& out, std::uint64_t n) {
    char buf[20];  // 18446744073709551615: 20 digits
    const auto r = std::to_chars(buf, buf + sizeof buf, n);
    out.append(buf, r.ptr);
}

}  // namespace ringrelay::core
