// queue/throttle_signal.cc: see throttle_signal.h.
// SECURITY: network text; read through a bounded lower-cased copy on the stack.
#include "queue/throttle_signal.h"

#include <array>

#include "core/ascii.h"
#include "protocol/reply_parser.h"

namespace ringrelay::queue {

namespace {

bool is_letter(char c) noexcept { return c >= 'a' && c <= 'z'; }

// "rate" as a word ("rate limited", "rate-limit", "ratelimit", "rates"), not inside another
// word ("separate", "generated", "moderate").
bool says_rate(std::string_view t) noexcept {
    for (std::size_t at = t.find("rate"); at != std::string_view::npos; at = t.find("rate", at + 1)) {
        if (at > 0 && is_letter(t[at - 1])) continue;
        const std::string_view rest = t.substr(at + 4);
        if (rest.empty() || !is_letter(rest.front()) || rest.starts_with("limit") ||
            (rest.front() == 's' && (rest.size() == 1 || !is_letter(rest[1]))))
            return true;
    }
    return false;
}

// "Try again later" alone is what every temporary failure says ("451 4.3.0 Mail server
// temporarily rejected message. Try again later.", greylisting's "451 4.7.1 Please try again
// later"): a signal only at the greeting, where it refuses the connection.
enum class try_later : std::uint8_t { counts, ignored };

bool says_throttle(std::string_view t, try_later later) noexcept {
    for (const std::string_view w : {"too many", "too much", "throttl", "slow down", "server busy"})
        if (t.find(w) != std::string_view::npos) return true;
    if (later == try_later::counts)
        for (const std::string_view w : {"try again later", "try later"})
            if (t.find(w) != std::string_view::npos) return true;
    return says_rate(t);
}

bool says_connections(std::string_view t) noexcept {
    for (const std::string_view w : {"too many connections", "too many concurrent", "concurrent connections",
                                     "connection limit", "connections from", "maximum number of connections",
                                     "max concurrent connections", "trop de connexions"})
        if (t.find(w) != std::string_view::npos) return true;
    return false;
}

}  // namespace

std::string_view to_string(throttle_kind k) noexcept {
    switch (k) {
    case throttle_kind::connections: return "connections";
    case throttle_kind::rate: return "rate";
    case throttle_kind::none: break;
    }
    return "none";
}

throttle_kind classify_throttle(attempt_stage stage, std::uint16_t code, std::string_view text) noexcept {
    if (stage == attempt_stage::connect) return throttle_kind::connections;
    if (stage == attempt_stage::greeting && code == 0) return throttle_kind::connections;
    if (code < 400 || code > 499) return throttle_kind::none;
    std::array<char, max_signal_text> buf{};
    const std::size_t n = text.size() < buf.size() ? text.size() : buf.size();
    for (std::size_t i = 0; i < n; ++i) buf[i] = core::ascii_lower(text[i]);
    const std::string_view t(buf.data(), n);
    const protocol::enhanced_status es = protocol::parse_enhanced_status(code, text.substr(0, n));
    if (es.present() && (es.subject == 2 || (es.subject == 5 && es.detail == 3))) return throttle_kind::none;
    if (stage == attempt_stage::greeting) {
        if (code == 421 || says_throttle(t, try_later::counts) || says_connections(t)) return throttle_kind::connections;
        return throttle_kind::none;
    }
    bool signal = code == 421;  // the server closes the connection after it
    if (!signal && ((es.present() && es.subject == 7) || code == 451 || code == 452))
        signal = says_throttle(t, try_later::ignored);
    if (!signal) return throttle_kind::none;
    return says_connections(t) ? throttle_kind::connections : throttle_kind::rate;
}

}  // namespace ringrelay::queue
