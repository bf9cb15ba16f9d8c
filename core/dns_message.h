// core/dns_message.h: reads the DNS answers the resolver needs (MX, A, AAAA) out of a raw
// response (RFC 1035 §4.1), with their TTLs, following the CNAME chain from the query name
// (RFC 1034 §3.6.2) and taking the negative-caching TTL from the SOA in the authority
// section (RFC 2308 §5). Pure: no I/O; used by core/dns.cc on what c-ares hands back.
// Host names are checked against the LDH rule (RFC 1123 §2.1, RFC 5321 §2.3.5) by
// valid_host_name() before anything connects to them.
// SECURITY: `message` comes from the network. Every length, count and compression pointer is
// checked against the message; pointers must point backwards and a name may follow at most
// max_name_hops of them; at most max_answer_records records are looked at.
#pragma once
#include <cstdint>
#include <expected>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace ringrelay::core {

inline constexpr std::size_t max_dns_name = 253;         // text form, no trailing dot (RFC 1035 §2.3.4)
inline constexpr std::size_t max_dns_label = 63;         // RFC 1035 §2.3.4
inline constexpr std::size_t max_name_hops = 32;         // compression pointers followed per name
inline constexpr std::size_t max_answer_records = 128;   // answer + authority records read
inline constexpr std::size_t max_cname_chain = 8;

enum class dns_type : std::uint16_t { a = 1, cname = 5, soa = 6, mx = 15, aaaa = 28 };

enum class dns_message_error : std::uint8_t {
    truncated,      // a header, name or record runs past the end
    bad_name,       // forward/looping compression pointer, label type 01/10, name too long
    not_a_response, // QR bit clear
    bad_rdata,      // A not 4 bytes, AAAA not 16, MX shorter than 3, name past its RDATA
};

struct dns_mx_record {
    std::uint16_t preference = 0;
    std::string exchange;  // presentation form, lower case, no trailing dot; "" is the root (RFC 7505)
    std::uint32_t ttl = 0;
};

struct dns_address_record {
    int family = 0;               // AF_INET or AF_INET6
    std::uint8_t bytes[16] = {};  // 4 or 16 used, network order
    std::uint32_t ttl = 0;
};

struct dns_answer {
    std::uint8_t rcode = 0;  // RFC 1035 §4.1.1: 0 NOERROR, 2 SERVFAIL, 3 NXDOMAIN, 5 REFUSED
    // Records of the asked type owned by the end of the CNAME chain, in message order.
    std::vector<dns_mx_record> mx;
    std::vector<dns_address_record> addresses;
    // The smallest TTL among those records and the CNAMEs leading to them.
    std::uint32_t ttl = 0;
    // min(SOA TTL, SOA MINIMUM) when the authority section has an SOA (RFC 2308 §5).
    std::optional<std::uint32_t> negative_ttl;
};

// Parses a response to a query for (`qname`, `qtype`); `qname` in any case, with or without
// the trailing dot. Records of other types or owners are skipped. TTLs with the top bit set
// count as 0 (RFC 2181 §8).
[[nodiscard]] std::expected<dns_answer, dns_message_error>
parse_dns_answer(std::span<const std::uint8_t> message, std::string_view qname, dns_type qtype);

// Lower case, without one trailing dot: how names are compared and used as cache keys.
[[nodiscard]] std::string normalize_dns_name(std::string_view name);

// True for a host name an MTA may connect to: dot-separated labels of 1..63 letters, digits
// and hyphens, not starting or ending with a hyphen, at most 253 characters; one trailing dot
// allowed. Rejects everything else (underscores, escapes, spaces, empty labels, "").
[[nodiscard]] bool valid_host_name(std::string_view name) noexcept;

}  // namespace ringrelay::core
