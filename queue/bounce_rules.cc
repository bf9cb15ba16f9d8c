// queue/bounce_rules.cc: see bounce_rules.h.
#include "queue/bounce_rules.h"

#include <simdjson.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <initializer_list>
#include <sstream>
#include <unordered_map>
#include <utility>

#include "queue/bounce_classes_embedded.h"  // generated from etc/bounce-classes.json

namespace ringrelay::queue {

namespace {

using protocol::bounce_rule;

// Joins pieces of text. (GCC 12 reports a false -Wrestrict on "literal" + std::string temporaries.)
std::string cat(std::initializer_list<std::string_view> parts) {
    std::string out;
    for (const std::string_view p : parts) out.append(p);
    return out;
}

std::string all_class_names() {
    std::string out;
    for (std::size_t i = 0; i < protocol::bounce_class_count; ++i) {
        if (i != 0) out += ", ";
        out += protocol::to_string(static_cast<protocol::bounce_class>(i));
    }
    return out;
}

bool valid_name(std::string_view n) noexcept {
    if (n.empty() || n.size() > 64) return false;
    for (const char c : n)
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.'))
            return false;
    return true;
}

// Printable text: no control octets (UTF-8 beyond ASCII is taken as it is).
bool printable(std::string_view s) noexcept {
    for (const char c : s)
        if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) return false;
    return true;
}

// A string, or an array of strings (each non-empty), as a list; `key` names it in errors.
std::expected<std::vector<std::string_view>, std::string> string_list(simdjson::dom::element v, std::string_view key) {
    std::vector<std::string_view> out;
    if (v.is_string()) {
        out.push_back(v.get_string().value_unsafe());
    } else if (simdjson::dom::array items; v.get_array().get(items) == simdjson::SUCCESS) {
        for (simdjson::dom::element item : items) {
            if (!item.is_string()) return std::unexpected(cat({"\"", key, "\": every item must be a string"}));
            out.push_back(item.get_string().value_unsafe());
        }
    } else {
        return std::unexpected(cat({"\"", key, "\": expected a string or an array of strings"}));
    }
    if (out.empty()) return std::unexpected(cat({"\"", key, "\": empty list"}));
    if (out.size() > protocol::max_rule_patterns)
        return std::unexpected(cat({"\"", key, "\": more than ", std::to_string(protocol::max_rule_patterns), " items"}));
    for (const std::string_view s : out)
        if (s.empty()) return std::unexpected(cat({"\"", key, "\": an empty string"}));
    return out;
}

std::expected<std::uint16_t, std::string> reply_code(simdjson::dom::element v) {
    if (!v.is_int64()) return std::unexpected(std::string("\"code\": expected a reply code (an integer) or a list of them"));
    const std::int64_t n = v.get_int64().value_unsafe();
    if (n != 0 && (n < 200 || n > 599))
        return std::unexpected(cat({"\"code\": ", std::to_string(n), " is not a reply code 200-599 (or 0: no reply code)"}));
    return static_cast<std::uint16_t>(n);
}

// `where` is "rule N" on entry; once the name is known it becomes "rule N \"name\"", so that
// every later error names the rule.
std::expected<bounce_rule, std::string> parse_rule(simdjson::dom::element v, std::string& where) {
    simdjson::dom::object obj;
    if (v.get_object().get(obj) != simdjson::SUCCESS) return std::unexpected(std::string("expected a JSON object"));
    bounce_rule r;
    bool has_name = false, has_class = false, has_source = false;
    std::string_view blocklist;
    bool has_blocklist = false;
    std::vector<std::string_view> seen;
    for (auto field : obj) {
        if (field.key != "name") continue;
        if (!field.value.is_string()) return std::unexpected(std::string("\"name\": expected a string"));
        const std::string_view n = field.value.get_string().value_unsafe();
        if (!valid_name(n))
            return std::unexpected(cat({"\"name\": '", n, "' must be 1-64 characters of letters, digits, '-', '_' and '.'"}));
        r.name = std::string(n);
        has_name = true;
        where += cat({" \"", r.name, "\""});
        break;  // a second "name" is reported below
    }
    for (auto field : obj) {
        const std::string_view key = field.key;
        for (const std::string_view s : seen)
            if (s == key) return std::unexpected(cat({"\"", key, "\" given twice"}));
        seen.push_back(key);
        if (key == "name") continue;
        if (key == "class") {
            if (!field.value.is_string()) return std::unexpected(std::string("\"class\": expected a string"));
            const std::string_view c = field.value.get_string().value_unsafe();
            const auto cls = protocol::parse_bounce_class(c);
            if (!cls) return std::unexpected(cat({"unknown class '", c, "' (one of ", all_class_names(), ")"}));
            r.cls = *cls;
            has_class = true;
        } else if (key == "status") {
            auto list = string_list(field.value, key);
            if (!list) return std::unexpected(list.error());
            for (const std::string_view s : *list) {
                auto p = protocol::parse_status_pattern(s);
                if (!p) return std::unexpected(cat({"\"status\": ", p.error()}));
                r.status.push_back(*p);
            }
        } else if (key == "code") {
            if (simdjson::dom::array items; field.value.get_array().get(items) == simdjson::SUCCESS) {
                if (items.size() == 0) return std::unexpected(std::string("\"code\": empty list"));
                if (items.size() > protocol::max_rule_patterns)
                    return std::unexpected(cat({"\"code\": more than ", std::to_string(protocol::max_rule_patterns), " items"}));
                for (simdjson::dom::element item : items) {
                    auto c = reply_code(item);
                    if (!c) return std::unexpected(c.error());
                    r.code.push_back(*c);
                }
            } else {
                auto c = reply_code(field.value);
                if (!c) return std::unexpected(c.error());
                r.code.push_back(*c);
            }
        } else if (key == "origin") {
            const std::string_view o = field.value.is_string() ? field.value.get_string().value_unsafe() : "";
            if (o == "peer") {
                r.origin = protocol::rule_origin::peer;
            } else if (o == "local") {
                r.origin = protocol::rule_origin::local;
            } else {
                return std::unexpected(std::string("\"origin\": expected \"peer\" or \"local\""));
            }
        } else if (key == "text") {
            auto list = string_list(field.value, key);
            if (!list) return std::unexpected(list.error());
            for (const std::string_view s : *list) {
                if (s.size() > protocol::max_pattern_length)
                    return std::unexpected(cat({"\"text\": a pattern longer than ", std::to_string(protocol::max_pattern_length), " octets"}));
                if (!printable(s)) return std::unexpected(std::string("\"text\": a pattern with a control character"));
                std::string norm = protocol::normalize_bounce_pattern(s);
                if (norm.empty()) return std::unexpected(std::string("\"text\": a pattern of white space only"));
                r.text.push_back(std::move(norm));
            }
        } else if (key == "blocklist") {
            if (!field.value.is_string()) return std::unexpected(std::string("\"blocklist\": expected a string"));
            blocklist = field.value.get_string().value_unsafe();
            if (blocklist.empty() || blocklist.size() > 64 || !printable(blocklist))
                return std::unexpected(std::string("\"blocklist\": expected a name of 1-64 printable characters"));
            has_blocklist = true;
        } else if (key == "source") {
            auto list = string_list(field.value, key);
            if (!list) return std::unexpected(list.error());
            for (const std::string_view s : *list) {
                if (!r.source.empty()) r.source += "; ";
                r.source += s;
            }
            has_source = true;
        } else if (key == "example" || key == "note") {
            // For people and for the unit tests (every example must be classified by its rule).
            auto list = string_list(field.value, key);
            if (!list) return std::unexpected(list.error());
        } else {
            return std::unexpected(cat({"unknown key \"", key,
                                        "\" (a rule has name, class, status, code, origin, text, blocklist, source, "
                                        "example, note)"}));
        }
    }
    if (!has_name) return std::unexpected(std::string("missing \"name\""));
    if (!has_class) return std::unexpected(std::string("missing \"class\""));
    if (!has_source) return std::unexpected(std::string("missing \"source\" (where the rule comes from: a URL or an RFC)"));
    if (r.status.empty() && r.code.empty() && r.text.empty() && r.origin == protocol::rule_origin::any)
        return std::unexpected(std::string("no condition: give at least one of status, code, origin, text"));
    if (has_blocklist) {
        if (r.cls != protocol::bounce_class::reputation)
            return std::unexpected(std::string("\"blocklist\" is only for class reputation"));
        r.blocklist = std::string(blocklist);
    }
    return r;
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

std::string_view embedded_bounce_classes() noexcept { return embedded::bounce_classes_json; }

std::expected<std::vector<bounce_rule>, std::string> parse_bounce_rules(std::string_view json, std::string_view label) {
    const std::string prefix(label);
    simdjson::dom::parser parser;
    const simdjson::padded_string padded(json);
    simdjson::dom::element root;
    if (auto err = parser.parse(padded).get(root); err)
        return std::unexpected(prefix + ": not valid JSON: " + simdjson::error_message(err));
    simdjson::dom::object top;
    if (root.get_object().get(top) != simdjson::SUCCESS)
        return std::unexpected(prefix + ": the top level must be a JSON object with \"rules\": [...]");
    std::vector<bounce_rule> rules;
    bool has_rules = false;
    std::vector<std::string_view> seen;
    for (auto field : top) {
        const std::string_view key = field.key;
        for (const std::string_view s : seen)
            if (s == key) return std::unexpected(cat({prefix, ": \"", key, "\" given twice"}));
        seen.push_back(key);
        if (key == "version") {
            if (!field.value.is_int64() || field.value.get_int64().value_unsafe() != 1)
                return std::unexpected(prefix + ": \"version\": only version 1 is known");
        } else if (key == "about") {
            auto list = string_list(field.value, key);
            if (!list) return std::unexpected(prefix + ": " + list.error());
        } else if (key == "rules") {
            simdjson::dom::array items;
            if (field.value.get_array().get(items) != simdjson::SUCCESS)
                return std::unexpected(prefix + ": \"rules\": expected an array of rule objects");
            if (items.size() > protocol::max_rules)
                return std::unexpected(prefix + ": \"rules\": more than " + std::to_string(protocol::max_rules) + " rules");
            std::unordered_map<std::string, std::size_t> names;
            std::size_t n = 0;
            for (simdjson::dom::element item : items) {
                ++n;
                std::string where = cat({"rule ", std::to_string(n)});
                auto r = parse_rule(item, where);
                if (!r) return std::unexpected(prefix + ": " + where + ": " + r.error());
                if (const auto [it, fresh] = names.emplace(r->name, n); !fresh)
                    return std::unexpected(prefix + ": " + where + ": the name is also rule " + std::to_string(it->second) +
                                           "'s");
                rules.push_back(std::move(*r));
            }
            has_rules = true;
        } else {
            return std::unexpected(cat({prefix, ": unknown key \"", key,
                                        "\" (the top level has rules, and optionally version and about)"}));
        }
    }
    if (!has_rules) return std::unexpected(prefix + ": missing \"rules\"");
    return rules;
}

std::vector<bounce_rule> merge_bounce_rules(std::vector<bounce_rule> base, std::vector<bounce_rule> overrides) {
    std::vector<bounce_rule> out;
    out.reserve(base.size() + overrides.size());
    std::unordered_map<std::string, std::size_t> by_name;  // base name -> override index
    std::vector<bool> replaces(overrides.size(), false);
    for (std::size_t i = 0; i < overrides.size(); ++i) {
        for (const bounce_rule& b : base)
            if (b.name == overrides[i].name) {
                by_name.emplace(b.name, i);
                replaces[i] = true;
                break;
            }
    }
    for (std::size_t i = 0; i < overrides.size(); ++i)
        if (!replaces[i]) out.push_back(std::move(overrides[i]));
    for (bounce_rule& b : base) {
        const auto it = by_name.find(b.name);
        out.push_back(it == by_name.end() ? std::move(b) : std::move(overrides[it->second]));
    }
    return out;
}

std::expected<bounce_rules_load, std::string> load_bounce_rules(const std::string& override_file) {
    auto embedded = parse_bounce_rules(embedded_bounce_classes(), embedded_bounce_classes_label);
    if (!embedded) return std::unexpected(embedded.error());  // the unit tests make sure it loads
    bounce_rules_load load;
    load.embedded = embedded->size();
    if (override_file.empty()) {
        load.table = protocol::bounce_rules(std::move(*embedded));
        return load;
    }
    const std::string label = "--bounce-classes " + override_file;
    auto text = read_file(override_file);
    if (!text) return std::unexpected(label + ": " + text.error());
    auto overrides = parse_bounce_rules(*text, label);
    if (!overrides) return std::unexpected(overrides.error());
    for (const bounce_rule& o : *overrides) {
        bool replaces = false;
        for (const bounce_rule& b : *embedded) replaces = replaces || b.name == o.name;
        ++(replaces ? load.replaced : load.added);
    }
    load.table = protocol::bounce_rules(merge_bounce_rules(std::move(*embedded), std::move(*overrides)));
    return load;
}

std::string describe(const bounce_rules_load& load, const std::string& override_file) {
    std::string out = cat({"bounce classes: ", std::to_string(load.table.rules().size()), " rules (",
                           std::to_string(load.embedded), " embedded from etc/bounce-classes.json"});
    if (!override_file.empty())
        out += cat({"; ", override_file, ": ", std::to_string(load.added), " added, ", std::to_string(load.replaced),
                    " replaced"});
    return out + ")";
}

}  // namespace ringrelay::queue
