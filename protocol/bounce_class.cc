// protocol/bounce_class.cc: see bounce_class.h.
#include "protocol/bounce_class.h"

#include <algorithm>
#include <initializer_list>

namespace ringrelay::protocol {

namespace {

constexpr std::array<std::string_view, bounce_class_count> class_names = {
    "invalid-recipient", "inactive-mailbox", "mailbox-full", "message-too-large", "spam-content",
    "policy",            "reputation",       "rate-limited", "authentication",    "dns",
    "tls",               "routing",          "protocol",     "other",
};

constexpr bool is_space(char c) noexcept { return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\f' || c == '\v'; }
constexpr bool is_digit(char c) noexcept { return c >= '0' && c <= '9'; }
constexpr char lower(char c) noexcept { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }

// Octets of a "d.d{1,3}.d{1,3}" status code (class 2, 4 or 5) at the start of `s` followed by
// white space or the end; 0 if there is none.
std::size_t status_prefix(std::string_view s) noexcept {
    if (s.size() < 5 || (s[0] != '2' && s[0] != '4' && s[0] != '5') || s[1] != '.') return 0;
    std::size_t i = 2;
    for (int part = 0; part < 2; ++part) {
        const std::size_t start = i;
        while (i < s.size() && is_digit(s[i]) && i - start < 4) ++i;
        if (i == start || i - start > 3) return 0;
        if (part == 0) {
            if (i >= s.size() || s[i] != '.') return 0;
            ++i;
        }
    }
    if (i < s.size() && !is_space(s[i])) return 0;
    return i;
}

// Joins pieces of text. (GCC 12 reports a false -Wrestrict on "literal" + std::string temporaries.)
std::string cat(std::initializer_list<std::string_view> parts) {
    std::string out;
    for (const std::string_view p : parts) out.append(p);
    return out;
}

std::string not_a_range(std::string_view what, std::string_view part) {
    return cat({what, " '", part, "' is not a number 0-999, a range A-B or *"});
}

// A number 0..999 at the start of `s`; advances `s`.
bool take_number(std::string_view& s, std::uint16_t& out) noexcept {
    std::size_t i = 0;
    unsigned v = 0;
    while (i < s.size() && is_digit(s[i]) && i < 3) v = v * 10 + static_cast<unsigned>(s[i++] - '0');
    if (i == 0 || (i < s.size() && is_digit(s[i]))) return false;
    out = static_cast<std::uint16_t>(v);
    s.remove_prefix(i);
    return true;
}

std::expected<status_range, std::string> parse_range(std::string_view part, std::string_view what) {
    if (part == "*") return status_range{0, 999};
    status_range r;
    std::string_view rest = part;
    if (!take_number(rest, r.lo)) return std::unexpected(not_a_range(what, part));
    r.hi = r.lo;
    if (!rest.empty()) {
        if (rest[0] != '-') return std::unexpected(not_a_range(what, part));
        rest.remove_prefix(1);
        if (!take_number(rest, r.hi) || !rest.empty())
            return std::unexpected(not_a_range(what, part));
        if (r.hi < r.lo) return std::unexpected(cat({what, " range '", part, "' is empty"}));
    }
    return r;
}

bool in(const status_range& r, std::uint16_t v) noexcept { return v >= r.lo && v <= r.hi; }

bool origin_matches(rule_origin want, rule_origin have) noexcept {
    if (want == rule_origin::any) return true;
    const rule_origin h = have == rule_origin::peer ? rule_origin::peer : rule_origin::local;
    return want == h;
}

}  // namespace

std::string_view to_string(bounce_class c) noexcept {
    const auto i = static_cast<std::size_t>(c);
    return i < class_names.size() ? class_names[i] : std::string_view("other");
}

std::optional<bounce_class> parse_bounce_class(std::string_view name) noexcept {
    for (std::size_t i = 0; i < class_names.size(); ++i)
        if (class_names[i] == name) return static_cast<bounce_class>(i);
    return std::nullopt;
}

bool status_pattern::matches(const enhanced_status& s) const noexcept {
    return s.present() && in(status_class, s.status_class) && in(subject, s.subject) && in(detail, s.detail);
}

std::expected<status_pattern, std::string> parse_status_pattern(std::string_view text) {
    const std::size_t dot1 = text.find('.');
    const std::size_t dot2 = dot1 == std::string_view::npos ? dot1 : text.find('.', dot1 + 1);
    if (dot2 == std::string_view::npos || text.find('.', dot2 + 1) != std::string_view::npos)
        return std::unexpected(cat({"status '", text, "' is not C.S.D (e.g. 5.1.1, *.7.26, 4.7.500-699)"}));
    const std::string_view cls = text.substr(0, dot1);
    status_pattern p;
    if (cls == "*") {
        p.status_class = {2, 5};
    } else if (cls == "2" || cls == "4" || cls == "5") {
        p.status_class = {static_cast<std::uint16_t>(cls[0] - '0'), static_cast<std::uint16_t>(cls[0] - '0')};
    } else {
        return std::unexpected(cat({"status '", text, "': the class must be 2, 4, 5 or *"}));
    }
    auto subject = parse_range(text.substr(dot1 + 1, dot2 - dot1 - 1), "status subject");
    if (!subject) return std::unexpected(subject.error());
    auto detail = parse_range(text.substr(dot2 + 1), "status detail");
    if (!detail) return std::unexpected(detail.error());
    p.subject = *subject;
    p.detail = *detail;
    return p;
}

std::string_view normalize_bounce_text(std::string_view text, std::span<char> out) noexcept {
    std::size_t n = 0;
    bool line_start = true;
    bool pending_space = false;
    std::size_t i = 0;
    while (i < text.size() && n < out.size()) {
        if (line_start) {
            // Each line of a multi-line reply may repeat the enhanced code (Gmail does):
            // "550-5.7.26 a\n550-5.7.26 b" arrives as "5.7.26 a\n5.7.26 b".
            while (i < text.size() && (text[i] == ' ' || text[i] == '\t')) ++i;
            i += status_prefix(text.substr(i));
            line_start = false;
            continue;
        }
        const char c = text[i++];
        if (c == '\n') line_start = true;
        if (is_space(c)) {
            pending_space = n > 0;
            continue;
        }
        if (pending_space) {
            if (n + 1 >= out.size()) break;  // no room for what follows: no trailing space
            out[n++] = ' ';
            pending_space = false;
        }
        out[n++] = lower(c);
    }
    return std::string_view(out.data(), n);
}

std::string normalize_bounce_pattern(std::string_view pattern) {
    std::string out;
    out.reserve(pattern.size());
    bool pending_space = false;
    for (const char c : pattern) {
        if (is_space(c)) {
            pending_space = !out.empty();
            continue;
        }
        if (pending_space) out.push_back(' ');
        pending_space = false;
        out.push_back(lower(c));
    }
    return out;
}

bounce_verdict bounce_rules::classify(const bounce_input& in) const noexcept {
    std::array<char, max_classified_text> buffer;
    std::string_view text;
    bool normalized = false;  // only when a rule with text conditions gets that far
    for (const bounce_rule& r : _rules) {
        if (!origin_matches(r.origin, in.origin)) continue;
        if (!r.code.empty() && std::find(r.code.begin(), r.code.end(), in.code) == r.code.end()) continue;
        if (!r.status.empty() &&
            std::none_of(r.status.begin(), r.status.end(), [&](const status_pattern& p) { return p.matches(in.enhanced); }))
            continue;
        if (!r.text.empty()) {
            if (!normalized) {
                text = normalize_bounce_text(in.text, buffer);
                normalized = true;
            }
            if (std::none_of(r.text.begin(), r.text.end(),
                             [&](const std::string& t) { return text.find(t) != std::string_view::npos; }))
                continue;
        }
        bounce_verdict v;
        v.cls = r.cls;
        v.rule = r.name;
        if (r.cls == bounce_class::reputation) v.blocklist = r.blocklist;
        return v;
    }
    return {};
}

const bounce_rule* bounce_rules::find(std::string_view name) const noexcept {
    for (const bounce_rule& r : _rules)
        if (r.name == name) return &r;
    return nullptr;
}

bounce_input bounce_input_from_reason(std::string_view reason) noexcept {
    bounce_input in;
    in.text = reason;
    if (reason.size() >= 4 && (reason[0] == '4' || reason[0] == '5') && is_digit(reason[1]) && is_digit(reason[2]) &&
        (reason[3] == ' ' || reason[3] == '-')) {
        in.origin = rule_origin::peer;
        in.code = static_cast<std::uint16_t>((reason[0] - '0') * 100 + (reason[1] - '0') * 10 + (reason[2] - '0'));
        in.text = reason.substr(4);
        in.enhanced = parse_enhanced_status(in.code, in.text);
    }
    return in;
}

}  // namespace ringrelay::protocol
