// queue/shaping_rules.h: traffic shaping rules as data (issue 17): the model of a shaping rules
// file, its parser (simdjson), the merge of several files, the shipped etc/shaping.json
// (compiled in, as etc/bounce-classes.json is: scripts/embed-text, queue/meson.build), the
// resolution of the limits of one (domain, site), and the automation rules matched on a next
// hop's reply text (RE2: linear time, no backtracking, whatever the reply). KumoMTA's shaping
// vocabulary is the model (docs/userguide/trafficshaping and assets/policy-extras/shaping.toml
// in KumoCorp/kumomta); the file is JSON, its shape ours.
//
// The file (every key optional; `_`-prefixed keys at any level are comments and ignored):
//   {"version": 1, "about": "text or [texts]",
//    "default":   {LIMITS},
//    "domains":   {"example.net": {LIMITS}, ...},
//    "providers": {"google": {"match": {"mx_suffix": [".google.com", ...]}, LIMITS}, ...},
//    "tenants":   {"alice": {"max_message_rate": "10/s"}, "example.org": {...}, "*": {...}},
//    "campaign_header": "X-Campaign-Id",
//    "campaigns": {"spring-sale": {"max_message_rate": "5/s"}, "*": {...}},
//    "automation": [{"name": "yahoo-tss04", "provider": "yahoo", "match": "\\[TSS04\\]",
//                    "action": "suspend", "duration": "1h"},
//                   {"match": "^421 4\\.7\\.0 ", "action": "throttle", "factor": 0.5,
//                    "duration": "10m"}, ...],
//    "warmup":    {"ip1": {"start": "2026-12-01", "daily": [200, 500, 1000],
//                          "providers": {"google": {"daily": [50, 100, 200]}}}, ...}}
//   LIMITS: connection_limit (integer 1..100000), max_connection_rate and max_message_rate
//   ("10/s", "600/min", "1000/h", "20000/day", optionally ",max_burst=N"; queue/shaping_rate.h),
//   max_deliveries_per_connection (1..1000000), max_recipients_per_transaction (1..100000),
//   idle_timeout (a core/duration.h duration, 1s..1d), adaptive (bool; the closed loop, default
//   true), source (a string or a list: the public page the values come from), note (free text).
//   An automation rule: match (an RE2 regular expression, case-sensitive, searched anywhere in
//   the reply as automation_subject() writes it), action ("suspend" | "throttle"), duration
//   (1s..30d), factor (throttle only: 0 < factor < 1, multiplies the allowed message rate),
//   provider (optional: a provider name; without it the rule applies to every site), name
//   (optional), source, note.
//   A tenant rule (issue 17: one noisy tenant cannot use up a site's allowance for everyone):
//   keyed by the tenant (queue/suppression.h tenant_of(): the AUTH user, else the envelope
//   sender's domain; compared without case; 1..255 printable octets) or "*" (every tenant
//   without a rule of its own); max_message_rate (as above: per (tenant, site), on top of the
//   site's own limits), source, note.
//   A campaign rule (issue 17): as a tenant rule, keyed by the campaign (the value of the message
//   header campaign_header names: queue/campaign_header.h; compared without case; 1..255 printable
//   octets) or "*"; its max_message_rate is per (campaign, site), on top of the site's limits and
//   the tenant's.
//   campaign_header: the name of the header field that carries a message's campaign (an RFC 5322
//   field name: 1..64 octets of ftext, not a field the message needs, e.g. From or Received), or ""
//   for none; the relay reads it and strips every such field before signing and storing the
//   message. The --campaign-header flag is the bottom layer; a file that sets it overrides it.
//   A warm-up (issue 17: IP warm-up), keyed by egress source name (--egress-source NAME=...):
//   start ("YYYY-MM-DD", UTC) and daily (1..366 counts from 1): the messages the source may send
//   a day to every site without a provider schedule of its own; providers: {"P": {"daily": [...],
//   "start": optional, the source's by default}}: the messages it may send a day to the sites of
//   provider P. A source has daily, providers, or both; source and note as above.
//
// Several files (--shaping FILE, repeatable) load in order, each merged over the ones before:
//   - default, each domain and each provider: field by field (a later file that sets only
//     max_message_rate for "google" keeps the earlier match and connection_limit); a later
//     "match" replaces the earlier one whole; "source" is replaced when given.
//   - tenants and campaigns: by tenant (campaign), field by field (as default).
//   - campaign_header: a later file's replaces the earlier one ("" turns it off).
//   - warmup: a later file's entry for a source replaces the earlier one whole.
//   - automation: a rule whose name is that of an earlier rule replaces it whole, in place;
//     every other rule goes before all earlier rules, in its file's order (the operator's own
//     rules are tried first, as with --bounce-classes).
// The bottom layer is the default rule made from the flags (flag_default_rule()); the shipped
// etc/shaping.json comes next (unless the caller skips it) and never sets the default rule's
// connection_limit, max_deliveries_per_connection or idle_timeout, so those flags keep working.
//
// Resolution (shaping_rules::resolve) for a recipient domain delivered to a site's MX hosts,
// field by field: the domain's rule, then the provider's (the provider with the longest
// mx_suffix matching any MX host of the site; ties: the provider defined first), then the
// default rule, then the built-in defaults (builtin_* below).
//
// Errors name the file (the label), the key path and the reason:
//   "shaping.json: providers.\"google\".max_message_rate: \"10/x\": unknown period \"x\" ..."
//   "shaping.json: automation rule 2 \"yahoo\": match: missing ]: ["
// SECURITY: the files are operator input (and our own embedded file), never network input;
// bounded (max_* below, RE2's own memory bound per pattern), every key checked. Reply text
// (network input) reaches only match_automation(): RE2 runs in time linear in the subject,
// which automation_subject() bounds to max_automation_subject octets.
//
// Lifecycle and threading: load_shaping_rules() reads files (blocking) on the main thread at
// start-up or on SIGHUP, off the shards; the result is immutable and may be read by every
// shard at once (RE2 matching is thread-safe on a const object).
#pragma once
#include <chrono>
#include <cstdint>
#include <expected>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "queue/shaping_rate.h"

namespace re2 {
class RE2;
}

namespace ringrelay::queue {

// Bounds of a rules document.
inline constexpr std::size_t max_shaping_domains = 100'000;
inline constexpr std::size_t max_shaping_providers = 1'000;
inline constexpr std::size_t max_mx_suffixes = 64;
inline constexpr std::size_t max_automation_rules = 1'000;
inline constexpr std::size_t max_automation_pattern = 1'024;  // octets of one regex
inline constexpr std::size_t max_warmup_days = 366;
inline constexpr std::size_t max_automation_subject = 2'048;  // octets of reply matched
inline constexpr std::size_t max_shaping_tenants = 100'000;
inline constexpr std::size_t max_tenant_name = 255;  // octets
inline constexpr std::size_t max_shaping_campaigns = 100'000;
inline constexpr std::size_t max_campaign_name = 255;         // octets
inline constexpr std::size_t max_campaign_header_name = 64;  // octets

// The built-in defaults: core::config's for the flags that make the default rule.
inline constexpr std::uint32_t builtin_connection_limit = 16;               // --max-connections-per-destination
inline constexpr std::uint32_t builtin_max_deliveries_per_connection = 1000; // --max-messages-per-connection
inline constexpr std::chrono::milliseconds builtin_idle_timeout{5000};       // --idle-connection-timeout

// An IP warm-up schedule: `daily[i]` messages may be sent on day start_day + i; before the
// start the first day's allowance holds, after the last day there is no warm-up cap (warmed).
struct warmup_schedule {
    std::int64_t start_day = 0;  // days since 1970-01-01 (UTC calendar)
    std::vector<std::uint64_t> daily;
    friend bool operator==(const warmup_schedule&, const warmup_schedule&) = default;
};

// The allowance on `day` (days since 1970-01-01 UTC); nullopt once the schedule is over.
[[nodiscard]] std::optional<std::uint64_t> warmup_allowance(const warmup_schedule& w, std::int64_t day) noexcept;

// "YYYY-MM-DD" (a valid Gregorian date, years 1970-9999) as days since 1970-01-01.
[[nodiscard]] std::optional<std::int64_t> parse_civil_date(std::string_view text) noexcept;

// What one rule sets; every field absent unless the rule (or a merge) set it.
struct shaping_limits {
    std::optional<std::uint32_t> connection_limit;
    std::optional<shaping_rate> max_connection_rate;
    std::optional<shaping_rate> max_message_rate;
    std::optional<std::uint32_t> max_deliveries_per_connection;
    std::optional<std::uint32_t> max_recipients_per_transaction;
    std::optional<std::chrono::milliseconds> idle_timeout;
    std::optional<bool> adaptive;
    std::vector<std::string> source;  // where the values come from (URLs); informative

    // Every field `over` sets replaces ours.
    void merge_from(const shaping_limits& over);
    friend bool operator==(const shaping_limits&, const shaping_limits&) = default;
};

struct domain_rule {
    std::string domain;  // lower case, no trailing dot
    shaping_limits limits;
};

struct provider_rule {
    std::string name;
    // Lower case, no trailing dot. ".google.com" matches hosts ending in it; "google.com" (no
    // leading dot) matches that host and its subdomains. Empty only in a file that adds to a
    // provider defined by an earlier file (check_shaping_rules() refuses it otherwise).
    std::vector<std::string> mx_suffix;
    shaping_limits limits;
    std::string origin;  // "LABEL: providers.\"NAME\"" of the file that defined it, for errors

    // The length of the longest suffix matching `host` (normalized: queue/site_name.h), or 0.
    [[nodiscard]] std::size_t match_length(std::string_view host) const noexcept;
};

// The limits keyed by something a message carries rather than by its site (issue 17): its tenant
// (queue/suppression.h tenant_of()) or its campaign (queue/campaign_header.h).
enum class keyed_limit : std::uint8_t { tenant, campaign };
inline constexpr keyed_limit keyed_limits[] = {keyed_limit::tenant, keyed_limit::campaign};  // every one, in order

[[nodiscard]] std::string_view to_string(keyed_limit k) noexcept;  // "tenant", "campaign"

// A tenant's or a campaign's limits, applied per (key, site) on top of the site's own.
struct keyed_rule {
    std::string key;  // the tenant or campaign, ASCII letters lower-cased; "*" for every key without a rule
    std::optional<shaping_rate> max_message_rate;  // none: no limit of its own
    std::vector<std::string> source;
    friend bool operator==(const keyed_rule&, const keyed_rule&) = default;
};

enum class automation_action : std::uint8_t { suspend, throttle };

[[nodiscard]] std::string_view to_string(automation_action a) noexcept;

struct automation_rule {
    std::string name;      // "" when unnamed
    std::string provider;  // "" for every site
    std::string pattern;   // the regex as written
    std::shared_ptr<const re2::RE2> regex;  // compiled; shared by copies of the rule
    automation_action action = automation_action::suspend;
    std::chrono::milliseconds duration{0};
    double factor = 1.0;  // throttle: 0 < factor < 1
    std::vector<std::string> source;
    std::string origin;  // "LABEL: automation rule N \"NAME\"", for errors

    // True if the pattern is found in `subject` (automation_subject()).
    [[nodiscard]] bool matches(std::string_view subject) const noexcept;
};

// The limits of one (domain, site), every field decided.
struct resolved_shaping {
    std::uint32_t connection_limit = builtin_connection_limit;
    std::optional<shaping_rate> max_connection_rate;  // none: no limit
    std::optional<shaping_rate> max_message_rate;     // none: no limit
    std::uint32_t max_deliveries_per_connection = builtin_max_deliveries_per_connection;
    std::optional<std::uint32_t> max_recipients_per_transaction;  // none: no cap
    std::chrono::milliseconds idle_timeout = builtin_idle_timeout;
    bool adaptive = true;
    std::string domain_rule;  // the domain whose rule applied, or ""
    std::string provider;     // the provider whose rule applied, or ""
    friend bool operator==(const resolved_shaping&, const resolved_shaping&) = default;
};

// One egress source's warm-up (the top-level "warmup" key).
struct source_warmup {
    std::string source;                        // the --egress-source name
    std::optional<warmup_schedule> all_sites;  // every site without a provider schedule here
    struct provider_schedule {
        std::string provider;
        warmup_schedule schedule;
        friend bool operator==(const provider_schedule&, const provider_schedule&) = default;
    };
    std::vector<provider_schedule> providers;
    std::string origin;  // "LABEL: warmup.\"NAME\"" of the file that set it, for errors

    // The schedule counting a message to a site of `provider` ("": none matched): the
    // provider's own, else all_sites; null: not limited. `counted_as` is set to the provider's
    // name when its own schedule applies, else "" (every other site shares one allowance).
    [[nodiscard]] const warmup_schedule* schedule_for(std::string_view provider,
                                                      std::string_view& counted_as) const noexcept;
};

class shaping_rules {
public:
    shaping_limits default_rule;
    std::vector<domain_rule> domains;      // sorted by domain (unique)
    std::vector<provider_rule> providers;  // in order of definition (unique names)
    std::vector<automation_rule> automation;  // in match order
    std::vector<keyed_rule> tenants;          // sorted by key (unique)
    std::vector<keyed_rule> campaigns;        // sorted by key (unique)
    // The header field naming a message's campaign: unset (nullopt) unless a layer set it; "" for
    // none.
    std::optional<std::string> campaign_header;

    // The message rate of `key` (a tenant: tenant_of(); a campaign: campaign_of(); any case) at
    // each site: its own rule's, else the "*" rule's; none when neither sets one, and always none
    // for "" (no tenant, no campaign).
    [[nodiscard]] std::optional<shaping_rate> keyed_rate(keyed_limit which, std::string_view key) const;
    [[nodiscard]] std::optional<shaping_rate> tenant_rate(std::string_view tenant) const {
        return keyed_rate(keyed_limit::tenant, tenant);
    }
    [[nodiscard]] std::optional<shaping_rate> campaign_rate(std::string_view campaign) const {
        return keyed_rate(keyed_limit::campaign, campaign);
    }
    // The campaign header's name, "" for none.
    [[nodiscard]] std::string_view campaign_field() const noexcept {
        return campaign_header ? std::string_view(*campaign_header) : std::string_view();
    }
    std::vector<source_warmup> warmup;        // in order of definition (unique sources)

    // The limits for recipient domain `domain` (any case) delivered to `mx_hosts` (the site's MX
    // hosts, any case, trailing dots allowed; for a route: empty, so no provider matches).
    [[nodiscard]] resolved_shaping resolve(std::string_view domain, std::span<const std::string_view> mx_hosts) const;
    [[nodiscard]] resolved_shaping resolve(std::string_view domain, std::span<const std::string> mx_hosts) const;

    // The first automation rule, in order, whose provider is "" or `provider`, and whose pattern
    // is found in `subject` (automation_subject()); nullptr if none.
    [[nodiscard]] const automation_rule* match_automation(std::string_view provider, std::string_view subject) const;

    [[nodiscard]] const domain_rule* find_domain(std::string_view domain) const;
    [[nodiscard]] const provider_rule* find_provider(std::string_view name) const;
    // The warm-up of egress source `source`, or null.
    [[nodiscard]] const source_warmup* find_warmup(std::string_view source) const noexcept;
};

// The text automation rules are matched against, written into `out` (cleared first): the reply
// code, a space, the reply text (as protocol::parsed_reply::text: the enhanced code included,
// lines joined by LF) with each LF made a space; cut at max_automation_subject octets.
// "421 4.7.0 [TSS04] Messages from 192.0.2.1 temporarily deferred ..."; with code 0 (no reply:
// our own reason) just the text.
void automation_subject(std::uint16_t code, std::string_view text, std::string& out);

// The default rule the flags make: --max-connections-per-destination,
// --max-messages-per-connection and --idle-connection-timeout (seconds); and the campaign
// header, --campaign-header ("" for none).
[[nodiscard]] shaping_rules flag_default_rule(std::uint32_t max_connections_per_destination,
                                              std::uint32_t max_messages_per_connection,
                                              std::uint32_t idle_connection_timeout_s,
                                              std::string_view campaign_header = {});

// Why `name` cannot name the campaign header ("" if it can): not an RFC 5322 field name of 1 to
// max_campaign_header_name octets, or a field the message needs (From, Received, Content-*, ...),
// which stripping would damage.
[[nodiscard]] std::string_view campaign_header_problem(std::string_view name) noexcept;

// One document; errors start with `label`. Providers may lack "match" and automation rules may
// name providers the document does not define (a later merge may supply them):
// check_shaping_rules() decides once everything is merged.
[[nodiscard]] std::expected<shaping_rules, std::string> parse_shaping_rules(std::string_view json, std::string_view label);

// `over` merged over `base` (see the file comment).
[[nodiscard]] shaping_rules merge_shaping_rules(shaping_rules base, const shaping_rules& over);

// Whole-table checks: every provider has a match; every automation rule's and warm-up's provider
// exists. Errors name the file and the rule that is incomplete.
[[nodiscard]] std::expected<void, std::string> check_shaping_rules(const shaping_rules& rules);

// Every warm-up names a source of `sources` (the --egress-source names): else the error names the
// file and the key ("--shaping F: warmup.\"ip9\": no --egress-source named \"ip9\"").
[[nodiscard]] std::expected<void, std::string> check_warmup_sources(const shaping_rules& rules,
                                                                    std::span<const std::string_view> sources);

// The label errors give the embedded document, and the document (etc/shaping.json at build time).
inline constexpr std::string_view embedded_shaping_label = "etc/shaping.json (embedded)";
[[nodiscard]] std::string_view embedded_shaping() noexcept;

enum class shipped_shaping : std::uint8_t { load, skip };  // skip: --no-default-shaping

// What a load did, for the start-up line.
struct shaping_load {
    shaping_rules rules;
    bool shipped = false;               // etc/shaping.json was loaded
    std::size_t shipped_providers = 0;  // 0 when skipped
    std::size_t shipped_automation = 0;
    std::vector<std::string> files;     // the operator's files, in order
};

// The rules a relay shapes with: `flags` (flag_default_rule()), then the shipped rules (unless
// skipped), then each of `files` in order, checked whole. Errors start with
// "--shaping FILE: " (or the embedded label; "--campaign-header NAME: " for the flag's name).
[[nodiscard]] std::expected<shaping_load, std::string> load_shaping_rules(shaping_rules flags,
                                                                          std::span<const std::string> files,
                                                                          shipped_shaping shipped);

// The start-up line: "shaping: 14 providers, 2 domains, 8 automation rules (etc/shaping.json,
// embedded; FILE; FILE)", or "(no shipped provider rules: --no-default-shaping; FILE)"; with a
// campaign header, then "; campaigns by header X-Campaign-Id: 2 rules".
[[nodiscard]] std::string describe(const shaping_load& load);

}  // namespace ringrelay::queue
