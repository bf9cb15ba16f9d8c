// queue/shaping_rate.cc: see shaping_rate.h.
// SECURITY: operator input; digits are accumulated with an overflow check.
#include "queue/shaping_rate.h"

#include <array>
#include <initializer_list>

namespace ringrelay::queue {

namespace {

constexpr std::uint64_t controller_period_us = 1000 * us_per_second;

struct period_row {
    std::string_view name;
    std::uint64_t us;
};

// clang-format off
constexpr std::array<period_row, 11> periods{{
    {"s", us_per_second}, {"sec", us_per_second}, {"second", us_per_second},
    {"m", 60 * us_per_second}, {"min", 60 * us_per_second}, {"minute", 60 * us_per_second},
    {"h", 3600 * us_per_second}, {"hr", 3600 * us_per_second}, {"hour", 3600 * us_per_second},
    {"d", 86400 * us_per_second}, {"day", 86400 * us_per_second},
}};
// clang-format on

std::string cat(std::initializer_list<std::string_view> parts) {
    std::string out;
    for (const std::string_view p : parts) out.append(p);
    return out;
}

// Operator text in a message: control octets become '?'.
std::string quote_text(std::string_view s) {
    std::string out = "\"";
    for (const char c : s) out.push_back((static_cast<unsigned char>(c) < 0x20 || c == 0x7f) ? '?' : c);
    return out + "\"";
}

// A positive decimal integer of at most `max`, all of `s`.
std::expected<std::uint64_t, std::string> positive(std::string_view s, std::uint64_t max, std::string_view what) {
    if (s.empty()) return std::unexpected(cat({"missing ", what}));
    std::uint64_t n = 0;
    for (const char c : s) {
        if (c < '0' || c > '9') return std::unexpected(cat({what, " ", quote_text(s), " is not a decimal integer"}));
        n = n * 10 + static_cast<std::uint64_t>(c - '0');
        if (n > max) return std::unexpected(cat({what, " ", quote_text(s), " is above ", std::to_string(max)}));
    }
    if (n == 0) return std::unexpected(cat({what, " must be at least 1"}));
    return n;
}

}  // namespace

bool shaping_rate::valid() const noexcept {
    bool known = period_us == controller_period_us;
    for (const period_row& p : periods) known = known || p.us == period_us;
    return known && count >= 1 && count <= max_rate_count && burst >= 1 && burst <= max_rate_burst;
}

std::uint64_t shaping_rate::milli_per_second() const noexcept {
    // count <= 1e9, so count * 1e9 fits in 64 bits.
    return count * 1000 * us_per_second / period_us;
}

std::uint64_t default_burst(std::uint64_t count, std::uint64_t period_us) noexcept {
    if (period_us == 0) return 1;
    const std::uint64_t per_second = (count * us_per_second + period_us - 1) / period_us;  // count <= 1e9
    if (per_second < 1) return 1;
    return per_second > max_rate_burst ? max_rate_burst : per_second;
}

shaping_rate rate_from_milli(std::uint64_t milli) noexcept {
    shaping_rate r;
    r.count = milli < 1 ? 1 : (milli > max_rate_count ? max_rate_count : milli);
    r.period_us = controller_period_us;
    r.burst = default_burst(r.count, r.period_us);
    return r;
}

std::expected<shaping_rate, std::string> parse_shaping_rate(std::string_view text) {
    const auto fail = [&](const std::string& why) { return std::unexpected(quote_text(text) + ": " + why); };
    std::string_view spec = text;
    std::string_view burst_text;
    bool has_burst = false;
    if (const std::size_t comma = spec.find(','); comma != std::string_view::npos) {
        constexpr std::string_view burst_key = "max_burst=";
        const std::string_view rest = spec.substr(comma + 1);
        if (rest.substr(0, burst_key.size()) != burst_key)
            return fail("expected \",max_burst=N\" after the rate");
        burst_text = rest.substr(burst_key.size());
        has_burst = true;
        spec = spec.substr(0, comma);
    }
    const std::size_t slash = spec.find('/');
    if (slash == std::string_view::npos) return fail("expected COUNT/PERIOD, e.g. \"10/s\" or \"600/min\"");
    auto count = positive(spec.substr(0, slash), max_rate_count, "the count");
    if (!count) return fail(count.error());
    const std::string_view period = spec.substr(slash + 1);
    shaping_rate r;
    r.count = *count;
    r.period_us = 0;
    for (const period_row& p : periods)
        if (p.name == period) r.period_us = p.us;
    if (r.period_us == 0) return fail(cat({"unknown period ", quote_text(period), " (use s, min, h or day)"}));
    if (has_burst) {
        auto burst = positive(burst_text, max_rate_burst, "max_burst");
        if (!burst) return fail(burst.error());
        r.burst = *burst;
    } else {
        r.burst = default_burst(r.count, r.period_us);
    }
    return r;
}

std::string format_shaping_rate(const shaping_rate& r) {
    if (r.period_us == controller_period_us)
        return std::to_string(r.count * 3600 / 1000) + "/h";  // count <= 1e9: no overflow
    std::string out = std::to_string(r.count) + "/";
    std::string_view unit = "s";
    if (r.period_us == 60 * us_per_second) unit = "min";
    if (r.period_us == 3600 * us_per_second) unit = "h";
    if (r.period_us == 86400 * us_per_second) unit = "day";
    out += unit;
    if (r.burst != default_burst(r.count, r.period_us)) out += ",max_burst=" + std::to_string(r.burst);
    return out;
}

}  // namespace ringrelay::queue
