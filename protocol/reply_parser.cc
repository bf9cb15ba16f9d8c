// protocol/reply_parser.cc: SMTP reply lines to parsed_reply (RFC 5321 §4.2, §4.2.1; enhanced
// status codes RFC 3463 §2 / RFC 2034 §4).
// SECURITY: input is from the next hop. _line is bounded by max_reply_line, _text by
// max_reply_line * max_reply_lines; both are reserved once, so hostile input cannot grow them.
#include "protocol/reply_parser.h"

#include <cstring>

namespace ringrelay::protocol {
namespace {

constexpr bool is_digit(char c) noexcept { return c >= '0' && c <= '9'; }

// Reply-code = %x32-35 %x30-35 %x30-39 (RFC 5321 §4.2).
constexpr bool is_reply_code(std::string_view s) noexcept {
    return s.size() >= 3 && s[0] >= '2' && s[0] <= '5' && s[1] >= '0' && s[1] <= '5' && is_digit(s[2]);
}

// 1*3DIGIT at the start of `s`; returns the digits used (0 if none or more than 3).
std::size_t take_number(std::string_view s, std::uint16_t& value) noexcept {
    std::size_t n = 0;
    value = 0;
    while (n < s.size() && is_digit(s[n])) {
        if (n == 3) return 0;
        value = static_cast<std::uint16_t>(value * 10 + (s[n] - '0'));
        ++n;
    }
    return n;
}

}  // namespace

std::string_view describe(reply_error e) noexcept {
    switch (e) {
    case reply_error::line_too_long: return "reply line too long";
    case reply_error::too_many_lines: return "too many reply lines";
    case reply_error::bad_code: return "reply without a valid code";
    case reply_error::bad_separator: return "bad separator after reply code";
    case reply_error::code_mismatch: return "continuation line with a different code";
    case reply_error::bare_carriage_return: return "bare CR in reply";
    }
    return "malformed reply";
}

enhanced_status parse_enhanced_status(std::uint16_t code, std::string_view text) noexcept {
    // status-code = class "." subject "." detail; class = "2" / "4" / "5" (RFC 3463 §2).
    const char cls = static_cast<char>('0' + code / 100);
    if (text.size() < 5 || text[0] != cls || (cls != '2' && cls != '4' && cls != '5') || text[1] != '.') {
        return {};
    }
    std::string_view rest = text.substr(2);
    std::uint16_t subject = 0;
    std::size_t n = take_number(rest, subject);
    if (n == 0 || n >= rest.size() || rest[n] != '.') return {};
    rest.remove_prefix(n + 1);
    std::uint16_t detail = 0;
    n = take_number(rest, detail);
    if (n == 0 || (n < rest.size() && rest[n] != ' ')) return {};
    return enhanced_status{static_cast<std::uint8_t>(cls - '0'), subject, detail};
}

reply_parser::reply_parser() {
    _line.reserve(max_reply_line);
    _text.reserve(max_reply_line * max_reply_lines);
}

void reply_parser::reset() noexcept {
    _line.clear();
    _text.clear();
    _lines = 0;
    _code = 0;
    _enhanced = {};
    _complete = false;
    _failed = false;
}

parsed_reply reply_parser::reply() const noexcept {
    return parsed_reply{_code, _enhanced, _text, _lines};
}

std::expected<reply_progress, reply_error> reply_parser::feed(std::string_view in) {
    if (_failed) return std::unexpected(_error);
    if (_complete) {
        _text.clear();
        _lines = 0;
        _code = 0;
        _enhanced = {};
        _complete = false;
    }
    std::size_t pos = 0;
    while (pos < in.size()) {
        const std::string_view rest = in.substr(pos);
        const void* lf = std::memchr(rest.data(), '\n', rest.size());
        if (lf == nullptr) {
            // No line end yet: keep the partial line, unless it can no longer fit.
            if (_line.size() + rest.size() >= max_reply_line) {
                _failed = true;
                _error = reply_error::line_too_long;
                return std::unexpected(_error);
            }
            _line.append(rest);
            return reply_progress{in.size(), false};
        }
        const std::size_t used = static_cast<std::size_t>(static_cast<const char*>(lf) - rest.data()) + 1;
        if (_line.size() + used > max_reply_line) {
            _failed = true;
            _error = reply_error::line_too_long;
            return std::unexpected(_error);
        }
        std::expected<bool, reply_error> last;
        if (_line.empty()) {
            last = take_line(rest.substr(0, used));  // in place: the common case
        } else {
            _line.append(rest.substr(0, used));
            last = take_line(_line);
            _line.clear();
        }
        pos += used;
        if (!last) {
            _failed = true;
            _error = last.error();
            return std::unexpected(_error);
        }
        if (*last) {
            _complete = true;
            return reply_progress{pos, true};
        }
    }
    return reply_progress{pos, false};
}

// One line including its LF. Returns whether it was the last line of the reply.
std::expected<bool, reply_error> reply_parser::take_line(std::string_view line) {
    line.remove_suffix(1);  // the LF
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.find('\r') != std::string_view::npos) return std::unexpected(reply_error::bare_carriage_return);
    if (!is_reply_code(line)) return std::unexpected(reply_error::bad_code);
    const auto code = static_cast<std::uint16_t>((line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0'));
    bool last = true;
    std::string_view text;
    if (line.size() > 3) {
        if (line[3] == '-') {
            last = false;
        } else if (line[3] != ' ') {
            return std::unexpected(reply_error::bad_separator);
        }
        text = line.substr(4);
    }
    if (_lines == 0) {
        _code = code;
        _enhanced = parse_enhanced_status(code, text);
    } else if (code != _code) {
        return std::unexpected(reply_error::code_mismatch);
    }
    if (_lines == max_reply_lines) return std::unexpected(reply_error::too_many_lines);
    if (_lines != 0) _text.push_back('\n');
    _text.append(text);
    ++_lines;
    return last;
}

}  // namespace ringrelay::protocol
