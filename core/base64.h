// core/base64.h: base64 (RFC 4648 §4), strict: the decoder refuses whitespace, characters
// outside the alphabet, and non-canonical trailing bits. Padding is required when
// padding::required (SASL, RFC 4954 §4) and absent when padding::none (PHC strings for
// password hashes). Header-only: protocol/ uses it as vocabulary (SASL) and core/ for
// password hashes.
// SECURITY: decode() reads network input (AUTH); it never reads past the view and its output
// is at most 3/4 of the input.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace ringrelay::core {

enum class base64_padding : std::uint8_t { required, none };

inline std::string base64_encode(std::string_view in, base64_padding pad = base64_padding::required) {
    static constexpr char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    std::string out;
    out.reserve((in.size() + 2) / 3 * 4);
    std::size_t i = 0;
    for (; i + 3 <= in.size(); i += 3) {
        const std::uint32_t v = (static_cast<std::uint8_t>(in[i]) << 16) | (static_cast<std::uint8_t>(in[i + 1]) << 8) |
                                static_cast<std::uint8_t>(in[i + 2]);
        out += alphabet[(v >> 18) & 63];
        out += alphabet[(v >> 12) & 63];
        out += alphabet[(v >> 6) & 63];
        out += alphabet[v & 63];
    }
    const std::size_t rest = in.size() - i;
    if (rest != 0) {
        std::uint32_t v = static_cast<std::uint8_t>(in[i]) << 16;
        if (rest == 2) v |= static_cast<std::uint8_t>(in[i + 1]) << 8;
        out += alphabet[(v >> 18) & 63];
        out += alphabet[(v >> 12) & 63];
        if (rest == 2) out += alphabet[(v >> 6) & 63];
        if (pad == base64_padding::required) out.append(rest == 1 ? "==" : "=");
    }
    return out;
}

// The decoded bytes, or nothing if `in` is not canonical base64 with the given padding rule.
inline std::optional<std::string> base64_decode(std::string_view in, base64_padding pad = base64_padding::required) {
    auto value = [](char c) -> int {
        if (c >= 'A' && c <= 'Z') return c - 'A';
        if (c >= 'a' && c <= 'z') return c - 'a' + 26;
        if (c >= '0' && c <= '9') return c - '0' + 52;
        if (c == '+') return 62;
        if (c == '/') return 63;
        return -1;
    };
    std::size_t len = in.size();
    std::size_t padding = 0;
    if (pad == base64_padding::required) {
        if (len % 4 != 0) return std::nullopt;
        while (padding < 2 && len > 0 && in[len - 1] == '=') {
            --len;
            ++padding;
        }
    } else if (len % 4 == 1) {
        return std::nullopt;
    }
    std::string out;
    out.reserve(len / 4 * 3 + 2);
    std::uint32_t acc = 0;
    int bits = 0;
    for (std::size_t i = 0; i < len; ++i) {
        const int v = value(in[i]);
        if (v < 0) return std::nullopt;
        acc = (acc << 6) | static_cast<std::uint32_t>(v);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out += static_cast<char>((acc >> bits) & 0xFF);
        }
    }
    // The unused low bits of the last character must be zero (canonical encoding).
    if (bits > 0 && (acc & ((1u << bits) - 1)) != 0) return std::nullopt;
    if (pad == base64_padding::required && padding != (3 - (len * 6 / 8) % 3) % 3) return std::nullopt;
    return out;
}

}  // namespace ringrelay::core
