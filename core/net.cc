// core/net.cc: see net.h.
#include "core/net.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/tcp.h>
#include <unistd.h>

#include <charconv>
#include <cstring>

namespace ringrelay::core {

std::uint16_t endpoint::port() const noexcept {
    if (family() == AF_INET) return ntohs(reinterpret_cast<const sockaddr_in*>(&storage)->sin_port);
    if (family() == AF_INET6) return ntohs(reinterpret_cast<const sockaddr_in6*>(&storage)->sin6_port);
    return 0;
}

std::expected<endpoint, std::string> parse_endpoint(std::string_view text) {
    std::string_view host;
    std::string_view port_text;
    if (!text.empty() && text.front() == '[') {
        const auto close = text.find(']');
        if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':')
            return std::unexpected("expected [IPV6]:PORT, got '" + std::string(text) + "'");
        host = text.substr(1, close - 1);
        port_text = text.substr(close + 2);
    } else {
        const auto colon = text.rfind(':');
        if (colon == std::string_view::npos)
            return std::unexpected("expected ADDR:PORT, got '" + std::string(text) + "'");
        host = text.substr(0, colon);
        port_text = text.substr(colon + 1);
    }
    unsigned port = 0;
    const auto [ptr, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
    if (ec != std::errc() || ptr != port_text.data() + port_text.size() || port > 65535 || port_text.empty())
        return std::unexpected("bad port in '" + std::string(text) + "'");
    endpoint e;
    const std::string host_str = host == "localhost" ? std::string("127.0.0.1") : std::string(host);
    auto* v4 = reinterpret_cast<sockaddr_in*>(&e.storage);
    auto* v6 = reinterpret_cast<sockaddr_in6*>(&e.storage);
    if (inet_pton(AF_INET, host_str.c_str(), &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons(static_cast<std::uint16_t>(port));
        e.length = sizeof(sockaddr_in);
        return e;
    }
    e.storage = {};
    if (inet_pton(AF_INET6, host_str.c_str(), &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons(static_cast<std::uint16_t>(port));
        e.length = sizeof(sockaddr_in6);
        return e;
    }
    return std::unexpected("bad address in '" + std::string(text) + "' (numeric IPv4/IPv6 or localhost)");
}

std::string address_text(const sockaddr* sa) noexcept {
    char buf[INET6_ADDRSTRLEN] = {};
    if (sa->sa_family == AF_INET) {
        inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(sa)->sin_addr, buf, sizeof buf);
    } else if (sa->sa_family == AF_INET6) {
        const auto* v6 = reinterpret_cast<const sockaddr_in6*>(sa);
        if (IN6_IS_ADDR_V4MAPPED(&v6->sin6_addr)) {
            inet_ntop(AF_INET, &v6->sin6_addr.s6_addr[12], buf, sizeof buf);
        } else {
            inet_ntop(AF_INET6, &v6->sin6_addr, buf, sizeof buf);
        }
    } else {
        return "unknown";
    }
    return buf;
}

std::string to_string(const endpoint& e) {
    const std::string a = address_text(e.addr());
    if (e.family() == AF_INET6) return "[" + a + "]:" + std::to_string(e.port());
    return a + ":" + std::to_string(e.port());
}

std::expected<int, std::error_code> listen_reuseport(const endpoint& e, int backlog) noexcept {
    const int fd = socket(e.family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return std::unexpected(std::error_code(errno, std::system_category()));
    const int one = 1;
    (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0 ||
        bind(fd, e.addr(), e.length) < 0 || listen(fd, backlog) < 0) {
        const int err = errno;
        close(fd);
        return std::unexpected(std::error_code(err, std::system_category()));
    }
    return fd;
}

std::expected<endpoint, std::error_code> local_endpoint(int fd) noexcept {
    endpoint e;
    e.length = sizeof e.storage;
    if (getsockname(fd, reinterpret_cast<sockaddr*>(&e.storage), &e.length) < 0)
        return std::unexpected(std::error_code(errno, std::system_category()));
    return e;
}

std::expected<cidr, std::string> parse_cidr(std::string_view text) {
    cidr c;
    std::string addr(text);
    int max_prefix = 0;
    const auto slash = text.find('/');
    if (slash != std::string_view::npos) addr = std::string(text.substr(0, slash));
    if (inet_pton(AF_INET, addr.c_str(), c.bytes) == 1) {
        c.family = AF_INET;
        max_prefix = 32;
    } else if (inet_pton(AF_INET6, addr.c_str(), c.bytes) == 1) {
        c.family = AF_INET6;
        max_prefix = 128;
    } else {
        return std::unexpected("bad network '" + std::string(text) + "' (expected ADDR/PREFIX)");
    }
    c.prefix = static_cast<unsigned>(max_prefix);
    if (slash != std::string_view::npos) {
        const std::string_view p = text.substr(slash + 1);
        unsigned prefix = 0;
        const auto [ptr, ec] = std::from_chars(p.data(), p.data() + p.size(), prefix);
        if (p.empty() || ec != std::errc() || ptr != p.data() + p.size() ||
            prefix > static_cast<unsigned>(max_prefix))
            return std::unexpected("bad prefix length in '" + std::string(text) + "'");
        c.prefix = prefix;
    }
    return c;
}

bool cidr::contains(const sockaddr* sa) const noexcept {
    const std::uint8_t* a = nullptr;
    if (sa->sa_family == AF_INET) {
        if (family != AF_INET) return false;
        a = reinterpret_cast<const std::uint8_t*>(&reinterpret_cast<const sockaddr_in*>(sa)->sin_addr);
    } else if (sa->sa_family == AF_INET6) {
        const auto* v6 = reinterpret_cast<const sockaddr_in6*>(sa);
        if (IN6_IS_ADDR_V4MAPPED(&v6->sin6_addr)) {
            if (family != AF_INET) return false;
            a = &v6->sin6_addr.s6_addr[12];
        } else {
            if (family != AF_INET6) return false;
            a = v6->sin6_addr.s6_addr;
        }
    } else {
        return false;
    }
    const unsigned full = prefix / 8;
    if (std::memcmp(a, bytes, full) != 0) return false;
    const unsigned rest = prefix % 8;
    if (rest == 0) return true;
    const auto mask = static_cast<std::uint8_t>(0xFF00u >> rest);
    return (a[full] & mask) == (bytes[full] & mask);
}

}  // namespace ringrelay::core
