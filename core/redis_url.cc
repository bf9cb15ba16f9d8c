// core/redis_url.cc: see redis_url.h.
#include "core/redis_url.h"

#include <arpa/inet.h>
#include <sys/un.h>

#include <charconv>

namespace ringrelay::core {
namespace {

constexpr std::string_view tcp_scheme = "redis://";
constexpr std::string_view unix_scheme = "unix:";

std::string quoted(std::string_view text) {
    std::string out = "'";
    for (char ch : text.substr(0, 200)) {
        const auto c = static_cast<unsigned char>(ch);
        out += (c < 0x20 || c >= 0x7f) ? '?' : ch;
    }
    if (text.size() > 200) out += "...";
    return out + "'";
}

// Letters, digits, '-' and '.', labels of 1..63 octets, 1..253 in all (an IPv4 address is one).
bool valid_host(std::string_view h) {
    if (h.empty() || h.size() > 253) return false;
    std::size_t label = 0;
    for (char ch : h) {
        if (ch == '.') {
            if (label == 0) return false;
            label = 0;
            continue;
        }
        const bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '-';
        if (!ok || ++label > 63) return false;
    }
    return label != 0;
}

template <typename T>
bool parse_number(std::string_view text, T& out, T max) {
    if (text.empty() || text.size() > 5) return false;
    unsigned v = 0;
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
    if (ec != std::errc{} || end != text.data() + text.size() || v > max) return false;
    out = static_cast<T>(v);
    return true;
}

}  // namespace

std::expected<redis_url, std::string> parse_redis_url(std::string_view text) {
    const std::string usage = "expected redis://HOST:PORT/DB or unix:PATH, got " + quoted(text);
    if (text.size() > max_redis_url) return std::unexpected("longer than 1024 octets");
    redis_url u;
    if (text.starts_with(unix_scheme)) {
        const std::string_view path = text.substr(unix_scheme.size());
        if (path.empty() || path.front() != '/') return std::unexpected("unix:PATH needs an absolute path, got " + quoted(text));
        if (path.size() >= sizeof(sockaddr_un{}.sun_path))
            return std::unexpected("unix socket path longer than 107 octets: " + quoted(text));
        if (path.find('\0') != std::string_view::npos) return std::unexpected(usage);
        u.transport = redis_url::kind::unix_socket;
        u.path = std::string(path);
        return u;
    }
    if (!text.starts_with(tcp_scheme)) return std::unexpected(usage);
    std::string_view rest = text.substr(tcp_scheme.size());
    if (rest.find_first_of("@?#") != std::string_view::npos)
        return std::unexpected("no user, password, query or fragment is taken: " + quoted(text));
    std::string_view authority = rest.substr(0, rest.find('/'));
    const std::string_view db = authority.size() < rest.size() ? rest.substr(authority.size() + 1) : std::string_view{};
    std::string_view port;
    if (authority.starts_with('[')) {
        const auto close = authority.find(']');
        if (close == std::string_view::npos) return std::unexpected("missing ] in " + quoted(text));
        u.host = std::string(authority.substr(1, close - 1));
        in6_addr a6{};
        if (inet_pton(AF_INET6, u.host.c_str(), &a6) != 1) return std::unexpected("bad IPv6 address in " + quoted(text));
        const std::string_view after = authority.substr(close + 1);
        if (!after.empty()) {
            if (after.front() != ':') return std::unexpected(usage);
            port = after.substr(1);
            if (port.empty()) return std::unexpected("empty port in " + quoted(text));
        }
    } else {
        const auto colon = authority.find(':');
        const std::string_view host = authority.substr(0, colon);
        if (!valid_host(host)) return std::unexpected("bad host in " + quoted(text));
        u.host = std::string(host);
        if (colon != std::string_view::npos) {
            port = authority.substr(colon + 1);
            if (port.empty()) return std::unexpected("empty port in " + quoted(text));
        }
    }
    if (!port.empty() && (!parse_number<std::uint16_t>(port, u.port, 65535) || u.port == 0))
        return std::unexpected("port must be 1..65535 in " + quoted(text));
    if (authority.size() < rest.size() && !db.empty() && !parse_number<unsigned>(db, u.db, max_redis_db))
        return std::unexpected("database must be 0..15 in " + quoted(text));
    return u;
}

std::string to_string(const redis_url& u) {
    if (u.transport == redis_url::kind::unix_socket) return "unix:" + u.path;
    const bool v6 = u.host.find(':') != std::string::npos;
    return std::string(tcp_scheme) + (v6 ? "[" + u.host + "]" : u.host) + ":" + std::to_string(u.port) + "/" +
           std::to_string(u.db);
}

}  // namespace ringrelay::core
