// protocol/command_parser.h: parses one SMTP command line (RFC 5321 §4.1, §4.1.1; BDAT from
// RFC 3030 §2). Pure: no I/O, no allocation; the session maps a parse_failure to a reply.
// SECURITY: `line` comes from the network. Nothing reads past line.size(); every view in the
// result points into `line` and contains no CR, LF or other control character.
#pragma once
#include <cstddef>
#include <cstdint>
#include <expected>
#include <string_view>

namespace ringrelay::protocol {

inline constexpr std::size_t max_command_line = 512;  // RFC 5321 §4.5.3.1.4, with CRLF

enum class command_verb : std::uint8_t {
    helo, ehlo, mail, rcpt, data, bdat, rset, noop, quit, vrfy, help, starttls, auth, unknown };

enum class parse_error : std::uint8_t {
    line_too_long,          // 500 5.5.2
    bare_newline,           // 500 5.5.2; only CRLF ends a line (RFC 5321 §2.3.8)
    bare_carriage_return,   // 500 5.5.2; a CR not followed by LF inside the line
    unknown_verb,           // 500 5.5.2
    bad_arguments,          // 501 5.5.4; the verb is known, its arguments are not
};

enum class bdat_end : std::uint8_t { more, last };

// Views point into the `line` given to parse_command(); copy what must outlive it.
struct command {
    command_verb verb = command_verb::unknown;
    // MAIL/RCPT: the path with its angle brackets, "<a@example.org>" (not yet validated, see
    // protocol/address.h); HELO/EHLO: the domain; VRFY/NOOP/HELP/AUTH: the rest of the line.
    std::string_view argument;
    std::string_view parameters;  // MAIL/RCPT ESMTP parameters, unparsed; empty if none
    std::uint64_t chunk_size = 0;  // BDAT only
    bdat_end chunk_end = bdat_end::more;  // BDAT only
};

struct parse_failure {
    parse_error reason;
    command_verb verb;  // set even when the arguments are bad: picks 501 over 500
};

// `line` is one command line including its terminating LF (CRLF expected); a line without
// any LF is parsed as if it ended in CRLF. Verbs are case-insensitive.
[[nodiscard]] std::expected<command, parse_failure>
parse_command(std::string_view line) noexcept;

}  // namespace ringrelay::protocol
