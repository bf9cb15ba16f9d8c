// core/duration.cc: duration text for flags and config ("1h20m", "5m,10m").
// SECURITY: operator input; every arithmetic step is overflow-checked.
#include "core/duration.h"

#include <array>
#include <cstddef>
#include <limits>

#include "core/invariant.h"

namespace ringrelay::core {
namespace {

struct unit_row {
    std::string_view name;
    std::int64_t ms;
    int rank;  // units must appear in strictly decreasing rank
};

// clang-format off
constexpr std::array<unit_row, 5> units{{
    {"d",  86'400'000, 4},
    {"h",   3'600'000, 3},
    {"m",      60'000, 2},
    {"s",       1'000, 1},
    {"ms",          1, 0},
}};
// clang-format on

bool is_digit(char c) noexcept { return c >= '0' && c <= '9'; }
bool is_alpha(char c) noexcept { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

// Quotes operator text for a message; control octets become '?'.
void append_quoted(std::string& out, std::string_view s) {
    out.push_back('"');
    for (const char c : s) {
        const auto u = static_cast<unsigned char>(c);
        out.push_back((u < 0x20 || u == 0x7f) ? '?' : c);
    }
    out.push_back('"');
}

duration_failure fail(duration_error reason, std::string_view text, std::string_view what,
                      std::string_view token = {}, std::string_view hint = {}) {
    duration_failure f{reason, {}};
    append_quoted(f.message, text);
    f.message.append(": ");
    f.message.append(what);
    if (!token.empty()) {
        f.message.push_back(' ');
        append_quoted(f.message, token);
    }
    f.message.append(hint);
    return f;
}

bool is_space(char c) noexcept { return c == ' ' || c == '\t'; }

std::string_view trim(std::string_view s) noexcept {
    while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
    while (!s.empty() && is_space(s.back())) s.remove_suffix(1);
    return s;
}

}  // namespace

std::expected<std::chrono::milliseconds, duration_failure> parse_duration(std::string_view text) {
    if (text.empty()) return std::unexpected(fail(duration_error::empty, text, "empty duration"));
    if (text.front() == '-') {
        return std::unexpected(fail(duration_error::negative, text, "durations cannot be negative"));
    }
    std::int64_t total = 0;
    int previous_rank = std::numeric_limits<int>::max();
    std::size_t pos = 0;
    while (pos < text.size()) {
        const std::size_t number_start = pos;
        std::int64_t value = 0;
        while (pos < text.size() && is_digit(text[pos])) {
            if (__builtin_mul_overflow(value, 10, &value) ||
                __builtin_add_overflow(value, text[pos] - '0', &value)) {
                return std::unexpected(fail(duration_error::overflow, text, "too large"));
            }
            ++pos;
        }
        if (pos == number_start) {
            return std::unexpected(fail(duration_error::bad_number, text,
                                        "expected a number at", text.substr(pos)));
        }
        if (pos == text.size()) {
            return std::unexpected(fail(duration_error::missing_unit, text, "missing unit after",
                                        text.substr(number_start),
                                        " (use d, h, m, s or ms)"));
        }
        const std::size_t unit_start = pos;
        while (pos < text.size() && is_alpha(text[pos])) ++pos;
        const std::string_view unit = text.substr(unit_start, pos - unit_start);
        if (unit.empty()) {
            return std::unexpected(fail(duration_error::bad_number, text, "unexpected",
                                        text.substr(unit_start, 1), " (use d, h, m, s or ms)"));
        }
        const unit_row* row = nullptr;
        for (const unit_row& r : units) {
            if (r.name == unit) row = &r;
        }
        if (row == nullptr) {
            return std::unexpected(fail(duration_error::unknown_unit, text, "unknown unit", unit,
                                        " (use d, h, m, s or ms)"));
        }
        if (row->rank >= previous_rank) {
            return std::unexpected(fail(duration_error::unit_order, text, "unit out of order or repeated:",
                                        text.substr(number_start, pos - number_start),
                                        " (write the largest unit first, each once: 1h20m)"));
        }
        previous_rank = row->rank;
        std::int64_t part = 0;
        if (__builtin_mul_overflow(value, row->ms, &part) ||
            __builtin_add_overflow(total, part, &total)) {
            return std::unexpected(fail(duration_error::overflow, text, "too large"));
        }
    }
    return std::chrono::milliseconds{total};
}

std::expected<std::vector<std::chrono::milliseconds>, duration_failure>
parse_duration_list(std::string_view text) {
    std::vector<std::chrono::milliseconds> out;
    if (trim(text).empty()) {
        return std::unexpected(fail(duration_error::empty, text, "empty list"));
    }
    std::size_t item = 1;
    while (true) {
        const std::size_t comma = text.find(',');
        const std::string_view token = trim(text.substr(0, comma));
        auto d = parse_duration(token);
        if (!d) {
            std::string message = "item " + std::to_string(item) + " ";
            if (token.empty()) {
                message.append("is empty");
            } else {
                message.append(d.error().message);
            }
            return std::unexpected(duration_failure{d.error().reason, std::move(message)});
        }
        out.push_back(*d);
        if (comma == std::string_view::npos) break;
        text.remove_prefix(comma + 1);
        ++item;
    }
    return out;
}

std::string format_duration(std::chrono::milliseconds d) {
    RR_ASSERT(d.count() >= 0);
    std::int64_t rest = d.count();
    if (rest == 0) return "0s";
    std::string out;
    for (const unit_row& r : units) {
        const std::int64_t n = rest / r.ms;
        rest %= r.ms;
        if (n != 0) {
            out.append(std::to_string(n));
            out.append(r.name);
        }
    }
    return out;
}

}  // namespace ringrelay::core
