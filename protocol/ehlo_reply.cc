// protocol/ehlo_reply.cc: see ehlo_reply.h.
// SECURITY: next-hop input; only bounds-checked string_view operations.
#include "protocol/ehlo_reply.h"

#include <charconv>
#include <cstddef>
#include <system_error>

#include "core/ascii.h"

namespace ringrelay::protocol {
namespace {

// RFC 4954 §3: a space-separated list of SASL mechanism names.
void parse_auth_mechanisms(std::string_view list, peer_extensions& x) noexcept {
    while (!list.empty()) {
        while (!list.empty() && list.front() == ' ') list.remove_prefix(1);
        const std::size_t end = list.find(' ');
        const std::string_view mech = list.substr(0, end);
        if (core::iequals(mech, "PLAIN")) x.auth_plain = true;
        if (core::iequals(mech, "LOGIN")) x.auth_login = true;
        list.remove_prefix(end == std::string_view::npos ? list.size() : end);
    }
}

// RFC 1870 §4: "SIZE" [SP 1*20DIGIT]; absent, zero or unparsable: no fixed limit.
std::uint64_t parse_size_limit(std::string_view param) noexcept {
    std::uint64_t n = 0;
    const auto res = std::from_chars(param.data(), param.data() + param.size(), n);
    return res.ec == std::errc{} && res.ptr == param.data() + param.size() ? n : 0;
}

void parse_line(std::string_view line, peer_extensions& x) noexcept {
    const std::size_t sp = line.find(' ');
    const std::string_view keyword = line.substr(0, sp);
    if (core::iequals(keyword, "PIPELINING")) {
        x.pipelining = true;
    } else if (core::iequals(keyword, "CHUNKING")) {
        x.chunking = true;
    } else if (core::iequals(keyword, "8BITMIME")) {
        x.eight_bit_mime = true;
    } else if (core::iequals(keyword, "SMTPUTF8")) {
        x.smtputf8 = true;
    } else if (core::iequals(keyword, "ENHANCEDSTATUSCODES")) {
        x.enhanced_status_codes = true;
    } else if (core::iequals(keyword, "STARTTLS")) {
        x.starttls = true;
    } else if (core::iequals(keyword, "AUTH")) {
        if (sp != std::string_view::npos) parse_auth_mechanisms(line.substr(sp), x);
    } else if (keyword.size() > 5 && core::istarts_with(keyword, "AUTH=")) {
        parse_auth_mechanisms(line.substr(5), x);  // the pre-RFC 4954 form: "AUTH=LOGIN PLAIN"
    } else if (core::iequals(keyword, "SIZE")) {
        x.size_declared = true;
        x.size_limit = sp == std::string_view::npos ? 0 : parse_size_limit(line.substr(sp + 1));
    }
}

}  // namespace

peer_extensions parse_ehlo_reply(std::string_view text) noexcept {
    peer_extensions x;
    std::size_t eol = text.find('\n');
    if (eol == std::string_view::npos) return x;  // the server's name only
    text.remove_prefix(eol + 1);
    while (true) {
        eol = text.find('\n');
        parse_line(text.substr(0, eol), x);
        if (eol == std::string_view::npos) break;
        text.remove_prefix(eol + 1);
    }
    return x;
}

}  // namespace ringrelay::protocol
