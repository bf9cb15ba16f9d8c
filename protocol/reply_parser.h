// protocol/reply_parser.h: parses the replies an SMTP server sends to a client (RFC 5321 §4.2:
// Reply-line = *( Reply-code "-" [ textstring ] CRLF ) Reply-code [ SP textstring ] CRLF,
// Reply-code = %x32-35 %x30-35 %x30-39; §4.5.3.1.5 512-octet reply lines) and the enhanced
// status code at the start of the text (RFC 3463 §2, RFC 2034 §4). Incremental: input may be
// split at any octet. Pure: no I/O; its two buffers are reserved at construction.
// SECURITY: every byte comes from the next hop, which may be hostile. Lines are capped at
// max_reply_line octets and replies at max_reply_lines lines, so a reply never holds more than
// max_reply_line * max_reply_lines octets; anything malformed is an error value, never a crash.
//
// Lifecycle: owned by one client_session (one connection, one shard). feed()* ; when a reply is
// complete, reply() views it until the next feed() or reset(). After an error the parser stays
// failed (every feed() repeats the error) until reset(): the stream is out of sync and the
// connection must be closed.
#pragma once
#include <cstddef>
#include <cstdint>
#include <expected>
#include <string>
#include <string_view>

namespace ringrelay::protocol {

inline constexpr std::size_t max_reply_line = 512;   // RFC 5321 §4.5.3.1.5, with CRLF
inline constexpr std::size_t max_reply_lines = 128;  // ours; real EHLO replies have ~15 lines

enum class reply_error : std::uint8_t {
    line_too_long,         // a line longer than max_reply_line octets (CRLF included)
    too_many_lines,        // more than max_reply_lines lines in one reply
    bad_code,              // the line does not start with a Reply-code (RFC 5321 §4.2)
    bad_separator,         // the code is followed by something other than '-', SP or CRLF
    code_mismatch,         // a continuation line's code differs from the first line's (§4.2.1)
    bare_carriage_return,  // a CR not followed by LF inside a line (RFC 5321 §2.3.8)
};

// An RFC 3463 status code "class.subject.detail"; status_class == 0 means there was none.
struct enhanced_status {
    std::uint8_t status_class = 0;  // 2, 4 or 5, equal to the first digit of the reply code
    std::uint16_t subject = 0;      // 0..999
    std::uint16_t detail = 0;       // 0..999

    [[nodiscard]] bool present() const noexcept { return status_class != 0; }
    friend bool operator==(const enhanced_status&, const enhanced_status&) = default;
};

// Reply classes (RFC 5321 §4.2.1): 2yz positive completion; 4yz transient and 5yz permanent
// negative completion. 3yz (intermediate) is neither.
[[nodiscard]] constexpr bool is_positive(std::uint16_t code) noexcept { return code >= 200 && code < 300; }
[[nodiscard]] constexpr bool is_negative(std::uint16_t code) noexcept { return code >= 400; }

// One complete reply. `text` is owned by the parser and valid until its next feed()/reset().
struct parsed_reply {
    std::uint16_t code = 0;     // 200..559
    enhanced_status enhanced;   // parsed from the start of the first line's text
    // Every line's text after "ddd-" / "ddd ", verbatim (the enhanced code included), lines
    // joined by a single LF. No CR; no LF other than those separators.
    std::string_view text;
    std::size_t lines = 0;      // >= 1
};

struct reply_progress {
    std::size_t consumed = 0;  // octets of `in` used: up to the end of one reply, or all
    bool complete = false;     // a whole reply was consumed; reply() views it
};

// Lines end at LF; a CR right before the LF is dropped (servers that send bare LF are
// tolerated, a CR elsewhere is not).
class reply_parser {
public:
    reply_parser();

    // Consumes `in` (owned by the caller, only read during the call) up to and including the
    // last octet of one complete reply, or all of it. Bytes of an incomplete line are copied.
    [[nodiscard]] std::expected<reply_progress, reply_error> feed(std::string_view in);

    // The last complete reply; only meaningful after feed() said complete.
    [[nodiscard]] parsed_reply reply() const noexcept;

    // True while part of a reply has been received but not its last line.
    [[nodiscard]] bool mid_reply() const noexcept { return !_line.empty() || _lines != 0; }

    // Forgets everything, including a failure.
    void reset() noexcept;

private:
    [[nodiscard]] std::expected<bool, reply_error> take_line(std::string_view line);

    std::string _line;  // an incomplete line straddling feed() calls, < max_reply_line octets
    std::string _text;  // text of the lines so far, LF-joined, < max_reply_line * max_reply_lines
    std::size_t _lines = 0;
    std::uint16_t _code = 0;
    enhanced_status _enhanced;
    bool _complete = false;  // _text holds a finished reply; the next feed() starts afresh
    bool _failed = false;
    reply_error _error = reply_error::bad_code;
};

// A short English description of `e`, for logs and outcome texts.
[[nodiscard]] std::string_view describe(reply_error e) noexcept;

// Parses an RFC 3463 code "d.ddd.ddd" at the start of `text`, followed by SP or the end of the
// text; its class must equal the first digit of `code`. Absent (status_class 0) otherwise.
[[nodiscard]] enhanced_status parse_enhanced_status(std::uint16_t code, std::string_view text) noexcept;

}  // namespace ringrelay::protocol
