// core/net.h: socket addresses, listeners and CIDR networks.
// SECURITY: parse_endpoint and parse_cidr read operator input (flags, config file).
#pragma once
#include <netinet/in.h>
#include <sys/socket.h>

#include <cstdint>
#include <expected>
#include <string>
#include <string_view>
#include <system_error>

namespace ringrelay::core {

struct endpoint {
    sockaddr_storage storage{};
    socklen_t length = 0;
    [[nodiscard]] const sockaddr* addr() const noexcept {
        return reinterpret_cast<const sockaddr*>(&storage);
    }
    [[nodiscard]] int family() const noexcept { return storage.ss_family; }
    [[nodiscard]] std::uint16_t port() const noexcept;
};

// "127.0.0.1:2525", "[::1]:2525", "0.0.0.0:25", "localhost:2525" (numeric hosts and
// "localhost" only: no DNS at start-up).
[[nodiscard]] std::expected<endpoint, std::string> parse_endpoint(std::string_view text);
// "127.0.0.1:2525" / "[::1]:2525".
[[nodiscard]] std::string to_string(const endpoint& e);
// The IP alone: "127.0.0.1" / "::1" (IPv4-mapped IPv6 shown as IPv4).
[[nodiscard]] std::string address_text(const sockaddr* sa) noexcept;

// A non-blocking TCP listener with SO_REUSEADDR and SO_REUSEPORT, so each shard binds its
// own socket to the same endpoint and the kernel spreads connections across them.
[[nodiscard]] std::expected<int, std::error_code> listen_reuseport(const endpoint& e, int backlog) noexcept;
// The endpoint a bound socket actually has (for port 0).
[[nodiscard]] std::expected<endpoint, std::error_code> local_endpoint(int fd) noexcept;

struct cidr {
    int family = AF_INET;
    std::uint8_t bytes[16]{};
    unsigned prefix = 0;
    // True if `sa` lies inside (IPv4-mapped IPv6 addresses match IPv4 networks).
    [[nodiscard]] bool contains(const sockaddr* sa) const noexcept;
};

// "127.0.0.0/8", "::1/128", "10.1.2.3" (a host).
[[nodiscard]] std::expected<cidr, std::string> parse_cidr(std::string_view text);

}  // namespace ringrelay::core
