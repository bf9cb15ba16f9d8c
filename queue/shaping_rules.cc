// queue/shaping_rules.cc: see shaping_rules.h.
#include "queue/shaping_rules.h"

#include <re2/re2.h>
#include <simdjson.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <initializer_list>
#include <sstream>
#include <utility>

#include "core/ascii.h"
#include "core/duration.h"
#include "queue/shaping_embedded.h"  // generated from etc/shaping.json
#include "queue/site_name.h"

namespace ringrelay::queue {

namespace {

using simdjson::dom::array;
using simdjson::dom::element;
using simdjson::dom::object;

// Joins pieces of text. (GCC 12 reports a false -Wrestrict on "literal" + std::string temporaries.)
std::string cat(std::initializer_list<std::string_view> parts) {
    std::string out;
    for (const std::string_view p : parts) out.append(p);
    return out;
}

// Operator text in a message or a key path: control octets become '?', at most 80 octets.
std::string quote_text(std::string_view s) {
    std::string out = "\"";
    for (const char c : s.substr(0, 80)) out.push_back((static_cast<unsigned char>(c) < 0x20 || c == 0x7f) ? '?' : c);
    if (s.size() > 80) out += "...";
    return out + "\"";
}

bool printable(std::string_view s) noexcept {
    for (const char c : s)
        if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) return false;
    return true;
}

bool is_comment_key(std::string_view key) noexcept { return !key.empty() && key.front() == '_'; }

bool valid_name(std::string_view n) noexcept {
    if (n.empty() || n.size() > 64) return false;
    for (const char c : n)
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_' ||
              c == '.'))
            return false;
    return true;
}

// A host name or domain as rules write it: letters, digits, '-', '.', 1-253 octets, no empty
// label; one leading dot allowed when `leading_dot`; one trailing dot allowed (dropped later).
bool valid_host(std::string_view h, bool leading_dot) noexcept {
    if (leading_dot && !h.empty() && h.front() == '.') h.remove_prefix(1);
    if (!h.empty() && h.back() == '.') h.remove_suffix(1);
    if (h.empty() || h.size() > 253) return false;
    std::size_t label = 0;
    for (const char c : h) {
        if (c == '.') {
            if (label == 0) return false;
            label = 0;
            continue;
        }
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_'))
            return false;
        if (++label > 63) return false;
    }
    return label != 0;
}

// The error of one key: "PATH: reason".
struct key_error {
    std::string path;
    std::string reason;
};
using fail = std::unexpected<key_error>;

template <typename T>
using result = std::expected<T, key_error>;

// Object keys given twice are errors (simdjson keeps both).
result<void> unique_keys(object obj, const std::string& path) {
    std::vector<std::string_view> seen;
    for (auto field : obj) {
        for (const std::string_view s : seen)
            if (s == field.key) return fail(key_error{path, cat({quote_text(field.key), " given twice"})});
        seen.push_back(field.key);
    }
    return {};
}

std::string child(const std::string& path, std::string_view key) {
    return path.empty() ? std::string(key) : cat({path, ".", key});
}

// A string, or a non-empty array of non-empty printable strings.
result<std::vector<std::string>> string_list(element v, const std::string& path) {
    std::vector<std::string> out;
    const auto take = [&](element e) -> result<void> {
        if (!e.is_string()) return fail(key_error{path, "expected a string or an array of strings"});
        const std::string_view s = e.get_string().value_unsafe();
        if (s.empty() || !printable(s)) return fail(key_error{path, "expected non-empty text without control characters"});
        out.emplace_back(s);
        return {};
    };
    if (array items; v.get_array().get(items) == simdjson::SUCCESS) {
        if (items.size() == 0) return fail(key_error{path, "empty list"});
        if (items.size() > 64) return fail(key_error{path, "more than 64 items"});
        for (element item : items)
            if (auto r = take(item); !r) return fail(r.error());
    } else if (auto r = take(v); !r) {
        return fail(r.error());
    }
    return out;
}

result<std::uint32_t> count_value(element v, const std::string& path, std::uint64_t max) {
    std::int64_t n = 0;
    if (v.get_int64().get(n) != simdjson::SUCCESS || n < 1 || static_cast<std::uint64_t>(n) > max)
        return fail(key_error{path, cat({"expected an integer from 1 to ", std::to_string(max)})});
    return static_cast<std::uint32_t>(n);
}

result<shaping_rate> rate_value(element v, const std::string& path) {
    std::string_view s;
    if (v.get_string().get(s) != simdjson::SUCCESS)
        return fail(key_error{path, "expected a rate as text, e.g. \"10/s\" or \"600/min\""});
    auto r = parse_shaping_rate(s);
    if (!r) return fail(key_error{path, r.error()});
    return *r;
}

result<std::chrono::milliseconds> duration_value(element v, const std::string& path, std::chrono::milliseconds max,
                                                 std::string_view max_text) {
    std::string_view s;
    if (v.get_string().get(s) != simdjson::SUCCESS)
        return fail(key_error{path, "expected a duration as text, e.g. \"30s\", \"10m\" or \"1h\""});
    auto d = core::parse_duration(s);
    if (!d) return fail(key_error{path, d.error().message});
    if (*d < std::chrono::seconds(1) || *d > max)
        return fail(key_error{path, cat({quote_text(s), ": must be from 1s to ", max_text})});
    return *d;
}

// "daily": [counts] of a warm-up.
result<std::vector<std::uint64_t>> warmup_daily(element v, const std::string& p) {
    array items;
    if (v.get_array().get(items) != simdjson::SUCCESS || items.size() == 0 || items.size() > max_warmup_days)
        return fail(key_error{p, cat({"expected an array of 1 to ", std::to_string(max_warmup_days),
                                      " daily message counts"})});
    std::vector<std::uint64_t> daily;
    std::size_t i = 0;
    for (element item : items) {
        ++i;
        auto n = count_value(item, cat({p, "[", std::to_string(i), "]"}), max_rate_count);
        if (!n) return fail(n.error());
        daily.push_back(*n);
    }
    return daily;
}

result<std::int64_t> warmup_start(element v, const std::string& p) {
    std::string_view s;
    std::optional<std::int64_t> day;
    if (v.get_string().get(s) == simdjson::SUCCESS) day = parse_civil_date(s);
    if (!day) return fail(key_error{p, "expected a date \"YYYY-MM-DD\""});
    return *day;
}

// The keys of a warm-up object: start and daily; a source's (`source_level`) also providers,
// source and note.
struct warmup_fields {
    std::optional<std::int64_t> start;
    std::optional<std::vector<std::uint64_t>> daily;
    std::optional<element> providers;
};

result<warmup_fields> warmup_object(element v, const std::string& path, bool source_level) {
    object obj;
    if (v.get_object().get(obj) != simdjson::SUCCESS)
        return fail(key_error{path, source_level ? "expected an object {\"start\": \"YYYY-MM-DD\", \"daily\": [counts], "
                                                   "\"providers\": {...}}"
                                                 : "expected an object {\"daily\": [counts], \"start\": \"YYYY-MM-DD\" "
                                                   "(optional)}"});
    if (auto u = unique_keys(obj, path); !u) return fail(u.error());
    warmup_fields f;
    for (auto field : obj) {
        const std::string p = child(path, field.key);
        if (is_comment_key(field.key)) continue;
        if (field.key == "start") {
            auto d = warmup_start(field.value, p);
            if (!d) return fail(d.error());
            f.start = *d;
        } else if (field.key == "daily") {
            auto d = warmup_daily(field.value, p);
            if (!d) return fail(d.error());
            f.daily = std::move(*d);
        } else if (source_level && field.key == "providers") {
            f.providers = field.value;
        } else if (source_level && (field.key == "source" || field.key == "note")) {
            if (auto s = string_list(field.value, p); !s) return fail(s.error());
        } else {
            return fail(key_error{p, source_level ? "unknown key (a warm-up has start, daily, providers, source, note)"
                                                  : "unknown key (a provider's warm-up has start and daily)"});
        }
    }
    return f;
}

// One source's warm-up: {"start": ..., "daily": [...], "providers": {"P": {"daily": [...],
// "start": optional}}, "source", "note"}.
result<source_warmup> source_warmup_object(element v, const std::string& path) {
    auto f = warmup_object(v, path, true);
    if (!f) return fail(f.error());
    if (f->daily && !f->start) return fail(key_error{path, "missing \"start\""});
    if (!f->daily && !f->providers) return fail(key_error{path, "missing \"daily\" (or \"providers\")"});
    source_warmup w;
    if (f->daily) w.all_sites = warmup_schedule{*f->start, std::move(*f->daily)};
    if (!f->providers) return w;
    const std::string pp = child(path, "providers");
    object pobj;
    if (f->providers->get_object().get(pobj) != simdjson::SUCCESS || pobj.size() == 0)
        return fail(key_error{pp, "expected an object {\"PROVIDER\": {\"daily\": [counts]}, ...}"});
    if (auto u = unique_keys(pobj, pp); !u) return fail(u.error());
    for (auto pr : pobj) {
        const std::string ppp = cat({pp, ".", quote_text(pr.key)});
        if (is_comment_key(pr.key)) continue;
        if (!valid_name(pr.key)) return fail(key_error{ppp, "expected a provider name"});
        auto pf = warmup_object(pr.value, ppp, false);
        if (!pf) return fail(pf.error());
        if (!pf->daily) return fail(key_error{ppp, "missing \"daily\""});
        const std::optional<std::int64_t> start = pf->start ? pf->start : f->start;
        if (!start) return fail(key_error{ppp, "missing \"start\" (here or in the source's warm-up)"});
        w.providers.push_back(source_warmup::provider_schedule{std::string(pr.key), warmup_schedule{*start, std::move(*pf->daily)}});
    }
    return w;
}

// The top-level "warmup": {"SOURCE": {...}, ...}, keyed by egress source name.
result<std::vector<source_warmup>> warmup_section(element v, const std::string& path, std::string_view label) {
    object obj;
    if (v.get_object().get(obj) != simdjson::SUCCESS)
        return fail(key_error{path, "expected an object {\"EGRESS SOURCE\": {\"start\": ..., \"daily\": [...]}, ...}"});
    if (auto u = unique_keys(obj, path); !u) return fail(u.error());
    std::vector<source_warmup> out;
    for (auto field : obj) {
        const std::string p = cat({path, ".", quote_text(field.key)});
        if (is_comment_key(field.key)) continue;
        if (!valid_name(field.key)) return fail(key_error{p, "an egress source name is 1-64 letters, digits, '-', '_' and '.'"});
        auto w = source_warmup_object(field.value, p);
        if (!w) return fail(w.error());
        w->source = std::string(field.key);
        w->origin = cat({label, ": ", p});
        out.push_back(std::move(*w));
    }
    return out;
}

constexpr std::string_view limit_keys =
    "connection_limit, max_connection_rate, max_message_rate, max_deliveries_per_connection, "
    "max_recipients_per_transaction, idle_timeout, adaptive, source, note";

// One limits key of a rule; false if `key` is not one.
result<bool> limit_field(shaping_limits& l, std::string_view key, element v, const std::string& path) {
    const std::string p = child(path, key);
    if (key == "connection_limit") {
        auto n = count_value(v, p, 100'000);
        if (!n) return fail(n.error());
        l.connection_limit = *n;
    } else if (key == "max_connection_rate") {
        auto r = rate_value(v, p);
        if (!r) return fail(r.error());
        l.max_connection_rate = *r;
    } else if (key == "max_message_rate") {
        auto r = rate_value(v, p);
        if (!r) return fail(r.error());
        l.max_message_rate = *r;
    } else if (key == "max_deliveries_per_connection") {
        auto n = count_value(v, p, 1'000'000);
        if (!n) return fail(n.error());
        l.max_deliveries_per_connection = *n;
    } else if (key == "max_recipients_per_transaction") {
        auto n = count_value(v, p, 100'000);
        if (!n) return fail(n.error());
        l.max_recipients_per_transaction = *n;
    } else if (key == "idle_timeout") {
        auto d = duration_value(v, p, std::chrono::hours(24), "1d");
        if (!d) return fail(d.error());
        l.idle_timeout = *d;
    } else if (key == "adaptive") {
        bool b = false;
        if (v.get_bool().get(b) != simdjson::SUCCESS) return fail(key_error{p, "expected true or false"});
        l.adaptive = b;
    } else if (key == "warmup") {
        // A warm-up is an egress source's (its IP address's reputation), not a site's.
        return fail(key_error{p, "a warm-up belongs to an egress source: the top level's \"warmup\": "
                                 "{\"SOURCE\": {\"start\": ..., \"daily\": [...], \"providers\": {...}}}"});
    } else if (key == "source") {
        auto s = string_list(v, p);
        if (!s) return fail(s.error());
        l.source = std::move(*s);
    } else if (key == "note") {
        auto s = string_list(v, p);
        if (!s) return fail(s.error());
    } else {
        return false;
    }
    return true;
}

// An object of limits, each key once.
result<object> limits_of_object(element v, const std::string& path) {
    object obj;
    if (v.get_object().get(obj) != simdjson::SUCCESS) return fail(key_error{path, "expected an object of limits"});
    if (auto u = unique_keys(obj, path); !u) return fail(u.error());
    return obj;
}

result<shaping_limits> limits_object(element v, const std::string& path) {
    auto obj = limits_of_object(v, path);
    if (!obj) return fail(obj.error());
    shaping_limits l;
    for (auto field : *obj) {
        if (is_comment_key(field.key)) continue;
        auto known = limit_field(l, field.key, field.value, path);
        if (!known) return fail(known.error());
        if (!*known) return fail(key_error{child(path, field.key), cat({"unknown key (a rule has ", limit_keys, ")"})});
    }
    return l;
}

result<std::vector<std::string>> match_object(element v, const std::string& path) {
    object obj;
    if (v.get_object().get(obj) != simdjson::SUCCESS)
        return fail(key_error{path, "expected {\"mx_suffix\": [\".example.net\", ...]}"});
    if (auto u = unique_keys(obj, path); !u) return fail(u.error());
    std::vector<std::string> suffixes;
    for (auto field : obj) {
        const std::string p = child(path, field.key);
        if (is_comment_key(field.key)) continue;
        if (field.key != "mx_suffix") return fail(key_error{p, "unknown key (a match has mx_suffix)"});
        auto list = string_list(field.value, p);
        if (!list) return fail(list.error());
        if (list->size() > max_mx_suffixes)
            return fail(key_error{p, cat({"more than ", std::to_string(max_mx_suffixes), " suffixes"})});
        for (const std::string& s : *list) {
            if (!valid_host(s, true))
                return fail(key_error{p, cat({quote_text(s), " is not a host name suffix (\".example.net\" or \"example.net\")"})});
            const bool dot = s.front() == '.';
            std::string n = normalize_host(dot ? std::string_view(s).substr(1) : std::string_view(s));
            suffixes.push_back(dot ? "." + n : n);
        }
    }
    if (suffixes.empty()) return fail(key_error{path, "missing \"mx_suffix\""});
    return suffixes;
}

result<automation_rule> automation_object(element v, std::string& where) {
    object obj;
    if (v.get_object().get(obj) != simdjson::SUCCESS) return fail(key_error{where, "expected an object"});
    automation_rule r;
    for (auto field : obj) {
        if (field.key != "name") continue;
        std::string_view n;
        if (field.value.get_string().get(n) != simdjson::SUCCESS || !valid_name(n))
            return fail(key_error{child(where, "name"), "expected 1-64 characters of letters, digits, '-', '_' and '.'"});
        r.name = std::string(n);
        where += " " + quote_text(n);
        break;
    }
    if (auto u = unique_keys(obj, where); !u) return fail(u.error());
    bool has_match = false, has_action = false, has_duration = false, has_factor = false;
    for (auto field : obj) {
        const std::string_view key = field.key;
        const std::string p = child(where, key);
        if (is_comment_key(key) || key == "name") continue;
        if (key == "provider") {
            std::string_view n;
            if (field.value.get_string().get(n) != simdjson::SUCCESS || !valid_name(n))
                return fail(key_error{p, "expected a provider name"});
            r.provider = std::string(n);
        } else if (key == "match") {
            std::string_view pattern;
            if (field.value.get_string().get(pattern) != simdjson::SUCCESS || pattern.empty())
                return fail(key_error{p, "expected a regular expression (RE2 syntax) as text"});
            if (pattern.size() > max_automation_pattern)
                return fail(key_error{p, cat({"longer than ", std::to_string(max_automation_pattern), " octets"})});
            RE2::Options options;
            options.set_log_errors(false);
            auto re = std::make_shared<const re2::RE2>(re2::StringPiece(pattern.data(), pattern.size()), options);
            if (!re->ok()) return fail(key_error{p, cat({"bad regular expression: ", re->error()})});
            r.pattern = std::string(pattern);
            r.regex = std::move(re);
            has_match = true;
        } else if (key == "action") {
            std::string_view a;
            if (field.value.get_string().get(a) == simdjson::SUCCESS && a == "suspend") {
                r.action = automation_action::suspend;
            } else if (a == "throttle") {
                r.action = automation_action::throttle;
            } else {
                return fail(key_error{p, "expected \"suspend\" or \"throttle\""});
            }
            has_action = true;
        } else if (key == "duration") {
            auto d = duration_value(field.value, p, std::chrono::hours(24 * 30), "30d");
            if (!d) return fail(d.error());
            r.duration = *d;
            has_duration = true;
        } else if (key == "factor") {
            double f = 0;
            if (field.value.get_double().get(f) != simdjson::SUCCESS || !std::isfinite(f) || f <= 0 || f >= 1)
                return fail(key_error{p, "expected a number between 0 and 1 (exclusive): the allowed rate is multiplied by it"});
            r.factor = f;
            has_factor = true;
        } else if (key == "source") {
            auto s = string_list(field.value, p);
            if (!s) return fail(s.error());
            r.source = std::move(*s);
        } else if (key == "note") {
            auto s = string_list(field.value, p);
            if (!s) return fail(s.error());
        } else {
            return fail(key_error{p, "unknown key (an automation rule has name, provider, match, action, duration, "
                                     "factor, source, note)"});
        }
    }
    if (!has_match) return fail(key_error{where, "missing \"match\""});
    if (!has_action) return fail(key_error{where, "missing \"action\""});
    if (!has_duration) return fail(key_error{where, "missing \"duration\""});
    if (r.action == automation_action::throttle && !has_factor)
        return fail(key_error{where, "missing \"factor\" (a throttle multiplies the allowed rate by it)"});
    if (r.action == automation_action::suspend && has_factor)
        return fail(key_error{child(where, "factor"), "only a throttle has a factor"});
    return r;
}

// ---- tenants and campaigns (issue 17) --------------------------------------------------------

bool key_less(const keyed_rule& a, const keyed_rule& b) { return a.key < b.key; }

result<keyed_rule> keyed_object(element v, const std::string& path, keyed_limit which) {
    auto obj = limits_of_object(v, path);
    if (!obj) return fail(obj.error());
    // A tenant or campaign rule's keys are some of a site rule's: read as those, the others refused.
    shaping_limits l;
    for (auto field : *obj) {
        if (is_comment_key(field.key)) continue;
        if (field.key != "max_message_rate" && field.key != "source" && field.key != "note")
            return fail(key_error{child(path, field.key),
                                  cat({"unknown key (a ", to_string(which), " rule has max_message_rate, source, note)"})});
        if (auto known = limit_field(l, field.key, field.value, path); !known) return fail(known.error());
    }
    keyed_rule t;
    t.max_message_rate = l.max_message_rate;
    t.source = std::move(l.source);
    return t;
}

// "tenants": {"TENANT": {limits}, ...} or "campaigns": {"CAMPAIGN": {limits}, ...}, sorted into `out`.
result<void> parse_keyed(element v, const std::string& path, keyed_limit which, std::vector<keyed_rule>& out) {
    const bool tenant = which == keyed_limit::tenant;
    object obj;
    if (v.get_object().get(obj) != simdjson::SUCCESS)
        return fail(key_error{path, tenant ? "expected an object {\"TENANT\": {\"max_message_rate\": ...}, ...}"
                                           : "expected an object {\"CAMPAIGN\": {\"max_message_rate\": ...}, ...}"});
    const std::size_t most = tenant ? max_shaping_tenants : max_shaping_campaigns;
    if (obj.size() > most) return fail(key_error{path, cat({"more than ", std::to_string(most), " ", path})});
    for (auto t : obj) {
        if (is_comment_key(t.key)) continue;
        const std::string tp = cat({path, ".", quote_text(t.key)});
        const std::size_t longest = tenant ? max_tenant_name : max_campaign_name;
        if (t.key.empty() || t.key.size() > longest || !printable(t.key))
            return fail(key_error{tp, cat({tenant ? "a tenant is an AUTH user or a sender domain: 1 to "
                                                  : "a campaign is its header's value: 1 to ",
                                           std::to_string(longest), " printable octets"})});
        auto rule = keyed_object(t.value, tp, which);
        if (!rule) return fail(rule.error());
        rule->key = core::ascii_lowered(t.key);
        out.push_back(std::move(*rule));
    }
    std::sort(out.begin(), out.end(), key_less);
    for (std::size_t i = 1; i < out.size(); ++i)
        if (out[i].key == out[i - 1].key)
            return fail(key_error{cat({path, ".", quote_text(out[i].key)}), cat({"given twice (", path, " compare without case)"})});
    return {};
}

// `over`'s tenant (campaign) rules merged over `base`'s, field by field.
void merge_keyed(std::vector<keyed_rule>& base, const std::vector<keyed_rule>& over) {
    for (const keyed_rule& t : over) {
        const auto it = std::lower_bound(base.begin(), base.end(), t, key_less);
        if (it == base.end() || it->key != t.key) {
            base.insert(it, t);
            continue;
        }
        if (t.max_message_rate) it->max_message_rate = t.max_message_rate;
        if (!t.source.empty()) it->source = t.source;
    }
}

const keyed_rule* find_keyed(const std::vector<keyed_rule>& rules, const std::string& key) {
    keyed_rule probe;
    probe.key = key;
    const auto it = std::lower_bound(rules.begin(), rules.end(), probe, key_less);
    return it != rules.end() && it->key == key ? &*it : nullptr;
}

result<shaping_rules> parse_document(element root, std::string_view label) {
    object top;
    if (root.get_object().get(top) != simdjson::SUCCESS)
        return fail(key_error{"", "the top level must be a JSON object (default, domains, providers, automation)"});
    if (auto u = unique_keys(top, ""); !u) return fail(u.error());
    shaping_rules rules;
    for (auto field : top) {
        const std::string_view key = field.key;
        const std::string p(key);
        if (is_comment_key(key)) continue;
        if (key == "version") {
            std::int64_t n = 0;
            if (field.value.get_int64().get(n) != simdjson::SUCCESS || n != 1)
                return fail(key_error{p, "only version 1 is known"});
        } else if (key == "about") {
            if (auto s = string_list(field.value, p); !s) return fail(s.error());
        } else if (key == "default") {
            auto l = limits_object(field.value, p);
            if (!l) return fail(l.error());
            rules.default_rule = std::move(*l);
        } else if (key == "domains") {
            object obj;
            if (field.value.get_object().get(obj) != simdjson::SUCCESS)
                return fail(key_error{p, "expected an object {\"DOMAIN\": {limits}, ...}"});
            if (obj.size() > max_shaping_domains)
                return fail(key_error{p, cat({"more than ", std::to_string(max_shaping_domains), " domains"})});
            for (auto d : obj) {
                const std::string dp = cat({p, ".", quote_text(d.key)});
                if (is_comment_key(d.key)) continue;
                if (!valid_host(d.key, false)) return fail(key_error{dp, "not a domain name"});
                auto l = limits_object(d.value, dp);
                if (!l) return fail(l.error());
                rules.domains.push_back(domain_rule{normalize_host(d.key), std::move(*l)});
            }
            std::sort(rules.domains.begin(), rules.domains.end(),
                      [](const domain_rule& a, const domain_rule& b) { return a.domain < b.domain; });
            for (std::size_t i = 1; i < rules.domains.size(); ++i)
                if (rules.domains[i].domain == rules.domains[i - 1].domain)
                    return fail(key_error{cat({p, ".", quote_text(rules.domains[i].domain)}),
                                          "given twice (domains compare without case and trailing dot)"});
        } else if (key == "providers") {
            object obj;
            if (field.value.get_object().get(obj) != simdjson::SUCCESS)
                return fail(key_error{p, "expected an object {\"NAME\": {\"match\": {...}, limits}, ...}"});
            if (obj.size() > max_shaping_providers)
                return fail(key_error{p, cat({"more than ", std::to_string(max_shaping_providers), " providers"})});
            if (auto u = unique_keys(obj, p); !u) return fail(u.error());
            for (auto pr : obj) {
                const std::string pp = cat({p, ".", quote_text(pr.key)});
                if (is_comment_key(pr.key)) continue;
                if (!valid_name(pr.key))
                    return fail(key_error{pp, "a provider name is 1-64 letters, digits, '-', '_' and '.'"});
                object pobj;
                if (pr.value.get_object().get(pobj) != simdjson::SUCCESS)
                    return fail(key_error{pp, "expected an object with match and limits"});
                if (auto u = unique_keys(pobj, pp); !u) return fail(u.error());
                provider_rule rule;
                rule.name = std::string(pr.key);
                rule.origin = cat({label, ": ", pp});
                for (auto f : pobj) {
                    if (is_comment_key(f.key)) continue;
                    if (f.key == "match") {
                        auto m = match_object(f.value, child(pp, "match"));
                        if (!m) return fail(m.error());
                        rule.mx_suffix = std::move(*m);
                        continue;
                    }
                    auto known = limit_field(rule.limits, f.key, f.value, pp);
                    if (!known) return fail(known.error());
                    if (!*known)
                        return fail(key_error{child(pp, f.key), cat({"unknown key (a provider has match, ", limit_keys, ")"})});
                }
                rules.providers.push_back(std::move(rule));
            }
        } else if (key == "tenants") {
            if (auto t = parse_keyed(field.value, p, keyed_limit::tenant, rules.tenants); !t) return fail(t.error());
        } else if (key == "campaigns") {
            if (auto t = parse_keyed(field.value, p, keyed_limit::campaign, rules.campaigns); !t) return fail(t.error());
        } else if (key == "campaign_header") {
            std::string_view name;
            if (field.value.get_string().get(name) != simdjson::SUCCESS)
                return fail(key_error{p, "expected a header field name (\"X-Campaign-Id\"), or \"\" for none"});
            if (const std::string_view why = campaign_header_problem(name); !name.empty() && !why.empty())
                return fail(key_error{p, cat({quote_text(name), ": ", why})});
            rules.campaign_header = std::string(name);
        } else if (key == "automation") {
            array items;
            if (field.value.get_array().get(items) != simdjson::SUCCESS)
                return fail(key_error{p, "expected an array of automation rules"});
            if (items.size() > max_automation_rules)
                return fail(key_error{p, cat({"more than ", std::to_string(max_automation_rules), " rules"})});
            std::size_t n = 0;
            for (element item : items) {
                ++n;
                std::string where = cat({"automation rule ", std::to_string(n)});
                auto r = automation_object(item, where);
                if (!r) return fail(r.error());
                if (!r->name.empty())
                    for (const automation_rule& e : rules.automation)
                        if (e.name == r->name) return fail(key_error{where, "the name is given to two rules"});
                r->origin = cat({label, ": ", where});
                rules.automation.push_back(std::move(*r));
            }
        } else if (key == "warmup") {
            auto w = warmup_section(field.value, p, label);
            if (!w) return fail(w.error());
            rules.warmup = std::move(*w);
        } else {
            return fail(key_error{p, "unknown key (the top level has default, domains, providers, tenants, "
                                     "campaigns, campaign_header, automation, warmup, version, about)"});
        }
    }
    return rules;
}

std::expected<std::string, std::string> read_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) return std::unexpected(std::string("cannot read: ") + std::strerror(errno));
    std::ostringstream ss;
    ss << in.rdbuf();
    if (in.bad()) return std::unexpected(std::string("cannot read: ") + std::strerror(errno));
    return ss.str();
}

}  // namespace

// Howard Hinnant's days_from_civil (public domain), for years 1970-9999.
std::optional<std::int64_t> parse_civil_date(std::string_view t) noexcept {
    if (t.size() != 10 || t[4] != '-' || t[7] != '-') return std::nullopt;
    const auto digits = [&](std::size_t at, std::size_t n) -> int {
        int v = 0;
        for (std::size_t i = at; i < at + n; ++i) {
            if (t[i] < '0' || t[i] > '9') return -1;
            v = v * 10 + (t[i] - '0');
        }
        return v;
    };
    const int y = digits(0, 4), m = digits(5, 2), d = digits(8, 2);
    if (y < 1970 || m < 1 || m > 12 || d < 1) return std::nullopt;
    const bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    constexpr int month_days[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (d > month_days[m - 1] + (m == 2 && leap ? 1 : 0)) return std::nullopt;
    const int yy = m <= 2 ? y - 1 : y;
    const int era = yy / 400;
    const int yoe = yy - era * 400;
    const int doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    const int doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return static_cast<std::int64_t>(era) * 146097 + doe - 719468;
}

std::optional<std::uint64_t> warmup_allowance(const warmup_schedule& w, std::int64_t day) noexcept {
    if (w.daily.empty()) return std::nullopt;
    if (day < w.start_day) return w.daily.front();
    const auto i = static_cast<std::uint64_t>(day - w.start_day);
    if (i >= w.daily.size()) return std::nullopt;
    return w.daily[i];
}

void shaping_limits::merge_from(const shaping_limits& over) {
    if (over.connection_limit) connection_limit = over.connection_limit;
    if (over.max_connection_rate) max_connection_rate = over.max_connection_rate;
    if (over.max_message_rate) max_message_rate = over.max_message_rate;
    if (over.max_deliveries_per_connection) max_deliveries_per_connection = over.max_deliveries_per_connection;
    if (over.max_recipients_per_transaction) max_recipients_per_transaction = over.max_recipients_per_transaction;
    if (over.idle_timeout) idle_timeout = over.idle_timeout;
    if (over.adaptive) adaptive = over.adaptive;
    if (!over.source.empty()) source = over.source;
}

std::size_t provider_rule::match_length(std::string_view host) const noexcept {
    std::size_t best = 0;
    for (const std::string& s : mx_suffix) {
        std::size_t len = 0;
        if (s.front() == '.') {
            if (host.size() > s.size() && host.ends_with(s)) len = s.size();
        } else if (host == s) {
            len = s.size() + 1;  // as specific as ".s"
        } else if (host.size() > s.size() && host.ends_with(s) && host[host.size() - s.size() - 1] == '.') {
            len = s.size() + 1;
        }
        best = std::max(best, len);
    }
    return best;
}

std::string_view to_string(automation_action a) noexcept {
    return a == automation_action::suspend ? "suspend" : "throttle";
}

bool automation_rule::matches(std::string_view subject) const noexcept {
    if (!regex) return false;
    return re2::RE2::PartialMatch(re2::StringPiece(subject.data(), subject.size()), *regex);
}

const domain_rule* shaping_rules::find_domain(std::string_view domain) const {
    const std::string d = normalize_host(domain);
    const auto it = std::lower_bound(domains.begin(), domains.end(), d,
                                     [](const domain_rule& r, const std::string& k) { return r.domain < k; });
    return it != domains.end() && it->domain == d ? &*it : nullptr;
}

std::string_view to_string(keyed_limit k) noexcept { return k == keyed_limit::tenant ? "tenant" : "campaign"; }

std::optional<shaping_rate> shaping_rules::keyed_rate(keyed_limit which, std::string_view key) const {
    const std::vector<keyed_rule>& rules = which == keyed_limit::tenant ? tenants : campaigns;
    if (key.empty() || rules.empty()) return std::nullopt;
    const keyed_rule* own = find_keyed(rules, core::ascii_lowered(key));
    if (own != nullptr && own->max_message_rate) return own->max_message_rate;
    const keyed_rule* every = find_keyed(rules, "*");
    return every != nullptr ? every->max_message_rate : std::nullopt;
}

std::string_view campaign_header_problem(std::string_view name) noexcept {
    if (name.empty() || name.size() > max_campaign_header_name)
        return "a header field name is 1 to 64 octets";
    for (const char c : name)  // RFC 5322 §3.6.8 ftext: printable US-ASCII except ':'
        if (c < 33 || c > 126 || c == ':') return "a header field name has printable US-ASCII octets other than ':'";
    // Fields the message needs (RFC 5322 §3.6, RFC 2045, RFC 6376, RFC 5321 §4.4): stripping them
    // would damage every message.
    static constexpr std::string_view needed[] = {
        "from", "sender", "reply-to", "to", "cc", "date", "subject", "message-id", "in-reply-to", "references",
        "received", "return-path", "mime-version", "dkim-signature"};
    for (const std::string_view n : needed)
        if (core::iequals(name, n)) return "the message needs this field: it would be stripped from every message";
    if (core::istarts_with(name, "content-")) return "the message needs its Content-* fields: they would be stripped";
    return {};
}

const provider_rule* shaping_rules::find_provider(std::string_view name) const {
    for (const provider_rule& p : providers)
        if (p.name == name) return &p;
    return nullptr;
}

resolved_shaping shaping_rules::resolve(std::string_view domain, std::span<const std::string_view> mx_hosts) const {
    const provider_rule* provider = nullptr;
    std::size_t best = 0;
    for (const std::string_view h : mx_hosts) {
        const std::string host = normalize_host(h);
        for (const provider_rule& p : providers) {
            const std::size_t len = p.match_length(host);
            if (len > best) {
                best = len;
                provider = &p;
            }
        }
    }
    const domain_rule* dom = find_domain(domain);
    shaping_limits l = default_rule;
    if (provider != nullptr) l.merge_from(provider->limits);
    if (dom != nullptr) l.merge_from(dom->limits);
    resolved_shaping r;
    r.connection_limit = l.connection_limit.value_or(builtin_connection_limit);
    r.max_connection_rate = l.max_connection_rate;
    r.max_message_rate = l.max_message_rate;
    r.max_deliveries_per_connection = l.max_deliveries_per_connection.value_or(builtin_max_deliveries_per_connection);
    r.max_recipients_per_transaction = l.max_recipients_per_transaction;
    r.idle_timeout = l.idle_timeout.value_or(builtin_idle_timeout);
    r.adaptive = l.adaptive.value_or(true);
    if (dom != nullptr) r.domain_rule = dom->domain;
    if (provider != nullptr) r.provider = provider->name;
    return r;
}

resolved_shaping shaping_rules::resolve(std::string_view domain, std::span<const std::string> mx_hosts) const {
    std::vector<std::string_view> views(mx_hosts.begin(), mx_hosts.end());
    return resolve(domain, std::span<const std::string_view>(views));
}

const source_warmup* shaping_rules::find_warmup(std::string_view source) const noexcept {
    for (const source_warmup& w : warmup)
        if (w.source == source) return &w;
    return nullptr;
}

const warmup_schedule* source_warmup::schedule_for(std::string_view provider,
                                                   std::string_view& counted_as) const noexcept {
    if (!provider.empty())
        for (const provider_schedule& p : providers)
            if (p.provider == provider) {
                counted_as = p.provider;
                return &p.schedule;
            }
    counted_as = {};
    return all_sites ? &*all_sites : nullptr;
}

const automation_rule* shaping_rules::match_automation(std::string_view provider, std::string_view subject) const {
    for (const automation_rule& r : automation)
        if ((r.provider.empty() || r.provider == provider) && r.matches(subject)) return &r;
    return nullptr;
}

void automation_subject(std::uint16_t code, std::string_view text, std::string& out) {
    out.clear();
    if (code != 0) {
        out += std::to_string(code);
        out.push_back(' ');
    }
    for (const char c : text) {
        if (out.size() >= max_automation_subject) break;
        out.push_back(c == '\n' || c == '\r' ? ' ' : c);
    }
}

shaping_rules flag_default_rule(std::uint32_t max_connections_per_destination, std::uint32_t max_messages_per_connection,
                                std::uint32_t idle_connection_timeout_s, std::string_view campaign_header) {
    shaping_rules r;
    if (!campaign_header.empty()) r.campaign_header = std::string(campaign_header);
    r.default_rule.connection_limit = max_connections_per_destination;
    r.default_rule.max_deliveries_per_connection = max_messages_per_connection;
    r.default_rule.idle_timeout = std::chrono::seconds(idle_connection_timeout_s);
    return r;
}

std::expected<shaping_rules, std::string> parse_shaping_rules(std::string_view json, std::string_view label) {
    simdjson::dom::parser parser;
    const simdjson::padded_string padded(json);
    element root;
    if (auto err = parser.parse(padded).get(root); err)
        return std::unexpected(cat({label, ": not valid JSON: ", simdjson::error_message(err)}));
    auto rules = parse_document(root, label);
    if (!rules) {
        if (rules.error().path.empty()) return std::unexpected(cat({label, ": ", rules.error().reason}));
        return std::unexpected(cat({label, ": ", rules.error().path, ": ", rules.error().reason}));
    }
    return std::move(*rules);
}

shaping_rules merge_shaping_rules(shaping_rules base, const shaping_rules& over) {
    base.default_rule.merge_from(over.default_rule);
    for (const domain_rule& d : over.domains) {
        const auto it = std::lower_bound(base.domains.begin(), base.domains.end(), d.domain,
                                         [](const domain_rule& r, const std::string& k) { return r.domain < k; });
        if (it != base.domains.end() && it->domain == d.domain) {
            it->limits.merge_from(d.limits);
        } else {
            base.domains.insert(it, d);
        }
    }
    for (const provider_rule& p : over.providers) {
        provider_rule* existing = nullptr;
        for (provider_rule& b : base.providers)
            if (b.name == p.name) existing = &b;
        if (existing == nullptr) {
            base.providers.push_back(p);
            continue;
        }
        if (!p.mx_suffix.empty()) existing->mx_suffix = p.mx_suffix;
        existing->limits.merge_from(p.limits);
    }
    std::vector<automation_rule> merged;
    merged.reserve(base.automation.size() + over.automation.size());
    std::vector<bool> replaces(over.automation.size(), false);
    for (std::size_t i = 0; i < over.automation.size(); ++i)
        for (const automation_rule& b : base.automation)
            replaces[i] = replaces[i] || (!over.automation[i].name.empty() && b.name == over.automation[i].name);
    for (std::size_t i = 0; i < over.automation.size(); ++i)
        if (!replaces[i]) merged.push_back(over.automation[i]);
    for (automation_rule& b : base.automation) {
        const automation_rule* replacement = nullptr;
        for (const automation_rule& o : over.automation)
            if (!b.name.empty() && o.name == b.name) replacement = &o;
        merged.push_back(replacement != nullptr ? *replacement : std::move(b));
    }
    base.automation = std::move(merged);
    for (const source_warmup& w : over.warmup) {
        auto it = std::find_if(base.warmup.begin(), base.warmup.end(),
                               [&](const source_warmup& b) { return b.source == w.source; });
        if (it != base.warmup.end()) {
            *it = w;
        } else {
            base.warmup.push_back(w);
        }
    }
    merge_keyed(base.tenants, over.tenants);
    merge_keyed(base.campaigns, over.campaigns);
    if (over.campaign_header) base.campaign_header = over.campaign_header;
    return base;
}

std::expected<void, std::string> check_shaping_rules(const shaping_rules& rules) {
    for (const provider_rule& p : rules.providers)
        if (p.mx_suffix.empty())
            return std::unexpected(cat({p.origin, ": missing \"match\" (no earlier file defines provider ",
                                        quote_text(p.name), ")"}));
    for (const automation_rule& a : rules.automation)
        if (!a.provider.empty() && rules.find_provider(a.provider) == nullptr)
            return std::unexpected(cat({a.origin, ".provider: unknown provider ", quote_text(a.provider)}));
    for (const source_warmup& w : rules.warmup)
        for (const source_warmup::provider_schedule& p : w.providers)
            if (rules.find_provider(p.provider) == nullptr)
                return std::unexpected(cat({w.origin, ".providers: unknown provider ", quote_text(p.provider)}));
    return {};
}

std::expected<void, std::string> check_warmup_sources(const shaping_rules& rules,
                                                      std::span<const std::string_view> sources) {
    for (const source_warmup& w : rules.warmup)
        if (std::find(sources.begin(), sources.end(), std::string_view(w.source)) == sources.end())
            return std::unexpected(cat({w.origin, ": no --egress-source named ", quote_text(w.source)}));
    return {};
}

std::string_view embedded_shaping() noexcept { return embedded::shaping_json; }

std::expected<shaping_load, std::string> load_shaping_rules(shaping_rules flags, std::span<const std::string> files,
                                                            shipped_shaping shipped) {
    shaping_load load;
    load.rules = std::move(flags);
    if (const std::string_view h = load.rules.campaign_field(); !h.empty())
        if (const std::string_view why = campaign_header_problem(h); !why.empty())
            return std::unexpected(cat({"--campaign-header ", quote_text(h), ": ", why}));
    if (shipped == shipped_shaping::load) {
        auto s = parse_shaping_rules(embedded_shaping(), embedded_shaping_label);
        if (!s) return std::unexpected(s.error());  // the unit tests make sure it loads
        load.shipped = true;
        load.shipped_providers = s->providers.size();
        load.shipped_automation = s->automation.size();
        load.rules = merge_shaping_rules(std::move(load.rules), *s);
    }
    for (const std::string& f : files) {
        const std::string label = "--shaping " + f;
        auto text = read_file(f);
        if (!text) return std::unexpected(label + ": " + text.error());
        auto r = parse_shaping_rules(*text, label);
        if (!r) return std::unexpected(r.error());
        load.rules = merge_shaping_rules(std::move(load.rules), *r);
        load.files.push_back(f);
    }
    if (auto c = check_shaping_rules(load.rules); !c) return std::unexpected(c.error());
    return load;
}

std::string describe(const shaping_load& load) {
    std::string out = cat({"shaping: ", std::to_string(load.rules.providers.size()), " providers, ",
                           std::to_string(load.rules.domains.size()), " domains, ",
                           std::to_string(load.rules.automation.size()), " automation rules ("});
    if (!load.shipped) {
        out += "no shipped provider rules: --no-default-shaping";
    } else {
        out += "etc/shaping.json, embedded";
    }
    for (const std::string& f : load.files) out += cat({"; ", f});
    out += ")";
    if (const std::string_view h = load.rules.campaign_field(); !h.empty())
        out += cat({"; campaigns by header ", h, ": ", std::to_string(load.rules.campaigns.size()), " rules"});
    return out;
}

}  // namespace ringrelay::queue
