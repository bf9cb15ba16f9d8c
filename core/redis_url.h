// core/redis_url.h: where the shared limits live (issue 19, "Shared limits in Redis"): the text
// of --redis (JSON "redis") parsed into an address. Two forms:
//   redis://HOST[:PORT][/DB]   HOST an IPv4 address, an IPv6 address in brackets, or a host name
//                              (resolved once at start-up, never on a shard); PORT 1..65535,
//                              default 6379; DB 0..15 (Redis's default `databases 16`), default 0
//   unix:PATH                  an absolute path to Redis's unix socket (database 0)
// No user, password, query or fragment: the relay talks to a Redis it trusts on a private network
// (NOAUTH from a Redis with a password is reported like any other error, and the nodes fall back).
// Pure: no I/O. SECURITY: operator input (argv, the config file), never network input; bounded
// (max_redis_url octets); fuzzed by tests/fuzz/fuzz_redis_url.cc.
#pragma once
#include <cstdint>
#include <expected>
#include <string>
#include <string_view>

namespace ringrelay::core {

inline constexpr std::size_t max_redis_url = 1024;  // octets of the whole text
inline constexpr std::uint16_t default_redis_port = 6379;
inline constexpr unsigned max_redis_db = 15;

struct redis_url {
    enum class kind : std::uint8_t { tcp, unix_socket };
    kind transport = kind::tcp;
    std::string host{};  // tcp: the address or host name, without brackets
    std::uint16_t port = default_redis_port;  // tcp
    unsigned db = 0;   // SELECT db after connecting (tcp only; 0 for unix)
    std::string path{};  // unix_socket: absolute path

    friend bool operator==(const redis_url&, const redis_url&) = default;
};

// Parses the text of --redis. Errors say what is wrong with the text, without the flag's name:
// "expected redis://HOST:PORT/DB or unix:PATH, got 'http://x'".
[[nodiscard]] std::expected<redis_url, std::string> parse_redis_url(std::string_view text);

// The text parse_redis_url() reads back as `u` ("redis://127.0.0.1:6379/0", "unix:/run/redis.sock"),
// for the start-up log.
[[nodiscard]] std::string to_string(const redis_url& u);

}  // namespace ringrelay::core
