// protocol/proxy_header.cc: see proxy_header.h. Section numbers are those of HAProxy's
// doc/proxy-protocol.txt (2020/03/05).
#include "protocol/proxy_header.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <algorithm>
#include <array>
#include <cstring>

namespace ringrelay::protocol {
namespace {

constexpr std::string_view v1_prefix = proxy_v1_signature;
// §2.2: "\r\n\r\n\0\r\nQUIT\n".
constexpr std::string_view v2_signature = proxy_v2_signature;
static_assert(v2_signature.size() == 12);

proxy_header fail(std::string why) {
    proxy_header h;
    h.status = proxy_status::error;
    h.error = std::move(why);
    return h;
}

unsigned char byte_at(std::string_view in, std::size_t i) { return static_cast<unsigned char>(in[i]); }

// A decimal port, 0 to 65535, without leading zeros or a sign (§2.1).
bool parse_port(std::string_view text, std::uint16_t& port) {
    if (text.empty() || text.size() > 5 || (text.size() > 1 && text[0] == '0')) return false;
    std::uint32_t v = 0;
    for (const char c : text) {
        if (c < '0' || c > '9') return false;
        v = v * 10 + static_cast<std::uint32_t>(c - '0');
    }
    if (v > 65535) return false;
    port = static_cast<std::uint16_t>(v);
    return true;
}

// A numeric address of `family` and a port as an endpoint.
bool make_endpoint(int family, std::string_view address, std::uint16_t port, core::endpoint& out) {
    char text[INET6_ADDRSTRLEN + 1];
    if (address.empty() || address.size() >= sizeof text) return false;
    std::memcpy(text, address.data(), address.size());
    text[address.size()] = '\0';
    out = core::endpoint{};
    if (family == AF_INET) {
        auto* sa = reinterpret_cast<sockaddr_in*>(&out.storage);
        if (inet_pton(AF_INET, text, &sa->sin_addr) != 1) return false;
        sa->sin_family = AF_INET;
        sa->sin_port = htons(port);
        out.length = sizeof(sockaddr_in);
        return true;
    }
    auto* sa = reinterpret_cast<sockaddr_in6*>(&out.storage);
    if (inet_pton(AF_INET6, text, &sa->sin6_addr) != 1) return false;
    sa->sin6_family = AF_INET6;
    sa->sin6_port = htons(port);
    out.length = sizeof(sockaddr_in6);
    return true;
}

// §2.1: "PROXY TCP4 <src> <dst> <sport> <dport>\r\n", TCP6 alike, or "PROXY UNKNOWN ...\r\n".
proxy_header parse_v1(std::string_view in) {
    const std::size_t lf = in.find('\n');
    if (lf == std::string_view::npos) {
        if (in.size() >= proxy_v1_max_length) return fail("PROXY v1: no CRLF within 107 bytes");
        const std::size_t cr = in.find('\r');
        if (cr != std::string_view::npos && cr + 1 < in.size()) return fail("PROXY v1: CR not followed by LF");
        return {};
    }
    if (lf + 1 > proxy_v1_max_length) return fail("PROXY v1: no CRLF within 107 bytes");
    if (lf == 0 || in[lf - 1] != '\r') return fail("PROXY v1: line not ended by CRLF");
    const std::string_view line = in.substr(v1_prefix.size(), lf - 1 - v1_prefix.size());
    for (const char c : line)
        if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) > 0x7E)
            return fail("PROXY v1: control or non-ASCII byte in the line");
    proxy_header h;
    h.version = 1;
    h.consumed = lf + 1;
    if (line == "UNKNOWN" || line.starts_with("UNKNOWN ")) {  // §2.1: the rest is ignored
        h.status = proxy_status::done;
        return h;
    }
    // Exactly five fields, single spaces.
    std::array<std::string_view, 5> f;
    std::size_t start = 0;
    for (std::size_t k = 0; k < f.size(); ++k) {
        const std::size_t sp = k + 1 < f.size() ? line.find(' ', start) : line.size();
        if (sp == std::string_view::npos) return fail("PROXY v1: expected 5 fields after PROXY");
        f[k] = line.substr(start, sp - start);
        if (f[k].empty()) return fail("PROXY v1: empty field (two spaces in a row)");
        start = sp + 1;
    }
    if (f[4].find(' ') != std::string_view::npos) return fail("PROXY v1: more than 5 fields after PROXY");
    int family = 0;
    if (f[0] == "TCP4") {
        family = AF_INET;
    } else if (f[0] == "TCP6") {
        family = AF_INET6;
    } else {
        return fail("PROXY v1: unknown protocol (TCP4, TCP6 or UNKNOWN)");
    }
    std::uint16_t sport = 0;
    std::uint16_t dport = 0;
    if (!parse_port(f[3], sport) || !parse_port(f[4], dport)) return fail("PROXY v1: bad port");
    if (!make_endpoint(family, f[1], sport, h.source)) return fail("PROXY v1: bad source address");
    if (!make_endpoint(family, f[2], dport, h.destination)) return fail("PROXY v1: bad destination address");
    h.has_addresses = true;
    h.status = proxy_status::done;
    return h;
}

// §2.2: signature, version/command, family/transport, length, addresses, TLVs.
proxy_header parse_v2(std::string_view in) {
    if (in.size() < proxy_v2_prefix_length) return {};
    const unsigned char ver_cmd = byte_at(in, 12);
    if ((ver_cmd >> 4) != 2) return fail("PROXY v2: version is not 2");
    const unsigned command = ver_cmd & 0x0F;
    if (command > 1) return fail("PROXY v2: unknown command (LOCAL or PROXY)");
    const unsigned char fam = byte_at(in, 13);
    const std::size_t length = static_cast<std::size_t>(byte_at(in, 14)) << 8 | byte_at(in, 15);
    const std::size_t total = proxy_v2_prefix_length + length;
    if (total > proxy_v2_max_length) return fail("PROXY v2: header longer than 4096 bytes");
    if (in.size() < total) return {};
    proxy_header h;
    h.version = 2;
    h.consumed = total;
    h.status = proxy_status::done;
    if (command == 0) {  // LOCAL: the balancer's own connection; the body is ignored (§2.2)
        h.local = true;
        return h;
    }
    const unsigned family = fam >> 4;
    const unsigned transport = fam & 0x0F;
    std::size_t address_length = 0;
    switch (family) {
        case 0: address_length = 0; break;    // AF_UNSPEC: the connection's own addresses
        case 1: address_length = 12; break;   // AF_INET: 4 + 4 + 2 + 2
        case 2: address_length = 36; break;   // AF_INET6: 16 + 16 + 2 + 2
        case 3: address_length = 216; break;  // AF_UNIX: 108 + 108, no usable address
        default: return fail("PROXY v2: unknown address family");
    }
    if ((family == 1 || family == 2) && transport != 1) return fail("PROXY v2: not a STREAM (TCP) connection");
    if (length < address_length) return fail("PROXY v2: addresses longer than the header");
    const std::string_view body = in.substr(proxy_v2_prefix_length, length);
    if (family == 1 || family == 2) {
        const std::size_t a = family == 1 ? 4 : 16;
        const auto port_at = [&](std::size_t i) {
            return static_cast<std::uint16_t>(static_cast<unsigned>(byte_at(body, i)) << 8 | byte_at(body, i + 1));
        };
        const int af = family == 1 ? AF_INET : AF_INET6;
        for (int side = 0; side < 2; ++side) {
            core::endpoint& e = side == 0 ? h.source : h.destination;
            const std::uint16_t port = port_at(2 * a + 2 * static_cast<std::size_t>(side));
            e = core::endpoint{};
            if (af == AF_INET) {
                auto* sa = reinterpret_cast<sockaddr_in*>(&e.storage);
                sa->sin_family = AF_INET;
                std::memcpy(&sa->sin_addr, body.data() + side * a, a);
                sa->sin_port = htons(port);
                e.length = sizeof(sockaddr_in);
            } else {
                auto* sa = reinterpret_cast<sockaddr_in6*>(&e.storage);
                sa->sin6_family = AF_INET6;
                std::memcpy(&sa->sin6_addr, body.data() + side * a, a);
                sa->sin6_port = htons(port);
                e.length = sizeof(sockaddr_in6);
            }
        }
        h.has_addresses = true;
    }
    // TLVs (§2.2.7): type, 2-byte length, value; skipped, each within the header.
    for (std::size_t i = address_length; i < length;) {
        if (length - i < 3) return fail("PROXY v2: truncated TLV");
        const std::size_t value = static_cast<std::size_t>(byte_at(body, i + 1)) << 8 | byte_at(body, i + 2);
        if (length - i - 3 < value) return fail("PROXY v2: TLV longer than the header");
        i += 3 + value;
    }
    return h;
}

}  // namespace

proxy_header parse_proxy_header(std::string_view in) {
    if (in.empty()) return {};
    if (in[0] == 'P') {
        const std::size_t n = std::min(in.size(), v1_prefix.size());
        if (in.substr(0, n) != v1_prefix.substr(0, n)) return fail("not a PROXY header");
        if (in.size() < v1_prefix.size()) return {};
        return parse_v1(in);
    }
    const std::size_t n = std::min(in.size(), v2_signature.size());
    if (in.substr(0, n) != v2_signature.substr(0, n)) return fail("not a PROXY header");
    return parse_v2(in);
}

bool starts_with_proxy_signature(std::string_view first_bytes) noexcept {
    return first_bytes.starts_with(proxy_v1_signature) || first_bytes.starts_with(proxy_v2_signature);
}

}  // namespace ringrelay::protocol
