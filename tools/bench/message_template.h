// tools/bench/message_template.h: the message ringrelay-bench sends, generated once per run:
// a valid RFC 5322 message (§3.6 From, To, Subject, Date, Message-ID; MIME-Version 1.0
// text/plain us-ascii) of exactly the requested size, CRLF line ends, lines of printable
// US-ASCII of at most 78 octets (§2.1.1), none starting with '.', so what is sent on the wire
// after DATA is the message itself plus the ".\r\n" terminator.
//
// Each message carries its sequence number, fixed-width (20 digits), in two places patched in
// place by stamp(): "X-Bench-Seq: 00000000000000000042" (a sink's saved files can be checked
// against it) and the local part of "Message-ID: <00000000000000000042.RUNID@ringrelay-bench>"
// (unique per run and message). Stamping a connection's own copy costs two 20-octet copies
// and never changes the size.
//
// Ownership: immutable after make(); shared read-only by every shard.
#pragma once
#include <cstddef>
#include <cstdint>
#include <expected>
#include <string>
#include <string_view>

namespace ringrelay::bench {

class message_template {
public:
    static constexpr std::size_t seq_digits = 20;   // every uint64 fits
    static constexpr std::size_t line_length = 78;  // body lines, CRLF included

    // Octets before the body (header fields and the empty line) for this envelope sender;
    // does not depend on the size or the date (RFC 5322 dates made by core are fixed-width).
    [[nodiscard]] static std::size_t header_size(std::string_view from);
    // The smallest size make() accepts: the header and one empty body line.
    [[nodiscard]] static std::size_t minimum_size(std::string_view from) { return header_size(from) + 2; }

    // A message of exactly `size` octets. `from` is the envelope sender (empty: a placeholder
    // address in From:); `unix_seconds` gives Date:, `run_id` the Message-ID's domain part.
    [[nodiscard]] static std::expected<message_template, std::string> make(std::uint64_t size, std::string_view from,
                                                                           std::int64_t unix_seconds,
                                                                           std::uint64_t run_id);

    // The message with sequence number 0.
    [[nodiscard]] const std::string& text() const noexcept { return _text; }
    // Writes `seq` into `copy`, which must be a copy of text() (possibly stamped before).
    void stamp(std::string& copy, std::uint64_t seq) const noexcept;
    // Offset of the X-Bench-Seq digits in text() (for tests).
    [[nodiscard]] std::size_t seq_offset() const noexcept { return _seq_offset; }

private:
    std::string _text;
    std::size_t _seq_offset = 0;         // X-Bench-Seq digits
    std::size_t _message_id_offset = 0;  // Message-ID local part digits
};

// Reads the X-Bench-Seq of a generated message (or of any message with that header): the
// number, or nothing if the header is missing or malformed. For tests and sink checks.
[[nodiscard]] std::expected<std::uint64_t, std::string> read_bench_seq(std::string_view message);

}  // namespace ringrelay::bench
