// protocol/address.h: parses an SMTP envelope path (RFC 5321 §4.1.2 Path, Reverse-path,
// Forward-path, Mailbox; §4.1.3 address literals; RFC 6531 §3.3 UTF-8 in local part and
// domain) and reports the features relay control must look at.
// SECURITY: `text` comes from the network. Nothing reads past text.size(); on success the
// views contain only octets the grammar allows (no CR, LF, NUL, controls; well-formed UTF-8).
#pragma once
#include <cstddef>
#include <cstdint>
#include <expected>
#include <string_view>

namespace ringrelay::protocol {

inline constexpr std::size_t max_path_length = 256;    // RFC 5321 §4.5.3.1.3, with "<>"
inline constexpr std::size_t max_domain_length = 255;  // RFC 5321 §4.5.3.1.2
inline constexpr std::size_t max_label_length = 63;    // RFC 1035 §2.3.4

enum class path_kind : std::uint8_t {
    reverse_path,  // MAIL FROM: "<>" allowed
    forward_path,  // RCPT TO: "<postmaster>" without a domain allowed
};

enum class address_error : std::uint8_t {
    syntax,    // not a Path
    too_long,  // path, domain or label over its RFC length limit
};

enum class domain_form : std::uint8_t { none, name, ipv4_literal, ipv6_literal };

// Views point into the `text` given to parse_path(); copy what must outlive it.
struct mailbox_path {
    std::string_view mailbox;     // "local@domain": brackets and source route removed;
                                  // empty for "<>"; the local part alone for "<postmaster>"
    std::string_view local_part;  // as written, quotes and escapes included
    std::string_view domain;      // name or literal with brackets; empty for <> and <postmaster>
    domain_form form = domain_form::none;
    bool null_path = false;       // "<>"
    bool postmaster_only = false; // "<postmaster>" (any case), RFC 5321 §4.1.1.3
    bool quoted_local = false;    // local part is a Quoted-string
    bool routing_chars = false;   // local part contains '%', '!' or '@' (sender-specified routing)
    bool source_route = false;    // "<@a,@b:user@dom>": the A-d-l was present (and is stripped)
    bool non_ascii = false;       // octets >= 0x80 in local part or domain (needs SMTPUTF8)
};

// `text` is the path with its angle brackets, as split off by parse_command().
[[nodiscard]] std::expected<mailbox_path, address_error>
parse_path(std::string_view text, path_kind kind) noexcept;

// Whether a forward path names this host's postmaster (RFC 5321 §4.5.1, which a server MUST
// accept): "<postmaster>" without a domain, or an unquoted "postmaster" at `hostname` (both
// compared without regard to case).
[[nodiscard]] bool names_postmaster(const mailbox_path& path, std::string_view hostname) noexcept;

// Length of the well-formed UTF-8 sequence starting at s[i] (which is >= 0x80), or 0 if it is
// not well formed (overlong forms, surrogates and values above U+10FFFF refused, RFC 3629 §4).
[[nodiscard]] std::size_t utf8_sequence_length(std::string_view s, std::size_t i) noexcept;

}  // namespace ringrelay::protocol
