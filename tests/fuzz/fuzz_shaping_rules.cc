// tests/fuzz/fuzz_shaping_rules.cc: libFuzzer target for traffic shaping (issue 17): the rules
// file parser (queue/shaping_rules.cc, operator input, with its rates and durations), RE2 on
// reply text (network input) with the shipped automation rules and the document's own, and the
// throttle signal classifier (queue/throttle_signal.cc, network input).
// Input layout: the whole input is tried as a --shaping document; the whole input is also a
// reply text (its first three octets as the code when they are digits, else 421), matched with
// the embedded etc/shaping.json's automation rules for every provider and classified at each
// stage; its first line is also tried as a rate ("10/s").
// Checks: no sanitizer report; a refused document has an error that starts with its label; a
// loaded one has sorted unique lower-case domains, tenants and campaigns, unique provider names with normalized
// suffixes, valid rates and counts in range, compiled regexes, throttle factors in (0, 1),
// durations from 1 s to 30 d; merged over the embedded rules it still has unique names, keeps
// every embedded provider and rule (or their replacements), and resolves any MX host to a
// provider of the table (or none) with every field in range, the same way twice; a parsed rate
// is valid and its text reads back the same.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "queue/shaping_rate.h"
#include "queue/shaping_rules.h"
#include "queue/throttle_signal.h"

using namespace ringrelay::queue;

namespace {

const shaping_rules& shipped() {
    static const shaping_rules rules = [] {
        auto r = parse_shaping_rules(embedded_shaping(), embedded_shaping_label);
        if (!r || !check_shaping_rules(*r)) std::abort();
        return std::move(*r);
    }();
    return rules;
}

void check_limits(const shaping_limits& l) {
    if (l.connection_limit && (*l.connection_limit < 1 || *l.connection_limit > 100'000)) std::abort();
    if (l.max_connection_rate && !l.max_connection_rate->valid()) std::abort();
    if (l.max_message_rate && !l.max_message_rate->valid()) std::abort();
    if (l.max_deliveries_per_connection && *l.max_deliveries_per_connection < 1) std::abort();
    if (l.max_recipients_per_transaction && *l.max_recipients_per_transaction < 1) std::abort();
    if (l.idle_timeout && (*l.idle_timeout < std::chrono::seconds(1) || *l.idle_timeout > std::chrono::hours(24)))
        std::abort();
}

void check_warmup(const warmup_schedule& w) {
    if (w.daily.empty() || w.daily.size() > max_warmup_days) std::abort();
    for (const std::uint64_t n : w.daily)
        if (n < 1) std::abort();
}

void check_resolved(const shaping_rules& rules, const resolved_shaping& r) {
    if (r.connection_limit < 1 || r.max_deliveries_per_connection < 1) std::abort();
    if (r.max_message_rate && !r.max_message_rate->valid()) std::abort();
    if (!r.provider.empty() && rules.find_provider(r.provider) == nullptr) std::abort();
    if (!r.domain_rule.empty() && rules.find_domain(r.domain_rule) == nullptr) std::abort();
}

void check_table(const shaping_rules& rules) {
    check_limits(rules.default_rule);
    for (const source_warmup& w : rules.warmup) {
        if (w.source.empty() || (!w.all_sites && w.providers.empty())) std::abort();
        if (w.all_sites) check_warmup(*w.all_sites);
        for (const source_warmup::provider_schedule& p : w.providers) check_warmup(p.schedule);
    }
    for (std::size_t i = 0; i < rules.domains.size(); ++i) {
        const std::string& d = rules.domains[i].domain;
        if (d.empty() || (i > 0 && !(rules.domains[i - 1].domain < d))) std::abort();
        for (const char c : d)
            if (c >= 'A' && c <= 'Z') std::abort();
        check_limits(rules.domains[i].limits);
    }
    std::set<std::string> names;
    for (const provider_rule& p : rules.providers) {
        if (!names.insert(p.name).second) std::abort();
        for (const std::string& s : p.mx_suffix) {
            if (s.empty() || s.back() == '.') std::abort();
            for (const char c : s)
                if (c >= 'A' && c <= 'Z') std::abort();
        }
        check_limits(p.limits);
    }
    // Tenant and campaign rules (issue 17): sorted, unique, lower-cased, 1..255 octets, valid
    // rates; a key's rate is its own rule's or "*"'s, none for no key. A campaign header is a
    // name campaign_header_problem() accepts, or "".
    for (const keyed_limit which : {keyed_limit::tenant, keyed_limit::campaign}) {
        const std::vector<keyed_rule>& keyed = which == keyed_limit::tenant ? rules.tenants : rules.campaigns;
        for (std::size_t i = 0; i < keyed.size(); ++i) {
            const keyed_rule& t = keyed[i];
            if (t.key.empty() || t.key.size() > max_tenant_name) std::abort();
            if (i > 0 && !(keyed[i - 1].key < t.key)) std::abort();
            for (const char c : t.key)
                if (c >= 'A' && c <= 'Z') std::abort();
            if (t.max_message_rate && !t.max_message_rate->valid()) std::abort();
            const std::optional<shaping_rate> r = rules.keyed_rate(which, t.key);
            if (r && !r->valid()) std::abort();
            if (t.max_message_rate && r != t.max_message_rate) std::abort();
        }
        if (rules.keyed_rate(which, "").has_value()) std::abort();
    }
    if (!rules.campaign_field().empty() && !campaign_header_problem(rules.campaign_field()).empty()) std::abort();
    std::set<std::string> rule_names;
    for (const automation_rule& a : rules.automation) {
        if (!a.name.empty() && !rule_names.insert(a.name).second) std::abort();
        if (!a.regex || a.pattern.empty()) std::abort();
        if (a.duration < std::chrono::seconds(1) || a.duration > std::chrono::hours(24 * 30)) std::abort();
        if (a.action == automation_action::throttle && !(a.factor > 0 && a.factor < 1)) std::abort();
    }
}

void check_document(std::string_view json) {
    auto rules = parse_shaping_rules(json, "fuzz");
    if (!rules) {
        if (rules.error().rfind("fuzz: ", 0) != 0) std::abort();
        return;
    }
    check_table(*rules);
    const shaping_rules merged = merge_shaping_rules(shipped(), *rules);
    check_table(merged);
    for (const provider_rule& p : shipped().providers)
        if (merged.find_provider(p.name) == nullptr) std::abort();
    if (merged.automation.size() < shipped().automation.size()) std::abort();
    (void)check_shaping_rules(merged);
    // Resolve some hosts: the document's own suffixes made into hosts, and a fixed few.
    std::vector<std::string> hosts = {"gmail-smtp-in.l.google.com", "mta5.am0.yahoodns.net", "mx.example.net"};
    for (const provider_rule& p : rules->providers)
        for (const std::string& s : p.mx_suffix) hosts.push_back("mx" + (s.front() == '.' ? s : "." + s));
    std::vector<std::string_view> views(hosts.begin(), hosts.end());
    const std::string domain = rules->domains.empty() ? "example.net" : rules->domains.front().domain;
    for (const std::string_view h : views) {
        const std::span<const std::string_view> one(&h, 1);
        const resolved_shaping a = merged.resolve(domain, one);
        check_resolved(merged, a);
        if (!(merged.resolve(domain, one) == a)) std::abort();
    }
    check_resolved(merged, merged.resolve(domain, std::span<const std::string_view>(views)));
    std::string subject;
    automation_subject(421, json, subject);
    if (subject.size() > max_automation_subject) std::abort();
    const automation_rule* hit = merged.match_automation("", subject);
    if (hit != nullptr && !hit->matches(subject)) std::abort();
}

void check_reply(std::string_view text) {
    std::uint16_t code = 421;
    if (text.size() >= 3 && text[0] >= '2' && text[0] <= '5' && text[1] >= '0' && text[1] <= '9' && text[2] >= '0' &&
        text[2] <= '9')
        code = static_cast<std::uint16_t>((text[0] - '0') * 100 + (text[1] - '0') * 10 + (text[2] - '0'));
    std::string subject;
    automation_subject(code, text, subject);
    if (subject.size() > max_automation_subject) std::abort();
    for (const std::string_view provider : {"", "google", "yahoo", "outlook", "comcast", "qq", "netease"}) {
        const automation_rule* r = shipped().match_automation(provider, subject);
        if (r != nullptr && !r->provider.empty() && r->provider != provider) std::abort();
    }
    for (const attempt_stage stage : {attempt_stage::connect, attempt_stage::greeting, attempt_stage::command}) {
        const throttle_kind k = classify_throttle(stage, code, text);
        if (stage == attempt_stage::connect && k != throttle_kind::connections) std::abort();
        if (code >= 500 && stage != attempt_stage::connect && k != throttle_kind::none) std::abort();
    }
}

void check_rate(std::string_view text) {
    auto r = parse_shaping_rate(text);
    if (!r) return;
    if (!r->valid()) std::abort();
    auto again = parse_shaping_rate(format_shaping_rate(*r));
    if (!again || !(*again == *r)) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view input(reinterpret_cast<const char*>(data), size);
    check_document(input);
    check_reply(input);
    check_rate(input.substr(0, input.find('\n')));
    return 0;
}
