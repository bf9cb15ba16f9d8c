// protocol/data_reader.cc: DATA/BDAT body scanning (RFC 5321 §4.1.1.4, §4.5.2, §2.3.8,
// §4.5.3.1.6; RFC 3030 §2). The fast path scans 16 octets at a time for CR or LF (SSE2 on
// x86-64, a portable loop elsewhere) and appends whole runs of octets: only a stuffed dot or
// a held-back CR breaks a run.
// SECURITY: network input; pointers stay within [in.data(), in.data() + in.size()).
#include "protocol/data_reader.h"

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace ringrelay::protocol {
namespace {

constexpr std::size_t max_line_content = max_text_line - 2;

// First CR or LF in [p, end), or end.
inline const char* find_cr_or_lf(const char* p, const char* end) noexcept {
#if defined(__SSE2__)
    const __m128i cr = _mm_set1_epi8('\r');
    const __m128i lf = _mm_set1_epi8('\n');
    while (end - p >= 16) {
        const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
        const int mask = _mm_movemask_epi8(_mm_or_si128(_mm_cmpeq_epi8(v, cr), _mm_cmpeq_epi8(v, lf)));
        if (mask != 0) return p + __builtin_ctz(static_cast<unsigned>(mask));
        p += 16;
    }
#endif
    while (p < end && *p != '\r' && *p != '\n') ++p;
    return p;
}

}  // namespace

void data_reader::reset(data_framing framing, std::uint64_t size_limit) noexcept {
    *this = data_reader{};
    _framing = framing;
    _limit = size_limit;
}

void data_reader::emit(const char* from, const char* to, std::string& body) {
    const auto n = static_cast<std::size_t>(to - from);
    if (n == 0) return;
    _size += n;
    if (_over_limit) return;
    if (_limit != 0 && _size > _limit) {
        _over_limit = true;  // keep counting, stop storing
        return;
    }
    body.append(from, n);
}

data_progress data_reader::feed(std::string_view in, std::string& body) {
    const char* const begin = in.data();
    const char* const end = begin + in.size();
    const char* p = begin;
    const char* run = p;  // start of octets scanned but not yet appended
    while (p < end) {
        switch (_state) {
        case scan_state::line_start:
            if (_framing == data_framing::dot_stuffed && *p == '.') {
                emit(run, p, body);
                run = ++p;  // RFC 5321 §4.5.2: drop the first '.' of a line
                _state = scan_state::after_dot;
                break;
            }
            _state = scan_state::mid_line;
            [[fallthrough]];
        case scan_state::mid_line: {
            const char* q = find_cr_or_lf(p, end);
            _line_length += static_cast<std::size_t>(q - p);
            if (_line_length > max_line_content) _line_too_long = true;
            if (q == end) {
                p = end;
                break;
            }
            if (*q == '\n') {
                _bare_lf = true;
                _line_length = 0;
            } else {
                _state = scan_state::after_cr;
            }
            p = q + 1;
            break;
        }
        case scan_state::after_cr:
            if (*p == '\n') {
                ++p;
                _line_length = 0;
                _state = scan_state::line_start;
            } else {
                _bare_cr = true;
                _state = scan_state::mid_line;
            }
            break;
        case scan_state::after_dot:
            if (*p == '\r') {
                emit(run, p, body);
                run = ++p;  // hold the CR back: it may be the terminator's
                _state = scan_state::after_dot_cr;
            } else {
                _state = scan_state::mid_line;
            }
            break;
        case scan_state::after_dot_cr:
            if (*p == '\n') {
                emit(run, p, body);
                return {static_cast<std::size_t>(p + 1 - begin), true};
            }
            emit(run, p, body);
            {
                const char cr = '\r';
                emit(&cr, &cr + 1, body);
            }
            run = p;
            _bare_cr = true;
            _state = scan_state::mid_line;
            break;
        }
    }
    emit(run, p, body);
    return {in.size(), false};
}

void data_reader::finish(std::string& body) {
    if (_state == scan_state::after_cr || _state == scan_state::after_dot_cr) _bare_cr = true;
    if (_state == scan_state::after_dot_cr) {
        const char cr = '\r';
        emit(&cr, &cr + 1, body);
    }
    if (_state != scan_state::line_start) {
        constexpr char crlf[] = "\r\n";
        emit(crlf, crlf + 2, body);
        _state = scan_state::line_start;
    }
}

// ---- reference implementation ----

void reference_data_reader::reset(data_framing framing, std::uint64_t size_limit) noexcept {
    *this = reference_data_reader{};
    _framing = framing;
    _limit = size_limit;
}

void reference_data_reader::put(char c, std::string& body) {
    ++_size;
    if (_over_limit) return;
    if (_limit != 0 && _size > _limit) {
        _over_limit = true;
        // Match the bulk reader: nothing of the run that crossed the limit is kept. The
        // session discards an over-limit body anyway; the fuzz target compares bodies only
        // when under the limit.
        return;
    }
    body.push_back(c);
}

data_progress reference_data_reader::feed(std::string_view in, std::string& body) {
    for (std::size_t i = 0; i < in.size(); ++i) {
        const char c = in[i];
        if (_pending_dot) {
            _pending_dot = false;
            if (c == '\r') {
                // ".\r": the CR waits for the next octet.
                _pending_cr = true;
                _line_start = true;  // remember that this CR follows a line-start dot
                continue;
            }
        } else if (_pending_cr && _line_start) {
            // ".\r" then c: LF ends the data, anything else makes the CR bare.
            _pending_cr = false;
            if (c == '\n') return {i + 1, true};
            put('\r', body);
            _bare_cr = true;
            _line_start = false;
        } else if (_pending_cr) {
            _pending_cr = false;
            if (c == '\n') {
                put('\n', body);
                _line_length = 0;
                _line_start = true;
                continue;
            }
            _bare_cr = true;
        } else if (_line_start && _framing == data_framing::dot_stuffed && c == '.') {
            _pending_dot = true;
            _line_start = false;
            continue;
        }
        _line_start = false;
        if (c == '\r') {
            put('\r', body);
            _pending_cr = true;
        } else if (c == '\n') {
            put('\n', body);
            _bare_lf = true;
            _line_length = 0;
        } else {
            put(c, body);
            ++_line_length;
            if (_line_length > max_text_line - 2) _line_too_long = true;
        }
    }
    return {in.size(), false};
}

void reference_data_reader::finish(std::string& body) {
    const bool held_cr = _pending_cr && _line_start;  // ".\r" at the very end
    if (_pending_cr) _bare_cr = true;
    if (held_cr) put('\r', body);
    if (!_line_start || _pending_cr || _pending_dot) {
        put('\r', body);
        put('\n', body);
    }
    _pending_cr = false;
    _pending_dot = false;
    _line_start = true;
}

}  // namespace ringrelay::protocol
