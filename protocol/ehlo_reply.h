// protocol/ehlo_reply.h: what a positive EHLO reply offers (RFC 5321 §4.1.1.1, §4.1.4): the
// service extensions the SMTP client may use. RFC 2920 PIPELINING, RFC 3030 CHUNKING, RFC 6152
// 8BITMIME, RFC 6531 SMTPUTF8, RFC 2034 ENHANCEDSTATUSCODES, RFC 3207 STARTTLS, RFC 4954 AUTH
// (the PLAIN and LOGIN mechanisms), RFC 1870 SIZE.
//
// Input: the reply's text as reply_parser gives it (parsed_reply::text): every line after its
// "250-" / "250 ", lines joined by LF. The first line is the server's name and greeting and is
// skipped; each further line is "keyword [SP params]", the keyword being everything before the
// first SP, compared without regard to ASCII case. Unknown keywords are ignored, as are lines
// that start with SP. Repeated lines add up (two AUTH lines offer the union of their
// mechanisms), except SIZE, whose last line counts.
// - AUTH: "AUTH" SP mechanism list (RFC 4954 §3), or the pre-standard "AUTH=" form some old
//   servers still send ("AUTH=LOGIN PLAIN"); mechanisms are separated by one or more SP.
// - SIZE: "SIZE" [SP 1*20DIGIT] (RFC 1870 §4). The parameter must be all digits and fit 64
//   bits to be a limit; absent, zero, or anything else (a sign, a trailing SP, overflow) means
//   the peer declares SIZE but no fixed limit (size_limit 0).
//
// SECURITY: the text comes from the next hop. Only views into it are read, each index checked
// against its size; nothing is allocated and the result is a fixed-size struct, so no reply
// (reply_parser bounds it to 128 lines of 512 octets, but any length is safe) can make it grow.
// Threading: a pure function, called on the shard of the client session.
#pragma once
#include <cstdint>
#include <string_view>

namespace ringrelay::protocol {

// Everything the peer's EHLO reply offered (RFC 5321 §4.1.1.1); all false after HELO.
struct peer_extensions {
    bool pipelining = false;             // RFC 2920
    bool chunking = false;               // RFC 3030
    bool eight_bit_mime = false;         // RFC 6152
    bool smtputf8 = false;               // RFC 6531
    bool enhanced_status_codes = false;  // RFC 2034
    bool starttls = false;               // RFC 3207
    bool auth_plain = false;             // RFC 4954 "AUTH ... PLAIN ..." (RFC 4616)
    bool auth_login = false;             // "AUTH ... LOGIN ..." (draft-murchison-sasl-login)
    bool size_declared = false;          // RFC 1870
    std::uint64_t size_limit = 0;        // SIZE's value; 0 = no fixed limit

    friend bool operator==(const peer_extensions&, const peer_extensions&) = default;
};

// The extensions listed in a positive EHLO reply's text (see above). Text without a second
// line offers nothing.
[[nodiscard]] peer_extensions parse_ehlo_reply(std::string_view text) noexcept;

}  // namespace ringrelay::protocol
