// tools/sink/save_format.h: the file ringrelay-sink --save writes for each accepted message,
// and a reader for it (used by the tests; scripts can do the same in a few lines):
//
//   X-Sink-Queue-Id: 0123456789ABCDEF      16 hex digits, as in "250 2.0.0 Ok: queued as"
//   X-Sink-Client: 127.0.0.1
//   X-Sink-Helo: client.example            the EHLO/HELO argument
//   X-Sink-Mail-From: <sender@example.org> "<>" for the null sender
//   X-Sink-Rcpt-To: <rcpt@example.net>     one line per recipient, in RCPT order
//   X-Sink-Size: 2345
//   <exactly 2345 bytes: server_session::message(), i.e. the sink's Received: header, then the
//    data with dot-stuffing removed, CRLF line ends, without the final ".">
//
// Every envelope line ends in CRLF. The envelope lines are header fields, so the file is
// itself a valid message (an .eml a mail client opens). Named DIR/<QUEUE-ID>.eml, written as
// DIR/.<QUEUE-ID>.tmp and renamed once complete.
// SECURITY: parse_saved() reads files a test names; it never reads past the text it is given.
// The envelope values come from the SMTP session, which admits no CR or LF in them.
#pragma once
#include <cstdint>
#include <expected>
#include <string>
#include <string_view>
#include <vector>

#include "protocol/server_session.h"

namespace ringrelay::sink {

inline constexpr std::size_t saved_name_size = 21;  // "0123456789ABCDEF.eml" + NUL
inline constexpr std::size_t temp_name_size = 22;   // ".0123456789ABCDEF.tmp" + NUL

// Appends the envelope block (every line up to and including X-Sink-Size) to `out`.
void append_save_header(std::string& out, const protocol::envelope& env, std::string_view client,
                        std::size_t message_size);

// "<QUEUE-ID>.eml" and ".<QUEUE-ID>.tmp", NUL-terminated, into caller-owned arrays.
void saved_name(std::uint64_t queue_id, char (&name)[saved_name_size]) noexcept;
void temp_name(std::uint64_t queue_id, char (&name)[temp_name_size]) noexcept;

struct saved_message {
    std::string queue_id;
    std::string client;
    std::string helo;
    std::string mail_from;             // without the angle brackets
    std::vector<std::string> rcpt_to;  // without the angle brackets
    std::string message;               // the n bytes after X-Sink-Size
};

// Parses a whole saved file; the error says what is wrong and where.
[[nodiscard]] std::expected<saved_message, std::string> parse_saved(std::string_view file);

}  // namespace ringrelay::sink
