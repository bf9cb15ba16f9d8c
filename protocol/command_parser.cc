// protocol/command_parser.cc: SMTP command line grammar (RFC 5321 §4.1.1, §4.1.2; RFC 3030
// §2 for BDAT). Lenient where Postfix is (spaces after "FROM:", trailing spaces), strict
// about line endings and control characters.
// SECURITY: parses network input; every index is checked against the view's size.
#include "protocol/command_parser.h"

#include <array>
#include <cstddef>

#include "core/ascii.h"

namespace ringrelay::protocol {
namespace {

struct verb_row {
    std::string_view name;  // upper case
    command_verb verb;
};

// RFC 5321 §4.1.1 (HELO..QUIT, VRFY, HELP), RFC 3030 (BDAT), RFC 3207 (STARTTLS),
// RFC 4954 (AUTH).
constexpr std::array<verb_row, 13> verbs{{
    {"HELO", command_verb::helo}, {"EHLO", command_verb::ehlo}, {"MAIL", command_verb::mail},
    {"RCPT", command_verb::rcpt}, {"DATA", command_verb::data}, {"BDAT", command_verb::bdat},
    {"RSET", command_verb::rset}, {"NOOP", command_verb::noop}, {"QUIT", command_verb::quit},
    {"VRFY", command_verb::vrfy}, {"HELP", command_verb::help},
    {"STARTTLS", command_verb::starttls}, {"AUTH", command_verb::auth},
}};

command_verb lookup_verb(std::string_view token) noexcept {
    for (const verb_row& row : verbs) {
        if (core::iequals(token, row.name)) return row.verb;
    }
    return command_verb::unknown;
}

constexpr bool is_control(unsigned char c) noexcept { return c < 0x20 || c == 0x7f; }

std::string_view trim_spaces(std::string_view s) noexcept {
    while (!s.empty() && s.front() == ' ') s.remove_prefix(1);
    while (!s.empty() && s.back() == ' ') s.remove_suffix(1);
    return s;
}

// "FROM:" / "TO:" then optional spaces (Postfix tolerates them), then a path in angle
// brackets (RFC 5321 §4.1.2 Path; '>' inside a quoted local part does not end it), then
// optional SP-separated parameters.
bool split_path(std::string_view rest, std::string_view keyword, command& cmd) noexcept {
    while (!rest.empty() && rest.front() == ' ') rest.remove_prefix(1);
    if (!core::istarts_with(rest, keyword)) return false;
    rest.remove_prefix(keyword.size());
    while (!rest.empty() && rest.front() == ' ') rest.remove_prefix(1);
    if (rest.empty() || rest.front() != '<') return false;
    bool in_quotes = false;
    std::size_t i = 1;
    for (; i < rest.size(); ++i) {
        const char c = rest[i];
        if (in_quotes) {
            if (c == '\\') {
                ++i;  // quoted-pair: skip the escaped octet
            } else if (c == '"') {
                in_quotes = false;
            }
        } else if (c == '"') {
            in_quotes = true;
        } else if (c == '>') {
            break;
        }
    }
    if (i >= rest.size()) return false;
    cmd.argument = rest.substr(0, i + 1);
    std::string_view after = rest.substr(i + 1);
    if (!after.empty() && after.front() != ' ') return false;
    cmd.parameters = trim_spaces(after);
    return true;
}

// RFC 3030 §2: bdat-cmd = "BDAT" SP chunk-size [ SP end-marker ] CR LF
bool parse_bdat(std::string_view rest, command& cmd) noexcept {
    rest = trim_spaces(rest);
    std::size_t i = 0;
    std::uint64_t value = 0;
    for (; i < rest.size() && rest[i] >= '0' && rest[i] <= '9'; ++i) {
        const std::uint64_t digit = static_cast<std::uint64_t>(rest[i] - '0');
        if (value > (UINT64_MAX - digit) / 10) return false;  // does not fit: refuse
        value = value * 10 + digit;
    }
    if (i == 0) return false;
    cmd.chunk_size = value;
    std::string_view tail = rest.substr(i);
    if (tail.empty()) return true;
    if (tail.front() != ' ') return false;
    if (!core::iequals(trim_spaces(tail), "LAST")) return false;
    cmd.chunk_end = bdat_end::last;
    return true;
}

// HELO/EHLO: one token, Domain or address-literal (RFC 5321 §4.1.1.1). Checked only for
// shape here: printable, no spaces; UTF-8 octets allowed (RFC 6531 §3.3).
bool parse_helo(std::string_view rest, command& cmd) noexcept {
    rest = trim_spaces(rest);
    if (rest.empty() || rest.find(' ') != std::string_view::npos) return false;
    cmd.argument = rest;
    return true;
}

}  // namespace

std::expected<command, parse_failure> parse_command(std::string_view line) noexcept {
    if (line.size() > max_command_line) {
        return std::unexpected(parse_failure{parse_error::line_too_long, command_verb::unknown});
    }
    std::string_view body = line;
    if (!body.empty() && body.back() == '\n') {
        body.remove_suffix(1);
        if (body.empty() || body.back() != '\r') {
            return std::unexpected(parse_failure{parse_error::bare_newline, command_verb::unknown});
        }
        body.remove_suffix(1);
    }
    bool has_control = false;
    for (const char c : body) {
        if (c == '\n') return std::unexpected(parse_failure{parse_error::bare_newline, command_verb::unknown});
        if (c == '\r') {
            return std::unexpected(parse_failure{parse_error::bare_carriage_return, command_verb::unknown});
        }
        has_control = has_control || is_control(static_cast<unsigned char>(c));
    }

    const std::size_t space = body.find(' ');
    const std::string_view token = body.substr(0, space);
    const std::string_view rest = space == std::string_view::npos ? std::string_view{} : body.substr(space + 1);
    command cmd;
    cmd.verb = lookup_verb(token);
    if (cmd.verb == command_verb::unknown) {
        return std::unexpected(parse_failure{parse_error::unknown_verb, command_verb::unknown});
    }
    const parse_failure bad{parse_error::bad_arguments, cmd.verb};
    if (has_control) return std::unexpected(bad);

    bool ok = true;
    switch (cmd.verb) {
    case command_verb::helo:
    case command_verb::ehlo:
        ok = parse_helo(rest, cmd);
        break;
    case command_verb::mail:
        ok = split_path(rest, "FROM:", cmd);
        break;
    case command_verb::rcpt:
        ok = split_path(rest, "TO:", cmd);
        break;
    case command_verb::bdat:
        ok = parse_bdat(rest, cmd);
        break;
    case command_verb::data:
    case command_verb::rset:
    case command_verb::quit:
    case command_verb::starttls:
        ok = trim_spaces(rest).empty();
        break;
    case command_verb::vrfy:
        cmd.argument = trim_spaces(rest);
        ok = !cmd.argument.empty();
        break;
    case command_verb::noop:
    case command_verb::help:
    case command_verb::auth:
        cmd.argument = trim_spaces(rest);
        break;
    case command_verb::unknown:
        break;
    }
    if (!ok) return std::unexpected(bad);
    return cmd;
}

}  // namespace ringrelay::protocol
