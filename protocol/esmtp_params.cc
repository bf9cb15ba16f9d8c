// protocol/esmtp_params.cc: esmtp-param grammar (RFC 5321 §4.1.2) and the semantics of the
// parameters we offer: SIZE (RFC 1870 §3), BODY (RFC 6152 §2), SMTPUTF8 (RFC 6531 §3.4).
// SECURITY: network input; bounds-checked views only.
#include "protocol/esmtp_params.h"

#include <cstddef>

#include "core/ascii.h"

namespace ringrelay::protocol {
namespace {

constexpr bool is_alnum(char c) noexcept {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

struct param {
    std::string_view keyword;
    std::string_view value;
    bool has_value = false;
};

// esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-")
// esmtp-value   = 1*(%d33-60 / %d62-126)   (RFC 6531 adds UTF-8; we accept octets >= 0x80)
std::expected<param, param_failure> split_param(std::string_view token) noexcept {
    param p;
    const std::size_t eq = token.find('=');
    p.keyword = token.substr(0, eq);
    if (p.keyword.empty() || p.keyword.front() == '-') {
        return std::unexpected(param_failure{param_error::bad_syntax, {}});
    }
    for (const char c : p.keyword) {
        if (!is_alnum(c) && c != '-') return std::unexpected(param_failure{param_error::bad_syntax, {}});
    }
    if (eq == std::string_view::npos) return p;
    p.has_value = true;
    p.value = token.substr(eq + 1);
    if (p.value.empty()) return std::unexpected(param_failure{param_error::bad_syntax, p.keyword});
    for (const char c : p.value) {
        const auto u = static_cast<unsigned char>(c);
        if (u < 33 || u == '=' || u == 127) {
            return std::unexpected(param_failure{param_error::bad_syntax, p.keyword});
        }
    }
    return p;
}

// Calls fn(token) for each SP-separated token; stops at the first failure.
template <typename Fn>
std::expected<void, param_failure> for_each_token(std::string_view text, Fn&& fn) {
    std::size_t i = 0;
    while (i < text.size()) {
        if (text[i] == ' ') {
            ++i;
            continue;
        }
        std::size_t j = text.find(' ', i);
        if (j == std::string_view::npos) j = text.size();
        auto r = fn(text.substr(i, j - i));
        if (!r) return r;
        i = j;
    }
    return {};
}

}  // namespace

namespace {
bool is_xtext(std::string_view v) noexcept {
    auto hex = [](char c) { return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'F'); };
    for (std::size_t i = 0; i < v.size(); ++i) {
        const char c = v[i];
        if (c == '+') {
            if (i + 2 >= v.size() || !hex(v[i + 1]) || !hex(v[i + 2])) return false;
            i += 2;
        } else if (c < '!' || c > '~' || c == '=') {
            return false;
        }
    }
    return true;
}
}  // namespace

std::expected<mail_parameters, param_failure> parse_mail_parameters(std::string_view text) noexcept {
    mail_parameters out;
    auto r = for_each_token(text, [&](std::string_view token) -> std::expected<void, param_failure> {
        auto p = split_param(token);
        if (!p) return std::unexpected(p.error());
        const param_failure dup{param_error::bad_syntax, p->keyword};
        if (core::iequals(p->keyword, "SIZE")) {  // RFC 1870 §3: size-value ::= 1*20DIGIT
            if (out.size_declared) return std::unexpected(dup);
            if (!p->has_value || p->value.size() > 20) {
                return std::unexpected(param_failure{param_error::bad_size, p->keyword});
            }
            std::uint64_t v = 0;
            for (const char c : p->value) {
                if (c < '0' || c > '9') return std::unexpected(param_failure{param_error::bad_size, p->keyword});
                const auto d = static_cast<std::uint64_t>(c - '0');
                v = (v > (UINT64_MAX - d) / 10) ? UINT64_MAX : v * 10 + d;
            }
            out.size = v;
            out.size_declared = true;
        } else if (core::iequals(p->keyword, "BODY")) {  // RFC 6152 §2; BINARYMIME not offered
            if (out.body != body_parameter::absent) return std::unexpected(dup);
            if (!p->has_value) return std::unexpected(param_failure{param_error::bad_syntax, p->keyword});
            if (core::iequals(p->value, "7BIT")) {
                out.body = body_parameter::seven_bit;
            } else if (core::iequals(p->value, "8BITMIME")) {
                out.body = body_parameter::eight_bit_mime;
            } else {
                return std::unexpected(param_failure{param_error::unsupported, p->keyword});
            }
        } else if (core::iequals(p->keyword, "SMTPUTF8")) {  // RFC 6531 §3.4: no value
            if (out.smtputf8) return std::unexpected(dup);
            if (p->has_value) return std::unexpected(param_failure{param_error::bad_syntax, p->keyword});
            out.smtputf8 = true;
        } else if (core::iequals(p->keyword, "AUTH")) {  // RFC 4954 §5: AUTH=xtext or AUTH=<>
            if (out.auth_declared) return std::unexpected(dup);
            // RFC 4954 §5: "<>" or an xtext mailbox (RFC 3461 §4: '!'..'~' except '+' and
            // '=', or '+' and two upper-case hex digits).
            if (!p->has_value || p->value.empty() || !(p->value == "<>" || is_xtext(p->value)))
                return std::unexpected(param_failure{param_error::bad_syntax, p->keyword});
            out.auth_declared = true;
        } else {
            return std::unexpected(param_failure{param_error::unsupported, p->keyword});
        }
        return {};
    });
    if (!r) return std::unexpected(r.error());
    return out;
}

std::expected<void, param_failure> parse_rcpt_parameters(std::string_view text) noexcept {
    return for_each_token(text, [](std::string_view token) -> std::expected<void, param_failure> {
        auto p = split_param(token);
        if (!p) return std::unexpected(p.error());
        return std::unexpected(param_failure{param_error::unsupported, p->keyword});
    });
}

}  // namespace ringrelay::protocol
