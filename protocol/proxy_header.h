// protocol/proxy_header.h: the PROXY protocol header a load balancer sends before the client's
// first byte (HAProxy's "The PROXY protocol", versions 1 and 2; `send-proxy`, `send-proxy-v2`),
// which carries the real client's address (issue 19).
//
// Written here, not taken from a library: no maintained C or C++ parser of it is packaged for
// Debian 12 (HAProxy's own is inside HAProxy). The format is small and fixed: version 1 is one
// text line of at most 107 bytes, version 2 a 16-byte binary prefix and a length-counted body.
//
// parse_proxy_header() looks at everything received so far, from the connection's first byte,
// and is called again as more arrives (byte by byte or in one piece give the same answer):
//   - need_more: a valid header may still follow; nothing is consumed;
//   - done: the header is `consumed` bytes long; what follows is the client's (SMTP) data;
//   - error: not a PROXY header, or a malformed one (`error` says why, for the log); the
//     caller closes the connection. A prefix that cannot start a header is an error at once,
//     so a client that talks SMTP first is told off without waiting for the deadline.
// Addresses: a version 1 TCP4/TCP6 line and a version 2 PROXY command over TCP (INET/INET6,
// STREAM) carry the client's (source) and the balancer's (destination) endpoints. A version 1
// UNKNOWN line, and a version 2 PROXY command with an unspecified or UNIX family, carry none
// (`has_addresses` false: the caller keeps the connection's own addresses, as the
// specification says). A version 2 LOCAL command is the balancer's own connection (a health
// check): `local` true, no addresses. Version 2 TLVs are skipped, each checked to lie within
// the header.
//
// SECURITY: every byte comes from the network. Pure function; no allocation except `error`.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "core/net.h"

namespace ringrelay::protocol {

enum class proxy_status : std::uint8_t { need_more, done, error };

struct proxy_header {
    proxy_status status = proxy_status::need_more;
    std::size_t consumed = 0;   // done: the header's length
    int version = 0;            // done: 1 or 2
    bool local = false;         // done: a version 2 LOCAL command (health check)
    bool has_addresses = false; // done: source and destination are set
    core::endpoint source;      // the client, as the balancer saw it
    core::endpoint destination; // the address the client connected to (the balancer's)
    std::string error;          // error: why, for the log
};

// Version 1's longest line (the specification's limit, CRLF included).
inline constexpr std::size_t proxy_v1_max_length = 107;
// Version 2's 12-byte signature + version/command + family + 2-byte length.
inline constexpr std::size_t proxy_v2_prefix_length = 16;
// The longest version 2 header accepted (its body may say up to 65,535 bytes; HAProxy's,
// with TLVs, stay within a few hundred): a longer one is an error, so a connection never
// buffers more than this before its first SMTP byte.
inline constexpr std::size_t proxy_v2_max_length = 4096;

[[nodiscard]] proxy_header parse_proxy_header(std::string_view in);

// What each version's header starts with: v1's "PROXY " and v2's 12-byte signature (§2.2).
inline constexpr std::string_view proxy_v1_signature = "PROXY ";
inline constexpr std::string_view proxy_v2_signature{"\r\n\r\n\0\r\nQUIT\n", 12};

// Whether `first_bytes` (a connection's first bytes, not read as a PROXY header) begin with
// either version's signature: a PROXY header sent where none is accepted.
[[nodiscard]] bool starts_with_proxy_signature(std::string_view first_bytes) noexcept;

}  // namespace ringrelay::protocol
