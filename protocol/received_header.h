// protocol/received_header.h: builds the Received: trace header the relay prepends to each
// message (RFC 5321 §4.4 Time-stamp-line; protocol names from RFC 3848 and RFC 6531 §3.7.3),
// and prints queue ids.
// SECURITY: `helo` comes from the network (validated by parse_command(): no CR, LF or
// controls); every field is still filtered here so that nothing can end the header early.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>

namespace ringrelay::protocol {

inline constexpr std::size_t queue_id_length = 16;

struct received_fields {
    std::string_view helo;            // EHLO/HELO argument
    std::string_view client_address;  // peer IP as text
    std::string_view hostname;        // ours
    std::string_view protocol;        // "ESMTP", "ESMTPS", "SMTP", "UTF8SMTP" or "UTF8SMTPS"
    std::string_view tls;             // "TLSv1.3 with cipher ... (256/256 bits)"; empty without TLS
    std::uint64_t queue_id = 0;
    std::string_view recipient;       // empty unless exactly one recipient
    std::string_view date;            // RFC 5322 date-time
};

// Appends
//   Received: from <helo> (<client address>)\r\n
//   \t(using <tls>)\r\n                           (only under TLS, as Postfix writes it)
//   \tby <hostname> (ringrelay) with <protocol> id <ID>\r\n
//   \tfor <rcpt>; <date>\r\n                      (or "...id <ID>; <date>\r\n" without rcpt)
// Octets below 0x20 and DEL in any field are written as '?'.
void append_received_header(std::string& out, const received_fields& fields);

// Writes the 16 upper-case hex digits of `id` to `out` (which has room for 16 chars).
void write_queue_id(std::uint64_t id, char* out) noexcept;

}  // namespace ringrelay::protocol
