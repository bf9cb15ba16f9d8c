// tests/fuzz/fuzz_bounce_classes.cc: libFuzzer target for bounce classification (issue 16): the
// rules file parser (queue/bounce_rules.cc, operator input) and the classifier on reply text
// (protocol/bounce_class.cc, network input from the next hop).
// Input layout: the whole input is tried as a rules document (--bounce-classes FILE), and the
// whole input is also a reply text, classified with the embedded rules as a peer reply (code and
// enhanced status taken from its first octets when they look like one, else 550 5.7.1), as one of
// our own reasons, and through bounce_input_from_reason.
// Checks: no sanitizer report; a refused document has an error that starts with its label; a
// loaded one has valid names (unique, also after merging over the embedded rules), a known class,
// a blocklist only on reputation, text patterns already in normal form, and classifies the same
// way twice; every verdict has a known class, a blocklist only for reputation, and names a rule
// of the table (or none, for class other); the normalised text is bounded, lower case, with
// single inner spaces and no edge spaces, and normalising it again changes nothing.
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "protocol/bounce_class.h"
#include "protocol/reply_parser.h"
#include "queue/bounce_rules.h"

using namespace ringrelay;
using protocol::bounce_class;

namespace {

const protocol::bounce_rules& embedded() {
    static const protocol::bounce_rules table = [] {
        auto rules = queue::parse_bounce_rules(queue::embedded_bounce_classes(), queue::embedded_bounce_classes_label);
        if (!rules) std::abort();
        return protocol::bounce_rules(std::move(*rules));
    }();
    return table;
}

void check_verdict(const protocol::bounce_rules& table, const protocol::bounce_verdict& v) {
    if (static_cast<std::size_t>(v.cls) >= protocol::bounce_class_count) std::abort();
    if (!v.blocklist.empty() && v.cls != bounce_class::reputation) std::abort();
    if (v.rule.empty()) {
        if (v.cls != bounce_class::other || !v.blocklist.empty()) std::abort();
    } else {
        const protocol::bounce_rule* r = table.find(v.rule);
        if (r == nullptr || r->cls != v.cls) std::abort();
    }
}

void check_normalized(std::string_view text) {
    std::array<char, protocol::max_classified_text> buf{};
    const std::string_view n = protocol::normalize_bounce_text(text, buf);
    if (n.size() > buf.size()) std::abort();
    if (!n.empty() && (n.front() == ' ' || n.back() == ' ')) std::abort();
    for (std::size_t i = 0; i < n.size(); ++i) {
        const char c = n[i];
        if ((c >= 'A' && c <= 'Z') || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v') std::abort();
        if (c == ' ' && i + 1 < n.size() && n[i + 1] == ' ') std::abort();
    }
    // Already in the form patterns are kept in.
    if (protocol::normalize_bounce_pattern(n) != n) std::abort();
}

void check_document(std::string_view json) {
    auto rules = queue::parse_bounce_rules(json, "fuzz");
    if (!rules) {
        if (rules.error().rfind("fuzz: ", 0) != 0) std::abort();
        return;
    }
    std::set<std::string> names;
    for (const protocol::bounce_rule& r : *rules) {
        if (r.name.empty() || r.name.size() > 64 || !names.insert(r.name).second) std::abort();
        if (static_cast<std::size_t>(r.cls) >= protocol::bounce_class_count) std::abort();
        if (!r.blocklist.empty() && r.cls != bounce_class::reputation) std::abort();
        if (r.source.empty()) std::abort();
        if (r.status.empty() && r.code.empty() && r.text.empty() && r.origin == protocol::rule_origin::any) std::abort();
        for (const std::string& t : r.text)
            if (t.empty() || protocol::normalize_bounce_pattern(t) != t) std::abort();
    }
    std::vector<protocol::bounce_rule> base(embedded().rules().begin(), embedded().rules().end());
    const std::size_t base_size = base.size();
    const auto merged = queue::merge_bounce_rules(std::move(base), *rules);
    std::set<std::string> merged_names;
    for (const protocol::bounce_rule& r : merged)
        if (!merged_names.insert(r.name).second) std::abort();
    if (merged.size() < base_size || merged.size() > base_size + rules->size()) std::abort();
    const protocol::bounce_rules table(std::move(*rules));
    protocol::bounce_input in;
    in.origin = protocol::rule_origin::peer;
    in.code = 550;
    in.enhanced = protocol::enhanced_status{5, 1, 1};
    in.text = "5.1.1 The email account that you tried to reach does not exist. - gsmtp";
    const protocol::bounce_verdict a = table.classify(in);
    const protocol::bounce_verdict b = table.classify(in);
    check_verdict(table, a);
    if (a.cls != b.cls || a.rule != b.rule) std::abort();
    in = protocol::bounce_input{};
    in.text = json;
    check_verdict(table, table.classify(in));
}

void check_reply(std::string_view text) {
    const protocol::bounce_rules& table = embedded();
    check_normalized(text);
    protocol::bounce_input in = protocol::bounce_input_from_reason(text);
    if (in.origin == protocol::rule_origin::peer && (in.code < 400 || in.code > 599)) std::abort();
    check_verdict(table, table.classify(in));
    in.origin = protocol::rule_origin::peer;
    if (in.code == 0) {
        in.code = 550;
        in.enhanced = protocol::parse_enhanced_status(550, text);
        if (!in.enhanced.present()) in.enhanced = protocol::enhanced_status{5, 7, 1};
    }
    in.text = text;
    check_verdict(table, table.classify(in));
    in.origin = protocol::rule_origin::local;
    in.code = 0;
    in.enhanced = {};
    check_verdict(table, table.classify(in));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view input(reinterpret_cast<const char*>(data), size);
    check_document(input);
    check_reply(input);
    const std::size_t line = input.find('\n');
    const auto pattern = protocol::parse_status_pattern(input.substr(0, line));
    if (pattern && pattern->matches(protocol::enhanced_status{})) std::abort();  // no status matches none
    return 0;
}
