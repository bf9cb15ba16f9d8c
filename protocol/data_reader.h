// protocol/data_reader.h: the message body scanner for DATA (RFC 5321 §4.1.1.4, §4.5.2
// dot-unstuffing, end only at CRLF "." CRLF) and BDAT chunks (RFC 3030 §2, raw octets). It
// flags bare CR / bare LF (RFC 5321 §2.3.8; the SMTP smuggling defence), text lines over 1000
// octets (§4.5.3.1.6) and counts the message size (RFC 1870). Input may be split at any octet.
// SECURITY: every byte comes from the network. The reader never reads outside `in`; the body
// it builds never grows past size_limit octets.
//
// Lifecycle: reset() at the start of each message, feed()* until complete (DATA) or until the
// last chunk (BDAT, then finish()). Owned by one server_session; no allocation of its own:
// it appends to the caller's `body` string.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace ringrelay::protocol {

inline constexpr std::size_t max_text_line = 1000;  // RFC 5321 §4.5.3.1.6, with CRLF

enum class data_framing : std::uint8_t {
    dot_stuffed,  // DATA: leading '.' removed, ends at CRLF "." CRLF
    raw,          // BDAT: octets taken as they are; the session counts the chunk length
};

struct data_progress {
    std::size_t consumed = 0;  // octets of `in` used; all of them unless complete
    bool complete = false;     // dot_stuffed only: the final CRLF "." CRLF was consumed
};

// The bulk scanner: finds CR/LF 16 octets at a time and appends whole runs.
class data_reader {
public:
    // size_limit: octets of (unstuffed) data kept; 0 = no limit. Past it nothing more is
    // appended, over_limit() becomes true and counting continues.
    void reset(data_framing framing, std::uint64_t size_limit) noexcept;
    // Appends the unstuffed octets of `in` to `body` (while within the limit).
    data_progress feed(std::string_view in, std::string& body);
    // BDAT: end of the last chunk. A final line without CRLF gets one (the stored message is
    // made of CRLF-terminated lines); a trailing lone CR counts as bare CR.
    void finish(std::string& body);

    [[nodiscard]] bool bare_cr() const noexcept { return _bare_cr; }
    [[nodiscard]] bool bare_lf() const noexcept { return _bare_lf; }
    [[nodiscard]] bool line_too_long() const noexcept { return _line_too_long; }
    [[nodiscard]] bool over_limit() const noexcept { return _over_limit; }
    [[nodiscard]] std::uint64_t size() const noexcept { return _size; }

private:
    enum class scan_state : std::uint8_t {
        line_start,    // after CRLF (or at the start)
        mid_line,
        after_cr,      // the CR was appended; an LF makes it a line end
        after_dot,     // a '.' at line start was dropped
        after_dot_cr,  // ".\r" at line start: the CR is held back (end if LF follows)
    };
    void emit(const char* from, const char* to, std::string& body);

    std::uint64_t _size = 0;
    std::uint64_t _limit = 0;
    std::size_t _line_length = 0;  // octets since the last line end, CR/LF not counted
    data_framing _framing = data_framing::dot_stuffed;
    scan_state _state = scan_state::line_start;
    bool _bare_cr = false;
    bool _bare_lf = false;
    bool _line_too_long = false;
    bool _over_limit = false;
};

// The same contract, one octet at a time with no shortcuts. Used only as the oracle of the
// differential fuzz target and the tests; never on the serving path.
class reference_data_reader {
public:
    void reset(data_framing framing, std::uint64_t size_limit) noexcept;
    data_progress feed(std::string_view in, std::string& body);
    void finish(std::string& body);

    [[nodiscard]] bool bare_cr() const noexcept { return _bare_cr; }
    [[nodiscard]] bool bare_lf() const noexcept { return _bare_lf; }
    [[nodiscard]] bool line_too_long() const noexcept { return _line_too_long; }
    [[nodiscard]] bool over_limit() const noexcept { return _over_limit; }
    [[nodiscard]] std::uint64_t size() const noexcept { return _size; }

private:
    void put(char c, std::string& body);

    std::uint64_t _size = 0;
    std::uint64_t _limit = 0;
    std::size_t _line_length = 0;
    data_framing _framing = data_framing::dot_stuffed;
    bool _line_start = true;
    bool _pending_dot = false;  // a line-start '.' seen and dropped
    bool _pending_cr = false;   // a CR seen; appended unless it is part of the terminator
    bool _bare_cr = false;
    bool _bare_lf = false;
    bool _line_too_long = false;
    bool _over_limit = false;
};

}  // namespace ringrelay::protocol
