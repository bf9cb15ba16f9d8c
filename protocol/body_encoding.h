// protocol/body_encoding.h: how the SMTP client puts a message body on the wire: line ends
// normalized (RFC 5321 §2.3.8) and, for DATA, dot-stuffed (RFC 5321 §4.5.2). The inverse of
// what data_reader does on the server side. Pure: no allocation except growth of `out`.
//
// Contract, for any octets in `body` (the caller's header + body, without the DATA terminator):
// - Lines: CRLF, a bare LF and a bare CR each end a line and are sent as CRLF; a CR followed by
//   LF is one line end, so "\r\r\n" is two (RFC 5321 §2.3.8 forbids sending a bare CR or LF;
//   turning them into CRLF is what most MTAs do). Every other octet, NUL and 8-bit ones
//   included, is copied unchanged; no line is folded (a line over 1000 octets stays one).
// - A body not ending in a line end gets a final CRLF; an empty body stays empty (it is a
//   message of no lines, and DATA's "." follows at once).
// - Dot-stuffing (dot_stuffing::on, for DATA): a line starting with '.' gets another '.'
//   before it (§4.5.2), so no line of the body can read as the terminator "." CRLF. Off (BDAT,
//   RFC 3030 §2) the lines are copied as they are.
// - normalized_body_size() is exactly the octets append_normalized_body() appends with
//   dot_stuffing::off: the RFC 1870 SIZE value and the BDAT chunk length. Stuffing dots are not
//   counted (RFC 1870 §4: SIZE is the message size before any transport encoding).
// - body_encoder gives the same octets for a body that arrives in pieces (a large body streamed
//   from the spool, queue/outbound.h): the state that crosses a piece boundary (the last octet
//   was a CR, so a LF opening the next piece belongs to that line end; a line has begun, so a
//   '.' is not at a line start) is carried, and the concatenated output is exactly
//   append_normalized_body()'s for the whole body, however it is split.
// Linear in the body's size, whatever its line ends (a body of bare CRs included).
// SECURITY: bodies come from spooled mail, i.e. from clients; no input can make the output
// contain a bare CR or LF, or a line "." before the terminator when stuffing is on.
//
// Threading: pure functions, called on the shard that sends the message.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>

namespace ringrelay::protocol {

enum class dot_stuffing : std::uint8_t {
    off,  // BDAT: octets as they are, line ends normalized
    on,   // DATA: also double a '.' at the start of every line (RFC 5321 §4.5.2)
};

// Whether a piece of a body given in pieces is its last.
enum class body_piece : std::uint8_t { more, last };

// Octets the body occupies once normalized (bare CR / LF -> CRLF, final CRLF added); this is
// the RFC 1870 SIZE value and the BDAT length. Stuffing dots are not counted (RFC 1870 §4).
[[nodiscard]] std::uint64_t normalized_body_size(std::string_view body) noexcept;

// Appends the normalized body to `out`; with dot_stuffing::on also doubles a '.' at the start
// of every line (RFC 5321 §4.5.2). The DATA terminator is not appended.
void append_normalized_body(std::string& out, std::string_view body, dot_stuffing stuffing);

// The same encoding over a body given in pieces, in order. Nothing is held back: a CR at the
// end of a piece is sent as CRLF at once (a CR ends a line with or without a LF behind it), and
// a LF opening the next piece is then the same line end and adds nothing. Lifecycle: reset()
// (or construct) per body -> append()* (the last with body_piece::last). No allocation except
// growth of `out`.
// Shard-local, like the session that owns it.
class body_encoder {
public:
    explicit body_encoder(dot_stuffing stuffing = dot_stuffing::off) noexcept : _stuffing(stuffing) {}
    void reset(dot_stuffing stuffing) noexcept {
        _stuffing = stuffing;
        _line_start = true;
        _after_cr = false;
    }
    // Appends what the next piece of the body adds (`piece` is read during the call only);
    // with body_piece::last also the final CRLF of a last line without a line end, and the
    // encoder is ready for another body.
    void append(std::string& out, std::string_view piece, body_piece which);
    // The octets append(piece, which) would add now with dot_stuffing::off (a BDAT chunk's
    // length), without appending or changing the state.
    [[nodiscard]] std::uint64_t size_of(std::string_view piece, body_piece which) const noexcept;

private:
    dot_stuffing _stuffing;
    bool _line_start = true;  // the next octet starts a line
    bool _after_cr = false;   // the last octet was a CR (sent as CRLF): a LF now adds nothing
};

// The same contract, one octet at a time with no shortcuts. Used only as the oracle of the
// differential fuzz target and the tests; never on the sending path.
void reference_append_normalized_body(std::string& out, std::string_view body, dot_stuffing stuffing);

}  // namespace ringrelay::protocol
